//! Speculative decoding by prompt lookup (n-gram drafts), as the engine
//! runs it.
//!
//! A decode step reads every weight to produce one token per sequence. If
//! the next few tokens can be *guessed* for free, the model can check the
//! guesses in the same pass: the step feeds the last token plus the draft,
//! gets logits at every position, and keeps each drafted token while it
//! equals what the sampler draws there. At the first mismatch the sampler's
//! own token is kept instead, so every step yields at least one token and up
//! to `1 + draft`.
//!
//! The guess here costs no model: [`propose`] looks for the latest earlier
//! occurrence of the context's last n-gram (n from `prompt_lookup_max` down
//! to `prompt_lookup_min`) and drafts what followed it. Outputs that copy
//! their input (editing code, quoting retrieved passages, filling a JSON
//! template) repeat long runs, and those are drafted right.
//!
//! Why the output does not change: the engine draws each position with the
//! request's own [`crate::sampler::Sampler`] in order, exactly as plain
//! decoding would (same penalties, same random stream), and stops at the
//! first draw that differs from the draft. A draft token is kept only when
//! it *is* the token plain decoding would have drawn, so greedy output is
//! identical and seeded sampling draws the same tokens. (For a one-token
//! proposal, "draw and compare" accepts with probability p(draft) and, on a
//! miss, returns a draw from p without the draft: the same law as the
//! rejection rule of Leviathan et al.) K/V written for rejected drafts lie
//! beyond the sequence's computed length: attention never reads them and
//! the next step overwrites them.
//!
//! The scheduler ([`crate::scheduler`]) asks for a draft when it schedules a
//! decode, counts the drafted tokens against the step's token budget, and
//! never drafts past `max_tokens`; vLLM's `ngram` method works the same way.

use crate::sampler::{SampledToken, Sampler};

/// The `--num-speculative-tokens` / `--prompt-lookup-*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgramConfig {
    /// Most tokens drafted per step (`k`); 0 turns speculation off.
    pub num_speculative_tokens: usize,
    /// Longest n-gram looked up.
    pub prompt_lookup_max: usize,
    /// Shortest n-gram looked up. A lone repeated token (a space, a bracket)
    /// predicts its follower badly, so 2 is a sane floor.
    pub prompt_lookup_min: usize,
}

impl Default for NgramConfig {
    fn default() -> Self {
        Self {
            num_speculative_tokens: 4,
            prompt_lookup_max: 3,
            prompt_lookup_min: 2,
        }
    }
}

impl NgramConfig {
    /// Checks the settings, naming the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_speculative_tokens == 0 {
            return Err("--num-speculative-tokens must be positive to speculate".into());
        }
        if self.prompt_lookup_min == 0 || self.prompt_lookup_min > self.prompt_lookup_max {
            return Err(format!(
                "need 1 <= --prompt-lookup-min ({}) <= --prompt-lookup-max ({})",
                self.prompt_lookup_min, self.prompt_lookup_max
            ));
        }
        Ok(())
    }
}

/// Proposes up to `k` tokens: what followed the latest earlier occurrence of
/// the context's last `n`-gram, trying `n = max_ngram` down to `min_ngram`.
/// Empty when nothing repeats.
pub fn propose(ctx: &[u32], k: usize, min_ngram: usize, max_ngram: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
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

/// Samples one sequence's logits rows in order, as plain decoding would one
/// step at a time, handing each token to `keep`: row `i` verifies draft
/// token `i`, and sampling stops after the first token that differs from the
/// draft, ends the request (an `eos` id unless ignored, a stop token) or
/// reaches the `left` tokens it may still generate. Returns how many draft
/// tokens were accepted. Without a draft this samples the one row.
pub fn verify(
    sampler: &mut Sampler,
    draft: &[u32],
    rows: &[&[f32]],
    left: usize,
    eos: &[u32],
    mut keep: impl FnMut(SampledToken),
) -> usize {
    let mut accepted = 0;
    for (i, row) in rows.iter().take(left).enumerate() {
        let tok = sampler.sample(row);
        let id = tok.token_id;
        keep(tok);
        let ends = sampler.params().is_stop_token(id, eos);
        let matched = draft.get(i) == Some(&id);
        accepted += usize::from(matched);
        if !matched || ends {
            break;
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propose_copies_what_followed_the_longest_latest_match() {
        // "1 2 3 9 9 | 1 2 3 7 8 | 1 2 3": the latest earlier "1 2 3" is
        // followed by 7 8 1 2 3.
        let ctx = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 1, 2, 3];
        assert_eq!(propose(&ctx, 3, 1, 3), vec![7, 8, 1]);
        assert_eq!(propose(&ctx, 10, 1, 3), vec![7, 8, 1, 2, 3]);
        assert!(propose(&ctx, 0, 1, 3).is_empty());
        // Only the last token matches: a 1-gram lookup.
        assert_eq!(propose(&[5, 6, 4, 5], 2, 1, 3), vec![6, 4]);
        // Nothing repeats: no draft.
        assert!(propose(&[1, 2, 3, 4], 4, 1, 3).is_empty());
        assert!(propose(&[], 4, 1, 3).is_empty());
        // With 2-grams at least, a lone repeated token drafts nothing.
        assert!(propose(&[5, 6, 4, 5], 2, 2, 3).is_empty());
    }

    /// Greedy verification over hand-made logits rows: keep the draft while
    /// the argmax agrees, then the model's own token; stop at EOS and at the
    /// token limit.
    #[test]
    fn verify_keeps_the_agreeing_prefix_then_the_models_token() {
        let onehot = |t: usize| {
            let mut r = vec![0.0f32; 8];
            r[t] = 1.0;
            r
        };
        let rows: Vec<Vec<f32>> = [3, 4, 6, 1].into_iter().map(onehot).collect();
        let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let params = crate::sampler::SamplingParams::greedy(16);
        let run = |draft: &[u32], left: usize, eos: &[u32]| {
            let mut sampler = Sampler::new(params.clone(), &[]);
            let mut kept = Vec::new();
            let accepted = verify(&mut sampler, draft, &rows, left, eos, |t| {
                kept.push(t.token_id)
            });
            (accepted, kept)
        };
        // Draft 3 4 5: two agree, the third is replaced by the model's 6.
        assert_eq!(run(&[3, 4, 5], 16, &[]), (2, vec![3, 4, 6]));
        // All agree: the row after the draft gives a bonus token.
        assert_eq!(run(&[3, 4, 6], 16, &[]), (3, vec![3, 4, 6, 1]));
        // No draft: one token.
        assert_eq!(run(&[], 16, &[]), (0, vec![3]));
        // An accepted EOS ends the request; so does the token limit.
        assert_eq!(run(&[3, 4, 6], 16, &[4]), (2, vec![3, 4]));
        assert_eq!(run(&[3, 4, 6], 2, &[]), (2, vec![3, 4]));
    }

    #[test]
    fn config_checks_name_the_flag() {
        assert!(NgramConfig::default().validate().is_ok());
        let zero = NgramConfig {
            num_speculative_tokens: 0,
            ..NgramConfig::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .contains("num-speculative-tokens"));
        let inverted = NgramConfig {
            prompt_lookup_min: 4,
            prompt_lookup_max: 2,
            ..NgramConfig::default()
        };
        assert!(inverted
            .validate()
            .unwrap_err()
            .contains("prompt-lookup-min"));
    }
}
