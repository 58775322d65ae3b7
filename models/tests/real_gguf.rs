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
#[ignore = "known gap: on \"Once upon a time\" sdlab picks llama.cpp's runner-up at token 4, where llama.cpp's margin is 0.188 nats (the bar is 0.15); the other four prompts pass. Teacher-forced log-probs differ from llama.cpp's by 0.03-0.07 nats on average; the cause is not found yet (see README)"]
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
