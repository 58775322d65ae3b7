//! LoRA adapters over real HTTP: choosing one by `model`, mixing adapters in
//! one batch, hot swapping under load, prefix-cache isolation, and clear
//! errors for bad adapters.

mod common;

use common::*;
use models::lora::Target;
use models::LoraAdapter;
use serde_json::{json, Value};
use server::lora::LoraOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

const C: &str = "/v1/completions";

/// A `--lora-dir` with random adapters for the tiny model: `a` (q, v),
/// `b` (all projections), `c` (gate, down), `d` (k, o) and `big` (rank 32).
fn lora_dir(tag: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sdlab-http-lora-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cfg = models::load(model_dir().to_str().unwrap(), Default::default())
        .unwrap()
        .model
        .cfg;
    let adapters: [(&str, usize, &[Target]); 5] = [
        ("a", 8, &[Target::Q, Target::V]),
        ("b", 4, &Target::ALL),
        ("c", 8, &[Target::Gate, Target::Down]),
        ("d", 2, &[Target::K, Target::O]),
        ("big", 32, &[Target::Q]),
    ];
    for (i, (name, rank, targets)) in adapters.into_iter().enumerate() {
        LoraAdapter::synth(&cfg, rank, targets, 40 + i as u64)
            .unwrap()
            .save(&root.join(name), &cfg, MODEL)
            .unwrap();
    }
    root
}

fn start(root: &Path, modules: &[&str], max_loras: usize) -> TestServer {
    TestServer::start_with_loras(
        server_config(),
        engine_options(),
        LoraOptions {
            modules: modules
                .iter()
                .map(|m| (m.to_string(), root.join(m)))
                .collect(),
            lora_dir: Some(root.to_path_buf()),
            max_loras,
            max_lora_rank: 16,
        },
    )
}

fn greedy_body(model: &str, prompt: &str, max_tokens: usize) -> Value {
    json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true})
}

fn text(v: &Value) -> String {
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

/// The value of a Prometheus sample, by its exact series text.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn requests_pick_adapters_by_model_and_a_mixed_batch_matches_each_alone() {
    let root = lora_dir("mixed");
    let srv = start(&root, &["a", "b"], 4);
    let c = client();

    let models = read(c.get(srv.url("/v1/models")).send().await.unwrap())
        .await
        .json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // `--lora-modules` loaded `a` and `b`; the rest of `--lora-dir` is listed, not yet resident.
    assert_eq!(ids, [MODEL, "a", "b", "big", "c", "d"]);
    assert_eq!(models["data"][1]["parent"], MODEL);
    let resident: Vec<bool> = models["data"].as_array().unwrap()[1..]
        .iter()
        .map(|m| m["lora"]["resident"].as_bool().unwrap())
        .collect();
    assert_eq!(resident, [true, true, false, false, false]);

    // Each alone, one after another.
    let prompts = [
        "The engine keeps",
        "Prefix caching finds blocks",
        "The engine keeps",
    ];
    let names = [MODEL, "a", "b"];
    let mut alone = Vec::new();
    for (p, m) in prompts.iter().zip(names) {
        let v = post_ok(&c, &srv.url(C), &greedy_body(m, p, 24)).await;
        assert_eq!(v["model"], m, "the response names the adapter");
        alone.push(text(&v));
    }
    assert_ne!(alone[0], alone[2], "the adapter changes the output");

    // All at once, several times over, so base and both adapters share steps.
    let mut tasks = Vec::new();
    for round in 0..4 {
        for (i, (p, m)) in prompts.iter().zip(names).enumerate() {
            let (c, url, body) = (c.clone(), srv.url(C), greedy_body(m, p, 24));
            tasks.push(tokio::spawn(async move {
                (i, round, text(&post_ok(&c, &url, &body).await))
            }));
        }
    }
    for t in tasks {
        let (i, round, got) = t.await.unwrap();
        assert_eq!(
            got, alone[i],
            "request {i} (round {round}) differs in a mixed batch"
        );
    }
    assert!(
        srv.state.engine.stats().peak_running >= 3,
        "the requests shared steps"
    );

    let page = read(c.get(srv.url("/metrics")).send().await.unwrap())
        .await
        .text;
    assert_eq!(metric(&page, "sdlab_lora_adapters_loaded"), Some(2.0));
    assert_eq!(
        metric(&page, "sdlab_lora_requests_total{adapter=\"a\"}"),
        Some(5.0)
    );
    assert_eq!(
        metric(&page, "sdlab_lora_requests_total{adapter=\"b\"}"),
        Some(5.0)
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Streams one request; `Ok(tokens)` when it finished with `length`,
/// `Err(status)` when it was refused.
async fn stream_one(c: reqwest::Client, url: String, model: String) -> Result<usize, u16> {
    let mut body = greedy_body(&model, "Continuous batching lets sequences", 24);
    body["stream"] = json!(true);
    let r = post(&c, &url, &body).await;
    if r.status != 200 {
        assert_error(&r, r.status, Some("model"));
        return Err(r.status);
    }
    let events = sse_data(&r.text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str().map(String::from));
    assert_eq!(finish.as_deref(), Some("length"), "{model}: {:?}", r.text);
    assert!(chunks.iter().all(|c| c["model"] == model.as_str()));
    Ok(chunks.len())
}

#[tokio::test]
async fn hot_swap_under_load() {
    let root = lora_dir("swap");
    let srv = start(&root, &["a", "b", "c"], 4);
    let c = client();
    let names = ["a", "b", "c"];
    let mut first_wave = Vec::new();
    for i in 0..32 {
        let task = stream_one(c.clone(), srv.url(C), names[i % 3].to_string());
        first_wave.push((names[i % 3], tokio::spawn(task)));
    }
    // Swap while the first wave runs: `c` out, `d` in, once requests hold `c`.
    let mut c_in_flight = 0;
    for _ in 0..1000 {
        c_in_flight = srv.state.loras.info("c").unwrap().in_flight;
        if c_in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(c_in_flight > 0, "no request held `c`");
    let r = post(
        &c,
        &srv.url("/v1/unload_lora_adapter"),
        &json!({"lora_name": "c"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(
        &c,
        &srv.url("/v1/load_lora_adapter"),
        &json!({"lora_name": "d", "lora_path": "d"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut second_wave = Vec::new();
    for i in 0..32 {
        let name = ["a", "b", "c", "d"][i % 4];
        second_wave.push((
            name,
            tokio::spawn(stream_one(c.clone(), srv.url(C), name.into())),
        ));
    }
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        let mut out = Vec::new();
        for (wave, tasks) in [(1, first_wave), (2, second_wave)] {
            for (name, t) in tasks {
                out.push((wave, name, t.await.unwrap()));
            }
        }
        out
    })
    .await
    .expect("a request hung");
    let mut c_completed = 0;
    for (wave, name, result) in &all {
        match (wave, *name, result) {
            (2, "c", r) => assert_eq!(*r, Err(404), "`c` after its unload"),
            // A first-wave `c` request either got `c` before the unload and
            // ran to the end, or arrived after it and got 404.
            (1, "c", Ok(_)) => c_completed += 1,
            (1, "c", r) => assert_eq!(*r, Err(404)),
            (_, n, r) => assert!(r.is_ok(), "wave {wave} `{n}`: {r:?}"),
        }
    }
    assert!(
        c_completed >= c_in_flight,
        "{c_in_flight} requests held `c` at the unload, {c_completed} finished"
    );
    // Nothing leaked.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = srv.state.engine.stats();
    assert_eq!((stats.running, stats.waiting), (0, 0));
    assert_eq!(srv.blocks_used(), 0, "KV blocks leaked");
    let ids: Vec<String> = srv.state.loras.list().into_iter().map(|a| a.name).collect();
    assert_eq!(ids, ["a", "b", "big", "d"]);
    let _ = std::fs::remove_dir_all(&root);
}

fn cached(v: &Value) -> u64 {
    v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn prefix_cache_never_crosses_adapters_or_generations() {
    let root = lora_dir("prefix");
    let srv = start(&root, &["a", "b"], 4);
    let c = client();
    let prompt = "The engine keeps many sequences in flight at once, and each one owns a list of blocks. A block holds sixteen tokens of keys and values.";
    let hits = || srv.state.engine.stats().prefix_cache.hit_tokens;
    let run = |model: &'static str| {
        let (c, url) = (c.clone(), srv.url(C));
        async move { post_ok(&c, &url, &greedy_body(model, prompt, 2)).await }
    };
    let first = run("a").await;
    assert_eq!(cached(&first), 0);
    let again = run("a").await;
    assert!(
        cached(&again) >= 16,
        "same adapter, same prompt: a hit ({again})"
    );
    let h = hits();
    for other in ["b", MODEL] {
        let v = run(other).await;
        assert_eq!(cached(&v), 0, "`{other}` must not reuse `a`'s blocks");
    }
    assert_eq!(hits(), h, "the prefix-cache counter did not move");
    // A new generation of `a` (same name, reloaded) starts cold.
    let r = post(
        &c,
        &srv.url("/v1/load_lora_adapter"),
        &json!({"lora_name": "a", "lora_path": "a"}),
    )
    .await;
    assert_eq!(r.json()["adapter"]["generation"], 2);
    let v = run("a").await;
    assert_eq!(
        cached(&v),
        0,
        "generation 2 must not reuse generation 1's blocks"
    );
    assert_eq!(hits(), h);
    assert!(
        cached(&run("a").await) >= 16,
        "generation 2 hits its own blocks"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn bad_adapters_get_clear_errors_and_change_nothing() {
    let root = lora_dir("errors");
    let srv = start(&root, &["a"], 4);
    let c = client();
    let load = |name: &str, path: &str| {
        let (c, url) = (c.clone(), srv.url("/v1/load_lora_adapter"));
        let body = json!({"lora_name": name, "lora_path": path});
        async move { post(&c, &url, &body).await }
    };
    let before = read(c.get(srv.url("/v1/models")).send().await.unwrap())
        .await
        .text;
    assert_error(&load("x", "../a").await, 400, None);
    assert_error(&load("x", "/etc").await, 400, None);
    assert_error(&load("x", "missing").await, 404, Some("lora_name"));
    assert_error(&load("x", "big").await, 400, None); // rank 32 > --max-lora-rank 16
    assert_error(&load(MODEL, "a").await, 400, None);
    std::fs::create_dir_all(root.join("corrupt")).unwrap();
    std::fs::write(root.join("corrupt/adapter_config.json"), "{\"r\": 8").unwrap();
    let r = load("x", "corrupt").await;
    assert_error(&r, 400, None);
    assert!(r.text.contains("adapter_config.json"), "{}", r.text);
    // An adapter for a model of another shape.
    let other = models::synth::SynthPreset::by_name("small").unwrap();
    let other_dir = root.join("other-model");
    models::synth::write_synthetic_model(&other_dir, &other, 1).unwrap();
    let other_cfg = models::load(other_dir.to_str().unwrap(), Default::default())
        .unwrap()
        .model
        .cfg;
    LoraAdapter::synth(&other_cfg, 4, &[Target::Q], 1)
        .unwrap()
        .save(&root.join("wrong-shape"), &other_cfg, "small")
        .unwrap();
    let r = load("x", "wrong-shape").await;
    assert_error(&r, 400, None);
    assert!(
        r.text.contains("invalid LoRA adapter") && r.text.contains("the model has"),
        "{}",
        r.text
    );
    let r = post(
        &c,
        &srv.url("/v1/load_lora_adapter"),
        &json!({"lora_name": "x"}),
    )
    .await;
    assert_error(&r, 400, Some("lora_path"));
    let r = post(
        &c,
        &srv.url("/v1/unload_lora_adapter"),
        &json!({"lora_name": "nope"}),
    )
    .await;
    assert_error(&r, 404, Some("lora_name"));
    let after = read(c.get(srv.url("/v1/models")).send().await.unwrap())
        .await
        .text;
    assert_eq!(before, after, "failed loads changed the adapter list");
    // Unknown model names are 404 on `model`; the server is still up.
    let r = post(&c, &srv.url(C), &greedy_body("nope", "hi", 2)).await;
    assert_error(&r, 404, Some("model"));
    post_ok(&c, &srv.url(C), &greedy_body("a", "hi", 2)).await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn lora_dir_adapters_load_on_demand_within_max_loras() {
    let root = lora_dir("lru");
    let srv = start(&root, &[], 2);
    let c = client();
    for m in ["a", "b", "c"] {
        post_ok(&c, &srv.url(C), &greedy_body(m, "hello there", 3)).await;
    }
    let page = read(c.get(srv.url("/metrics")).send().await.unwrap())
        .await
        .text;
    assert_eq!(metric(&page, "sdlab_lora_adapters_loaded"), Some(2.0));
    let list = srv.state.loras.list();
    let resident: Vec<&str> = list
        .iter()
        .filter(|a| a.resident)
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(
        resident,
        ["b", "c"],
        "the least recently used (`a`) was evicted"
    );
    // `a` comes back from disk as its second generation.
    post_ok(&c, &srv.url(C), &greedy_body("a", "hello there", 3)).await;
    assert_eq!(srv.state.loras.info("a").unwrap().generation, 2);
    let _ = std::fs::remove_dir_all(&root);
}
