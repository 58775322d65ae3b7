//! LoRA adapters on the device, for [`super::GpuLlama`]: the GPU twin of
//! the CPU decoder's batched LoRA, so sequences under different adapters
//! (and none) share one step and one BGMV dispatch per projection.
//!
//! The factors of the adapters in use are kept on the device, stacked per
//! projection into one [`GpuLora`] (slot `s` is the `s`-th resident
//! adapter), and uploaded only when an adapter the device has not seen
//! joins a batch. Adapters are known by [`LoraAdapter::uid`], which changes
//! whenever factors could change, so a reloaded adapter of the same name is
//! never served from a stale copy.
//!
//! At most [`MAX_RESIDENT`] adapters stay resident (more when one batch
//! needs more). When a new one comes, the least recently used that the
//! batch does not need are dropped, and every projection's stack is built
//! again from host copies of the residents' factors: a load costs one
//! upload of the resident factors (a few MB for rank-16 adapters of the
//! default model), a step that only reuses residents uploads just the
//! row → slot map.

use crate::llama::SeqChunk;
use crate::lora::{LoraAdapter, Target};
use crate::{LlamaConfig, Result};
use kernels::gpu::{GpuContext, GpuLora, GpuTensor};

/// Adapters kept on the device when no batch needs more.
pub const MAX_RESIDENT: usize = 8;

struct Resident {
    /// A host copy, to build the stacks again when the residents change.
    adapter: LoraAdapter,
    uid: u64,
    last_used: u64,
}

/// The resident adapters and their stacked factors.
#[derive(Default)]
pub(super) struct GpuAdapters {
    residents: Vec<Resident>,
    /// Per layer, per [`Target`]: the residents' factors for that
    /// projection; `None` where no resident adapts it.
    stacks: Vec<[Option<GpuLora>; 7]>,
    /// Steps that used an adapter, for least-recently-used eviction.
    clock: u64,
    /// Uploads of the stacks so far (for tests and logs).
    uploads: u64,
}

impl GpuAdapters {
    /// Makes every adapter of `seqs` resident and returns the row → slot
    /// map of the flattened batch on the device (rows without an adapter
    /// get [`GpuLora::NONE`]), or `None` when no sequence has an adapter.
    pub fn prepare(
        &mut self,
        ctx: &GpuContext,
        cfg: &LlamaConfig,
        seqs: &[SeqChunk<'_>],
    ) -> Result<Option<GpuTensor>> {
        if seqs.iter().all(|s| s.adapter.is_none()) {
            return Ok(None);
        }
        self.clock += 1;
        let wanted: Vec<&LoraAdapter> = {
            let mut w: Vec<&LoraAdapter> = Vec::new();
            for a in seqs.iter().filter_map(|s| s.adapter) {
                if !w.iter().any(|b| b.uid() == a.uid()) {
                    w.push(a);
                }
            }
            w
        };
        let missing: Vec<&LoraAdapter> = wanted
            .iter()
            .copied()
            .filter(|a| !self.residents.iter().any(|r| r.uid == a.uid()))
            .collect();
        if !missing.is_empty() {
            self.admit(ctx, cfg, &wanted, &missing)?;
        }
        let slot_of = |uid: u64| self.residents.iter().position(|r| r.uid == uid);
        let mut rows = Vec::with_capacity(seqs.iter().map(|s| s.len).sum());
        for s in seqs {
            let slot = match s.adapter {
                Some(a) => slot_of(a.uid()).expect("admitted above") as u32,
                None => GpuLora::NONE,
            };
            rows.extend(std::iter::repeat_n(slot, s.len));
        }
        for r in &mut self.residents {
            if wanted.iter().any(|a| a.uid() == r.uid) {
                r.last_used = self.clock;
            }
        }
        Ok(Some(ctx.upload_u32(&rows, &[rows.len()])?))
    }

    /// The stacked factors of `target` in `layer`, if any resident adapts it.
    pub fn stack(&self, layer: usize, target: Target) -> Option<&GpuLora> {
        self.stacks.get(layer)?[target as usize].as_ref()
    }

    pub fn resident(&self) -> usize {
        self.residents.len()
    }

    pub fn uploads(&self) -> u64 {
        self.uploads
    }

    /// Adds `missing` (adapters of `wanted` not yet resident), dropping the
    /// least recently used residents that `wanted` does not need, and
    /// uploads the stacks again.
    fn admit(
        &mut self,
        ctx: &GpuContext,
        cfg: &LlamaConfig,
        wanted: &[&LoraAdapter],
        missing: &[&LoraAdapter],
    ) -> Result<()> {
        let room = MAX_RESIDENT.max(wanted.len());
        let excess = (self.residents.len() + missing.len()).saturating_sub(room);
        if excess > 0 {
            let mut idle: Vec<(u64, u64)> = self
                .residents
                .iter()
                .filter(|r| !wanted.iter().any(|a| a.uid() == r.uid))
                .map(|r| (r.last_used, r.uid))
                .collect();
            idle.sort_unstable();
            let evict: Vec<u64> = idle.iter().take(excess).map(|&(_, uid)| uid).collect();
            self.residents.retain(|r| !evict.contains(&r.uid));
        }
        self.residents.extend(missing.iter().map(|a| Resident {
            adapter: (*a).clone(),
            uid: a.uid(),
            last_used: self.clock,
        }));
        // Drop the old stacks before allocating the new ones; if an upload
        // fails, nothing stays resident rather than a partial stack.
        self.stacks.clear();
        match self.build_stacks(ctx, cfg) {
            Ok(stacks) => self.stacks = stacks,
            Err(e) => {
                self.residents.clear();
                return Err(e);
            }
        }
        self.uploads += 1;
        Ok(())
    }

    fn build_stacks(
        &self,
        ctx: &GpuContext,
        cfg: &LlamaConfig,
    ) -> Result<Vec<[Option<GpuLora>; 7]>> {
        (0..cfg.num_layers)
            .map(|layer| {
                let mut per_target: [Option<GpuLora>; 7] = Default::default();
                for target in Target::ALL {
                    let slots: Vec<_> = self
                        .residents
                        .iter()
                        .map(|r| r.adapter.module(layer, target).map(|m| m.factors()))
                        .collect();
                    if slots.iter().all(Option::is_none) {
                        continue;
                    }
                    let (n, k) = target.shape(cfg);
                    per_target[target as usize] = Some(ctx.upload_lora(&slots, k, n)?);
                }
                Ok(per_target)
            })
            .collect()
    }
}
