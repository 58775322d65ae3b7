//! The AI-serving lessons end to end: each runs through `sdlab lesson NAME
//! --json` on the real default model, prints the report's shape, and shows
//! the effect it is about. Without the model (`make models`) they skip, or
//! fail under `SDLAB_REQUIRE_REAL_MODELS=1`.

mod common;
use common::sdlab;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn real_model_present() -> bool {
    let present = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        .is_file();
    if !present {
        assert!(
            std::env::var("SDLAB_REQUIRE_REAL_MODELS").map_or(true, |v| v != "1"),
            "the default model is missing: run `make models`"
        );
        eprintln!("skipping: the default model is missing (run `make models`)");
    }
    present
}

/// Runs a lesson, checks the report's shape and that it took under a minute.
fn run(name: &str) -> Value {
    let t = Instant::now();
    let out = sdlab(&["lesson", name, "--json", "--seed", "7"]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "sdlab lesson {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(60), "{name} took {took:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}"));
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
    r
}

fn metric(r: &Value, side: &str, name: &str) -> f64 {
    r[side][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{} lacks {side}.{name}: {r}", r["lesson"]))
}

#[test]
fn paged_attention_wastes_little_and_fits_more_sequences() {
    if !real_model_present() {
        return;
    }
    let r = run("paged-attention");
    let waste = metric(&r, "optimal", "kv_waste_ratio");
    assert!(waste < 0.04, "{r}");
    assert!(waste < metric(&r, "naive", "kv_waste_ratio"), "{r}");
    assert!(
        metric(&r, "optimal", "max_concurrent_seqs")
            >= 2.0 * metric(&r, "naive", "max_concurrent_seqs"),
        "{r}"
    );
    assert!(
        metric(&r, "optimal", "peak_kv_mb") < metric(&r, "naive", "peak_kv_mb"),
        "{r}"
    );
    assert!(metric(&r, "optimal", "max_abs_diff") < 1e-4, "{r}");
}

#[test]
fn continuous_batching_beats_one_at_a_time() {
    if !real_model_present() {
        return;
    }
    let r = run("continuous-batching");
    assert!(
        metric(&r, "optimal", "output_tok_s") > metric(&r, "naive", "output_tok_s"),
        "{r}"
    );
    assert!(
        metric(&r, "optimal", "ttft_p99_ms") < metric(&r, "naive", "ttft_p99_ms"),
        "{r}"
    );
    // Batching must not change what a request gets.
    assert_eq!(
        metric(&r, "optimal", "same_tokens_as_sequential"),
        metric(&r, "optimal", "requests"),
        "{r}"
    );
}

#[test]
fn lora_mixed_batch_is_exact_and_nobody_waits_for_a_merge() {
    if !real_model_present() {
        return;
    }
    let r = run("lora");
    assert_eq!(metric(&r, "optimal", "mixed_equals_alone"), 1.0, "{r}");
    assert!(
        metric(&r, "optimal", "ttft_p99_ms") < metric(&r, "naive", "ttft_p99_ms"),
        "{r}"
    );
    assert!(metric(&r, "naive", "merges") > 0.0, "{r}");
}
