//! Token sampling: turns one row of logits into the next token of a request.
//!
//! Every request carries [`SamplingParams`] (validated once, at admission, so
//! bad values become an HTTP 400 rather than a panic mid-batch) and owns a
//! [`Sampler`], which holds the per-request state the step loop must not
//! share: the RNG (so a seeded request is reproducible no matter what else is
//! in the batch) and the counts of tokens generated so far (for penalties).
//!
//! The pipeline for one step, in order:
//!
//! 1. **Penalties**, on a copy of the logits: the HF-style repetition penalty
//!    over prompt + output, then OpenAI-style presence and frequency penalties
//!    over the output only.
//! 2. **Logprobs** (if requested) are the log-softmax of these *penalized*
//!    logits at temperature 1, before temperature, top-k, top-p and min-p.
//!    They describe the model's (penalized) distribution, not the truncated one
//!    we draw from, so a token outside the nucleus still gets a finite logprob.
//! 3. **Choice**: temperature 0 is an exact argmax (ties go to the lowest id).
//!    Otherwise: scale by 1/T, keep the top-k (a partial selection, no full
//!    sort), then the top-p nucleus (a sort, only of what top-k left), then
//!    min-p, renormalize and draw with a single uniform `f64` from the RNG, so
//!    the same seed and the same logits always give the same token.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Temperatures below this are treated as greedy: dividing by them would only
/// turn the softmax into an argmax with extra floating-point risk.
const GREEDY_TEMPERATURE: f32 = 1e-5;
/// Largest temperature [`SamplingParams::validate`] accepts (messages say 100).
const MAX_TEMPERATURE: f32 = 100.0;
/// Largest number of alternatives a request may ask logprobs for (messages
/// say 20).
pub const MAX_LOGPROBS: usize = 20;

/// How one request wants its tokens chosen and when it wants to stop.
///
/// Missing fields deserialize to their [`Default`] values, so a request body
/// only has to name what it changes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax, ties to the lowest id).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches top_p;
    /// 1.0 disables.
    pub top_p: f32,
    /// Keep tokens with `p >= min_p * p_max`; 0.0 disables.
    pub min_p: f32,
    /// Subtracted once from the logit of every token already in the output.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the output.
    pub frequency_penalty: f32,
    /// HF repetition penalty over prompt + output: positive logits are
    /// divided by it, negative ones multiplied; 1.0 disables.
    pub repetition_penalty: f32,
    /// Seed for the request's RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Largest number of tokens to generate.
    pub max_tokens: usize,
    /// Stop strings; the output ends before the first one that appears.
    pub stop: Vec<String>,
    /// Token ids that end the request (in addition to EOS).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past EOS (until `max_tokens` or a stop).
    pub ignore_eos: bool,
    /// `None`: no logprobs. `Some(n)`: the chosen token's logprob plus the
    /// `n` most likely alternatives (`n` may be 0).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            max_tokens: 16,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

/// Why a [`SamplingParams`] was rejected. The message is meant for the client.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SamplingError {
    /// A parameter is outside its allowed range.
    #[error("invalid sampling parameter `{param}`: {message}")]
    InvalidParameter {
        /// The parameter's name, as the API spells it.
        param: &'static str,
        /// What is allowed and what was given.
        message: String,
    },
}

/// `Ok` if `ok`, else "`param` must be `allowed`, got `got`".
fn check(
    param: &'static str,
    ok: bool,
    allowed: &str,
    got: impl Display,
) -> Result<(), SamplingError> {
    if ok {
        return Ok(());
    }
    let message = format!("must be {allowed}, got {got}");
    Err(SamplingError::InvalidParameter { param, message })
}

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens` tokens, everything else default.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens,
            ..Self::default()
        }
    }

    /// Check every parameter's range. NaN fails every check.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let (t, top_p, min_p) = (self.temperature, self.top_p, self.min_p);
        check(
            "temperature",
            (0.0..=MAX_TEMPERATURE).contains(&t),
            "in [0, 100]",
            t,
        )?;
        check("top_p", top_p > 0.0 && top_p <= 1.0, "in (0, 1]", top_p)?;
        check("min_p", (0.0..=1.0).contains(&min_p), "in [0, 1]", min_p)?;
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            check(param, (-2.0..=2.0).contains(&v), "in [-2, 2]", v)?;
        }
        let rep = self.repetition_penalty;
        let rep_ok = rep > 0.0 && rep.is_finite();
        check("repetition_penalty", rep_ok, "finite and > 0", rep)?;
        if let Some(n) = self.logprobs {
            check("logprobs", n <= MAX_LOGPROBS, "in [0, 20]", n)?;
        }
        check("max_tokens", self.max_tokens >= 1, ">= 1", self.max_tokens)
    }

    /// Whether `token` ends the request: an end-of-sequence id (`eos`)
    /// unless `ignore_eos`, or one of `stop_token_ids`.
    pub fn is_stop_token(&self, token: u32, eos: &[u32]) -> bool {
        (!self.ignore_eos && eos.contains(&token)) || self.stop_token_ids.contains(&token)
    }

    fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE
    }
}

/// One token and its log-probability.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenLogprob {
    pub token_id: u32,
    pub logprob: f32,
}

/// The result of one sampling step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SampledToken {
    pub token_id: u32,
    /// The chosen token's logprob, when the request asked for logprobs.
    pub logprob: Option<f32>,
    /// The `n` most likely tokens, most likely first (ties: lowest id first).
    pub top_logprobs: Vec<TokenLogprob>,
}

/// Per-request sampling state: owns the RNG (seeded from `params.seed`, or
/// from OS randomness when `None`) and the output-token counts for penalties.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Occurrences of each token in the output so far.
    output_counts: HashMap<u32, u32>,
    /// Tokens in prompt + output, for the repetition penalty. Only filled
    /// when that penalty is active.
    seen: HashSet<u32>,
}

impl Sampler {
    /// State for a request with these params and this prompt.
    pub fn new(params: SamplingParams, prompt_tokens: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let seen = if params.repetition_penalty != 1.0 {
            prompt_tokens.iter().copied().collect()
        } else {
            HashSet::new()
        };
        Self {
            params,
            rng,
            output_counts: HashMap::new(),
            seen,
        }
    }

    /// The params this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Sample the next token from one row of logits (len = vocab). Updates
    /// penalty counts with the chosen token.
    ///
    /// # Panics
    /// If `logits` is empty.
    pub fn sample(&mut self, logits: &[f32]) -> SampledToken {
        assert!(!logits.is_empty(), "sample() needs at least one logit");
        let logits = self.penalize(logits);
        let token_id = if self.params.is_greedy() {
            argmax(&logits)
        } else {
            self.sample_stochastic(&logits)
        };
        let (logprob, top_logprobs) = match self.params.logprobs {
            None => (None, Vec::new()),
            Some(n) => {
                let lse = log_sum_exp(&logits);
                let chosen = logits[token_id as usize] - lse;
                let top = top_n(&logits, n)
                    .into_iter()
                    .map(|(token_id, l)| TokenLogprob {
                        token_id,
                        logprob: l - lse,
                    })
                    .collect();
                (Some(chosen), top)
            }
        };
        self.observe(token_id);
        SampledToken {
            token_id,
            logprob,
            top_logprobs,
        }
    }

    /// Counts `token` as already generated (for the penalties) without
    /// sampling: a resumed request replays its earlier output this way.
    pub fn observe(&mut self, token: u32) {
        *self.output_counts.entry(token).or_insert(0) += 1;
        if self.params.repetition_penalty != 1.0 {
            self.seen.insert(token);
        }
    }

    /// Apply the repetition, presence and frequency penalties, copying the
    /// logits only when some penalty is active. Ids beyond the vocab are
    /// ignored.
    fn penalize<'a>(&self, logits: &'a [f32]) -> Cow<'a, [f32]> {
        let p = &self.params;
        let rep = p.repetition_penalty != 1.0 && !self.seen.is_empty();
        let additive = (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0)
            && !self.output_counts.is_empty();
        if !rep && !additive {
            return Cow::Borrowed(logits);
        }
        let mut out = logits.to_vec();
        if rep {
            for &t in &self.seen {
                if let Some(l) = out.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if additive {
            for (&t, &count) in &self.output_counts {
                if let Some(l) = out.get_mut(t as usize) {
                    *l -= p.frequency_penalty * count as f32 + p.presence_penalty;
                }
            }
        }
        Cow::Owned(out)
    }

    /// Temperature, top-k, top-p, min-p, then one draw.
    fn sample_stochastic(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) * inv_t;
        if !max.is_finite() {
            // Everything masked (or garbage): there is nothing to draw from.
            return argmax(logits);
        }
        let vocab = logits.len();
        let top_k = if p.top_k == 0 {
            vocab
        } else {
            p.top_k.min(vocab)
        };
        let use_top_p = p.top_p < 1.0;
        // min-p relative to the most likely token is a threshold on logits:
        // p_i >= min_p * p_max  <=>  l_i >= l_max + ln(min_p).
        let min_logit = if p.min_p > 0.0 {
            max + p.min_p.ln()
        } else {
            f32::NEG_INFINITY
        };

        if top_k == vocab && !use_top_p {
            // Fast path: no candidate list, two passes over the row.
            let cands = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l * inv_t));
            return self.draw(cands, max, min_logit);
        }

        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l * inv_t))
            .collect();
        if top_k < vocab {
            cands.select_nth_unstable_by(top_k - 1, by_logit_desc);
            cands.truncate(top_k);
        }
        if use_top_p {
            let total: f64 = cands.iter().map(|&(_, l)| weight(l, max)).sum();
            let keep = top_p_prefix(&mut cands, f64::from(p.top_p) * total, max);
            cands.truncate(keep);
        }
        self.draw(cands.into_iter(), max, min_logit)
    }

    /// Draw one candidate with probability proportional to `exp(l - max)`,
    /// skipping those below `min_logit`. One uniform draw per call.
    fn draw<I>(&mut self, cands: I, max: f32, min_logit: f32) -> u32
    where
        I: Iterator<Item = (u32, f32)> + Clone,
    {
        let kept = cands.filter(|&(_, l)| l >= min_logit);
        let total: f64 = kept.clone().map(|(_, l)| weight(l, max)).sum();
        let u: f64 = self.rng.random::<f64>() * total;
        let mut acc = 0.0;
        let mut last = None;
        for (id, l) in kept {
            let w = weight(l, max);
            if w <= 0.0 {
                continue;
            }
            acc += w;
            last = Some(id);
            if u < acc {
                return id;
            }
        }
        // Rounding left u at the very top of the range: take the last
        // token with any weight. `max` is finite, so one token has weight 1.
        last.expect("the maximum logit always has weight 1")
    }
}

/// Orders the most likely candidates first and returns how many top-p keeps:
/// a token is kept while the mass strictly before it is below `target` (the
/// first always is). Sorting the whole vocabulary costs milliseconds per
/// token; the nucleus is usually a few hundred tokens, so this sorts a
/// growing head (256, 1024, ...) and stops once the head holds the nucleus.
/// The kept prefix is exactly that of a full sort (the order is total).
fn top_p_prefix(cands: &mut [(u32, f32)], target: f64, max: f32) -> usize {
    let mut head = 256.min(cands.len());
    loop {
        if head < cands.len() {
            cands.select_nth_unstable_by(head - 1, by_logit_desc);
        }
        cands[..head].sort_unstable_by(by_logit_desc);
        let mut before = 0.0;
        for (keep, &(_, l)) in cands[..head].iter().enumerate() {
            if keep > 0 && before >= target {
                return keep;
            }
            before += weight(l, max);
        }
        if head == cands.len() {
            return head;
        }
        head = (head * 4).min(cands.len());
    }
}

/// Unnormalized probability of a (temperature-scaled) logit; NaN weighs 0.
fn weight(l: f32, max: f32) -> f64 {
    if l.is_nan() {
        0.0
    } else {
        f64::from(l - max).exp()
    }
}

/// Descending by logit, then ascending by id; NaN sorts last.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    match (a.1.is_nan(), b.1.is_nan()) {
        (true, true) => a.0.cmp(&b.0),
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)),
    }
}

/// Index of the largest logit; ties (and an all-NaN row) go to the lowest id.
///
/// Two passes the compiler vectorizes (the max, then its first position)
/// instead of one branchy pass: greedy decoding runs this over the whole
/// vocabulary for every sequence at every step.
fn argmax(logits: &[f32]) -> u32 {
    // `f32::max` ignores NaN, so this is the largest non-NaN logit, or -inf.
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// `ln(sum(exp(l)))`, computed stably in f64.
fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&l| weight(l, max)).sum();
    (f64::from(max) + sum.ln()) as f32
}

/// The `n` largest logits, largest first (ties: lowest id first), in one
/// pass with a small sorted buffer: `n` is at most [`MAX_LOGPROBS`].
fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return top;
    }
    for (i, &l) in logits.iter().enumerate() {
        let cand = (i as u32, l);
        if top.len() == n && by_logit_desc(&cand, &top[n - 1]) != Ordering::Less {
            continue;
        }
        let pos = top.partition_point(|x| by_logit_desc(x, &cand) == Ordering::Less);
        top.insert(pos, cand);
        top.truncate(n);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;
    use std::collections::BTreeSet;

    /// Default params with this seed, changed by `f`.
    fn with(seed: u64, f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let seed = Some(seed);
        let mut p = SamplingParams {
            seed,
            ..SamplingParams::default()
        };
        f(&mut p);
        p
    }

    /// Greedy params changed by `f`.
    fn greedy_with(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::greedy(8);
        f(&mut p);
        p
    }

    /// A deterministic, irregular row of logits in [-5, 5).
    fn pseudo_logits(n: usize, salt: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(salt);
        (0..n).map(|_| rng.random::<f32>() * 10.0 - 5.0).collect()
    }

    fn ln(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn draws(params: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(params, &[]);
        (0..n).map(|_| s.sample(logits).token_id).collect()
    }

    fn support(params: SamplingParams, logits: &[f32]) -> BTreeSet<u32> {
        draws(params, logits, 2000).into_iter().collect()
    }

    #[test]
    fn greedy_is_argmax_and_ties_pick_lowest_id() {
        let mut s = Sampler::new(SamplingParams::greedy(4), &[]);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).token_id, 1);
        assert_eq!(s.sample(&[1.0, 5.0, 2.0, 5.0, 5.0]).token_id, 1);
        assert_eq!(s.sample(&[7.0, 7.0]).token_id, 0);
        assert_eq!(s.sample(&[f32::NAN, -1.0, f32::NAN]).token_id, 1);
        assert_eq!(s.sample(&[f32::NEG_INFINITY; 2]).token_id, 0);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_seeds_differ() {
        let logits: Vec<f32> = pseudo_logits(1000, 7).iter().map(|l| l * 0.2).collect();
        let a = draws(with(42, |_| {}), &logits, 64);
        assert_eq!(a, draws(with(42, |_| {}), &logits, 64));
        assert_ne!(a, draws(with(43, |_| {}), &logits, 64));
        let p = with(5, |p| (p.top_k, p.top_p, p.temperature) = (50, 0.9, 0.7));
        assert_eq!(draws(p.clone(), &logits, 64), draws(p, &logits, 64));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_equal_greedy() {
        for salt in 0..20 {
            let logits = pseudo_logits(500, salt);
            let greedy = BTreeSet::from([argmax(&logits)]);
            let p = with(salt, |p| (p.top_k, p.temperature) = (1, 1.5));
            assert_eq!(support(p, &logits), greedy);
            assert_eq!(support(with(salt, |p| p.top_p = 1e-6), &logits), greedy);
        }
    }

    #[test]
    fn top_k_top_p_and_min_p_restrict_the_support() {
        let logits = [0.0, 4.0, 1.0, 3.9, 3.8, -2.0];
        let p = with(1, |p| (p.top_k, p.temperature) = (3, 2.0));
        assert_eq!(support(p, &logits), BTreeSet::from([1, 3, 4]));
        // p = [0.5, 0.3, 0.2]: the mass before token 1 is 0.5 < 0.7 (kept),
        // before token 2 it is 0.8 >= 0.7 (dropped).
        let logits = ln(&[0.5, 0.3, 0.2]);
        let p = with(3, |p| p.top_p = 0.7);
        assert_eq!(support(p, &logits), BTreeSet::from([0, 1]));
        // p ∝ [1, 0.6, 0.4, 0.1]: min_p 0.5 keeps tokens 0 and 1, alone or
        // after top-k.
        let logits = ln(&[1.0, 0.6, 0.4, 0.1]);
        let p = with(9, |p| p.min_p = 0.5);
        assert_eq!(support(p, &logits), BTreeSet::from([0, 1]));
        let p = with(9, |p| (p.min_p, p.top_k) = (0.5, 3));
        assert_eq!(support(p, &logits), BTreeSet::from([0, 1]));
        // Masked tokens are never drawn, on either path.
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        assert_eq!(support(with(1, |_| {}), &logits), BTreeSet::from([1, 3]));
        let p = with(1, |p| (p.top_k, p.top_p) = (3, 0.99));
        assert_eq!(support(p, &logits), BTreeSet::from([1, 3]));
    }

    #[test]
    fn sampling_frequencies_match_the_distribution() {
        let probs = [0.2, 0.5, 0.3];
        let logits: Vec<f32> = ln(&probs).iter().map(|l| l + 3.0).collect();
        let n = 20_000;
        let mut counts = [0usize; 3];
        for t in draws(with(2024, |_| {}), &logits, n) {
            counts[t as usize] += 1;
        }
        let expected = probs.map(|p| f64::from(p) * n as f64);
        let chi2: f64 = (0..3)
            .map(|i| (counts[i] as f64 - expected[i]).powi(2) / expected[i])
            .sum();
        // 2 degrees of freedom: P(chi2 > 20) ≈ 4.5e-5.
        assert!(chi2 < 20.0, "chi2 = {chi2}, counts = {counts:?}");
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = ln(&[0.6, 0.4]);
        let share0 = |t: f32| {
            let got = draws(with(11, |p| p.temperature = t), &logits, 4000);
            got.iter().filter(|&&t| t == 0).count() as f64 / 4000.0
        };
        assert!(share0(0.2) > 0.8);
        assert!((share0(1.0) - 0.6).abs() < 0.05);
        assert!((share0(50.0) - 0.5).abs() < 0.05);
    }

    #[test]
    fn presence_and_frequency_penalties_count_output_only() {
        // Token 0 is in the prompt, which presence does not look at; once in
        // the output, 1.0 - 0.5 < 0.9; then both are penalized once.
        let mut s = Sampler::new(greedy_with(|p| p.presence_penalty = 0.5), &[0, 0]);
        let got: Vec<u32> = (0..3).map(|_| s.sample(&[1.0, 0.9]).token_id).collect();
        assert_eq!(got, [0, 1, 0]);
        // Frequency: 2.0, 1.6, 1.2 beat 1.0; 0.8 does not.
        let mut s = Sampler::new(greedy_with(|p| p.frequency_penalty = 0.4), &[]);
        let got: Vec<u32> = (0..4).map(|_| s.sample(&[2.0, 1.0]).token_id).collect();
        assert_eq!(got, [0, 0, 0, 1]);
    }

    #[test]
    fn repetition_penalty_covers_prompt_output_and_both_signs() {
        let p = greedy_with(|p| p.repetition_penalty = 1.2);
        // Positive logits are divided: 2.0 / 1.2 ≈ 1.67 < 1.9.
        assert_eq!(
            Sampler::new(p.clone(), &[0]).sample(&[2.0, 1.9]).token_id,
            1
        );
        // Negative ones multiplied: -1.0 * 1.2 = -1.2 < -1.1.
        assert_eq!(
            Sampler::new(p.clone(), &[0]).sample(&[-1.0, -1.1]).token_id,
            1
        );
        // Output tokens join the set.
        let mut s = Sampler::new(p, &[]);
        assert_eq!(s.sample(&[1.9, 2.0]).token_id, 1);
        assert_eq!(s.sample(&[1.9, 2.0]).token_id, 0);
    }

    #[test]
    fn logprobs_are_normalized_sorted_and_include_the_choice() {
        let logits = [1.0f32, 3.0, -0.5, 3.0, 2.0];
        let lse = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        let p = with(1, |p| (p.logprobs, p.temperature) = (Some(5), 0.5));
        let mut s = Sampler::new(p, &[]);
        for _ in 0..20 {
            let out = s.sample(&logits);
            let top = &out.top_logprobs;
            let mass: f32 = top.iter().map(|t| t.logprob.exp()).sum();
            assert!((mass - 1.0).abs() < 1e-5, "mass {mass}");
            assert!(top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
            assert_eq!((top.len(), top[0].token_id, top[1].token_id), (5, 1, 3));
            let chosen = out.logprob.expect("logprobs requested");
            let listed = top.iter().find(|t| t.token_id == out.token_id).unwrap();
            assert_eq!(chosen, listed.logprob);
            // Temperature does not enter logprobs.
            assert!((chosen - (logits[out.token_id as usize] - lse)).abs() < 1e-5);
        }
        // Some(0): the choice only; None: nothing.
        let out = Sampler::new(greedy_with(|p| p.logprobs = Some(0)), &[]).sample(&logits);
        assert_eq!((out.logprob, out.top_logprobs.len()), (Some(3.0 - lse), 0));
        let out = Sampler::new(greedy_with(|_| {}), &[]).sample(&logits);
        assert_eq!((out.logprob, out.top_logprobs.len()), (None, 0));
    }

    #[test]
    fn logprobs_reflect_penalties() {
        let p = greedy_with(|p| (p.frequency_penalty, p.logprobs) = (1.0, Some(2)));
        let mut s = Sampler::new(p, &[]);
        assert!((s.sample(&[1.0, 1.0]).logprob.unwrap() - 0.5f32.ln()).abs() < 1e-6);
        // Token 0 is now at logit 0 against 1.
        let second = s.sample(&[1.0, 1.0]);
        let want = 1.0 - (1.0f32.exp() + 1.0).ln();
        assert_eq!(second.token_id, 1);
        assert!((second.logprob.unwrap() - want).abs() < 1e-5);
    }

    #[test]
    fn top_p_prefix_matches_a_full_sort() {
        let logits = pseudo_logits(5000, 23);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let all: Vec<(u32, f32)> = (0..).zip(logits.iter().map(|l| l * 4.0)).collect();
        let mut sorted = all.clone();
        sorted.sort_by(by_logit_desc);
        let total: f64 = sorted.iter().map(|&(_, l)| weight(l, max * 4.0)).sum();
        for top_p in [1e-9, 0.3, 0.9, 0.999, 0.999999, 1.0] {
            let target = top_p * total;
            let mut before = 0.0;
            let mut want = 0;
            for &(_, l) in &sorted {
                if want > 0 && before >= target {
                    break;
                }
                before += weight(l, max * 4.0);
                want += 1;
            }
            let mut cands = all.clone();
            let keep = top_p_prefix(&mut cands, target, max * 4.0);
            assert_eq!(keep, want, "top_p {top_p}");
            assert_eq!(cands[..keep], sorted[..want], "top_p {top_p}");
        }
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN, 0.7]), 3);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn top_n_matches_a_full_sort() {
        let logits = pseudo_logits(3000, 17);
        let mut all: Vec<(u32, f32)> = (0..).zip(logits.iter().copied()).collect();
        all.sort_by(by_logit_desc);
        for n in [0, 1, 5, 20] {
            assert_eq!(top_n(&logits, n), all[..n]);
        }
    }

    #[test]
    fn defaults_greedy_and_serde() {
        let d = SamplingParams::default();
        assert_eq!(
            (d.temperature, d.top_k, d.top_p, d.min_p),
            (1.0, 0, 1.0, 0.0)
        );
        assert_eq!((d.repetition_penalty, d.max_tokens), (1.0, 16));
        assert_eq!((d.logprobs, d.seed, d.ignore_eos), (None, None, false));
        assert_eq!(d.validate(), Ok(()));
        let g = SamplingParams::greedy(3);
        assert_eq!((g.temperature, g.max_tokens), (0.0, 3));
        let json = r#"{"temperature": 0.5, "stop": ["\n"]}"#;
        let parsed: SamplingParams = serde_json::from_str(json).unwrap();
        let mut want = d;
        (want.temperature, want.stop) = (0.5, vec!["\n".into()]);
        assert_eq!(parsed, want);
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let bad = |f: fn(&mut SamplingParams)| match with(0, f).validate() {
            Err(SamplingError::InvalidParameter { param, .. }) => param,
            Ok(()) => panic!("accepted"),
        };
        assert_eq!(bad(|p| p.temperature = -0.1), "temperature");
        assert_eq!(bad(|p| p.temperature = f32::NAN), "temperature");
        assert_eq!(bad(|p| p.temperature = f32::INFINITY), "temperature");
        assert_eq!(bad(|p| p.top_p = 0.0), "top_p");
        assert_eq!(bad(|p| p.top_p = 1.01), "top_p");
        assert_eq!(bad(|p| p.min_p = -0.1), "min_p");
        assert_eq!(bad(|p| p.min_p = 1.5), "min_p");
        assert_eq!(bad(|p| p.presence_penalty = 2.5), "presence_penalty");
        assert_eq!(bad(|p| p.frequency_penalty = -2.5), "frequency_penalty");
        assert_eq!(bad(|p| p.repetition_penalty = 0.0), "repetition_penalty");
        assert_eq!(bad(|p| p.logprobs = Some(21)), "logprobs");
        assert_eq!(bad(|p| p.max_tokens = 0), "max_tokens");
        let msg = with(0, |p| p.top_p = 2.0)
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "invalid sampling parameter `top_p`: must be in (0, 1], got 2"
        );
        let edges = with(0, |p| {
            (p.temperature, p.min_p, p.logprobs, p.max_tokens) = (100.0, 1.0, Some(20), 1);
            (p.presence_penalty, p.frequency_penalty) = (-2.0, 2.0);
        });
        assert_eq!(edges.validate(), Ok(()));
    }

    proptest! {
        /// Whatever the params, seeded runs repeat and the choice is one that
        /// top-k keeps.
        #[test]
        fn prop_choice_respects_top_k_and_seed(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..200),
            top_k in 0usize..10,
            top_p in 0.05f32..=1.0,
            min_p in 0.0f32..0.9,
            temperature in 0.0f32..3.0,
            seed: u64,
        ) {
            let params = with(seed, |p| {
                (p.top_k, p.top_p, p.min_p, p.temperature) = (top_k, top_p, min_p, temperature);
            });
            let a = draws(params.clone(), &logits, 5);
            prop_assert_eq!(&a, &draws(params, &logits, 5));
            let mut sorted = logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[top_k.clamp(1, sorted.len()) - 1];
            for t in a.iter().filter(|_| top_k > 0) {
                prop_assert!(logits[*t as usize] >= kth);
            }
        }
    }
}
