//! End-to-end checks of the real default model against llama.cpp's outputs
//! (`shared/fixtures/llamacpp_greedy.jsonl`).

mod common;
use common::*;
use models::{load, LoadOptions, WeightFormat};

#[derive(serde::Deserialize)]
struct Case {
    kind: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    prompt_token_ids: Vec<u32>,
    #[serde(default)]
    token_ids: Vec<u32>,
    #[serde(default)]
    logprobs: Vec<f32>,
    #[serde(default)]
    second_logprobs: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(shared_fixture("llamacpp_greedy.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Case>(l).unwrap())
        .filter(|c| c.kind != "meta")
        .collect()
}

#[test]
fn tokenizer_rebuilt_from_gguf_matches_llama_cpp() {
    let Some(path) = real_model_path() else {
        return;
    };
    let m = load(path.to_str().unwrap(), LoadOptions::default()).unwrap();
    for c in cases().iter().filter(|c| c.kind == "completion") {
        assert_eq!(
            m.tokenizer.encode(&c.prompt).unwrap(),
            c.prompt_token_ids,
            "prompt {:?}",
            c.prompt
        );
    }
}

/// The quantized path computes what llama.cpp computes (Q4_1 weights times
/// Q8_1 activations), so it must give llama.cpp's tokens. (Dequantized f32
/// weights skip the activation quantization and legitimately drift from
/// llama.cpp after a few tokens on near-ties.)
#[test]
#[ignore = "known gap: on \"Once upon a time\" sdlab takes llama.cpp's runner-up at token 4 (fixture margin 0.188 nats, the bar is 0.15). The fixture is llama.cpp's AVX2 build with f16 flash attention; llama.cpp's own non-flash path (-fa off) leaves the fixture at exactly this token too. See docs/BENCHMARKS.md"]
fn greedy_continuations_match_llama_cpp() {
    let Some(path) = real_model_path() else {
        return;
    };
    for weights in [WeightFormat::Quantized] {
        let m = load(path.to_str().unwrap(), LoadOptions { weights }).unwrap();
        for c in cases() {
            let got = greedy(&m.model, &c.prompt_token_ids, 16);
            // A divergence is accepted only where llama.cpp's own top two were within 0.15 nats.
            for i in 0..16 {
                if got[i] != c.token_ids[i] {
                    let margin = c.logprobs[i] - c.second_logprobs[i];
                    assert!(
                        margin < 0.15,
                        "{weights}: token {i} of {:?}: got {:?}, want {:?} (margin {margin})",
                        c.prompt,
                        got,
                        &c.token_ids[..16]
                    );
                    break;
                }
            }
            eprintln!("{weights} {:?}: {:?}", c.prompt, got);
        }
    }
}

/// Teacher-forced on llama.cpp's own greedy tokens, sdlab's log-probability
/// of each token is close to llama.cpp's. llama.cpp itself, rebuilt on this
/// machine class, differs from these fixture values by 0.02 to 0.06 nats on
/// average (docs/BENCHMARKS.md); a real bug (RoPE layout, a norm, the
/// quantization) moves them by whole nats.
#[test]
fn teacher_forced_logprobs_track_llama_cpp() {
    let Some(path) = real_model_path() else {
        return;
    };
    let m = load(path.to_str().unwrap(), LoadOptions::default()).unwrap();
    let vocab = m.model.cfg.vocab_size;
    let (mut total, mut count, mut worst) = (0f64, 0usize, 0f64);
    for c in cases() {
        let tokens: Vec<u32> = c
            .prompt_token_ids
            .iter()
            .chain(&c.token_ids)
            .copied()
            .collect();
        let np = c.prompt_token_ids.len();
        let blocks = tokens.len().div_ceil(16);
        let table: Vec<u32> = (0..blocks as u32).collect();
        let mut cache = models::KvCache::new(&m.model.cfg, blocks, 16);
        let rows: Vec<usize> = (np - 1..tokens.len() - 1).collect();
        let seq = models::SeqChunk {
            block_table: &table,
            start: 0,
            len: tokens.len(),
            adapter: None,
        };
        let logits = m.model.forward(&tokens, &[seq], &rows, &mut cache).unwrap();
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let d = (models::eval::log_prob(row, c.token_ids[i]) - c.logprobs[i] as f64).abs();
            total += d;
            worst = worst.max(d);
            count += 1;
        }
    }
    let mean = total / count as f64;
    eprintln!("mean |dlogprob| {mean:.4} over {count} tokens, worst {worst:.4}");
    assert!(mean < 0.08, "mean |dlogprob| {mean}");
    assert!(worst < 0.5, "worst |dlogprob| {worst}");
}
