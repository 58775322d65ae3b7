//! Perplexity, computed the way llama.cpp's `llama-perplexity` does it.
//!
//! The token stream is cut into consecutive windows of `ctx` tokens (the
//! remainder is dropped); each window is evaluated from scratch, and only the
//! predictions in its second half are scored (each predicted from all tokens
//! before it in the window), so every scored token has at least `ctx/2`
//! tokens of context. PPL is exp of the mean negative log-likelihood.

use crate::{KvCache, Llama, ModelError, Result, SeqChunk};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Perplexity {
    pub perplexity: f64,
    pub windows: usize,
    pub tokens_scored: usize,
    /// Mean negative log-likelihood (nats per token).
    pub nll: f64,
}

/// Scores `tokens` in windows of `ctx`; `progress(done, total)` after each window.
pub fn perplexity(
    model: &Llama,
    tokens: &[u32],
    ctx: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    if ctx < 4 || ctx > model.cfg.max_position_embeddings {
        return Err(ModelError::Input(format!(
            "--ctx must be between 4 and {}",
            model.cfg.max_position_embeddings
        )));
    }
    let windows = tokens.len() / ctx;
    if windows == 0 {
        return Err(ModelError::Input(format!(
            "the text has {} tokens, fewer than one window of {ctx}",
            tokens.len()
        )));
    }
    let block_size = 16;
    let blocks = ctx.div_ceil(block_size);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut cache = KvCache::new(&model.cfg, blocks, block_size);
    let vocab = model.cfg.vocab_size;
    let first = ctx / 2;
    let rows: Vec<usize> = (first..ctx - 1).collect();
    let (mut nll, mut scored) = (0f64, 0usize);
    for w in 0..windows {
        let window = &tokens[w * ctx..(w + 1) * ctx];
        let seq = SeqChunk {
            block_table: &table,
            start: 0,
            len: ctx,
            adapter: None,
        };
        let logits = model.forward(window, &[seq], &rows, &mut cache)?;
        for (row, &r) in logits.chunks_exact(vocab).zip(&rows) {
            nll -= log_prob(row, window[r + 1]);
            scored += 1;
        }
        progress(w + 1, windows);
    }
    let mean = nll / scored as f64;
    Ok(Perplexity {
        perplexity: mean.exp(),
        windows,
        tokens_scored: scored,
        nll: mean,
    })
}

/// Log-probability of `token` under a row of logits (log-softmax, in f64).
pub fn log_prob(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits[token as usize] as f64 - lse
}
