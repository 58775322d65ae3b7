//! Speculative decoding with prompt lookup: draft tokens by copying from
//! the context, verify them in one forward pass, keep the output unchanged.
//!
//! **The pattern.** Single-stream decode is bound by reading the weights:
//! a forward pass over one token costs nearly as much as one over a few,
//! because the weights are read once either way. So if we can *guess* the
//! next few tokens cheaply, the model can check all the guesses in one pass
//! and, when they are right, several tokens come out of one weight read.
//!
//! **The naive way** is sdlab's engine as it serves by default: one forward
//! pass (engine step) per generated token.
//!
//! **The optimal way** is the same engine started with
//! `--num-speculative-tokens 4` (`server::spec_decode`). When the scheduler
//! schedules a decode it drafts by *prompt lookup* (no second model): take
//! the last 3 tokens of the text so far (then the last 2), find their latest
//! earlier occurrence in the prompt or output, and propose the up to `k`
//! tokens that followed it. Outputs that copy from their input (rewriting
//! code, editing or summarising a given text, answering from retrieved
//! passages) are full of such repeats. The step feeds the last token *and*
//! the draft as one chunk (its K/V slots allocated like any other), the
//! model returns logits at every position of the chunk, and the engine
//! samples them in order with the request's own sampler: each drafted token
//! is kept while it equals the sampler's choice; at the first mismatch the
//! sampler's choice is kept instead. So every pass yields at least one token
//! and up to `k + 1`. The K/V written for rejected tokens lies beyond the
//! sequence's computed length: attention never reads it and the next step
//! overwrites it. The output is the one plain decoding gives, token for
//! token (`same_output` = 1, checked every run), and seeded sampling draws
//! the same tokens too. Speculation changes the cost, never the result.
//!
//! **The numbers.** `forward_passes` (engine steps; fewer is the point),
//! `acceptance_rate` (accepted drafted tokens over drafted, from the
//! engine's `sdlab_spec_decode_*` counters), `tokens_per_pass`,
//! `tokens_per_s` and `speedup` (plain time over speculative time). A pass
//! over a chunk costs more than a one-token pass, so the wall-clock gain is
//! smaller than the pass count suggests: on this CPU a 5-token chunk costs
//! about 1.8 one-token passes. On text that repeats nothing, nothing is
//! drafted and the cost is the lookup alone; on text that repeats a little,
//! rejected drafts cost time (asked to repeat a sentence, the small model
//! paraphrases it instead, and the lookup drafts from the original). In a
//! full batch the drafts compete with other sequences for the step's token
//! budget, so the gain is largest at low concurrency.
//!
//! **In production.** vLLM (`ngram` speculative method, the same knobs:
//! `num_speculative_tokens`, `prompt_lookup_max`, `prompt_lookup_min`),
//! llama.cpp (`lookup` and draft models), TGI (Medusa, n-gram) and Hugging
//! Face (`prompt_lookup_num_tokens`) ship the same idea; draft models,
//! Medusa heads and EAGLE guess better on text that does not repeat its
//! input.

use super::decode_loop::{chat_tokens, load_default};
use anyhow::Result;
use hld::LessonReport;
use models::WeightFormat;
use server::engine::{EngineStats, GenerateRequest};
use server::runner::{start_llama_engine, EngineOptions};
use server::sampler::SamplingParams;
use server::spec_decode::NgramConfig;
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "speculative-decoding";
/// A short human title.
pub const TITLE: &str =
    "Speculative decoding: prompt-lookup drafts verified in one pass against one token per pass";

/// Most tokens drafted per step.
const DRAFT: usize = 4;
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

/// One engine's run over the prompts, one request at a time.
struct EngineRun {
    outputs: Vec<Vec<u32>>,
    tokens: usize,
    seconds: f64,
    stats: EngineStats,
}

/// Starts the engine on the default model, with or without speculation,
/// and generates `TOKENS` greedy tokens for each prompt in turn.
fn run_engine(prompts: &[Vec<u32>], speculative: Option<NgramConfig>) -> Result<EngineRun> {
    let loaded = load_default(WeightFormat::Auto)?;
    let opts = EngineOptions {
        kv_cache_mb: 64,
        speculative,
        ..EngineOptions::default()
    };
    let engine = start_llama_engine(loaded, &opts).map_err(anyhow::Error::msg)?;
    let (mut outputs, mut tokens) = (Vec::new(), 0);
    let started = Instant::now();
    for p in prompts {
        let out = engine.generate(GenerateRequest {
            prompt_tokens: p.clone(),
            params: SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(TOKENS)
            },
            adapter: None,
            resume_tokens: 0,
        })?;
        tokens += out.usage.completion_tokens;
        outputs.push(out.token_ids);
    }
    Ok(EngineRun {
        outputs,
        tokens,
        seconds: started.elapsed().as_secs_f64(),
        stats: engine.stats(),
    })
}

pub fn lesson(_seed: u64) -> Result<LessonReport> {
    let loaded = load_default(WeightFormat::Auto)?;
    let prompts = PROMPTS
        .iter()
        .map(|p| chat_tokens(&loaded, p))
        .collect::<Result<Vec<_>>>()?;
    let plain = run_engine(&prompts, None)?;
    let spec = run_engine(
        &prompts,
        Some(NgramConfig {
            num_speculative_tokens: DRAFT,
            ..NgramConfig::default()
        }),
    )?;
    anyhow::ensure!(
        spec.outputs == plain.outputs,
        "speculative output differs from plain decoding"
    );
    let example = loaded.tokenizer.decode(&spec.outputs[0])?;
    let s = &spec.stats;
    let acceptance = s.spec_accepted_tokens as f64 / s.spec_draft_tokens.max(1) as f64;
    let passes = |r: &EngineRun| r.stats.steps as f64;
    Ok(LessonReport::new(NAME, TITLE)
        .both("tokens", plain.tokens as f64, spec.tokens as f64)
        .both("forward_passes", passes(&plain), passes(&spec))
        .both(
            "tokens_per_pass",
            plain.tokens as f64 / passes(&plain),
            spec.tokens as f64 / passes(&spec),
        )
        .both(
            "tokens_per_s",
            plain.tokens as f64 / plain.seconds,
            spec.tokens as f64 / spec.seconds,
        )
        .both("same_output", 1.0, 1.0)
        .optimal("acceptance_rate", acceptance)
        .optimal("drafted_tokens", s.spec_draft_tokens as f64)
        .optimal("speedup", plain.seconds / spec.seconds)
        .notes(format!(
            "sdlab's engine on SmolLM2-135M (Q4_1), {} prompts whose answers copy from the \
             prompt (rename a function, edit a JSON value, fix a typo in code), {TOKENS} greedy \
             tokens each, one request at a time; forward passes are engine steps (each prompt's \
             prefill is one). Optimal: the same engine with --num-speculative-tokens {DRAFT} \
             (3..2-gram prompt lookup): {:.0}% of {} drafted tokens were accepted and the output \
             is identical to plain decoding, token for token. A chunk costs more than a \
             one-token pass, so the speed-up is smaller than the saving in passes. The first \
             answer begins: \"{}...\". Sized down: {TOKENS} tokens per prompt.",
            PROMPTS.len(),
            100.0 * acceptance,
            s.spec_draft_tokens,
            example
                .trim()
                .chars()
                .take(70)
                .collect::<String>()
                .replace('\n', " "),
        )))
}
