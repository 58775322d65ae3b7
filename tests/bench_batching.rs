//! `sdlab bench batching` end to end on a synthetic model: every mode serves
//! the whole workload, batching never changes a request's greedy tokens, and
//! the KV accounting shows what paged blocks buy over contiguous regions.

use serde_json::Value;
use std::path::PathBuf;

mod common;
use common::{sdlab, synth, tmp};

fn synth_model(name: &str) -> PathBuf {
    let dir = tmp(name);
    synth(&dir, 5);
    dir
}

#[test]
fn three_modes_serve_the_same_workload_with_the_same_tokens() {
    let model = synth_model("model-a");
    let (json, svg) = (tmp("report.json"), tmp("sweep.svg"));
    let out = sdlab(&[
        "bench",
        "batching",
        "--model",
        model.to_str().unwrap(),
        "--num-prompts",
        "16",
        "--request-rate",
        "inf",
        "--concurrency",
        "8",
        "--prompt-len",
        "8,120",
        "--output-len",
        "2,30",
        "--kv-budget-tokens",
        "1024",
        "--max-model-len",
        "256",
        "--max-num-batched-tokens",
        "64",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
        "--sweep",
        "1,4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("continuous_over_static_throughput"),
        "{stdout}"
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let total = r["total_output_tokens"].as_u64().unwrap();
    let modes = r["modes"].as_array().unwrap();
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["sequential", "static", "continuous"]);
    let by = |name: &str| modes.iter().find(|m| m["mode"] == name).unwrap();
    for m in modes {
        assert_eq!(m["output_tokens"].as_u64(), Some(total), "{m}");
        assert_eq!(m["requests"].as_u64(), Some(16));
        // Batch invariance: sdlab's kernels give every request the same
        // greedy tokens whatever else shares its batch.
        assert_eq!(m["same_tokens_as_first_mode"].as_u64(), Some(16), "{m}");
        assert!(m["output_throughput"].as_f64().unwrap() > 0.0);
        let (ttft, tpot) = (&m["ttft_ms"], &m["tpot_ms"]);
        assert!(ttft["p50"].as_f64().unwrap() <= ttft["p99"].as_f64().unwrap());
        assert!(tpot["p50"].as_f64().unwrap() <= tpot["p99"].as_f64().unwrap());
    }
    // Static reserves max-model-len slots per sequence: 1024 / 256 = 4 fit.
    let (seq, stat, cont) = (by("sequential"), by("static"), by("continuous"));
    assert_eq!(stat["batch_limit"].as_u64(), Some(4));
    assert_eq!(stat["max_concurrent_seqs"].as_u64(), Some(4));
    assert_eq!(seq["max_concurrent_seqs"].as_u64(), Some(1));
    // Paged blocks of 16 waste at most a block's tail per sequence; static
    // wastes whatever of its 256 slots a sequence never reaches.
    let waste = |m: &Value| m["kv_waste_ratio"].as_f64().unwrap();
    assert!(waste(cont) < 0.15, "{}", waste(cont));
    assert!(waste(stat) > 0.4, "{}", waste(stat));
    assert_eq!(waste(seq), waste(stat));
    // With every request waiting at once, the engine fills its 8 seats.
    assert_eq!(cont["max_concurrent_seqs"].as_u64(), Some(8));
    assert!(cont["peak_kv_mb"].as_f64().unwrap() < stat["peak_kv_mb"].as_f64().unwrap());
    let ratio = r["ratios"]["continuous_over_static_max_seqs"]
        .as_f64()
        .unwrap();
    assert_eq!(ratio, 2.0);
    // The sweep: sequential once, static and continuous at both limits.
    let sweep = r["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 5, "{sweep:?}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("continuous") && plot.contains("polyline"));
    for f in [json, svg] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let model = synth_model("model-b");
    let m = model.to_str().unwrap();
    for (args, says) in [
        (vec!["--prompt-len", "0,4"], "MIN,MAX"),
        (vec!["--output-len", "9,3"], "MIN,MAX"),
        (vec!["--request-rate=-1"], "positive"),
        (vec!["--request-rate", "fast"], "number or `inf`"),
        (
            vec!["--kv-budget-tokens", "100", "--max-model-len", "512"],
            "holds no sequence",
        ),
        (
            vec!["--max-model-len", "64"],
            "shorter than the longest request",
        ),
        (vec!["--lora", "--lora-rank", "0"], "must be positive"),
        (
            vec!["--lora", "--lora-targets", "lm_head"],
            "unknown LoRA target",
        ),
    ] {
        let mut all = vec!["bench", "batching", "--model", m];
        all.extend(args.iter().copied());
        let out = sdlab(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The LoRA experiment: every row serves the whole workload, and the
/// report carries the rows and ratios the docs quote.
#[test]
fn lora_experiment_serves_every_row() {
    let model = synth_model("model-lora");
    let json = tmp("lora.json");
    let out = sdlab(&[
        "bench",
        "batching",
        "--model",
        model.to_str().unwrap(),
        "--lora",
        "--lora-adapters",
        "3",
        "--lora-rank",
        "4",
        "--lora-repeat",
        "3",
        "--num-prompts",
        "10",
        "--prompt-len",
        "8,40",
        "--output-len",
        "2,12",
        "--kv-budget-tokens",
        "1024",
        "--max-model-len",
        "128",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let total = r["total_output_tokens"].as_u64().unwrap();
    let lora = &r["lora"];
    assert_eq!(lora["num_adapters"], 3);
    let modes: Vec<&str> = lora["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            assert_eq!(row["output_tokens"].as_u64(), Some(total), "{row}");
            assert!(row["output_throughput"].as_f64().unwrap() > 0.0);
            row["mode"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        modes,
        ["base", "lora-1", "lora-mixed", "merged-1", "merged-swap"]
    );
    assert_eq!(lora["rows"][2]["adapters"], 3);
    assert!(lora["rows"][4]["merge_s"].as_f64().unwrap() > 0.0);
    for row in lora["rows"].as_array().unwrap() {
        let (lo, hi) = (
            row["throughput_range"][0].as_f64().unwrap(),
            row["throughput_range"][1].as_f64().unwrap(),
        );
        let median = row["output_throughput"].as_f64().unwrap();
        assert!(lo <= median && median <= hi, "{row}");
    }
    for k in [
        "lora_mixed_over_merged_swap_throughput",
        "lora_mixed_over_base_throughput",
        "lora_1_over_merged_1_throughput",
    ] {
        assert!(lora["ratios"][k].as_f64().unwrap() > 0.0, "{k}");
    }
}
