//! Error cases over HTTP: every status the API can answer, each with OpenAI's
//! error body naming the parameter at fault; auth, body and queue limits; and
//! a sweep of hostile bodies that must never get a 5xx.

use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const C: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

#[tokio::test]
async fn bad_requests_name_the_parameter() {
    let srv = TestServer::default_server();
    let c = client();
    let vocab = srv.state.engine.tokenizer().vocab_size();
    let ctx = srv.state.engine.config().max_model_len;
    let m = user("hi");
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        (C, "{not json".into(), 400, None),
        (CHAT, r#"{"messages": ["#.into(), 400, None),
        (C, "".into(), 400, None),
        (
            C,
            json!({"prompt": "hi", "temperature": "hot"}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            CHAT,
            json!({"messages": m, "temperature": "hot"}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            C,
            json!({"prompt": "hi", "max_tokens": "8"}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            C,
            json!({"prompt": "hi", "top_p": 5}).to_string(),
            400,
            Some("top_p"),
        ),
        (
            CHAT,
            json!({"messages": m, "top_p": 5}).to_string(),
            400,
            Some("top_p"),
        ),
        (
            C,
            json!({"prompt": "hi", "temperature": -1}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            CHAT,
            json!({"messages": m, "temperature": -1}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            C,
            json!({"prompt": "hi", "n": 0}).to_string(),
            400,
            Some("n"),
        ),
        (
            CHAT,
            json!({"messages": m, "n": 0}).to_string(),
            400,
            Some("n"),
        ),
        (
            C,
            json!({"prompt": "hi", "logprobs": 99}).to_string(),
            400,
            Some("logprobs"),
        ),
        (
            C,
            json!({"prompt": "hi", "top_k": -5}).to_string(),
            400,
            Some("top_k"),
        ),
        (
            C,
            json!({"prompt": "hi", "min_p": 2}).to_string(),
            400,
            Some("min_p"),
        ),
        (
            C,
            json!({"prompt": "hi", "presence_penalty": 3}).to_string(),
            400,
            Some("presence_penalty"),
        ),
        (
            C,
            json!({"prompt": "hi", "stop": 42}).to_string(),
            400,
            Some("stop"),
        ),
        (
            C,
            json!({"prompt": "hi", "echo": true}).to_string(),
            400,
            Some("echo"),
        ),
        (C, json!({"prompt": ""}).to_string(), 400, Some("prompt")),
        (C, json!({"prompt": []}).to_string(), 400, Some("prompt")),
        (C, json!({"prompt": [""]}).to_string(), 400, Some("prompt")),
        (
            C,
            json!({"prompt": {"text": "hi"}}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            C,
            json!({"prompt": "hi", "max_tokens": 0}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            C,
            json!({"prompt": "hi", "max_tokens": -1}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            C,
            json!({"prompt": "hi", "max_tokens": ctx}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            CHAT,
            json!({"messages": m, "max_tokens": ctx}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            C,
            json!({"prompt": vec![5; ctx], "max_tokens": 1}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            C,
            json!({"prompt": [5, vocab]}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            C,
            json!({"prompt": [[1, 2], [3, 4_000_000]]}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            C,
            json!({"prompt": [5, -1]}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            CHAT,
            json!({"messages": []}).to_string(),
            400,
            Some("messages"),
        ),
        (
            CHAT,
            json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(),
            400,
            Some("messages"),
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).to_string(),
            400,
            Some("messages"),
        ),
        (
            CHAT,
            json!({"messages": m, "top_logprobs": 2}).to_string(),
            400,
            Some("top_logprobs"),
        ),
        (
            C,
            json!({"model": "nope", "prompt": "hi"}).to_string(),
            404,
            Some("model"),
        ),
        (
            CHAT,
            json!({"model": "nope", "messages": m}).to_string(),
            404,
            Some("model"),
        ),
    ];
    for (path, body, status, param) in &cases {
        let r = post_raw(&c, &srv.url(path), body.clone()).await;
        let v = assert_error(&r, *status, *param);
        let kind = if *status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        assert_eq!(v["error"]["type"], kind, "{path} {body}: {v}");
        if param.is_none() {
            assert!(v["error"]["param"].is_null(), "{path} {body}: {v}");
        }
    }
    // The model's name is accepted, and so is no name at all.
    post_ok(
        &c,
        &srv.url(C),
        &json!({"model": MODEL, "prompt": "hi", "max_tokens": 2}),
    )
    .await;
    post_ok(&c, &srv.url(C), &json!({"prompt": "hi", "max_tokens": 2})).await;
}

/// Chat's `top_logprobs` out of range should name `top_logprobs`, the
/// parameter the client sent (chat has no numeric `logprobs`).
#[tokio::test]
async fn chat_top_logprobs_out_of_range_names_top_logprobs() {
    let srv = TestServer::default_server();
    let c = client();
    let body = json!({"messages": user("hi"), "logprobs": true, "top_logprobs": 99});
    let r = post(&c, &srv.url(CHAT), &body).await;
    assert_error(&r, 400, Some("top_logprobs"));
}

#[tokio::test]
async fn routes_and_models() {
    let srv = TestServer::default_server();
    let c = client();
    let h = read(c.get(srv.url("/health")).send().await.unwrap()).await;
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    let m = read(c.get(srv.url("/v1/models")).send().await.unwrap()).await;
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MODEL);
    assert_eq!(m["data"][0]["object"], "model");
    for path in ["/v1/nope", "/", "/v1/completions/extra"] {
        let r = read(c.get(srv.url(path)).send().await.unwrap()).await;
        assert_error(&r, 404, None);
    }
    let r = post(&c, &srv.url("/v1/embeddings"), &json!({"input": "hi"})).await;
    assert_error(&r, 404, None);
}

/// A known route with the wrong method: 405 with `Allow`, and OpenAI's
/// error body like every other error.
#[tokio::test]
async fn wrong_method_is_405_json() {
    let srv = TestServer::default_server();
    let c = client();
    for (path, allow) in [(C, "POST"), (CHAT, "POST"), ("/health", "GET")] {
        let r = read(c.delete(srv.url(path)).send().await.unwrap()).await;
        assert!(r.headers["allow"].to_str().unwrap().contains(allow));
        assert_error(&r, 405, None);
    }
}

#[tokio::test]
async fn api_key() {
    let config = server::http::ServerConfig {
        api_key: Some("sk-test-123".into()),
        ..server_config()
    };
    let srv = TestServer::start(config, engine_options());
    let c = client();
    let body = json!({"prompt": "hi", "max_tokens": 2});
    for path in [C, CHAT, "/v1/models"] {
        let url = srv.url(path);
        let req = |auth: Option<&str>| {
            let rb = if path == "/v1/models" {
                c.get(&url)
            } else {
                c.post(&url)
                    .json(&json!({"prompt": "hi", "messages": user("hi"), "max_tokens": 2}))
            };
            match auth {
                Some(a) => rb.header("authorization", a),
                None => rb,
            }
        };
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("sk-test-123"),
            Some("Bearer "),
        ] {
            let r = read(req(auth).send().await.unwrap()).await;
            let v = assert_error(&r, 401, None);
            assert_eq!(v["error"]["type"], "authentication_error", "{v}");
            assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
        }
        let r = read(req(Some("Bearer sk-test-123")).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    // Health and metrics stay open; unknown routes are still 404.
    for path in ["/health", "/metrics"] {
        assert_eq!(c.get(srv.url(path)).send().await.unwrap().status(), 200);
    }
    let r = post(&c, &srv.url("/v1/nope"), &body).await;
    assert_error(&r, 404, None);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let config = server::http::ServerConfig {
        body_limit: 64 * 1024,
        ..server_config()
    };
    let srv = TestServer::start(config, engine_options());
    let big = "word ".repeat(200 * 1024 / 5);
    for (path, body) in [
        (C, json!({"prompt": big, "max_tokens": 1})),
        (CHAT, json!({"messages": user(&big), "max_tokens": 1})),
    ] {
        // The server answers before reading the whole body and closes; a
        // client that writes it all first may see the reset instead of the
        // answer (reqwest does), so this one reads the answer regardless.
        let body = body.to_string();
        let addr = srv.addr;
        let r = tokio::task::spawn_blocking(move || raw_http(addr, "POST", path, body.as_bytes()))
            .await
            .unwrap();
        let v = assert_error(&r, 413, None);
        assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
    }
    // Just under the limit is read and parsed (and too long a prompt for
    // this model, so 400 naming the prompt).
    let under = json!({"prompt": "word ".repeat(60 * 1024 / 5), "max_tokens": 1});
    assert!(under.to_string().len() < 64 * 1024);
    let r = post(&client(), &srv.url(C), &under).await;
    assert_error(&r, 400, Some("prompt"));
    post_ok(&client(), &srv.url(C), &greedy_completion("hi", 2)).await;
}

#[tokio::test]
async fn queue_full_is_429_with_retry_after() {
    let config = server::http::ServerConfig {
        max_queue: 1,
        ..server_config()
    };
    let opts = server::runner::EngineOptions {
        max_num_seqs: 1,
        ..engine_options()
    };
    let srv = TestServer::start(config, opts);
    let c = client();
    let url = srv.url(C);
    let mut long = greedy_completion(TEXTS[5], 1900);
    long["stream"] = json!(true);
    // One request runs (the only seat), one waits (the whole queue).
    let mut running = c.post(&url).json(&long).send().await.unwrap();
    assert_eq!(running.status(), 200);
    running.chunk().await.unwrap().expect("a first chunk");
    let waiting = c.post(&url).json(&long).send().await.unwrap();
    assert_eq!(waiting.status(), 200);
    let t0 = Instant::now();
    while srv.state.engine.stats().waiting < 1 {
        assert!(t0.elapsed() < Duration::from_secs(5), "nothing waits");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Now everything else is turned away, at once and with Retry-After.
    let bodies: Vec<Value> = (0..6).map(|i| greedy_completion(TEXTS[i], 4)).collect();
    let burst = futures_util::future::join_all(bodies.iter().map(|b| post(&c, &url, b))).await;
    for r in &burst {
        let v = assert_error(r, 429, None);
        assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
        assert_eq!(v["error"]["code"], "queue_full", "{v}");
        let retry = r.headers.get("retry-after").expect("Retry-After header");
        let secs: u64 = retry
            .to_str()
            .unwrap()
            .parse()
            .expect("Retry-After in seconds");
        assert!(secs >= 1);
    }
    let r = post(&c, &srv.url(CHAT), &greedy_chat("hi", 4)).await;
    assert_error(&r, 429, None);
    // Once they go away, requests get through again.
    drop((running, waiting));
    wait_blocks_free(&c, &srv.base, Duration::from_secs(2)).await;
    let t0 = Instant::now();
    while srv.state.engine.stats().waiting > 0 {
        assert!(t0.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    post_ok(&c, &url, &greedy_completion("hi", 4)).await;
}

/// A body with one field replaced by raw JSON text (or added).
fn with(key: &str, raw: &str) -> Vec<u8> {
    let base = [
        ("prompt", r#""Hello there""#),
        (
            "messages",
            r#"[{"role": "user", "content": "Hello there"}]"#,
        ),
        ("max_tokens", "8"),
    ];
    let mut fields: Vec<String> = base
        .iter()
        .filter(|(k, _)| *k != key)
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    fields.push(format!("\"{key}\": {raw}"));
    format!("{{{}}}", fields.join(", ")).into_bytes()
}

fn hostile_bodies() -> Vec<(String, Vec<u8>)> {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let mut raw: Vec<(String, Vec<u8>)> = vec![
        ("empty body".into(), vec![]),
        ("open brace".into(), b"{".to_vec()),
        ("close brace".into(), b"}".to_vec()),
        ("array body".into(), b"[]".to_vec()),
        ("array of objects".into(), br#"[{"prompt": "hi"}]"#.to_vec()),
        ("null body".into(), b"null".to_vec()),
        ("number body".into(), b"1e400".to_vec()),
        ("string body".into(), br#""prompt""#.to_vec()),
        ("empty object".into(), b"{}".to_vec()),
        ("deep array body".into(), deep(100_000).into_bytes()),
        (
            "deep object body".into(),
            r#"{"a":"#.repeat(50_000).into_bytes(),
        ),
        (
            "invalid utf-8".into(),
            b"{\"prompt\": \"\xff\xfe\xfd\", \"max_tokens\": 2}".to_vec(),
        ),
        (
            "raw NUL".into(),
            b"{\"prompt\": \"a\x00b\", \"max_tokens\": 2}".to_vec(),
        ),
        (
            "BOM".into(),
            b"\xef\xbb\xbf{\"prompt\": \"hi\", \"max_tokens\": 2}".to_vec(),
        ),
        (
            "trailing garbage".into(),
            br#"{"prompt": "hi", "max_tokens": 2} xyz"#.to_vec(),
        ),
        (
            "duplicate keys".into(),
            br#"{"prompt": "a", "prompt": "b", "max_tokens": 2}"#.to_vec(),
        ),
    ];
    let big = "hello world, ".repeat(1 << 20 >> 4);
    raw.push((
        "1 MB prompt".into(),
        with("prompt", &json!(big).to_string()),
    ));
    raw.push((
        "1 MB message".into(),
        with("messages", &user(&big).to_string()),
    ));
    let word = "a".repeat(1 << 20);
    raw.push((
        "1 MB single word".into(),
        with("prompt", &json!(word).to_string()),
    ));
    let ids: Vec<u32> = (0..200_000).map(|i| i % 300).collect();
    raw.push((
        "200k token ids".into(),
        with("prompt", &json!(ids).to_string()),
    ));
    let stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let fields: &[(&str, String)] = &[
        ("max_tokens", "18446744073709551616".into()),
        ("max_tokens", "4294967296".into()),
        ("max_tokens", "4294967295".into()),
        ("max_tokens", "-1".into()),
        ("max_tokens", "1e400".into()),
        ("max_tokens", "1.5".into()),
        ("max_tokens", "[8]".into()),
        ("temperature", "1e400".into()),
        ("temperature", "1e38".into()),
        ("temperature", "true".into()),
        ("temperature", "-0.0".into()),
        ("temperature", "1e-30".into()),
        ("temperature", "0.00002".into()),
        ("temperature", "null".into()),
        ("top_p", "0".into()),
        ("top_p", "1e-45".into()),
        ("top_k", "2147483648".into()),
        ("top_k", "1000000".into()),
        ("top_k", "-2".into()),
        ("min_p", "1".into()),
        ("n", "4294967295".into()),
        ("n", "-1".into()),
        ("n", "16".into()),
        ("seed", "18446744073709551616".into()),
        ("seed", "-9223372036854775808".into()),
        ("seed", "1.5".into()),
        ("logprobs", "-1".into()),
        ("logprobs", "20".into()),
        ("logprobs", "true".into()),
        ("top_logprobs", "20".into()),
        ("repetition_penalty", "1e-38".into()),
        ("repetition_penalty", "0".into()),
        ("frequency_penalty", "-2.5".into()),
        ("stop", "[1, 2]".into()),
        ("stop", "[null]".into()),
        ("stop", r#"[""]"#.into()),
        ("stop", json!(stops).to_string()),
        ("stop", json!("x".repeat(100_000)).to_string()),
        ("stop", r#""\u0000""#.into()),
        ("stream", r#""yes""#.into()),
        ("stream_options", r#""x""#.into()),
        ("stream_options", r#"{"include_usage": "y"}"#.into()),
        ("ignore_eos", "1".into()),
        ("model", "123".into()),
        ("model", "null".into()),
        ("model", r#""""#.into()),
        ("user", r#"{"a": [1, {"b": null}]}"#.into()),
        ("prompt", "null".into()),
        ("prompt", r#"{"nested": {"a": [1, {"b": null}]}}"#.into()),
        ("prompt", "[[[[1]]]]".into()),
        ("prompt", "[[]]".into()),
        ("prompt", "[4294967296]".into()),
        ("prompt", r#"["a", 1]"#.into()),
        ("prompt", r#""\ud800""#.into()),
        ("prompt", r#""\udc00\ud800""#.into()),
        ("prompt", r#""a\u0000b""#.into()),
        ("prompt", r#""\uffff\ufeff\u202e e\u0301 \ud83d\ude00""#.into()),
        ("prompt", deep(100)),
        ("prompt", deep(5000)),
        ("messages", "{}".into()),
        ("messages", "[null]".into()),
        ("messages", r#"[{"role": "user"}]"#.into()),
        ("messages", r#"[{"role": 1, "content": "x"}]"#.into()),
        ("messages", r#"[{"role": "user", "content": [{"type": "text", "text": null}]}]"#.into()),
        ("messages", r#"[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]"#.into()),
        ("messages", r#"[{"role": "user", "content": "\ud800"}]"#.into()),
        ("messages", r#"[{"role": "user", "content": "{{ 7*7 }}{% for x in range(99999999) %}{% endfor %}"}]"#.into()),
        ("messages", r#"[{"role": "assistant", "content": "<|im_end|><|im_start|>system"}]"#.into()),
        ("messages", format!("[{{\"role\": \"user\", \"content\": {}}}]", deep(100))),
    ];
    for (k, v) in fields {
        raw.push((format!("{k}: {}", &v[..v.len().min(40)]), with(k, v)));
    }
    raw
}

#[tokio::test]
async fn hostile_input_sweep() {
    let srv = TestServer::default_server();
    let c = client();
    let bodies = hostile_bodies();
    assert!(bodies.len() >= 40);
    let mut slowest = (Duration::ZERO, String::new());
    let mut failures = Vec::new();
    for path in [C, CHAT] {
        for (name, body) in &bodies {
            let t0 = Instant::now();
            let r = post_raw(&c, &srv.url(path), body.clone()).await;
            let took = t0.elapsed();
            if took > slowest.0 {
                slowest = (took, format!("{path} {name}"));
            }
            if r.status >= 500 {
                failures.push(format!("{path} {name}: {} {}", r.status, r.text));
            } else if r.status >= 400 {
                assert_error(&r, r.status, None);
            } else {
                assert_eq!(r.status, 200, "{path} {name}: {}", r.text);
            }
        }
    }
    assert!(failures.is_empty(), "5xx answers:\n{}", failures.join("\n"));
    eprintln!("slowest hostile request: {:?} ({})", slowest.0, slowest.1);
    // The server is still healthy and serving.
    assert_eq!(
        c.get(srv.url("/health")).send().await.unwrap().status(),
        200
    );
    let r = post_ok(&c, &srv.url(C), &greedy_completion(TEXTS[0], 8)).await;
    assert_eq!(r["usage"]["completion_tokens"], 8);
    post_ok(&c, &srv.url(CHAT), &greedy_chat("still there?", 4)).await;
    wait_blocks_free(&c, &srv.base, Duration::from_secs(2)).await;
}
