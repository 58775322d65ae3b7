//! Speculative decoding with prompt lookup: draft tokens by copying from
//! the context, verify them in one forward pass, keep the output unchanged.
//!
//! **The pattern.** Single-stream decode is bound by reading the weights:
//! a forward pass over one token costs nearly as much as one over a few,
//! because the weights are read once either way. So if we can *guess* the
//! next few tokens cheaply, the model can check all the guesses in one pass
//! and, when they are right, several tokens come out of one weight read.
//!
//! **The naive way** is plain greedy decoding over sdlab's paged KV cache:
//! one forward pass per generated token (`forward_passes` = tokens).
//!
//! **The optimal way** drafts with *prompt lookup* (no second model): take
//! the last 3 tokens of the text so far (then the last 2), find their latest
//! earlier occurrence in the prompt or output, and propose the up to `k`
//! tokens that followed it. Outputs that copy from their input (rewriting
//! code, editing or summarising a given text, answering from retrieved
//! passages) are full of such repeats. The step then feeds the last token
//! *and* the draft as one chunk, asks `Llama::forward` for the logits at
//! every position of the chunk (its `logit_rows`), and walks the draft:
//! each drafted token is accepted while it equals the model's own greedy
//! choice at that position; at the first mismatch the model's choice is
//! taken instead. So every pass yields at least one token (the model's own)
//! and up to `k + 1`. The K/V written for rejected tokens are rolled back by
//! moving the sequence length back (`Seq::truncate`): attention reads only
//! positions below it and the next pass overwrites the slots, so the cache
//! ends exactly as plain greedy would leave it, and the output is the same
//! token for token (`same_output` = 1, checked every run). Speculation
//! changes the cost, never the result (for sampling, the accept rule becomes
//! a probability ratio test that keeps the distribution exact).
//!
//! **The numbers.** `forward_passes` (fewer is the point), `acceptance_rate`
//! (accepted drafted tokens over drafted), `tokens_per_pass`,
//! `tokens_per_s` and `speedup` (plain time over speculative time). A pass
//! over a chunk costs more than a one-token pass, so the wall-clock gain is
//! smaller than the pass count suggests: on this CPU a 5-token chunk costs
//! about 1.8 one-token passes. On text that repeats nothing the drafts are
//! rejected and speculation costs time (asked to repeat a sentence, the small
//! model paraphrases it instead, and the lookup drafts from the original).
//!
//! Where it lives: this decoding loop drives the model API directly; it is
//! not yet an option of the server's engine (the scheduler would have to
//! reserve `k` extra slots per sequence and free rejected ones). vLLM
//! (`ngram` speculative method), llama.cpp (`lookup` and draft models),
//! TGI (Medusa, n-gram) and Hugging Face (`prompt_lookup_num_tokens`) ship
//! the same idea; draft models, Medusa heads and EAGLE guess better on text
//! that does not repeat its input.

use super::decode_loop::{argmax, chat_tokens, greedy, load_default, Seq};
use anyhow::Result;
use hld::LessonReport;
use models::{Llama, WeightFormat};
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "speculative-decoding";
/// A short human title.
pub const TITLE: &str =
    "Speculative decoding: prompt-lookup drafts verified in one pass against one token per pass";

/// Most tokens drafted per step.
const DRAFT: usize = 4;
/// Longest n-gram looked up.
const MAX_NGRAM: usize = 3;
/// Shortest n-gram looked up: a single repeated token (a space, a bracket)
/// predicts its follower badly, and a rejected draft still costs its share
/// of the verification pass.
const MIN_NGRAM: usize = 2;
/// Tokens generated per prompt.
const TOKENS: usize = 48;

/// Prompts whose answers copy from the prompt.
const PROMPTS: [&str; 3] = [
    "Rename the function `area` to `rect_area` in this code and print the whole code again:\n\
     ```python\ndef area(width, height):\n    return width * height\n\n\
     def describe(width, height):\n    a = area(width, height)\n    \
     return f\"{width} by {height} has area {a}\"\n```",
    "Change the age to 31 in this JSON and print the whole JSON again:\n\
     {\"name\": \"Ada\", \"age\": 30, \"city\": \"London\", \"languages\": [\"English\", \"French\"], \"active\": true}",
    "Fix the typo in this code and print the whole code again:\n```rust\nfn main() {\n    let nums = vec![1, 2, 3];\n    let total: i32 = nums.iter().sum();\n    printn!(\"total = {}\", total);\n}\n```",
];

/// Proposes up to `k` tokens: what followed the latest earlier occurrence
/// of the context's last `n`-gram, trying `n = max_ngram` down to `min_ngram`.
pub fn draft(ctx: &[u32], k: usize, min_ngram: usize, max_ngram: usize) -> Vec<u32> {
    for n in (min_ngram.max(1)..=max_ngram).rev() {
        if ctx.len() <= n {
            continue;
        }
        let tail = &ctx[ctx.len() - n..];
        // Latest start `j` with ctx[j..j + n] == tail, ending before the tail.
        if let Some(j) = (0..ctx.len() - n).rev().find(|&j| &ctx[j..j + n] == tail) {
            let from = j + n;
            return ctx[from..(from + k).min(ctx.len())].to_vec();
        }
    }
    Vec::new()
}

/// What one speculative run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpecStats {
    pub forward_passes: usize,
    pub drafted: usize,
    pub accepted: usize,
}

/// Greedy decoding of `n` tokens with prompt-lookup speculation. Returns
/// the tokens, the counts, and the sequence (its cache holds the prompt and
/// the first `n - 1` new tokens, as plain greedy's does).
pub fn speculative(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    k: usize,
) -> Result<(Vec<u32>, SpecStats, Seq)> {
    let mut seq = Seq::new(model, prompt.len() + n + k);
    let mut stats = SpecStats {
        forward_passes: 1,
        ..SpecStats::default()
    };
    let mut next = argmax(&seq.feed(model, prompt, false)?);
    let mut ctx = prompt.to_vec();
    let vocab = model.cfg.vocab_size;
    loop {
        ctx.push(next);
        let done = ctx.len() - prompt.len();
        if done == n {
            break;
        }
        // Accepting every drafted token and then the model's own must not
        // go past `n`, so the cache ends where plain greedy's does.
        let d = draft(&ctx, k.min(n - done - 1), MIN_NGRAM, MAX_NGRAM);
        let mut chunk = vec![next];
        chunk.extend(&d);
        let logits = seq.feed(model, &chunk, true)?;
        stats.forward_passes += 1;
        stats.drafted += d.len();
        let mut accepted = 0;
        while accepted < d.len() && argmax(&logits[accepted * vocab..][..vocab]) == d[accepted] {
            accepted += 1;
        }
        stats.accepted += accepted;
        ctx.extend(&d[..accepted]);
        next = argmax(&logits[accepted * vocab..][..vocab]);
        // Roll back the rejected drafts' K/V: the cache now holds exactly
        // the accepted context (`next` is fed by the next pass).
        seq.truncate(ctx.len());
        debug_assert_eq!(seq.len(), ctx.len());
    }
    Ok((ctx[prompt.len()..].to_vec(), stats, seq))
}

pub fn lesson(_seed: u64) -> Result<LessonReport> {
    let loaded = load_default(WeightFormat::Auto)?;
    let model = &loaded.model;
    let (mut plain_s, mut spec_s, mut tokens) = (0.0, 0.0, 0);
    let mut stats = SpecStats::default();
    let mut plain_passes = 0;
    let mut same = true;
    let mut example = String::new();
    for p in PROMPTS {
        let prompt = chat_tokens(&loaded, p)?;
        let t = Instant::now();
        let plain = greedy(model, &prompt, TOKENS)?;
        plain_s += t.elapsed().as_secs_f64();
        plain_passes += TOKENS;
        let t = Instant::now();
        let (spec, s, _) = speculative(model, &prompt, TOKENS, DRAFT)?;
        spec_s += t.elapsed().as_secs_f64();
        same &= spec == plain;
        tokens += TOKENS;
        stats.forward_passes += s.forward_passes;
        stats.drafted += s.drafted;
        stats.accepted += s.accepted;
        if example.is_empty() {
            example = loaded.tokenizer.decode(&spec)?;
        }
    }
    anyhow::ensure!(same, "speculative output differs from plain greedy");
    let same = f64::from(same);
    let acceptance = stats.accepted as f64 / stats.drafted.max(1) as f64;
    Ok(LessonReport::new(NAME, TITLE)
        .both("tokens", tokens as f64, tokens as f64)
        .both(
            "forward_passes",
            plain_passes as f64,
            stats.forward_passes as f64,
        )
        .both(
            "tokens_per_pass",
            1.0,
            tokens as f64 / stats.forward_passes as f64,
        )
        .both(
            "tokens_per_s",
            tokens as f64 / plain_s,
            tokens as f64 / spec_s,
        )
        .both("same_output", same, same)
        .optimal("acceptance_rate", acceptance)
        .optimal("drafted_tokens", stats.drafted as f64)
        .optimal("speedup", plain_s / spec_s)
        .notes(format!(
            "SmolLM2-135M (Q4_1), {} prompts whose answers copy from the prompt (rename a \
             function, edit a JSON value, fix a typo in code), {TOKENS} greedy tokens each. \
             Drafts of up to {DRAFT} tokens by {MAX_NGRAM}..{MIN_NGRAM}-gram prompt lookup, verified in one forward \
             pass with logits at every position; {:.0}% of drafted tokens were accepted and \
             the output is identical to plain greedy, token for token. A chunk costs more than a one-token pass, so the \
             speed-up is smaller than the saving in passes. The first answer \
             begins: \"{}...\". This loop drives the model API directly; the server's engine \
             does not speculate yet. Sized down: {TOKENS} tokens per prompt.",
            PROMPTS.len(),
            100.0 * acceptance,
            example
                .trim()
                .chars()
                .take(70)
                .collect::<String>()
                .replace('\n', " "),
        )))
}

#[cfg(test)]
mod tests {
    use super::super::decode_loop::tiny_model;
    use super::*;

    #[test]
    fn draft_copies_what_followed_the_longest_latest_match() {
        // "1 2 3 9 9 | 1 2 3 7 8 | 1 2 3": the latest earlier "1 2 3" is
        // followed by 7 8 1 2 3.
        let ctx = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 1, 2, 3];
        assert_eq!(draft(&ctx, 3, 1, 3), vec![7, 8, 1]);
        assert_eq!(draft(&ctx, 10, 1, 3), vec![7, 8, 1, 2, 3]);
        // Only the last token matches: a 1-gram lookup.
        assert_eq!(draft(&[5, 6, 4, 5], 2, 1, 3), vec![6, 4]);
        // Nothing repeats: no draft.
        assert!(draft(&[1, 2, 3, 4], 4, 1, 3).is_empty());
        assert!(draft(&[], 4, 1, 3).is_empty());
        // With 2-grams at least, a lone repeated token drafts nothing.
        assert!(draft(&[5, 6, 4, 5], 2, 2, 3).is_empty());
    }

    /// On a random model (drafts mostly rejected) and on a repetitive
    /// prompt, speculation gives plain greedy's tokens and leaves the cache
    /// where plain greedy does: the next step's logits are equal.
    #[test]
    fn speculative_output_and_cache_equal_plain_greedy() {
        let m = tiny_model(5);
        let prompts: [&[u32]; 2] = [
            &[1, 7, 9, 11, 13, 17],
            &[4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5],
        ];
        for prompt in prompts {
            for n in [1, 2, 9, 20] {
                let plain = greedy(&m, prompt, n).unwrap();
                let (spec, stats, mut seq) = speculative(&m, prompt, n, 4).unwrap();
                assert_eq!(spec, plain, "prompt {prompt:?}, n {n}");
                assert!(stats.forward_passes <= n);
                assert!(stats.accepted <= stats.drafted);
                assert_eq!(seq.len(), prompt.len() + n - 1);
                let mut plain_seq = Seq::new(&m, prompt.len() + n + 1);
                let mut all = prompt.to_vec();
                all.extend(&plain[..n - 1]);
                plain_seq.feed(&m, &all, false).unwrap();
                let last = plain[n - 1];
                assert_eq!(
                    seq.feed(&m, &[last], false).unwrap(),
                    plain_seq.feed(&m, &[last], false).unwrap()
                );
            }
        }
    }

    /// Greedy text from small random models falls into loops, which prompt
    /// lookup drafts correctly: fewer passes than tokens, same output.
    #[test]
    fn accepted_drafts_save_forward_passes() {
        let mut saved = 0;
        for seed in 6..10 {
            let m = tiny_model(seed);
            let prompt = [3u32, 8, 2, 9];
            let (spec, stats, _) = speculative(&m, &prompt, 64, 4).unwrap();
            assert_eq!(spec, greedy(&m, &prompt, 64).unwrap());
            assert!(stats.forward_passes <= 64, "{stats:?}");
            if stats.accepted > 0 {
                assert!(stats.forward_passes < 64, "{stats:?}");
                saved += 1;
            }
        }
        assert!(saved > 0, "no random model repeated itself");
    }
}
