//! The `sdlab` binary end to end: synthetic models, generation, perplexity
//! parity with llama.cpp, and clear errors.

use std::path::Path;
use std::process::Output;

mod common;
use common::{real_model_present, sdlab, synth, tmp};

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "sdlab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn synth_is_deterministic_and_generate_json_works() {
    let (a, b) = (tmp("synth-a"), tmp("synth-b"));
    for dir in [&a, &b] {
        synth(dir, 3);
    }
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs"
        );
    }
    let run = || {
        stdout_json(&sdlab(&[
            "generate",
            "--model",
            a.to_str().unwrap(),
            "--prompt",
            "The engine keeps",
            "--max-tokens",
            "12",
            "--ignore-eos",
            "--json",
        ]))
    };
    let first = run();
    assert_eq!(first["token_ids"].as_array().unwrap().len(), 12);
    assert_eq!(first["finish_reason"], "length");
    assert!(first["text"].is_string());
    assert_eq!(first, run(), "greedy generation is deterministic");
}

/// `lora synth` writes a PEFT folder; `generate --lora` runs under it.
#[test]
fn lora_synth_then_generate_under_it() {
    let model = tmp("lora-model");
    synth(&model, 3);
    let m = model.to_str().unwrap();
    let adapter = tmp("lora-adapter");
    let out = sdlab(&[
        "lora",
        "synth",
        "--model",
        m,
        "--rank",
        "4",
        "--targets",
        "all",
        "--seed",
        "2",
        "--out",
        adapter.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 7);
    assert!(adapter.join("adapter_model.safetensors").is_file());
    let gen = |lora: Option<&str>| {
        let mut args = vec![
            "generate",
            "--model",
            m,
            "--prompt",
            "The engine keeps",
            "--max-tokens",
            "12",
            "--ignore-eos",
            "--json",
        ];
        if let Some(l) = lora {
            args.extend(["--lora", l]);
        }
        stdout_json(&sdlab(&args))
    };
    let with = gen(Some(adapter.to_str().unwrap()));
    assert_eq!(with, gen(Some(adapter.to_str().unwrap())), "deterministic");
    assert_ne!(
        with["token_ids"],
        gen(None)["token_ids"],
        "the adapter changes the output"
    );

    for (args, says) in [
        (
            vec![
                "lora",
                "synth",
                "--model",
                m,
                "--targets",
                "lm_head",
                "--out",
                "/tmp/x",
            ],
            "unknown LoRA target",
        ),
        (
            vec![
                "lora", "synth", "--model", m, "--rank", "0", "--out", "/tmp/x",
            ],
            "--rank must be positive",
        ),
        (
            vec![
                "generate",
                "--model",
                m,
                "--prompt",
                "hi",
                "--lora",
                "/no/such/adapter",
            ],
            "adapter_config.json",
        ),
        (
            vec!["serve", "--model", m, "--lora-modules", "noequals"],
            "NAME=PATH",
        ),
    ] {
        let out = sdlab(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn missing_model_is_a_one_line_error_with_a_fix() {
    let out = sdlab(&["generate", "--model", "no-such-model", "--prompt", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("make models"), "{err}");
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["generate", "--help"],
        vec!["chat", "--help"],
        vec!["eval", "perplexity", "--help"],
        vec!["model", "synth", "--help"],
        vec!["bench", "model", "--help"],
        vec!["serve", "--help"],
        vec!["lora", "synth", "--help"],
        vec!["lora", "train", "--help"],
    ] {
        let out = sdlab(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

/// llama.cpp's `llama-perplexity -c 512` on the same file and text gives
/// 21.2584 (shared/BASELINES.md); sdlab must be within 2%.
#[test]
fn perplexity_matches_llama_cpp_within_two_percent() {
    if !real_model_present() {
        return;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/austen-pp.txt");
    let v = stdout_json(&sdlab(&[
        "eval",
        "perplexity",
        "--model",
        "smollm2-135m-instruct",
        "--file",
        file.to_str().unwrap(),
        "--ctx",
        "512",
        "--json",
    ]));
    let ppl = v["perplexity"].as_f64().unwrap();
    assert_eq!(v["windows"], 19);
    assert_eq!(v["tokens_scored"], 4845);
    let llama_cpp = 21.2584;
    assert!(
        (ppl / llama_cpp - 1.0).abs() < 0.02,
        "PPL {ppl} vs llama.cpp {llama_cpp}"
    );
}

/// sdlab's greedy chat answer against llama.cpp's (the fixture's chat
/// case), under the rule `models/tests/real_gguf.rs` applies to the raw
/// prompts: the tokens are llama.cpp's up to the first difference, and a
/// difference is accepted only where llama.cpp's own top two were within
/// 0.15 nats (a near-tie, where the last bits of any kernel decide).
#[test]
fn chat_generation_on_the_real_model_matches_llama_cpp() {
    if !real_model_present() {
        return;
    }
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/llamacpp_greedy.jsonl");
    let text = std::fs::read_to_string(&fixture).expect("the llama.cpp fixture");
    let case: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|c| c["kind"] == "chat")
        .expect("a chat case");
    assert_eq!(
        case["messages"][0]["content"],
        "What is the capital of France?"
    );
    let v = stdout_json(&sdlab(&[
        "generate",
        "--prompt",
        "What is the capital of France?",
        "--chat",
        "--max-tokens",
        "16",
        "--json",
    ]));
    let floats = |k: &str| -> Vec<f64> {
        case[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (logprobs, second) = (floats("logprobs"), floats("second_logprobs"));
    let want: Vec<u64> = case["token_ids"].as_array().unwrap()[..16]
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let got: Vec<u64> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(got.len(), 16);
    if let Some(i) = (0..16).find(|&i| got[i] != want[i]) {
        let margin = logprobs[i] - second[i];
        assert!(
            margin < 0.15,
            "token {i}: got {got:?}, llama.cpp {want:?} (its margin there {margin:.3} nats)"
        );
        eprintln!("parts from llama.cpp at token {i}, a near-tie (margin {margin:.3} nats)");
    }
}
