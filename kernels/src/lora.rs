//! Batched LoRA: many adapters applied in one pass over a mixed batch.
//!
//! A LoRA adapter adds `scale · B · A · x` to a projection `W · x`, with
//! `A: [rank, k]` and `B: [n, rank]` small. Merging `W + scale · B A` into the
//! weights serves one adapter at a time; Punica's BGMV and S-LoRA's SGMV keep
//! the base weights shared and apply each row's own delta instead, so base
//! requests and requests for different adapters run in one batch.
//!
//! [`bgmv`] takes, for every row of the batch, the slot of its adapter (or
//! none) and the adapters' factors per slot. Each row is *shrunk* through its
//! adapter's `A` (`rank` dot products of length `k`) and *expanded* through
//! `B` (`rank` scaled row additions of length `n`, so `B` is kept transposed,
//! `[rank, n]`), rows in parallel. A row's result depends only on its own
//! input and adapter, reduced in a fixed order, never on which other rows or
//! adapters share the batch.

use crate::{shape_err, simd, Result};
use rayon::prelude::*;

/// One adapter's factors for one projection.
#[derive(Debug, Clone, Copy)]
pub struct LoraFactors<'a> {
    /// `A`: `[rank, k]`, row-major.
    pub a: &'a [f32],
    /// `B` transposed: `[rank, n]`, row-major (PEFT stores `B` as `[n, rank]`).
    pub b_t: &'a [f32],
    pub rank: usize,
    /// `lora_alpha / rank` (or `/ sqrt(rank)` for rsLoRA).
    pub scale: f32,
}

/// Below this many multiply-adds the rows run on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// `out[r] += scale · B · (A · x[r])` for each row `r` whose `row_slots[r]`
/// names a slot holding factors; other rows are left untouched.
///
/// `x: [m, k]`, `out: [m, n]`, `row_slots.len() == m`; a slot of `None`
/// means that adapter does not adapt this projection.
pub fn bgmv(
    x: &[f32],
    k: usize,
    row_slots: &[Option<usize>],
    slots: &[Option<LoraFactors<'_>>],
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let m = row_slots.len();
    if x.len() != m * k || out.len() != m * n {
        return Err(shape_err(
            "bgmv",
            format!(
                "x has {} (want {m}x{k}), out has {} (want {m}x{n})",
                x.len(),
                out.len()
            ),
        ));
    }
    for (s, f) in slots.iter().enumerate() {
        if let Some(f) = f {
            if f.a.len() != f.rank * k || f.b_t.len() != f.rank * n || f.rank == 0 {
                return Err(shape_err(
                    "bgmv",
                    format!(
                        "slot {s}: A has {} (want {}x{k}), Bᵀ has {} (want {}x{n})",
                        f.a.len(),
                        f.rank,
                        f.b_t.len(),
                        f.rank
                    ),
                ));
            }
        }
    }
    if let Some(bad) = row_slots.iter().flatten().find(|&&s| s >= slots.len()) {
        return Err(shape_err(
            "bgmv",
            format!("row slot {bad} is outside the {} slots", slots.len()),
        ));
    }
    if n == 0 || k == 0 {
        return Ok(());
    }
    let factors = |r: usize| row_slots[r].and_then(|s| slots[s]);
    let work: usize = (0..m).filter_map(factors).map(|f| f.rank * (k + n)).sum();
    let row = |(r, out_row): (usize, &mut [f32])| {
        if let Some(f) = factors(r) {
            row_delta(&x[r * k..(r + 1) * k], f, out_row);
        }
    };
    if work < PARALLEL_MIN_WORK {
        out.chunks_exact_mut(n).enumerate().for_each(row);
    } else {
        out.par_chunks_exact_mut(n).enumerate().for_each(row);
    }
    Ok(())
}

/// One row: shrink (`t = scale · A x`), then expand (`out += Σ_i t_i Bᵀ_i`),
/// the expansion in column tiles held in registers across all of `i`, so
/// each output element is loaded and stored once.
fn row_delta(x: &[f32], f: LoraFactors<'_>, out: &mut [f32]) {
    const TILE: usize = 64;
    let (k, n) = (x.len(), out.len());
    let a_row = |i: usize| &f.a[i * k..(i + 1) * k];
    let mut t = Vec::with_capacity(f.rank);
    let mut i = 0;
    while i + 4 <= f.rank {
        let d = simd::dot4(x, [a_row(i), a_row(i + 1), a_row(i + 2), a_row(i + 3)]);
        t.extend(d.map(|v| f.scale * v));
        i += 4;
    }
    t.extend((i..f.rank).map(|i| f.scale * simd::dot(x, a_row(i))));
    let full = n / TILE * TILE;
    for c0 in (0..full).step_by(TILE) {
        // A fixed-width tile, so the accumulators stay in registers.
        let mut acc = [0f32; TILE];
        for (i, ti) in t.iter().enumerate() {
            let b: &[f32; TILE] = f.b_t[i * n + c0..i * n + c0 + TILE]
                .try_into()
                .expect("a full tile");
            for j in 0..TILE {
                acc[j] += ti * b[j];
            }
        }
        for (o, a) in out[c0..c0 + TILE].iter_mut().zip(&acc) {
            *o += a;
        }
    }
    for (c, o) in out.iter_mut().enumerate().skip(full) {
        let mut acc = 0f32;
        for (i, ti) in t.iter().enumerate() {
            acc += ti * f.b_t[i * n + c];
        }
        *o += acc;
    }
}
