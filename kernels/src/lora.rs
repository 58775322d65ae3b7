//! Batched LoRA: many adapters applied in one pass over a mixed batch.
//!
//! A LoRA adapter adds `scale · B · A · x` to a projection `W · x`, with
//! `A: [rank, k]` and `B: [n, rank]` small. Merging `W + scale · B A` into the
//! weights serves one adapter at a time; Punica's BGMV and S-LoRA's SGMV keep
//! the base weights shared and apply each row's own delta instead, so base
//! requests and requests for different adapters run in one batch.
//!
//! [`bgmv`] takes, for every row of the batch, the slot of its adapter (or
//! none) and the adapters' factors per slot. Rows are gathered per slot
//! (the SGMV segment), shrunk through `A` and expanded through `B` with the
//! batch-invariant [`crate::linear`], and the scaled delta is added to the
//! row's output. A row's result depends only on its own input and adapter,
//! never on which other rows or adapters share the batch.

use crate::{linear, shape_err, Result};

/// One adapter's factors for one projection.
#[derive(Debug, Clone, Copy)]
pub struct LoraFactors<'a> {
    /// `[rank, k]`, row-major.
    pub a: &'a [f32],
    /// `[n, rank]`, row-major.
    pub b: &'a [f32],
    pub rank: usize,
    /// `lora_alpha / rank` (or `/ sqrt(rank)` for rsLoRA).
    pub scale: f32,
}

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
            if f.a.len() != f.rank * k || f.b.len() != n * f.rank || f.rank == 0 {
                return Err(shape_err(
                    "bgmv",
                    format!(
                        "slot {s}: A has {} (want {}x{k}), B has {} (want {n}x{})",
                        f.a.len(),
                        f.rank,
                        f.b.len(),
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
    for (s, f) in slots.iter().enumerate() {
        let Some(f) = f else { continue };
        let rows: Vec<usize> = (0..m).filter(|&r| row_slots[r] == Some(s)).collect();
        if rows.is_empty() {
            continue;
        }
        let g = rows.len();
        let mut xs = Vec::with_capacity(g * k);
        for &r in &rows {
            xs.extend_from_slice(&x[r * k..(r + 1) * k]);
        }
        let mut shrunk = vec![0f32; g * f.rank];
        linear(&xs, f.a, g, k, f.rank, &mut shrunk)?;
        let mut delta = vec![0f32; g * n];
        linear(&shrunk, f.b, g, f.rank, n, &mut delta)?;
        for (i, &r) in rows.iter().enumerate() {
            let dst = &mut out[r * n..(r + 1) * n];
            for (o, d) in dst.iter_mut().zip(&delta[i * n..(i + 1) * n]) {
                *o += f.scale * d;
            }
        }
    }
    Ok(())
}
