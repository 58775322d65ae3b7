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

/// Whether all-MiniLM-L6-v2 is in the cache; without it a test skips with a
/// message, or fails when `SDLAB_REQUIRE_REAL_MODELS=1` (as `make test` sets).
pub fn minilm_present() -> bool {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2");
    if ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| p.join(f).is_file())
    {
        return true;
    }
    if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run `make models`", p.display());
    }
    eprintln!("skipping: {} is missing (run `make models`)", p.display());
    false
}
