//! `sdlab bench model`: raw model speed, quantized against f32 weights.
//!
//! Measures, on the model alone (no scheduler, no sampling), prompt
//! processing (one prefill of `--prompt-len` tokens) and decode at several
//! batch sizes (B sequences each adding one token per step), for each weight
//! format, in one process and one run, so the ratios compare like with like.

use anyhow::Result;
use models::{KvCache, LoadOptions, SeqChunk, WeightFormat};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct Row {
    pub weights: String,
    pub prefill_tokens_per_s: f64,
    /// (batch size, total decode tokens/s)
    pub decode: Vec<(usize, f64)>,
    pub weight_mb: f64,
    /// The CPU kernel variants this machine ran (`kernels::cpu_kernels`).
    pub cpu_kernels: String,
}

pub fn run(
    model: &str,
    formats: &[WeightFormat],
    batches: &[usize],
    prompt_len: usize,
    steps: usize,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &weights in formats {
        let loaded = models::load(model, LoadOptions { weights })?;
        let m = &loaded.model;
        let vocab = m.cfg.vocab_size as u32;
        let prompt: Vec<u32> = (0..prompt_len as u32)
            .map(|i| (i * 7919 + 13) % vocab)
            .collect();
        let block_size = 16;
        let per_seq = (prompt_len + steps + 1).div_ceil(block_size);
        let max_b = batches.iter().copied().max().unwrap_or(1);
        let mut cache = KvCache::new(&m.cfg, per_seq * max_b, block_size);
        let tables: Vec<Vec<u32>> = (0..max_b)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();

        // Prefill: best of three.
        let mut prefill = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            m.forward(
                &prompt,
                &[SeqChunk {
                    block_table: &tables[0],
                    start: 0,
                    len: prompt_len,
                    adapter: None,
                }],
                &[prompt_len - 1],
                &mut cache,
            )?;
            prefill = prefill.min(t.elapsed().as_secs_f64());
        }
        let mut decode = Vec::new();
        for &b in batches {
            for table in &tables[..b] {
                m.forward(
                    &prompt,
                    &[SeqChunk {
                        block_table: table,
                        start: 0,
                        len: prompt_len,
                        adapter: None,
                    }],
                    &[prompt_len - 1],
                    &mut cache,
                )?;
            }
            let rows_idx: Vec<usize> = (0..b).collect();
            let t = Instant::now();
            for step in 0..steps {
                let toks: Vec<u32> = (0..b as u32)
                    .map(|s| (s * 31 + step as u32 * 17) % vocab)
                    .collect();
                let chunks: Vec<SeqChunk> = tables[..b]
                    .iter()
                    .map(|tb| SeqChunk {
                        block_table: tb,
                        start: prompt_len + step,
                        len: 1,
                        adapter: None,
                    })
                    .collect();
                m.forward(&toks, &chunks, &rows_idx, &mut cache)?;
            }
            decode.push((b, (b * steps) as f64 / t.elapsed().as_secs_f64()));
        }
        rows.push(Row {
            weights: loaded.weights.to_string(),
            prefill_tokens_per_s: prompt_len as f64 / prefill,
            decode,
            weight_mb: m.weight_bytes() as f64 / 1e6,
            cpu_kernels: kernels::cpu_kernels(),
        });
    }
    Ok(rows)
}
