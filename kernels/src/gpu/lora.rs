//! Batched LoRA (BGMV) on the device: each row of a mixed batch gets its own
//! adapter's `scale · B (A x)` added to the base projection's output, as
//! [`crate::lora::bgmv`] does on the CPU.
//!
//! The adapters loaded for one projection are uploaded once into a
//! [`GpuLora`]: their `A` factors stacked into one `[total_rank, k]` tensor,
//! their transposed `B` into one `[total_rank, n]` tensor, and per slot
//! where its rows start, its rank and its scale. Per step, only the row →
//! slot map (`[rows]` u32, [`GpuLora::NONE`] for rows without an adapter)
//! goes up.

use super::ops::distinct;
use super::{DType, GpuContext, GpuTensor, Result};
use crate::lora::LoraFactors;

/// The adapters of one projection (`k` inputs, `n` outputs), by slot.
#[derive(Debug)]
pub struct GpuLora {
    a: GpuTensor,
    b_t: GpuTensor,
    /// `[slots, 4]`: first row, rank, scale bits, 0.
    meta: GpuTensor,
    present: Vec<bool>,
    max_rank: usize,
    k: usize,
    n: usize,
}

impl GpuLora {
    /// The row-slot value for "no adapter".
    pub const NONE: u32 = u32::MAX;

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn slots(&self) -> usize {
        self.present.len()
    }

    pub fn max_rank(&self) -> usize {
        self.max_rank
    }

    /// The `[rows]` u32 row → slot map for [`GpuContext::bgmv`]: rows
    /// without an adapter, and rows whose slot does not adapt this
    /// projection, get [`Self::NONE`].
    pub fn row_slots(&self, row_slots: &[Option<usize>]) -> Result<Vec<u32>> {
        row_slots
            .iter()
            .map(|s| match s {
                None => Ok(Self::NONE),
                Some(s) if *s >= self.present.len() => Err(super::shape(
                    "gpu bgmv",
                    format!("row slot {s} outside the {} slots", self.present.len()),
                )),
                Some(s) if !self.present[*s] => Ok(Self::NONE),
                Some(s) => Ok(*s as u32),
            })
            .collect()
    }
}

impl GpuContext {
    /// Uploads the factors of each slot (`None`: that adapter does not adapt
    /// this projection) for inputs of width `k` and outputs of width `n`.
    pub fn upload_lora(
        &self,
        slots: &[Option<LoraFactors<'_>>],
        k: usize,
        n: usize,
    ) -> Result<GpuLora> {
        const K: &str = "gpu upload_lora";
        let (mut a, mut b_t, mut meta) = (Vec::new(), Vec::new(), Vec::new());
        let mut rows = 0usize;
        for (s, f) in slots.iter().enumerate() {
            match f {
                Some(f) => {
                    if f.rank == 0 || f.a.len() != f.rank * k || f.b_t.len() != f.rank * n {
                        return Err(super::shape(
                            K,
                            format!(
                                "slot {s}: rank {}, A has {} (want {}x{k}), Bᵀ has {} (want {}x{n})",
                                f.rank,
                                f.a.len(),
                                f.rank,
                                f.b_t.len(),
                                f.rank
                            ),
                        ));
                    }
                    a.extend_from_slice(f.a);
                    b_t.extend_from_slice(f.b_t);
                    meta.extend([rows as u32, f.rank as u32, f.scale.to_bits(), 0]);
                    rows += f.rank;
                }
                None => meta.extend([0, 0, 0, 0]),
            }
        }
        let max_rank = slots.iter().flatten().map(|f| f.rank).max().unwrap_or(0);
        Ok(GpuLora {
            a: self.upload_f32(&a, &[rows, k])?,
            b_t: self.upload_f32(&b_t, &[rows, n])?,
            meta: self.upload_u32(&meta, &[slots.len(), 4])?,
            present: slots.iter().map(Option::is_some).collect(),
            max_rank,
            k,
            n,
        })
    }

    /// `out[r] += scale · B (A x[r])` for each row whose `row_slots[r]`
    /// (from [`GpuLora::row_slots`]) names a slot; `x: [m, k]`, `out: [m,
    /// n]`. Records two dispatches (shrink, then expand) and allocates the
    /// `[m, max_rank]` intermediate.
    pub fn bgmv(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        row_slots: &GpuTensor,
        lora: &GpuLora,
        out: &GpuTensor,
    ) -> Result<()> {
        const K: &str = "gpu bgmv";
        row_slots.expect(K, "row_slots", DType::U32, &[None])?;
        let m = row_slots.len();
        x.expect(K, "x", DType::F32, &[Some(m), Some(lora.k)])?;
        out.expect(K, "out", DType::F32, &[Some(m), Some(lora.n)])?;
        distinct(K, out, &[x, row_slots])?;
        if m == 0 || lora.max_rank == 0 || lora.n == 0 {
            return Ok(());
        }
        let t = self.zeros(&[m, lora.max_rank], DType::F32)?;
        let params = [m as u32, lora.k as u32, lora.n as u32, lora.max_rank as u32];
        let groups = self.grid((m * lora.max_rank) as u64)?;
        self.dispatch(
            encoder,
            &self.pipelines.bgmv_shrink,
            "gpu bgmv shrink",
            &params,
            &[
                (1, &x.buffer),
                (2, &lora.a.buffer),
                (4, &lora.meta.buffer),
                (5, &row_slots.buffer),
                (6, &t.buffer),
            ],
            groups,
        );
        let groups = self.grid(((m * lora.n) as u64).div_ceil(256))?;
        self.dispatch(
            encoder,
            &self.pipelines.bgmv_expand,
            "gpu bgmv expand",
            &params,
            &[
                (3, &lora.b_t.buffer),
                (4, &lora.meta.buffer),
                (5, &row_slots.buffer),
                (6, &t.buffer),
                (7, &out.buffer),
            ],
            groups,
        );
        Ok(())
    }
}
