//! The AI-serving lessons end to end: each runs through `sdlab lesson NAME
//! --json` on the real default model and data, prints the report's shape,
//! and shows the effect it is about. Without them (`make models`) they skip,
//! or fail under `SDLAB_REQUIRE_REAL_MODELS=1`.

mod common;
use common::{cached, check_lesson_report, metric, real_model_present, sdlab};
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lessons measure speed, so they run one at a time even though the
/// test harness runs these tests on parallel threads.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a lesson with `seed`, checks the report's shape and that it took
/// under a minute and a half (it takes 5 to 30 s alone on two cores).
fn run_seed(name: &str, seed: u64) -> Value {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let out = sdlab(&["lesson", name, "--json", "--seed", &seed.to_string()]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "sdlab lesson {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(90), "{name} took {took:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}"));
    check_lesson_report(name, &r);
    r
}

/// [`run_seed`] with the tests' usual seed.
fn run(name: &str) -> Value {
    run_seed(name, 7)
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

#[test]
fn kv_cache_gives_the_same_tokens_and_flat_step_time() {
    if !real_model_present() {
        return;
    }
    let r = run("kv-cache");
    assert_eq!(metric(&r, "naive", "same_tokens"), 1.0, "{r}");
    assert_eq!(metric(&r, "optimal", "same_tokens"), 1.0, "{r}");
    assert!(
        metric(&r, "optimal", "ms_per_token_at_256") < metric(&r, "naive", "ms_per_token_at_256"),
        "{r}"
    );
    assert!(
        metric(&r, "optimal", "tokens_computed") < metric(&r, "naive", "tokens_computed"),
        "{r}"
    );
}

#[test]
fn sampling_varies_only_when_it_samples_and_truncation_cuts_the_tail() {
    if !real_model_present() {
        return;
    }
    let r = run("sampling");
    assert_eq!(metric(&r, "naive", "distinct_outputs_greedy"), 1.0, "{r}");
    assert!(metric(&r, "naive", "distinct_outputs") > 1.0, "{r}");
    assert!(metric(&r, "optimal", "distinct_outputs") > 1.0, "{r}");
    assert_eq!(
        metric(&r, "optimal", "tail_mass_beyond_rank_100"),
        0.0,
        "{r}"
    );
    assert!(
        metric(&r, "naive", "tail_mass_beyond_rank_100") > 0.0,
        "{r}"
    );
    assert!(
        metric(&r, "optimal", "entropy_bits") < metric(&r, "naive", "entropy_bits"),
        "{r}"
    );
}

#[test]
fn quantization_shrinks_the_weights_and_keeps_the_predictions() {
    if !real_model_present() {
        return;
    }
    let r = run("quantization");
    let f32_mb = metric(&r, "naive", "weights_mb");
    for q in ["q8_0", "q4_1"] {
        assert!(
            metric(&r, "optimal", &format!("weights_mb_{q}")) < f32_mb,
            "{r}"
        );
        assert!(
            metric(&r, "optimal", &format!("top1_agreement_{q}")) > 0.8,
            "{r}"
        );
        let err = metric(&r, "optimal", &format!("max_abs_logit_error_{q}"));
        assert!(err.is_finite() && err > 0.0, "{r}");
    }
    assert!(
        metric(&r, "optimal", "weights_mb_q4_1") < metric(&r, "optimal", "weights_mb_q8_0"),
        "{r}"
    );
}

#[test]
fn speculative_decoding_keeps_the_output_and_saves_passes() {
    if !real_model_present() {
        return;
    }
    let r = run("speculative-decoding");
    assert_eq!(metric(&r, "naive", "same_output"), 1.0, "{r}");
    assert_eq!(metric(&r, "optimal", "same_output"), 1.0, "{r}");
    assert!(metric(&r, "optimal", "acceptance_rate") > 0.0, "{r}");
    assert!(
        metric(&r, "optimal", "forward_passes") < metric(&r, "naive", "forward_passes"),
        "{r}"
    );
}

#[test]
fn hnsw_keeps_recall_and_beats_the_flat_scan() {
    if !cached("data/glove/glove_6B_50d_emb.npy") {
        return;
    }
    let r = run("hnsw");
    assert_eq!(metric(&r, "naive", "recall_at_10"), 1.0, "{r}");
    assert!(metric(&r, "optimal", "recall_at_10") > 0.9, "{r}");
    assert!(
        metric(&r, "optimal", "queries_per_s") > metric(&r, "naive", "queries_per_s"),
        "{r}"
    );
}

#[test]
fn semantic_cache_hits_paraphrases_that_exact_match_misses() {
    if !common::minilm_present() {
        return;
    }
    for seed in [7, 8] {
        let r = run_seed("semantic-cache", seed);
        assert!(
            metric(&r, "optimal", "hit_rate") > metric(&r, "naive", "hit_rate"),
            "{r}"
        );
        assert_eq!(metric(&r, "naive", "wrong_hits"), 0.0, "{r}");
        assert!(
            metric(&r, "optimal", "hit_rate") <= metric(&r, "optimal", "ideal_hit_rate"),
            "{r}"
        );
    }
}

#[test]
fn structure_aware_chunks_find_answers_at_least_as_often() {
    if !common::minilm_present() || !cached("data/python3.11-doc/faq") {
        return;
    }
    let r = run("rag-chunking");
    assert!(
        metric(&r, "optimal", "hit_at_5") >= metric(&r, "naive", "hit_at_5"),
        "{r}"
    );
    assert!(metric(&r, "optimal", "chunks") > 0.0, "{r}");
}

#[test]
fn two_tower_beats_popularity() {
    if !cached("data/dslabs/Rdata.rdb") {
        return;
    }
    for seed in [7, 8] {
        let r = run_seed("two-tower", seed);
        assert!(
            metric(&r, "optimal", "hr_at_10") > metric(&r, "naive", "hr_at_10"),
            "{r}"
        );
    }
}

#[test]
fn rag_hyde_rerank_measures_every_pipeline_and_keeps_the_candidates() {
    if !real_model_present() || !common::minilm_present() || !cached("data/python3.11-doc/faq") {
        return;
    }
    let r = run("rag-hyde-rerank");
    let pipelines = [
        "dense",
        "dense_rerank",
        "hyde",
        "hyde_answer",
        "hyde_rerank",
    ];
    let mut best_mrr: f64 = 0.0;
    for p in pipelines {
        let m = |name: &str| metric(&r, "optimal", &format!("{name}_{p}"));
        let (h1, h5, mrr) = (m("hit_at_1"), m("hit_at_5"), m("mrr"));
        for v in [h1, h5, mrr] {
            assert!((0.0..=1.0).contains(&v), "{p}: {r}");
        }
        // A question found at rank 1 is found in the top 5, and adds 1 to
        // the reciprocal-rank sum.
        assert!(h5 >= h1 && mrr >= h1, "{p}: {r}");
        assert!(m("ms_per_query") > 0.0, "{p}: {r}");
        best_mrr = best_mrr.max(mrr);
    }
    // The naive side is the plain dense pipeline; the optimal side is the
    // pipeline with the best MRR, whichever it is.
    for s in ["hit_at_1", "hit_at_5", "mrr", "ms_per_query"] {
        assert_eq!(
            metric(&r, "naive", s),
            metric(&r, "optimal", &format!("{s}_dense")),
            "{s}: {r}"
        );
    }
    assert_eq!(metric(&r, "optimal", "mrr"), best_mrr, "{r}");
    assert!(
        metric(&r, "optimal", "mrr") >= metric(&r, "naive", "mrr"),
        "{r}"
    );
    assert_eq!(metric(&r, "naive", "questions"), 40.0, "{r}");
    // HyDE's queries really went through the LLM: non-empty answers of at
    // most 48 new tokens, an LLM call slower than an embedding, and the
    // batched answers equal to those generated alone.
    let tokens = metric(&r, "optimal", "hyde_new_tokens");
    assert!(tokens > 0.0 && tokens <= 48.0, "{r}");
    assert!(metric(&r, "optimal", "hyde_answer_chars") > 0.0, "{r}");
    assert!(
        metric(&r, "optimal", "ms_per_query_hyde") > metric(&r, "optimal", "ms_per_query_dense"),
        "{r}"
    );
    assert_eq!(
        metric(&r, "optimal", "hyde_lone_equals_batched"),
        1.0,
        "{r}"
    );
    assert!(r["notes"].as_str().unwrap().contains("\" -> \""), "{r}");
    // The rerank reorders the first stage's candidates, never swaps them.
    assert_eq!(metric(&r, "optimal", "rerank_kept_candidates"), 1.0, "{r}");
    assert_eq!(metric(&r, "optimal", "candidates"), 10.0, "{r}");
}
