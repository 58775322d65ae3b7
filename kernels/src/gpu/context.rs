//! The device, its queue and every compiled pipeline, created once.
//!
//! Adapter choice: Vulkan only (the one backend compiled in). Among the
//! adapters found, a discrete GPU is preferred over an integrated one, and a
//! software rasterizer (lavapipe, `DeviceType::Cpu`) comes last; setting
//! `SDLAB_GPU_ADAPTER` to part of an adapter's name picks that one instead.
//! The device is requested with the adapter's own limits rather than
//! WebGPU's defaults, so storage bindings may be as large as the hardware
//! allows (weights and KV pools are large).

use super::{GpuError, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// What was picked, for logs and test output.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    /// A CPU implementation (lavapipe, SwiftShader): correct but slow.
    pub software: bool,
    pub max_storage_binding: u64,
    /// How the kernels get the CPU's single-rounding multiply-add.
    pub fma: FmaMode,
}

/// Whether the device's WGSL `fma` rounds once, as the CPU's FMA
/// instructions do. Vulkan allows it to round twice (lavapipe does); then
/// the kernels emulate it (`shaders/numerics.wgsl`), so either way they
/// compute the CPU decoder's bits. Found by [`GpuContext::new`] running
/// `fma` on triples where the two roundings differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FmaMode {
    /// The device's `fma` is exact on every probe.
    Native,
    /// Emulated exactly with plain operations.
    Emulated,
    /// Neither matched the CPU on the probes: results agree with the
    /// CPU's up to rounding only.
    Inexact,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}{}, driver {:?}, max storage binding {} MiB, fma {:?})",
            self.name,
            self.backend,
            self.device_type,
            if self.software {
                ", software rasterizer"
            } else {
                ""
            },
            self.driver,
            self.max_storage_binding >> 20,
            self.fma
        )
    }
}

/// A context shows as its adapter.
impl std::fmt::Display for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.adapter().fmt(f)
    }
}

/// One compiled compute pipeline per kernel.
pub(crate) struct Pipelines {
    pub embedding: wgpu::ComputePipeline,
    pub rms_norm: wgpu::ComputePipeline,
    pub rope: wgpu::ComputePipeline,
    pub matmul: wgpu::ComputePipeline,
    pub matmul_skinny: wgpu::ComputePipeline,
    pub add: wgpu::ComputePipeline,
    pub silu_mul: wgpu::ComputePipeline,
    pub write_kv: wgpu::ComputePipeline,
    pub attention: wgpu::ComputePipeline,
    pub bgmv_shrink: wgpu::ComputePipeline,
    pub bgmv_expand: wgpu::ComputePipeline,
    pub quantize: wgpu::ComputePipeline,
    pub matmul_q4_1: wgpu::ComputePipeline,
    pub matmul_q8_0: wgpu::ComputePipeline,
    pub fma_probe: wgpu::ComputePipeline,
}

/// Device, queue and pipelines. Cheap to share behind an `Arc`; every kernel
/// method takes `&self`.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) pipelines: Pipelines,
    summary: AdapterSummary,
}

fn summarize(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: info.backend,
        device_type: info.device_type,
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        software: info.device_type == wgpu::DeviceType::Cpu,
        max_storage_binding: limits.max_storage_buffer_binding_size,
        fma: FmaMode::Inexact,
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl GpuContext {
    /// Finds an adapter, opens a device with its limits, and compiles every
    /// pipeline. Fails with [`GpuError::NoAdapter`] when there is none.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// The adapter [`Self::new`] would pick, without opening a device (a
    /// cheap check, e.g. for "use the GPU only if it is real hardware").
    pub fn probe() -> Result<AdapterSummary> {
        let adapter = pollster::block_on(Self::pick_adapter())?;
        Ok(summarize(&adapter.get_info(), &adapter.limits()))
    }

    async fn pick_adapter() -> Result<wgpu::Adapter> {
        let backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let mut adapters = instance.enumerate_adapters(backends).await;
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        match std::env::var("SDLAB_GPU_ADAPTER") {
            Ok(want) if !want.is_empty() => {
                let want = want.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
            }
            _ => adapters.into_iter().next(),
        }
        .ok_or_else(|| GpuError::NoAdapter(format!("{backends:?}")))
    }

    async fn new_async() -> Result<Self> {
        let adapter = Self::pick_adapter().await?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("sdlab"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await?;
        let summary = summarize(&info, &limits);
        let pipelines = Pipelines::compile(&device, false).await?;
        let mut ctx = Self {
            device,
            queue,
            limits,
            pipelines,
            summary,
        };
        // Which multiply-add to compile in: the device's own when it rounds
        // once, else the emulation, checked too.
        let probes = fma_probes();
        let got = ctx.fma_results(&probes)?;
        let exact = |i: usize| {
            probes
                .iter()
                .zip(&got)
                .all(|([a, b, c], r)| r[i].to_bits() == a.mul_add(*b, *c).to_bits())
        };
        ctx.summary.fma = if exact(0) {
            ctx.pipelines = Pipelines::compile(&ctx.device, true).await?;
            FmaMode::Native
        } else if exact(1) {
            FmaMode::Emulated
        } else {
            FmaMode::Inexact
        };
        Ok(ctx)
    }

    /// For each `[a, b, c]`, the device's `fma(a, b, c)` and the kernels'
    /// `fma_exact(a, b, c)` (as compiled: native or emulated). What the
    /// context's probe runs; the tests run it on many triples.
    pub fn fma_results(&self, triples: &[[f32; 3]]) -> Result<Vec<[f32; 2]>> {
        let n = triples.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<f32> = triples.iter().flatten().copied().collect();
        let abc = self.upload_f32(&flat, &[n * 3])?;
        let out = self.zeros(&[n * 2], super::DType::F32)?;
        let mut e = self.encoder();
        let groups = self.grid((n as u64).div_ceil(64))?;
        self.dispatch(
            &mut e,
            &self.pipelines.fma_probe,
            "fma probe",
            &[n as u32],
            &[(1, abc.buffer()), (2, out.buffer())],
            groups,
        );
        let r = self.finish_and_read_f32(e, &out)?;
        Ok(r.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
    }

    /// The same, shared.
    pub fn new_shared() -> Result<Arc<Self>> {
        Self::new().map(Arc::new)
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// True on lavapipe and other CPU implementations of Vulkan.
    pub fn is_software(&self) -> bool {
        self.summary.software
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// A fresh encoder to record kernels into.
    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sdlab"),
            })
    }

    /// Submits what `encoder` recorded (without waiting for it).
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.queue.submit([encoder.finish()])
    }

    /// Blocks until everything submitted so far has run.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Map(e.to_string()))
    }

    /// Records one dispatch of `pipeline` over a `groups` grid: binding 0 is
    /// a uniform buffer holding `params` (padded to 16 bytes), the others
    /// the given buffers.
    pub(crate) fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        label: &str,
        params: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) {
        let mut words = params.to_vec();
        words.resize(params.len().next_multiple_of(4).max(4), 0);
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(buffers.iter().map(|(b, buf)| wgpu::BindGroupEntry {
            binding: *b,
            resource: buf.as_entire_binding(),
        }));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    /// A 2D grid of `n` workgroups within this device's limit.
    pub(crate) fn grid(&self, n: u64) -> Result<(u32, u32)> {
        super::grid(n, self.limits.max_compute_workgroups_per_dimension)
    }
}

/// Triples whose multiply-add rounds differently once and twice: a product
/// a rounding away from cancelling the addend, at several magnitudes and
/// signs.
fn fma_probes() -> Vec<[f32; 3]> {
    let mut v = Vec::new();
    for (i, s) in [1.0f32, -3.0, 0.01, 1e6, -7e-5].into_iter().enumerate() {
        let a = s * (1.0 + f32::EPSILON * (4097 + 2 * i) as f32);
        let b = 1.0 - f32::EPSILON * (8191 + 3 * i) as f32;
        let p = a * b;
        v.push([a, b, -p]);
        v.push([b, a, -f32::from_bits(p.to_bits() + 1)]);
    }
    v
}

/// The source of a kernel that uses `numerics.wgsl`.
fn with_numerics(src: &str) -> String {
    format!("{}\n{src}", include_str!("shaders/numerics.wgsl"))
}

impl Pipelines {
    /// Compiles every kernel; `fma_native` picks the device's `fma` for
    /// `fma_exact`. A shader that does not compile (or a pipeline the
    /// device rejects) is an error to return, not a panic in wgpu's
    /// default handler.
    async fn compile(device: &wgpu::Device, fma_native: bool) -> Result<Self> {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipelines = Self::new(device, fma_native);
        if let Some(e) = scope.pop().await {
            return Err(GpuError::Pipeline(e.to_string()));
        }
        Ok(pipelines)
    }

    fn new(device: &wgpu::Device, fma_native: bool) -> Self {
        let module = |label: &str, src: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            })
        };
        let numerics = |label: &str, src: &str| module(label, &with_numerics(src));
        let constants = [("FMA_NATIVE", if fma_native { 1.0 } else { 0.0 })];
        let build = |module: &wgpu::ShaderModule, entry: &str, constants: &[(&str, f64)]| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            })
        };
        let pipeline = |module: &wgpu::ShaderModule, entry: &str| build(module, entry, &[]);
        // Kernels that use numerics.wgsl.
        let exact = |module: &wgpu::ShaderModule, entry: &str| build(module, entry, &constants);
        let elementwise = numerics("elementwise", include_str!("shaders/elementwise.wgsl"));
        let bgmv = numerics("bgmv", include_str!("shaders/bgmv.wgsl"));
        let qmatmul = numerics("qmatmul", include_str!("shaders/qmatmul.wgsl"));
        Self {
            embedding: pipeline(
                &module("embedding", include_str!("shaders/embedding.wgsl")),
                "main",
            ),
            rms_norm: exact(
                &numerics("rms_norm", include_str!("shaders/rms_norm.wgsl")),
                "main",
            ),
            rope: pipeline(&module("rope", include_str!("shaders/rope.wgsl")), "main"),
            matmul: pipeline(
                &module("matmul", include_str!("shaders/matmul.wgsl")),
                "main",
            ),
            matmul_skinny: pipeline(
                &module("matmul_skinny", include_str!("shaders/matmul_skinny.wgsl")),
                "main",
            ),
            add: exact(&elementwise, "add"),
            silu_mul: exact(&elementwise, "silu_mul"),
            write_kv: pipeline(
                &module("write_kv", include_str!("shaders/write_kv.wgsl")),
                "main",
            ),
            attention: exact(
                &numerics("attention", include_str!("shaders/attention.wgsl")),
                "main",
            ),
            bgmv_shrink: exact(&bgmv, "shrink"),
            bgmv_expand: exact(&bgmv, "expand"),
            quantize: exact(&qmatmul, "quantize"),
            matmul_q4_1: exact(&qmatmul, "matmul_q4_1"),
            matmul_q8_0: exact(&qmatmul, "matmul_q8_0"),
            fma_probe: exact(
                &numerics("fma_probe", include_str!("shaders/fma_probe.wgsl")),
                "main",
            ),
        }
    }
}
