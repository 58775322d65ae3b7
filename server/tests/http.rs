//! The OpenAI-compatible HTTP API end to end, over real HTTP: a server
//! started in-process on an ephemeral port with the tiny synthetic model, and
//! a real client. Errors, streaming, metrics, disconnects, concurrency,
//! hostile input and graceful shutdown. Error cases, limits and the
//! hostile-input sweep are in `http/errors.rs`, a module of this test;
//! vLLM's extensions (speculative decoding, `return_token_ids`, vLLM metric
//! names) in `http/extensions.rs`.

mod common;
#[path = "http/errors.rs"]
mod errors;
#[path = "http/extensions.rs"]
mod extensions;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn text_of(v: &Value, i: usize) -> String {
    let c = &v["choices"][i];
    c["text"]
        .as_str()
        .or_else(|| c["message"]["content"].as_str())
        .unwrap_or_else(|| panic!("no text in choice {i}: {v}"))
        .to_string()
}

/// `usage` is present, adds up, and has the expected counts where given.
fn check_usage(v: &Value, prompt: Option<usize>, completion: Option<usize>) -> (u64, u64) {
    let u = &v["usage"];
    let p = u["prompt_tokens"].as_u64().expect("usage.prompt_tokens");
    let c = u["completion_tokens"]
        .as_u64()
        .expect("usage.completion_tokens");
    assert_eq!(u["total_tokens"].as_u64(), Some(p + c), "{u}");
    if let Some(want) = prompt {
        assert_eq!(p, want as u64, "prompt_tokens: {u}");
    }
    if let Some(want) = completion {
        assert_eq!(c, want as u64, "completion_tokens: {u}");
    }
    (p, c)
}

fn encode(srv: &TestServer, text: &str) -> Vec<u32> {
    srv.state.engine.tokenizer().encode(text).unwrap()
}

#[tokio::test]
async fn completions_non_streaming() {
    let srv = TestServer::default_server();
    let c = client();
    let url = srv.url("/v1/completions");
    let ids0 = encode(&srv, TEXTS[0]);
    let ids4 = encode(&srv, TEXTS[4]);

    // A string prompt.
    let a = post_ok(&c, &url, &greedy_completion(TEXTS[0], 12)).await;
    assert_eq!(a["object"], "text_completion");
    assert_eq!(a["model"], MODEL);
    assert!(a["id"].as_str().unwrap().starts_with("cmpl-"), "{a}");
    assert!(a["created"].as_u64().unwrap() > 1_600_000_000, "{a}");
    let choices = a["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["finish_reason"], "length");
    assert!(choices[0]["logprobs"].is_null());
    check_usage(&a, Some(ids0.len()), Some(12));
    let text0 = text_of(&a, 0);
    assert!(!text0.is_empty());

    // Greedy is deterministic.
    let again = post_ok(&c, &url, &greedy_completion(TEXTS[0], 12)).await;
    assert_eq!(text_of(&again, 0), text0);
    assert_ne!(again["id"], a["id"], "ids are unique");

    // Token ids give what the text gives.
    let t = post_ok(&c, &url, &greedy_completion(ids0.clone(), 12)).await;
    assert_eq!(text_of(&t, 0), text0);
    check_usage(&t, Some(ids0.len()), Some(12));

    // A list of strings: one choice per prompt, in order, usage summed.
    let alone4 = post_ok(&c, &url, &greedy_completion(TEXTS[4], 12)).await;
    let l = post_ok(&c, &url, &greedy_completion(vec![TEXTS[0], TEXTS[4]], 12)).await;
    let choices = l["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{l}");
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(text_of(&l, 0), text0);
    assert_eq!(text_of(&l, 1), text_of(&alone4, 0));
    check_usage(&l, Some(ids0.len() + ids4.len()), Some(24));

    // A list of token-id lists works the same way.
    let b = post_ok(&c, &url, &greedy_completion(json!([ids0, ids4]), 12)).await;
    assert_eq!(text_of(&b, 0), text0);
    assert_eq!(text_of(&b, 1), text_of(&alone4, 0));

    // A seed makes sampling reproducible; different seeds differ.
    let seeded = |seed: u64| {
        json!({"model": MODEL, "prompt": TEXTS[2], "max_tokens": 24, "temperature": 0.8,
               "seed": seed, "ignore_eos": true})
    };
    let s1 = text_of(&post_ok(&c, &url, &seeded(1234)).await, 0);
    let s2 = text_of(&post_ok(&c, &url, &seeded(1234)).await, 0);
    assert_eq!(s1, s2, "same seed, same text");
    let mut seen = HashSet::new();
    for seed in 1..=4 {
        seen.insert(text_of(&post_ok(&c, &url, &seeded(seed)).await, 0));
    }
    assert!(seen.len() > 1, "four seeds gave one text: {seen:?}");

    // n = 2 with a seed: two choices, each reproducible.
    let mut two = seeded(1234);
    two["n"] = json!(2);
    let n1 = post_ok(&c, &url, &two).await;
    let n2 = post_ok(&c, &url, &two).await;
    assert_eq!(n1["choices"].as_array().unwrap().len(), 2);
    assert_eq!(n1["choices"], n2["choices"]);
    assert_eq!(text_of(&n1, 0), s1, "choice 0 uses the seed itself");
    // The prompt counts once for its n choices.
    check_usage(&n1, Some(encode(&srv, TEXTS[2]).len()), Some(48));
}

#[tokio::test]
async fn chat_non_streaming() {
    let srv = TestServer::default_server();
    let c = client();
    let url = srv.url("/v1/chat/completions");
    let r = post_ok(&c, &url, &greedy_chat("What is the capital of France?", 10)).await;
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["model"], MODEL);
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"), "{r}");
    let ch = &r["choices"][0];
    assert_eq!(ch["index"], 0);
    assert_eq!(ch["message"]["role"], "assistant");
    assert!(ch["message"]["content"].is_string());
    assert_eq!(ch["finish_reason"], "length", "max_tokens was hit: {r}");
    check_usage(&r, None, Some(10));
    let again = post_ok(&c, &url, &greedy_chat("What is the capital of France?", 10)).await;
    assert_eq!(text_of(&again, 0), text_of(&r, 0));

    // max_completion_tokens wins over max_tokens.
    let mut b = greedy_chat("What is the capital of France?", 20);
    b["max_completion_tokens"] = json!(5);
    let r5 = post_ok(&c, &url, &b).await;
    assert_eq!(r5["choices"][0]["finish_reason"], "length");
    check_usage(&r5, None, Some(5));

    // Without ignore_eos the model may stop on its own, but never past max_tokens.
    let free = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 30,
                      "temperature": 0});
    let f = post_ok(&c, &url, &free).await;
    let reason = f["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(reason == "stop" || reason == "length", "{f}");
    let (_, n) = check_usage(&f, None, None);
    assert!(n <= 30);

    // Content given as text parts renders like the plain string.
    let parts = json!({"messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                         {"type": "text", "text": "of France?"}]}],
        "max_tokens": 10, "temperature": 0, "ignore_eos": true});
    assert_eq!(text_of(&post_ok(&c, &url, &parts).await, 0), text_of(&r, 0));
}

/// Streams `body` and checks the chunk format; returns the text per choice
/// and the usage chunk, if any.
async fn stream_and_check(
    c: &reqwest::Client,
    url: &str,
    body: &Value,
    chat: bool,
) -> (Vec<String>, Option<Value>) {
    let data = post_sse(c, url, body).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    let (chunks, usage) = if include_usage {
        let (last, rest) = chunks.split_last().unwrap();
        assert_eq!(last["choices"], json!([]), "usage chunk: {last}");
        assert_eq!(last["object"], object);
        check_usage(last, None, None);
        for ch in rest {
            assert!(ch["usage"].is_null(), "only the last chunk has usage: {ch}");
        }
        (rest.to_vec(), Some(last["usage"].clone()))
    } else {
        for ch in &chunks {
            assert!(ch.get("usage").is_none(), "{ch}");
        }
        (chunks, None)
    };
    let n = chunks
        .iter()
        .map(|ch| ch["choices"][0]["index"].as_u64().unwrap() as usize + 1)
        .max()
        .unwrap();
    let mut texts = vec![String::new(); n];
    let mut seen = vec![false; n];
    let mut finished = vec![false; n];
    for ch in &chunks {
        assert_eq!(ch["object"], object, "{ch}");
        assert_eq!(ch["model"], MODEL);
        assert_eq!(ch["id"], chunks[0]["id"], "one id per stream");
        let choices = ch["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1, "{ch}");
        let choice = &choices[0];
        let i = choice["index"].as_u64().unwrap() as usize;
        assert!(!finished[i], "chunk after finish_reason: {ch}");
        if !choice["finish_reason"].is_null() {
            finished[i] = true;
        }
        let piece = if chat {
            let delta = &choice["delta"];
            if seen[i] {
                assert!(delta.get("role").is_none(), "role only first: {ch}");
            } else {
                assert_eq!(delta["role"], "assistant", "first delta: {ch}");
            }
            delta["content"].as_str().unwrap_or("")
        } else {
            choice["text"].as_str().unwrap()
        };
        seen[i] = true;
        texts[i].push_str(piece);
    }
    assert!(finished.iter().all(|&f| f), "every choice finishes");
    (texts, usage)
}

#[tokio::test]
async fn streaming_matches_non_streaming() {
    let srv = TestServer::default_server();
    let c = client();
    for (path, chat) in [("/v1/completions", false), ("/v1/chat/completions", true)] {
        let url = srv.url(path);
        let body = if chat {
            greedy_chat(TEXTS[9], 20)
        } else {
            greedy_completion(TEXTS[1], 20)
        };
        let whole = post_ok(&c, &url, &body).await;
        let mut s = body.clone();
        s["stream"] = json!(true);
        let (texts, usage) = stream_and_check(&c, &url, &s, chat).await;
        assert_eq!(texts, vec![text_of(&whole, 0)], "{path}");
        assert!(usage.is_none());

        s["stream_options"] = json!({"include_usage": true});
        let (texts, usage) = stream_and_check(&c, &url, &s, chat).await;
        assert_eq!(texts, vec![text_of(&whole, 0)], "{path}");
        assert_eq!(counts(&usage.unwrap()), counts(&whole["usage"]), "{path}");
    }
    // Several choices interleave in one stream; each equals its whole version.
    let url = srv.url("/v1/completions");
    let body = greedy_completion(vec![TEXTS[0], TEXTS[4]], 10);
    let whole = post_ok(&c, &url, &body).await;
    let mut s = body.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let (texts, usage) = stream_and_check(&c, &url, &s, false).await;
    assert_eq!(texts, vec![text_of(&whole, 0), text_of(&whole, 1)]);
    assert_eq!(counts(&usage.unwrap()), counts(&whole["usage"]));
}

/// Token counts of a usage object (cached-token details vary with the prefix cache).
fn counts(u: &Value) -> [Value; 3] {
    ["prompt_tokens", "completion_tokens", "total_tokens"].map(|k| u[k].clone())
}

#[tokio::test]
async fn stop_strings() {
    let srv = TestServer::default_server();
    let c = client();
    for (path, chat) in [("/v1/completions", false), ("/v1/chat/completions", true)] {
        let url = srv.url(path);
        let body = if chat {
            greedy_chat(TEXTS[3], 40)
        } else {
            greedy_completion(TEXTS[9], 40)
        };
        let full = text_of(&post_ok(&c, &url, &body).await, 0);
        // A stop string taken from the middle of the greedy output.
        let chars: Vec<char> = full.chars().collect();
        assert!(chars.len() >= 10, "output too short to cut: {full:?}");
        let mid = chars.len() / 2;
        let stop: String = chars[mid..mid + 3].iter().collect();
        let expected = &full[..full.find(&stop).unwrap()];

        for stops in [json!(stop), json!(["\u{1}never matches", stop])] {
            let mut b = body.clone();
            b["stop"] = stops;
            let r = post_ok(&c, &url, &b).await;
            assert_eq!(text_of(&r, 0), expected, "{path}: stop {stop:?}");
            assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
            let (_, n) = check_usage(&r, None, None);
            assert!(n < 40, "stopped early: {r}");
            b["stream"] = json!(true);
            let (texts, _) = stream_and_check(&c, &url, &b, chat).await;
            assert_eq!(texts, vec![expected.to_string()], "{path} streamed");
        }
    }
}

#[tokio::test]
async fn disconnect_mid_stream_frees_blocks() {
    let srv = TestServer::default_server();
    let c = client();
    let max_tokens = 1900;
    let mut body = greedy_completion(TEXTS[5], max_tokens);
    body["stream"] = json!(true);
    let mut resp = c
        .post(srv.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = String::new();
    while got.matches("data: ").count() < 4 {
        let chunk = resp.chunk().await.unwrap().expect("stream ended early");
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        srv.blocks_used() > 0,
        "the request holds blocks while it runs"
    );
    let t0 = Instant::now();
    drop(resp);
    drop(c);
    let c = client();
    let took = wait_blocks_free(&c, &srv.base, Duration::from_secs(2)).await;
    let stats = srv.state.engine.stats();
    assert_eq!(stats.running + stats.waiting, 0, "{stats:?}");
    assert!(
        (stats.generation_tokens as usize) < max_tokens as usize,
        "the request ran to the end instead of being aborted ({took:?}): {stats:?}"
    );
    eprintln!(
        "blocks freed {took:?} after the disconnect ({:?})",
        t0.elapsed()
    );
    // The disconnected request is counted once, as aborted.
    let samples = scrape(&c, &srv.base).await;
    let aborted = samples
        .iter()
        .find(|s| {
            s.name == "sdlab_requests_finished_total"
                && s.labels.iter().any(|(k, v)| k == "reason" && v == "abort")
        })
        .map(|s| s.value);
    assert_eq!(aborted, Some(1.0), "{samples:?}");
    // The server still serves.
    post_ok(&c, &srv.url("/v1/completions"), &greedy_completion("hi", 4)).await;
}

const METRIC_NAMES: [&str; 14] = [
    "sdlab_requests_running",
    "sdlab_requests_waiting",
    "sdlab_kv_blocks_total",
    "sdlab_kv_blocks_used",
    "sdlab_kv_cache_usage_ratio",
    "sdlab_prompt_tokens_total",
    "sdlab_generation_tokens_total",
    "sdlab_requests_finished_total",
    "sdlab_preemptions_total",
    "sdlab_prefix_cache_queries_total",
    "sdlab_prefix_cache_hits_total",
    "sdlab_time_to_first_token_seconds",
    "sdlab_time_per_output_token_seconds",
    "sdlab_e2e_request_latency_seconds",
];

#[tokio::test]
async fn metrics_exposition_and_counters() {
    let srv = TestServer::default_server();
    let c = client();
    let resp = c.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let before = parse_prometheus(&resp.text().await.unwrap()).unwrap();
    assert_eq!(metric(&before, "sdlab_prompt_tokens_total"), Some(0.0));
    assert_eq!(metric(&before, "sdlab_generation_tokens_total"), Some(0.0));
    assert_eq!(
        metric(&before, "sdlab_e2e_request_latency_seconds_count"),
        Some(0.0)
    );

    // K requests, both endpoints, streamed and not; one choice each.
    let cu = srv.url("/v1/completions");
    let ch = srv.url("/v1/chat/completions");
    let mut usages = Vec::new();
    for (i, t) in TEXTS[..3].iter().enumerate() {
        let r = post_ok(&c, &cu, &greedy_completion(*t, 5 + i as u32)).await;
        usages.push(r["usage"].clone());
    }
    usages.push(post_ok(&c, &ch, &greedy_chat("hello there", 7)).await["usage"].clone());
    let free = json!({"prompt": TEXTS[6], "max_tokens": 9, "temperature": 0});
    usages.push(post_ok(&c, &cu, &free).await["usage"].clone());
    for (url, mut body) in [
        (&cu, greedy_completion(TEXTS[7], 6)),
        (&ch, greedy_chat(TEXTS[8], 8)),
    ] {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let data = post_sse(&c, url, &body).await;
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        usages.push(last["usage"].clone());
    }
    let k = usages.len() as f64;
    let sum = |key: &str| usages.iter().map(|u| u[key].as_f64().unwrap()).sum::<f64>();

    let s = scrape(&c, &srv.base).await;
    for name in METRIC_NAMES {
        let present = s.iter().any(|x| x.name == name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .all(|suffix| s.iter().any(|x| x.name == format!("{name}{suffix}")));
        assert!(present, "{name} is missing");
    }
    for h in [
        "sdlab_time_to_first_token_seconds",
        "sdlab_time_per_output_token_seconds",
        "sdlab_e2e_request_latency_seconds",
    ] {
        let buckets: Vec<&Sample> = s
            .iter()
            .filter(|x| x.name == format!("{h}_bucket"))
            .collect();
        assert!(buckets.len() > 2, "{h}");
        let inf = buckets
            .iter()
            .find(|b| b.labels.iter().any(|(k, v)| k == "le" && v == "+Inf"))
            .unwrap_or_else(|| panic!("{h} has no +Inf bucket"));
        let count = metric(&s, &format!("{h}_count")).unwrap();
        assert_eq!(inf.value, count, "{h}: +Inf bucket equals _count");
        let mut prev = 0.0;
        for b in &buckets {
            assert!(b.value >= prev, "{h}: buckets are cumulative");
            prev = b.value;
        }
    }
    assert_eq!(
        metric(&s, "sdlab_prompt_tokens_total"),
        Some(sum("prompt_tokens"))
    );
    assert_eq!(
        metric(&s, "sdlab_generation_tokens_total"),
        Some(sum("completion_tokens"))
    );
    assert_eq!(metric(&s, "sdlab_requests_finished_total"), Some(k));
    assert_eq!(
        metric(&s, "sdlab_e2e_request_latency_seconds_count"),
        Some(k)
    );
    assert_eq!(
        metric(&s, "sdlab_time_to_first_token_seconds_count"),
        Some(k)
    );
    for f in &s {
        if f.name == "sdlab_requests_finished_total" {
            let reason = &f.labels.iter().find(|(k, _)| k == "reason").unwrap().1;
            assert!(["stop", "length"].contains(&reason.as_str()), "{f:?}");
        }
    }
    let stats = srv.state.engine.stats();
    assert_eq!(
        metric(&s, "sdlab_kv_blocks_total"),
        Some(stats.num_blocks as f64)
    );
    assert_eq!(metric(&s, "sdlab_kv_blocks_used"), Some(0.0));
    assert_eq!(metric(&s, "sdlab_kv_cache_usage_ratio"), Some(0.0));
    assert_eq!(metric(&s, "sdlab_requests_running"), Some(0.0));
    assert_eq!(metric(&s, "sdlab_requests_waiting"), Some(0.0));
    let q = metric(&s, "sdlab_prefix_cache_queries_total").unwrap();
    let hits = metric(&s, "sdlab_prefix_cache_hits_total").unwrap();
    assert!(q > 0.0 && hits <= q, "queries {q}, hits {hits}");
    // Counters only go up.
    let again = scrape(&c, &srv.base).await;
    for name in [
        "sdlab_prefix_cache_queries_total",
        "sdlab_preemptions_total",
    ] {
        assert_eq!(metric(&again, name), metric(&s, name), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_match_sequential() {
    // 1 MiB of KV cache: 2048 tokens of the tiny model, 128 blocks, while 32
    // requests of ~40-70 prompt tokens + 24 generated want more than that.
    let opts = server::runner::EngineOptions {
        kv_cache_mb: 1,
        max_num_batched_tokens: 256,
        ..engine_options()
    };
    let srv = TestServer::start(server_config(), opts);
    let c = client();
    let url = srv.url("/v1/completions");
    let prompts: Vec<String> = (0..32)
        .map(|i| format!("{i}. {} {}", TEXTS[i % 16], TEXTS[(i * 7 + 3) % 16]))
        .collect();
    let body = |p: &str| greedy_completion(p, 24);
    let mut alone = Vec::new();
    for p in &prompts {
        let r = post_ok(&c, &url, &body(p)).await;
        alone.push((text_of(&r, 0), r["usage"].clone()));
    }
    let pre = srv.state.engine.stats().preemptions;
    let together = futures_util::future::join_all(prompts.iter().map(|p| {
        let (c, url, b) = (c.clone(), url.clone(), body(p));
        async move { post_ok(&c, &url, &b).await }
    }))
    .await;
    for (i, r) in together.iter().enumerate() {
        assert_eq!(text_of(r, 0), alone[i].0, "prompt {i} differs under load");
        assert_eq!(
            r["usage"]["completion_tokens"],
            alone[i].1["completion_tokens"]
        );
        assert_eq!(r["choices"][0]["finish_reason"], "length");
    }
    wait_blocks_free(&c, &srv.base, Duration::from_secs(2)).await;
    let stats = srv.state.engine.stats();
    assert_eq!(stats.running + stats.waiting, 0);
    eprintln!(
        "preemptions during the concurrent run: {}",
        stats.preemptions - pre
    );
}

#[tokio::test]
async fn graceful_shutdown_with_requests_in_flight() {
    let mut srv = TestServer::default_server();
    let c = client();
    let url = srv.url("/v1/completions");
    let mut body = greedy_completion(TEXTS[10], 1900);
    body["stream"] = json!(true);
    let mut resp = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap()).into_owned();
    // And one that does not stream.
    let whole = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post_ok(&c, &url, &greedy_completion(TEXTS[11], 1900)).await }
    });
    let t0 = Instant::now();
    while srv.state.engine.stats().running < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the second request never ran"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    srv.trigger_shutdown();
    // The stream ends with its final chunk and [DONE], within bounded time.
    let read_rest = async {
        loop {
            match resp.chunk().await {
                Ok(Some(b)) => got.push_str(&String::from_utf8_lossy(&b)),
                Ok(None) => break,
                Err(e) => panic!("the stream broke instead of ending: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_rest)
        .await
        .expect("the stream did not end after shutdown");
    let data = sse_data(&got);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "abort", "{last}");
    // The non-streaming request gets its answer so far.
    let w = tokio::time::timeout(Duration::from_secs(30), whole)
        .await
        .expect("the non-streaming request did not end")
        .unwrap();
    assert_eq!(w["choices"][0]["finish_reason"], "abort", "{w}");
    let (_, n) = check_usage(&w, None, None);
    assert!(n < 1900, "{w}");
    drop(c);
    let served = tokio::task::spawn_blocking(move || {
        let r = srv.wait_served(Duration::from_secs(20));
        (r, srv)
    })
    .await
    .unwrap();
    let (result, srv) = served;
    match result {
        Some(Ok(())) => {}
        Some(Err(e)) => panic!("serve returned an error: {e}"),
        None => panic!("serve did not return after shutdown"),
    }
    // No new connections once it has returned.
    assert!(std::net::TcpStream::connect(srv.addr).is_err());
}
