//! KV cache: decoding with and without it, time per token against length.
//!
//! **The pattern.** An autoregressive model produces one token per forward
//! pass, and each new token attends to every token before it. Attention
//! needs the keys and values (K/V) of all earlier positions in every layer.
//! Those never change once computed (causal attention: position `i` sees
//! only positions `<= i`), so they can be kept instead of recomputed.
//!
//! **The naive way** keeps nothing: every step runs a fresh forward pass
//! over the whole prefix (prompt plus everything generated so far) and
//! reads the last row's logits. This is what a textbook `model(ids)` loop
//! does. A step at length `L` costs `L` tokens of matmuls in every layer
//! plus `L²` attention, so per-token time grows with the length and a whole
//! generation of `n` tokens is quadratic in `n`.
//!
//! **The optimal way** is sdlab's paged KV cache (`models::KvCache`): the
//! prompt is prefilled once, writing its K/V into cache blocks; each decode
//! step then feeds only the one new token, writes its K/V into the next slot
//! and attends over the cached ones. A step costs one token of matmuls
//! (reading all the weights once, which is what bounds single-stream decode)
//! plus a length-`L` attention read, so per-token time is nearly flat in
//! `L`. Both ways produce the same greedy tokens (`same_tokens` = 1): the
//! cache changes the cost, not the result.
//!
//! **The numbers.** `ms_per_token_at_L`: one decode step with a prefix of
//! `L` tokens (naive: a forward over all `L`; cached: one token over a cache
//! of `L - 1`); `total_ms`: a short greedy generation from a chat prompt
//! both ways; `tokens_computed`: token rows pushed through the model for it.
//! The price of the cache is memory: `kv_kb_per_token` (K and V, every layer,
//! f32) times the context, which is why vLLM pages it into blocks and
//! shares prefixes, and why the engine's admission control budgets it.
//!
//! Every serving stack does this (vLLM's PagedAttention, llama.cpp's
//! `llama_kv_cache`, TGI, Hugging Face's `past_key_values`); what they add
//! on top is paging, prefix sharing, quantized (fp8/int8) caches and
//! eviction.

use super::decode_loop::{argmax, chat_tokens, load_default, Seq};
use anyhow::Result;
use hld::LessonReport;
use models::{Llama, WeightFormat};
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "kv-cache";
/// A short human title.
pub const TITLE: &str = "KV cache: recompute the prefix every step against one new token per step";

/// Prefix lengths at which a single step is timed.
const LENGTHS: [usize; 3] = [32, 128, 256];
/// Tokens generated from the chat prompt, both ways.
const GEN_TOKENS: usize = 24;
/// Timed repetitions of each step (the median is reported).
const REPS: usize = 3;

/// Greedy decoding without a cache: every step is a fresh forward over the
/// whole prefix. Returns the new tokens and the token rows computed.
pub fn generate_uncached(model: &Llama, prompt: &[u32], n: usize) -> Result<(Vec<u32>, usize)> {
    let mut ids = prompt.to_vec();
    let mut rows = 0;
    for _ in 0..n {
        let mut seq = Seq::new(model, ids.len());
        let next = argmax(&seq.feed(model, &ids, false)?);
        rows += ids.len();
        ids.push(next);
    }
    Ok((ids[prompt.len()..].to_vec(), rows))
}

/// Greedy decoding with the cache: one prefill, then one token per step.
/// Returns the new tokens and the token rows computed.
pub fn generate_cached(model: &Llama, prompt: &[u32], n: usize) -> Result<(Vec<u32>, usize)> {
    let mut seq = Seq::new(model, prompt.len() + n);
    let mut next = argmax(&seq.feed(model, prompt, false)?);
    let mut rows = prompt.len();
    let mut out = vec![next];
    while out.len() < n {
        next = argmax(&seq.feed(model, &[next], false)?);
        rows += 1;
        out.push(next);
    }
    Ok((out, rows))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds of one step at prefix length `len`: (uncached, cached).
fn step_ms(model: &Llama, text: &[u32], len: usize) -> Result<(f64, f64)> {
    let prefix = &text[..len];
    let mut naive = Vec::new();
    for _ in 0..REPS {
        let t = Instant::now();
        Seq::new(model, len).feed(model, prefix, false)?;
        naive.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut seq = Seq::new(model, len);
    seq.feed(model, &prefix[..len - 1], false)?;
    let mut cached = Vec::new();
    for _ in 0..REPS {
        seq.truncate(len - 1);
        let t = Instant::now();
        seq.feed(model, &prefix[len - 1..], false)?;
        cached.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(naive), median(cached)))
}

pub fn lesson(_seed: u64) -> Result<LessonReport> {
    let loaded = load_default(WeightFormat::Auto)?;
    let model = &loaded.model;
    let prompt = chat_tokens(&loaded, "Explain in two sentences why the sky is blue.")?;

    let t = Instant::now();
    let (naive_tokens, naive_rows) = generate_uncached(model, &prompt, GEN_TOKENS)?;
    let naive_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let (cached_tokens, cached_rows) = generate_cached(model, &prompt, GEN_TOKENS)?;
    let cached_ms = t.elapsed().as_secs_f64() * 1e3;
    let same = f64::from(naive_tokens == cached_tokens);

    // A long text for the per-length steps: the prompt and its answer,
    // repeated until it covers the longest length.
    let mut text = prompt.clone();
    text.extend(&cached_tokens);
    while text.len() < LENGTHS[LENGTHS.len() - 1] {
        text.extend_from_within(..prompt.len() + GEN_TOKENS);
    }

    let cfg = &model.cfg;
    let mut report = LessonReport::new(NAME, TITLE)
        .both("total_ms", naive_ms, cached_ms)
        .both("tokens_computed", naive_rows as f64, cached_rows as f64)
        .both("same_tokens", same, same)
        .both("generated_tokens", GEN_TOKENS as f64, GEN_TOKENS as f64)
        .optimal("kv_kb_per_token", cfg.kv_bytes_per_token() as f64 / 1024.0);
    let mut ratios = Vec::new();
    for len in LENGTHS {
        let (n, c) = step_ms(model, &text, len)?;
        report = report.both(&format!("ms_per_token_at_{len}"), n, c);
        ratios.push(format!("{:.0}x at {len}", n / c));
    }
    let answer = loaded.tokenizer.decode(&cached_tokens)?;
    Ok(report.notes(format!(
        "SmolLM2-135M ({}) greedily answered a {}-token chat prompt with {GEN_TOKENS} tokens \
         both ways (\"{}...\"); both gave the same tokens. Without the cache each step \
         recomputes the whole prefix, so its per-token time grows with the length; with \
         it a step is one token over the cached K/V: the cache saves {} per step. The \
         price is {:.0} KB of K/V per token of context. Sized down for a 2-core debug run: \
         {GEN_TOKENS} generated tokens and three prefix lengths, each step the median of \
         {REPS}.",
        loaded.weights,
        prompt.len(),
        answer.trim().chars().take(60).collect::<String>(),
        ratios.join(", "),
        cfg.kv_bytes_per_token() as f64 / 1024.0,
    )))
}

#[cfg(test)]
mod tests {
    use super::super::decode_loop::tiny_model;
    use super::*;

    #[test]
    fn cached_and_uncached_decoding_agree() {
        let m = tiny_model(3);
        let prompt = [1, 20, 33, 47, 5];
        let (a, rows_a) = generate_uncached(&m, &prompt, 8).unwrap();
        let (b, rows_b) = generate_cached(&m, &prompt, 8).unwrap();
        assert_eq!(a, b);
        // 5 + 6 + ... + 12 rows without the cache; 5 + 7 with it.
        assert_eq!(rows_a, (5..13).sum::<usize>());
        assert_eq!(rows_b, 12);
    }
}
