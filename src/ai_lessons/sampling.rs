//! Sampling: temperature, top-k and top-p on the real model's next-token
//! distribution.
//!
//! **The pattern.** A language model gives a probability for every one of
//! its ~49k tokens at every step; the sampler turns that distribution into
//! one token. How it does so decides whether the text is repetitive,
//! varied, or garbage, with the same weights.
//!
//! **The naive ways** are the two extremes. *Greedy* (temperature 0) always
//! takes the most likely token: deterministic and safe, but every run gives
//! the same text (`distinct_outputs_greedy` = 1, entropy 0) and long outputs
//! fall into loops. *Pure sampling* (temperature 1, no truncation) draws from
//! the whole vocabulary in proportion to the model's probabilities. The
//! model spreads a little mass over tens of thousands of unlikely tokens;
//! each is rare, but together they are drawn every few steps
//! (`tail_mass_beyond_rank_100`, `tail_token_share`), and one odd token
//! derails everything after it.
//!
//! **The optimal way** (here: temperature 0.7, top-k 40, top-p 0.9, the
//! defaults of many chat UIs) cuts the tail and sharpens the head:
//! temperature below 1 divides the logits (the likely get likelier), top-k
//! keeps the 40 most likely, top-p keeps the smallest set of those whose mass
//! reaches 0.9, and the draw is from what remains, renormalised. The output
//! still varies from run to run (`distinct_outputs` > 1), but from a
//! distribution of a few plausible tokens (`nucleus_size`,
//! `entropy_bits`), never from the tail, and the text the model itself finds
//! likelier (`mean_logprob`).
//!
//! There is no free lunch: "optimal" is a trade-off, not a winner. Lower
//! temperature and a tighter nucleus buy coherence with diversity; greedy
//! is right for extraction and code, where there is one right answer;
//! higher temperature suits brainstorming. What truncation removes for sure
//! is the long tail, which is almost never what anyone wants.
//!
//! Everything runs through sdlab's own sampler (`server::sampler::Sampler`,
//! the one the HTTP server uses, seeded per request): a few chat prompts,
//! several short completions per setting, all on the real model with its KV
//! cache. `entropy_bits` and `nucleus_size` describe the distribution the
//! sampler drew from at each step (after temperature and truncation);
//! `mean_logprob` and `tail_token_share` rate the drawn tokens under the
//! untouched model. vLLM, TGI, llama.cpp and the OpenAI API expose the same
//! knobs; llama.cpp adds min-p and more exotic samplers (mirostat, typical).

use super::decode_loop::{chat_tokens, load_default, Seq};
use anyhow::Result;
use hld::LessonReport;
use models::WeightFormat;
use server::sampler::{Sampler, SamplingParams};
use std::collections::HashSet;

/// The lesson's command-line name.
pub const NAME: &str = "sampling";
/// A short human title.
pub const TITLE: &str =
    "Sampling: greedy and pure temperature 1 against temperature 0.7 with top-k 40 and top-p 0.9";

/// Open-ended prompts, where there is more than one good answer.
const PROMPTS: [&str; 3] = [
    "Write the first line of a poem about the sea.",
    "Give me a name for a friendly robot.",
    "Describe a sunset in one sentence.",
];
/// Completions per prompt and setting.
const SAMPLES: usize = 5;
/// Tokens per completion.
const TOKENS: usize = 10;
/// Ranks beyond this count as the long tail.
const TAIL_RANK: usize = 100;

/// One sampling setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
}

impl Setting {
    fn params(self, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: Some(seed),
            max_tokens: TOKENS,
            ..SamplingParams::default()
        }
    }
}

const GREEDY: Setting = Setting {
    temperature: 0.0,
    top_k: 0,
    top_p: 1.0,
};
const PURE: Setting = Setting {
    temperature: 1.0,
    top_k: 0,
    top_p: 1.0,
};
const TUNED: Setting = Setting {
    temperature: 0.7,
    top_k: 40,
    top_p: 0.9,
};

/// The distribution a setting draws from, given one row of logits: the
/// kept tokens, most likely first, with their renormalised probabilities.
/// Mirrors the sampler's order (temperature, top-k, then top-p: a token is
/// kept while the mass before it is below `top_p`).
pub fn sampled_distribution(logits: &[f32], s: Setting) -> Vec<(u32, f64)> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if s.temperature <= 1e-5 {
        return vec![(order[0], 1.0)];
    }
    let max = f64::from(logits[order[0] as usize]);
    let t = f64::from(s.temperature);
    let k = if s.top_k == 0 {
        order.len()
    } else {
        s.top_k.min(order.len())
    };
    let mut kept: Vec<(u32, f64)> = order[..k]
        .iter()
        .map(|&i| (i, ((f64::from(logits[i as usize]) - max) / t).exp()))
        .collect();
    let total: f64 = kept.iter().map(|p| p.1).sum();
    if s.top_p < 1.0 {
        let target = f64::from(s.top_p) * total;
        let mut before = 0.0;
        let mut keep = 0;
        for (n, &(_, w)) in kept.iter().enumerate() {
            if n > 0 && before >= target {
                break;
            }
            before += w;
            keep = n + 1;
        }
        kept.truncate(keep);
    }
    let total: f64 = kept.iter().map(|p| p.1).sum();
    kept.iter().map(|&(i, w)| (i, w / total)).collect()
}

/// Entropy in bits of a distribution.
pub fn entropy_bits(dist: &[(u32, f64)]) -> f64 {
    dist.iter()
        .filter(|p| p.1 > 0.0)
        .map(|&(_, p)| -p * p.log2())
        .sum()
}

/// What one setting did over every prompt and sample.
#[derive(Debug, Default)]
struct Stats {
    entropy: f64,
    nucleus: f64,
    tail_mass: f64,
    steps: usize,
    tail_tokens: usize,
    logprob: f64,
    drawn: usize,
    distinct: f64,
}

/// Generates `SAMPLES` completions of each prompt with `s`, measuring each
/// step's distribution and each drawn token.
fn run_setting(
    loaded: &models::LoadedModel,
    prompts: &[Vec<u32>],
    s: Setting,
    seed: u64,
) -> Result<Stats> {
    let model = &loaded.model;
    let eos = &loaded.tokenizer.eos_token_ids;
    let mut st = Stats::default();
    for (p, prompt) in prompts.iter().enumerate() {
        let mut seq = Seq::new(model, prompt.len() + TOKENS);
        let first = seq.feed(model, prompt, false)?;
        let mut outputs = HashSet::new();
        for n in 0..SAMPLES {
            seq.truncate(prompt.len());
            let mut sampler = Sampler::new(s.params(seed ^ (p * 1000 + n) as u64), prompt);
            let mut logits = first.clone();
            let mut out = Vec::new();
            loop {
                let dist = sampled_distribution(&logits, s);
                st.entropy += entropy_bits(&dist);
                st.nucleus += dist.len() as f64;
                st.tail_mass += dist.iter().skip(TAIL_RANK).map(|d| d.1).sum::<f64>();
                st.steps += 1;
                let tok = sampler.sample(&logits).token_id;
                let l = logits[tok as usize];
                if logits.iter().filter(|&&x| x > l).count() >= TAIL_RANK {
                    st.tail_tokens += 1;
                }
                st.logprob += f64::from(l) - log_sum_exp(&logits);
                st.drawn += 1;
                out.push(tok);
                if out.len() == TOKENS || eos.contains(&tok) {
                    break;
                }
                logits = seq.feed(model, &[tok], false)?;
            }
            outputs.insert(out);
        }
        st.distinct += outputs.len() as f64;
    }
    Ok(st)
}

fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    f64::from(m) + x.iter().map(|&v| f64::from(v - m).exp()).sum::<f64>().ln()
}

/// Adds one setting's metrics to a side of the report, names ending in `suffix`.
fn put(r: LessonReport, naive: bool, suffix: &str, st: &Stats, prompts: usize) -> LessonReport {
    let steps = st.steps as f64;
    let drawn = st.drawn as f64;
    let metrics = [
        ("entropy_bits", st.entropy / steps),
        ("nucleus_size", st.nucleus / steps),
        ("tail_mass_beyond_rank_100", st.tail_mass / steps),
        ("tail_token_share", st.tail_tokens as f64 / drawn),
        ("mean_logprob", st.logprob / drawn),
        ("distinct_outputs", st.distinct / prompts as f64),
    ];
    metrics.into_iter().fold(r, |r, (name, v)| {
        let name = format!("{name}{suffix}");
        if naive {
            r.naive(&name, v)
        } else {
            r.optimal(&name, v)
        }
    })
}

pub fn lesson(seed: u64) -> Result<LessonReport> {
    let loaded = load_default(WeightFormat::Auto)?;
    let prompts = PROMPTS
        .iter()
        .map(|p| chat_tokens(&loaded, p))
        .collect::<Result<Vec<_>>>()?;
    let greedy = run_setting(&loaded, &prompts, GREEDY, seed)?;
    let pure = run_setting(&loaded, &prompts, PURE, seed)?;
    let tuned = run_setting(&loaded, &prompts, TUNED, seed)?;
    let n = prompts.len();
    let report = LessonReport::new(NAME, TITLE);
    let report = put(report, true, "_greedy", &greedy, n);
    let report = put(report, true, "", &pure, n);
    let report = put(report, false, "", &tuned, n);
    Ok(report.notes(format!(
        "SmolLM2-135M, {n} open-ended chat prompts, {SAMPLES} completions of up to {TOKENS} \
         tokens each per setting, drawn by sdlab's sampler (the server's). Naive: the `_greedy` \
         rows are temperature 0 (one output per prompt, entropy 0) and the unsuffixed rows pure \
         temperature 1 over the whole vocabulary ({:.0} tokens in play per step, {:.1}% of the \
         mass beyond rank {TAIL_RANK}). Optimal: temperature 0.7, top-k 40, top-p 0.9 keeps \
         {:.1} tokens per step, never samples the tail, and still varies ({:.1} distinct outputs \
         of {SAMPLES} per prompt) with a higher mean log-probability under the model. It is a \
         trade-off, not a free win: less diversity for fewer derailments. Sized down: {TOKENS} \
         tokens per completion.",
        pure.nucleus / pure.steps as f64,
        100.0 * pure.tail_mass / pure.steps as f64,
        tuned.nucleus / tuned.steps as f64,
        tuned.distinct / n as f64,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..500).map(|i| -(i as f32) * 0.05).collect()
    }

    #[test]
    fn greedy_is_one_token_with_no_entropy() {
        let d = sampled_distribution(&logits(), GREEDY);
        assert_eq!(d, vec![(0, 1.0)]);
        assert_eq!(entropy_bits(&d), 0.0);
    }

    #[test]
    fn truncation_shrinks_the_support_and_the_entropy() {
        let pure = sampled_distribution(&logits(), PURE);
        let tuned = sampled_distribution(&logits(), TUNED);
        assert_eq!(pure.len(), 500);
        assert!(tuned.len() <= 40);
        assert!(entropy_bits(&tuned) < entropy_bits(&pure));
        for d in [&pure, &tuned] {
            assert!((d.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }

    /// The sampler never draws a token outside the distribution computed
    /// here, and over many draws it reaches more than one of them.
    #[test]
    fn the_server_sampler_draws_inside_the_computed_support() {
        let l: Vec<f32> = (0..300).map(|i| ((i * 37 % 101) as f32) * 0.04).collect();
        let support: HashSet<u32> = sampled_distribution(&l, TUNED)
            .iter()
            .map(|p| p.0)
            .collect();
        let mut seen = HashSet::new();
        let mut sampler = Sampler::new(TUNED.params(1), &[]);
        for _ in 0..2000 {
            let t = sampler.sample(&l).token_id;
            assert!(support.contains(&t), "{t} is outside the nucleus");
            seen.insert(t);
        }
        assert!(seen.len() > 1);
    }

    #[test]
    fn entropy_of_a_uniform_distribution_is_log2_n() {
        let d: Vec<(u32, f64)> = (0..8).map(|i| (i, 0.125)).collect();
        assert!((entropy_bits(&d) - 3.0).abs() < 1e-12);
    }
}
