//! Helpers the end-to-end tests of the `sdlab` binary share: run it, name a
//! scratch path, write a synthetic model.

#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `sdlab` binary from the repository root (without an
/// `OPENAI_API_KEY` from the environment, which `bench serve` would send).
pub fn sdlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdlab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("running sdlab")
}

/// A scratch path unique to this test binary's process.
pub fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sdlab-test-{}-{name}", std::process::id()))
}

/// Writes the `tiny` synthetic model with this seed to `dir`.
pub fn synth(dir: &Path, seed: u64) {
    let seed = seed.to_string();
    let out = sdlab(&[
        "model",
        "synth",
        "--preset",
        "tiny",
        "--out",
        dir.to_str().unwrap(),
        "--seed",
        &seed,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `.cache/<rel>` exists; without it a test skips with a message,
/// or fails when `SDLAB_REQUIRE_REAL_MODELS=1` (as `make test` sets).
pub fn cached(rel: &str) -> bool {
    present_or_skip(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".cache")
            .join(rel),
        &[],
    )
}

/// Whether the default model (SmolLM2-135M-Instruct Q4_1) is in the cache.
pub fn real_model_present() -> bool {
    cached("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Whether all-MiniLM-L6-v2 is in the cache.
pub fn minilm_present() -> bool {
    present_or_skip(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2"),
        &["config.json", "model.safetensors", "tokenizer.json"],
    )
}

fn present_or_skip(p: &Path, files: &[&str]) -> bool {
    if p.exists() && files.iter().all(|f| p.join(f).is_file()) {
        return true;
    }
    if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run `make models`", p.display());
    }
    eprintln!("skipping: {} is missing (run `make models`)", p.display());
    false
}

/// Checks the shape every lesson report shares: its name, a title, notes,
/// and non-empty `naive` and `optimal` objects of finite numbers.
pub fn check_lesson_report(name: &str, r: &serde_json::Value) {
    assert_eq!(r["lesson"], name);
    assert!(r["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        r["notes"].as_str().is_some_and(|n| n.len() > 40),
        "{name}: notes"
    );
    for side in ["naive", "optimal"] {
        let m = r[side].as_object().unwrap();
        assert!(!m.is_empty(), "{name}: {side} is empty");
        assert!(
            m.values().all(|v| v.as_f64().is_some_and(f64::is_finite)),
            "{name}: {r}"
        );
    }
}

/// A lesson report's `side.name` number (`side`: `naive` or `optimal`).
pub fn metric(r: &serde_json::Value, side: &str, name: &str) -> f64 {
    r[side][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{} lacks {side}.{name}: {r}", r["lesson"]))
}
