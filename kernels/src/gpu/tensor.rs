//! Device-resident tensors and the copies between host and device.
//!
//! A [`GpuTensor`] is a storage buffer plus its shape and element type (f32
//! for values, u32 for ids, positions, slots and block tables). Buffers are
//! at least 4 bytes, since a binding may not be empty, and never larger than
//! one storage binding may be, so every tensor can be bound whole.
//!
//! Uploads go through the queue ([`wgpu::Queue::write_buffer`]), which
//! orders them before the next submit. Reading back copies into a mappable
//! staging buffer, submits, and blocks until the copy has run.

use super::{GpuContext, GpuError, Result};
use crate::{q8_0::Q8_0Matrix, quant::Q4_1Matrix};
use wgpu::util::DeviceExt;

/// Element type of a [`GpuTensor`]; both are 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
}

/// A row-major tensor in device memory.
#[derive(Debug)]
pub struct GpuTensor {
    pub(crate) buffer: wgpu::Buffer,
    shape: Vec<usize>,
    dtype: DType,
}

impl GpuTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Bytes of the elements (the buffer may be padded to 4).
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }

    /// Checks the element type and, where `shape` gives `Some`, each dimension.
    pub(crate) fn expect(
        &self,
        kernel: &'static str,
        name: &str,
        dtype: DType,
        shape: &[Option<usize>],
    ) -> Result<()> {
        let ok = self.dtype == dtype
            && self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(have, want)| want.is_none_or(|w| w == *have));
        if ok {
            Ok(())
        } else {
            Err(super::shape(
                kernel,
                format!(
                    "{name} is {:?} {:?}, want {dtype:?} {shape:?}",
                    self.dtype, self.shape
                ),
            ))
        }
    }
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(GpuError::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    fn upload_words(&self, words: &[u32], shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let len: usize = shape.iter().product();
        if len != words.len() {
            return Err(super::shape(
                "upload",
                format!("{} values for shape {shape:?}", words.len()),
            ));
        }
        self.check_size("tensor", len as u64 * 4)?;
        let contents: &[u32] = if words.is_empty() { &[0] } else { words };
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(contents),
                usage: USAGE,
            });
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Copies `data` (row-major, `shape`) to a new device tensor.
    pub fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_words(bytemuck::cast_slice(data), shape, DType::F32)
    }

    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_words(data, shape, DType::U32)
    }

    /// A zero-filled tensor (scratch for activations, KV pools).
    pub fn zeros(&self, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let len: usize = shape.iter().product();
        self.check_size("tensor", len as u64 * 4)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (len as u64 * 4).max(4),
            usage: USAGE,
            mapped_at_creation: false,
        });
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Dequantizes Q4_1 weights (`[n, k]`) and uploads them as f32.
    pub fn upload_q4_1(&self, w: &Q4_1Matrix) -> Result<GpuTensor> {
        self.upload_f32(&w.dequantize(), &[w.n, w.k])
    }

    /// Dequantizes Q8_0 weights (`[n, k]`) and uploads them as f32.
    pub fn upload_q8_0(&self, w: &Q8_0Matrix) -> Result<GpuTensor> {
        self.upload_f32(&w.dequantize(), &[w.n, w.k])
    }

    /// Overwrites a tensor's contents (same element count), ordered before
    /// the next submit: the per-step ids, positions and tables.
    pub fn write_f32(&self, t: &GpuTensor, data: &[f32]) -> Result<()> {
        self.write_words(t, bytemuck::cast_slice(data), DType::F32)
    }

    pub fn write_u32(&self, t: &GpuTensor, data: &[u32]) -> Result<()> {
        self.write_words(t, data, DType::U32)
    }

    fn write_words(&self, t: &GpuTensor, words: &[u32], dtype: DType) -> Result<()> {
        if t.dtype != dtype || t.len() != words.len() {
            return Err(super::shape(
                "write",
                format!(
                    "{} {dtype:?} values into a {:?} {:?} tensor",
                    words.len(),
                    t.dtype,
                    t.shape
                ),
            ));
        }
        if !words.is_empty() {
            self.queue
                .write_buffer(&t.buffer, 0, bytemuck::cast_slice(words));
        }
        Ok(())
    }

    /// Submits `encoder` with a copy of `t` appended, waits, and returns the
    /// copy: one submit for a whole recorded pass and its result.
    pub fn finish_and_read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        t: &GpuTensor,
    ) -> Result<Vec<u32>> {
        let size = t.bytes();
        if size == 0 {
            self.submit(encoder);
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(&t.buffer, 0, &staging, 0, size);
        self.submit(encoder);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| GpuError::Map(format!("{e:?}")))?;
        let words = bytemuck::cast_slice::<u8, u32>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(words)
    }

    /// Runs `encoder` and reads back an f32 tensor.
    pub fn finish_and_read_f32(
        &self,
        encoder: wgpu::CommandEncoder,
        t: &GpuTensor,
    ) -> Result<Vec<f32>> {
        t.expect("download", "tensor", DType::F32, &vec![None; t.shape.len()])?;
        Ok(bytemuck::cast_slice(&self.finish_and_read(encoder, t)?).to_vec())
    }

    /// Copies an f32 tensor back to the host (after all submitted work).
    pub fn download_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.finish_and_read_f32(self.encoder(), t)
    }

    /// Copies a u32 tensor back to the host (after all submitted work).
    pub fn download_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        t.expect("download", "tensor", DType::U32, &vec![None; t.shape.len()])?;
        self.finish_and_read(self.encoder(), t)
    }
}
