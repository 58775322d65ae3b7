//! Helpers shared by the model tests.
#![allow(dead_code)]

use models::{KvCache, Llama, SeqChunk};
use std::path::PathBuf;

/// The real default model, if `make models` fetched it. Tests that need it
/// fail when `SDLAB_REQUIRE_REAL_MODELS=1` (as `make test` sets) and skip
/// with a message otherwise.
pub fn real_model_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run `make models`", p.display());
    }
    eprintln!("skipping: {} is missing (run `make models`)", p.display());
    None
}

pub fn shared_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(name)
}

/// Greedy decoding of one prompt with a private cache (blocks 0..n in order).
pub fn greedy(model: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    greedy_with(model, prompt, n, None)
}

/// [`greedy`] under a LoRA adapter.
pub fn greedy_with(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    adapter: Option<&models::LoraAdapter>,
) -> Vec<u32> {
    let block_size = 16;
    let total = prompt.len() + n;
    let blocks = total.div_ceil(block_size);
    let mut cache = KvCache::new(&model.cfg, blocks, block_size);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut out = Vec::new();
    let mut tokens = prompt.to_vec();
    let mut start = 0;
    while out.len() < n {
        let chunk = &tokens[start..];
        let seq = SeqChunk {
            block_table: &table,
            start,
            len: chunk.len(),
            adapter,
        };
        let logits = model
            .forward(chunk, &[seq], &[chunk.len() - 1], &mut cache)
            .unwrap();
        let next = argmax(&logits);
        start = tokens.len();
        tokens.push(next);
        out.push(next);
    }
    out
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}
