//! Helpers the end-to-end tests of the `sdlab` binary share: run it, name a
//! scratch path, write a synthetic model.

#![allow(dead_code)]

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
