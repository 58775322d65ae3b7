//! The decoding loop the model-level AI lessons share: the real default
//! model, one sequence with its own paged KV cache, and greedy decoding over
//! `models::Llama::forward`.
//!
//! The engine (`server::engine`) does the same with a scheduler, a block
//! manager and many sequences; the lessons need one sequence and full
//! control of the cache position (the KV-cache lesson throws the cache away
//! and rolls it back), so they drive the model directly.

use anyhow::{Context, Result};
use models::{ChatMessage, ChatTemplate, KvCache, Llama, LoadOptions, SeqChunk, WeightFormat};

/// Tokens per KV block (the engine's default).
const BLOCK_SIZE: usize = 16;

/// Loads the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) in `weights`.
pub fn load_default(weights: WeightFormat) -> Result<models::LoadedModel> {
    models::load(models::loader::DEFAULT_MODEL, LoadOptions { weights })
        .context("the AI lessons run the default model (`make models` fetches it)")
}

/// `user` as one chat turn in the model's template, tokenized.
pub fn chat_tokens(loaded: &models::LoadedModel, user: &str) -> Result<Vec<u32>> {
    let tok = &loaded.tokenizer;
    let text = match &tok.chat_template {
        Some(src) => ChatTemplate::new(src, tok.bos_token(), tok.eos_token())?
            .render(&[ChatMessage::new("user", user)], true)?,
        None => user.to_string(),
    };
    Ok(tok.encode(&text)?)
}

/// One sequence: a KV cache of its own, the block table over all of it,
/// and how many positions hold valid K/V.
pub struct Seq {
    cache: KvCache,
    table: Vec<u32>,
    len: usize,
}

impl Seq {
    /// A sequence that can hold up to `capacity` tokens.
    pub fn new(model: &Llama, capacity: usize) -> Self {
        let blocks = capacity.div_ceil(BLOCK_SIZE).max(1);
        Self {
            cache: KvCache::new(&model.cfg, blocks, BLOCK_SIZE),
            table: (0..blocks as u32).collect(),
            len: 0,
        }
    }

    /// Positions with valid K/V.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Runs `tokens` at positions `len..len + tokens.len()` in one forward
    /// pass and returns the logits of every new position (`all`) or only the
    /// last, row-major `[rows, vocab]`.
    pub fn feed(&mut self, model: &Llama, tokens: &[u32], all: bool) -> Result<Vec<f32>> {
        anyhow::ensure!(!tokens.is_empty(), "feed needs at least one token");
        anyhow::ensure!(
            self.len + tokens.len() <= self.cache.capacity_tokens(),
            "sequence of {} tokens is over its capacity of {}",
            self.len + tokens.len(),
            self.cache.capacity_tokens()
        );
        let rows: Vec<usize> = if all {
            (0..tokens.len()).collect()
        } else {
            vec![tokens.len() - 1]
        };
        let chunk = SeqChunk {
            block_table: &self.table,
            start: self.len,
            len: tokens.len(),
            adapter: None,
        };
        let logits = model.forward(tokens, &[chunk], &rows, &mut self.cache)?;
        self.len += tokens.len();
        Ok(logits)
    }

    /// Forgets every position from `len` on. Attention reads only the first
    /// `start + len` positions of a chunk, and the next feed overwrites the
    /// slots, so moving the length back is the whole rollback: the cache is
    /// then exactly what it was after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// The most likely token (ties to the lowest id, as the server's sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Plain greedy decoding with the KV cache: one prefill, then one forward
/// pass per new token. Returns the `n` new tokens. (The reference
/// [`greedy_batch`] is tested against.)
#[cfg(test)]
pub fn greedy(model: &Llama, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut seq = Seq::new(model, prompt.len() + n);
    let mut next = argmax(&seq.feed(model, prompt, false)?);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next);
        if out.len() < n {
            next = argmax(&seq.feed(model, &[next], false)?);
        }
    }
    Ok(out)
}

/// Greedy decoding of several prompts at once: one batched prefill, then
/// one forward pass per step over every sequence still running. A sequence
/// stops after `n` new tokens or at a token of `stop` (kept in its output).
/// Each gets the tokens [`greedy`] gives it alone (the kernels compute every
/// row the same whatever the batch).
pub fn greedy_batch(
    model: &Llama,
    prompts: &[Vec<u32>],
    n: usize,
    stop: &[u32],
) -> Result<Vec<Vec<u32>>> {
    anyhow::ensure!(
        prompts.iter().all(|p| !p.is_empty()),
        "every prompt needs a token"
    );
    // Each sequence owns a contiguous run of blocks in one shared cache.
    let per_seq: Vec<usize> = prompts
        .iter()
        .map(|p| (p.len() + n).div_ceil(BLOCK_SIZE).max(1))
        .collect();
    let mut cache = KvCache::new(&model.cfg, per_seq.iter().sum::<usize>().max(1), BLOCK_SIZE);
    let mut tables = Vec::with_capacity(prompts.len());
    let mut first = 0u32;
    for &b in &per_seq {
        tables.push((first..first + b as u32).collect::<Vec<u32>>());
        first += b as u32;
    }
    let vocab = model.cfg.vocab_size;
    let mut out: Vec<Vec<u32>> = vec![Vec::with_capacity(n); prompts.len()];
    let mut lens: Vec<usize> = vec![0; prompts.len()];
    // The batch's new tokens per sequence: the prompts, then one each.
    let mut feed: Vec<(usize, Vec<u32>)> = prompts.iter().cloned().enumerate().collect();
    while !feed.is_empty() && n > 0 {
        let tokens: Vec<u32> = feed.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let mut rows = Vec::with_capacity(feed.len());
        let mut chunks = Vec::with_capacity(feed.len());
        let mut at = 0;
        for (i, t) in &feed {
            chunks.push(SeqChunk {
                block_table: &tables[*i],
                start: lens[*i],
                len: t.len(),
                adapter: None,
            });
            at += t.len();
            rows.push(at - 1);
        }
        let logits = model.forward(&tokens, &chunks, &rows, &mut cache)?;
        let mut next = Vec::with_capacity(feed.len());
        for (r, (i, t)) in feed.iter().enumerate() {
            lens[*i] += t.len();
            let tok = argmax(&logits[r * vocab..][..vocab]);
            out[*i].push(tok);
            if out[*i].len() < n && !stop.contains(&tok) {
                next.push((*i, vec![tok]));
            }
        }
        feed = next;
    }
    Ok(out)
}

/// The `tiny` synthetic model (random weights, 384 tokens), written to a
/// scratch folder and loaded, for unit tests that need no download.
#[cfg(test)]
pub fn tiny_model(seed: u64) -> Llama {
    synth_model("tiny", seed)
}

/// A synthetic model of `preset` (`tiny` or `small`), for unit tests.
#[cfg(test)]
pub fn synth_model(preset: &str, seed: u64) -> Llama {
    let dir = std::env::temp_dir().join(format!(
        "sdlab-ai-lessons-{}-{preset}-{seed}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let preset = models::synth::SynthPreset::by_name(preset).unwrap();
    models::synth::write_synthetic_model(&dir, &preset, seed).unwrap();
    let loaded = models::load(dir.to_str().unwrap(), LoadOptions::default()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    loaded.model
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rolling back and feeding other tokens gives the same logits as a
    /// sequence that never saw the rolled-back ones.
    #[test]
    fn truncate_then_feed_equals_a_fresh_sequence() {
        let m = tiny_model(1);
        let mut a = Seq::new(&m, 64);
        a.feed(&m, &[5, 6, 7, 8], false).unwrap();
        a.feed(&m, &[100, 101, 102], true).unwrap();
        a.truncate(4);
        assert_eq!(a.len(), 4);
        let la = a.feed(&m, &[9, 10], true).unwrap();
        let mut b = Seq::new(&m, 64);
        let lb = b.feed(&m, &[5, 6, 7, 8, 9, 10], true).unwrap();
        let vocab = m.cfg.vocab_size;
        assert_eq!(la, lb[4 * vocab..].to_vec());
    }

    /// Batched greedy gives each prompt what plain greedy gives it alone,
    /// and a stop token ends only its own sequence.
    #[test]
    fn greedy_batch_equals_greedy_alone() {
        let m = tiny_model(3);
        let prompts = vec![vec![5, 6, 7], vec![9; 20], vec![42]];
        let alone: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(&m, p, 6).unwrap()).collect();
        assert_eq!(greedy_batch(&m, &prompts, 6, &[]).unwrap(), alone);
        let stop = alone[1][2];
        let cut = greedy_batch(&m, &prompts, 6, &[stop]).unwrap();
        for (c, a) in cut.iter().zip(&alone) {
            let end = a.iter().position(|&t| t == stop).map_or(a.len(), |p| p + 1);
            assert_eq!(c, &a[..end]);
        }
        assert!(cut[1].len() <= 3);
    }

    #[test]
    fn feeding_past_capacity_is_an_error() {
        let m = tiny_model(2);
        let mut s = Seq::new(&m, 16);
        assert!(s.feed(&m, &[1; 17], false).is_err());
    }

    #[test]
    fn argmax_takes_the_lowest_id_on_ties() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
        assert_eq!(argmax(&[5.0]), 0);
    }
}
