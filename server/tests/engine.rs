//! The engine end to end on a synthetic model (and the real one when fetched):
//! batch invariance under continuous batching with preemption, prefix
//! caching, aborts and leaks.

use models::{load, KvCache, LoadOptions, LoadedModel};
use server::engine::{collect, Engine, EngineConfig, EngineEvent, FinishReason, GenerateRequest};
use server::runner::LlamaRunner;
use server::sampler::SamplingParams;
use server::spec_decode::NgramConfig;
use std::path::PathBuf;

fn synthetic_model() -> LoadedModel {
    let dir = std::env::temp_dir().join(format!("sdlab-engine-test-{}", std::process::id()));
    if !dir.join("model.safetensors").is_file() {
        let preset = models::synth::SynthPreset::by_name("tiny").unwrap();
        models::synth::write_synthetic_model(&dir, &preset, 7).unwrap();
    }
    load(dir.to_str().unwrap(), LoadOptions::default()).unwrap()
}

fn real_model() -> Option<LoadedModel> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !p.is_file() {
        if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
            panic!("{} is missing: run `make models`", p.display());
        }
        eprintln!("skipping: {} is missing (run `make models`)", p.display());
        return None;
    }
    Some(load(p.to_str().unwrap(), LoadOptions::default()).unwrap())
}

fn engine(
    m: LoadedModel,
    num_blocks: usize,
    max_num_seqs: usize,
    budget: usize,
    prefix_caching: bool,
) -> Engine {
    engine_with(m, num_blocks, max_num_seqs, budget, prefix_caching, None)
}

fn engine_with(
    m: LoadedModel,
    num_blocks: usize,
    max_num_seqs: usize,
    budget: usize,
    prefix_caching: bool,
    speculative: Option<NgramConfig>,
) -> Engine {
    let cfg = EngineConfig {
        num_blocks,
        block_size: 16,
        max_num_seqs,
        max_num_batched_tokens: budget,
        max_model_len: m.model.cfg.max_position_embeddings,
        enable_prefix_caching: prefix_caching,
        speculative,
    };
    let cache = KvCache::new(&m.model.cfg, num_blocks, 16);
    Engine::start(
        Box::new(LlamaRunner {
            model: m.model,
            cache,
        }),
        m.tokenizer,
        cfg,
    )
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt_tokens: prompt,
        params: SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(max_tokens)
        },
        adapter: None,
        resume_tokens: 0,
    }
}

const TEXTS: [&str; 16] = [
    "The engine keeps many sequences in flight at once",
    "A block holds sixteen tokens of keys and values; a sequence asks for a new block only when the last one is full, and the scheduler decides who runs",
    "When memory runs out",
    "Prefix caching finds blocks that another request already computed and shares them between requests that start the same way",
    "The quick brown fox",
    "It is a truth universally acknowledged that a single model in possession of good weights must be in want of a tokenizer, and of a scheduler, and of a cache",
    "In 2024 there were 365 days",
    "fn main() { let x = vec![1, 2, 3]; }",
    "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e",
    "Questions and answers: what is the capital of France?",
    "Continuous batching lets sequences join and leave the batch at every step of decoding, which keeps the machine busy",
    "Throughput rises with the batch",
    "Latency is measured from the moment a request arrives",
    "def add(a, b): return a + b",
    "Paris is the capital of France. The quick brown fox jumps over the lazy dog while the cat sleeps in the sun all afternoon long",
    "One more prompt",
];

/// Runs every prompt alone, then all at once with staggered arrivals, varied
/// lengths and a KV budget small enough to force preemption; the tokens must
/// be identical.
fn check_batch_invariance(
    make: impl Fn() -> LoadedModel,
    prompts: &[Vec<u32>],
    max_tokens: &[usize],
    tight_blocks: usize,
) {
    let alone_engine = engine(make(), 512, 1, 512, false);
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .zip(max_tokens)
        .map(|(p, &n)| {
            alone_engine
                .generate(greedy(p.clone(), n))
                .unwrap()
                .token_ids
        })
        .collect();
    drop(alone_engine);

    let batched = engine(make(), tight_blocks, 16, 64, true);
    let half = prompts.len() / 2;
    let mut receivers = Vec::new();
    for (p, &n) in prompts.iter().zip(max_tokens).take(half) {
        receivers.push(batched.add_request(greedy(p.clone(), n)).unwrap().1);
    }
    // Let the first half get going, then the rest join mid-flight.
    let first = receivers[0].blocking_recv().unwrap();
    let mut first_tokens = match first {
        EngineEvent::Token { token_id, .. } => vec![token_id],
        other => panic!("unexpected {other:?}"),
    };
    for (p, &n) in prompts.iter().zip(max_tokens).skip(half) {
        receivers.push(batched.add_request(greedy(p.clone(), n)).unwrap().1);
    }
    for (i, rx) in receivers.iter_mut().enumerate() {
        let out = collect(rx).unwrap();
        let got = if i == 0 {
            [std::mem::take(&mut first_tokens), out.token_ids].concat()
        } else {
            out.token_ids
        };
        assert_eq!(got, alone[i], "prompt {i} differs in the batch");
    }
    let stats = batched.stats();
    assert!(
        stats.preemptions > 0,
        "the KV budget should have forced preemptions: {stats:?}"
    );
    assert_eq!(
        stats.free_blocks, stats.num_blocks,
        "blocks leaked: {stats:?}"
    );
    assert_eq!(stats.running + stats.waiting, 0);
}

#[test]
fn batch_invariance_with_preemption_synthetic() {
    let m = synthetic_model();
    let prompts: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| m.tokenizer.encode(t).unwrap())
        .collect();
    drop(m);
    let max_tokens: Vec<usize> = (0..16).map(|i| 8 + (i * 7) % 33).collect();
    check_batch_invariance(synthetic_model, &prompts, &max_tokens, 20);
}

#[test]
fn batch_invariance_with_preemption_real_model() {
    let Some(m) = real_model() else { return };
    let prompts: Vec<Vec<u32>> = TEXTS[..6]
        .iter()
        .map(|t| m.tokenizer.encode(t).unwrap())
        .collect();
    drop(m);
    let max_tokens = [12, 20, 8, 16, 24, 10];
    check_batch_invariance(|| real_model().unwrap(), &prompts, &max_tokens, 8);
}

#[test]
fn shared_prefix_hits_the_cache_and_gives_the_same_output() {
    let m = synthetic_model();
    let prefix = m.tokenizer.encode(&TEXTS[5].repeat(3)).unwrap()[..64].to_vec();
    let ask = |suffix: &str| [prefix.clone(), m.tokenizer.encode(suffix).unwrap()].concat();
    let (a, b) = (ask(" first question"), ask(" a different second question"));

    let uncached = engine(synthetic_model(), 64, 4, 512, false);
    let want = uncached.generate(greedy(b.clone(), 16)).unwrap();
    assert_eq!(uncached.stats().prefix_cache.hit_tokens, 0);

    let cached = engine(synthetic_model(), 64, 4, 512, true);
    cached.generate(greedy(a, 16)).unwrap();
    let got = cached.generate(greedy(b, 16)).unwrap();
    assert_eq!(got.token_ids, want.token_ids);
    assert!(got.usage.cached_tokens >= 64, "usage {:?}", got.usage);
    assert!(
        cached.stats().prefix_cache.hit_tokens >= 64,
        "{:?}",
        cached.stats()
    );
    assert_eq!(cached.stats().free_blocks, 64);
}

#[test]
fn abort_frees_blocks_and_ends_the_stream() {
    let m = synthetic_model();
    let prompt = m.tokenizer.encode(TEXTS[1]).unwrap();
    let e = engine(m, 32, 4, 512, true);
    let (id, mut rx) = e.add_request(greedy(prompt.clone(), 200)).unwrap();
    let (_, mut other) = e.add_request(greedy(prompt, 5)).unwrap();
    assert!(matches!(
        rx.blocking_recv(),
        Some(EngineEvent::Token { .. })
    ));
    e.abort(id);
    let out = collect(&mut rx).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Abort);
    assert_eq!(
        collect(&mut other).unwrap().finish_reason,
        FinishReason::Length
    );
    let s = e.stats();
    assert_eq!(s.free_blocks, s.num_blocks);
}

#[test]
fn requests_that_can_never_fit_are_rejected_clearly() {
    let m = synthetic_model();
    let prompt = m.tokenizer.encode(TEXTS[0]).unwrap();
    let e = engine(m, 2, 4, 512, true);
    let err = e
        .add_request(greedy(prompt.clone(), 100))
        .unwrap_err()
        .to_string();
    assert!(err.contains("kv-cache-mb"), "{err}");
    let bad = GenerateRequest {
        prompt_tokens: prompt,
        params: SamplingParams {
            top_p: 0.0,
            ..SamplingParams::greedy(4)
        },
        adapter: None,
        resume_tokens: 0,
    };
    assert!(e
        .add_request(bad)
        .unwrap_err()
        .to_string()
        .contains("top_p"));
    // The engine is still serving.
    let ok = e.generate(greedy(vec![5, 6, 7], 4)).unwrap();
    assert_eq!(ok.token_ids.len(), 4);
}

#[test]
fn stop_strings_and_seeded_sampling() {
    let m = synthetic_model();
    let prompt = m.tokenizer.encode(TEXTS[4]).unwrap();
    let e = engine(m, 64, 4, 512, true);
    let sampled = |seed| {
        let params = SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            seed: Some(seed),
            max_tokens: 24,
            ignore_eos: true,
            ..Default::default()
        };
        e.generate(GenerateRequest {
            prompt_tokens: prompt.clone(),
            params,
            adapter: None,
            resume_tokens: 0,
        })
        .unwrap()
    };
    assert_eq!(sampled(3).token_ids, sampled(3).token_ids);
    let full = e.generate(greedy(prompt.clone(), 24)).unwrap();
    // Stop at a piece of the greedy text: the output ends right before it.
    let cut = full
        .text
        .char_indices()
        .nth(full.text.chars().count() / 2)
        .map(|(i, _)| i)
        .unwrap();
    let stop: String = full.text[cut..].chars().take(3).collect();
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ignore_eos: true,
        ..SamplingParams::greedy(24)
    };
    let stopped = e
        .generate(GenerateRequest {
            prompt_tokens: prompt,
            params,
            adapter: None,
            resume_tokens: 0,
        })
        .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert!(
        full.text.starts_with(&stopped.text) && !stopped.text.contains(&stop),
        "{:?} vs {:?} stop {stop:?}",
        stopped.text,
        full.text
    );
}

/// Speculative decoding in the engine changes the number of steps, never the
/// tokens: greedy and seeded sampling (with a penalty, so the sampler's state
/// matters) give what plain decoding gives, alone and in a batch tight
/// enough to preempt; drafts are proposed and some accepted.
#[test]
fn speculative_decoding_keeps_every_output() {
    let m = synthetic_model();
    let mut prompts: Vec<Vec<u32>> = TEXTS[..8]
        .iter()
        .map(|t| m.tokenizer.encode(t).unwrap())
        .collect();
    // A prompt that repeats itself: the lookup drafts from it at once.
    prompts.push(m.tokenizer.encode(&TEXTS[4].repeat(4)).unwrap());
    drop(m);
    let request = |i: usize, p: &Vec<u32>| {
        let params = if i % 3 == 2 {
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                frequency_penalty: 0.3,
                seed: Some(i as u64),
                max_tokens: 40,
                ignore_eos: true,
                ..Default::default()
            }
        } else {
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(24 + 4 * i)
            }
        };
        GenerateRequest {
            prompt_tokens: p.clone(),
            params,
            adapter: None,
            resume_tokens: 0,
        }
    };
    let run = |spec: Option<NgramConfig>, blocks: usize| {
        let e = engine_with(synthetic_model(), blocks, 16, 64, true, spec);
        let mut rxs: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| e.add_request(request(i, p)).unwrap().1)
            .collect();
        let outs: Vec<Vec<u32>> = rxs
            .iter_mut()
            .map(|rx| collect(rx).unwrap().token_ids)
            .collect();
        let stats = e.stats();
        assert_eq!(
            stats.free_blocks, stats.num_blocks,
            "blocks leaked: {stats:?}"
        );
        (outs, stats)
    };
    let (plain, plain_stats) = run(None, 512);
    assert_eq!(plain_stats.spec_draft_tokens, 0);
    let spec = NgramConfig {
        num_speculative_tokens: 4,
        prompt_lookup_max: 3,
        prompt_lookup_min: 1,
    };
    let (fast, stats) = run(Some(spec), 512);
    assert_eq!(fast, plain);
    assert!(stats.spec_draft_tokens > 0, "{stats:?}");
    assert!(stats.spec_accepted_tokens > 0, "{stats:?}");
    assert!(stats.spec_accepted_tokens <= stats.spec_draft_tokens);
    assert!(
        stats.steps < plain_stats.steps,
        "{stats:?} vs {plain_stats:?}"
    );
    assert_eq!(stats.generation_tokens, plain_stats.generation_tokens);
    // Tight KV: preemption and drafts together.
    let (tight, tight_stats) = run(Some(spec), 14);
    assert_eq!(tight, plain);
    assert!(tight_stats.preemptions > 0, "{tight_stats:?}");
}
