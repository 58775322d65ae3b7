//! `sdlab router` and `sdlab up` end to end, on loopback with the synthetic
//! model: a replica killed mid-stream (the client still reads the exact
//! greedy text), chaos under load (a replica killed and restarted while
//! `sdlab bench serve` runs: no failed request), a replica answering 500s
//! (its breaker opens, traffic moves away and comes back when it heals),
//! idempotency keys, the rate limit, and `sdlab up`.

mod common;
use common::server::{http_get, http_post, Server};
use common::{sdlab, synth, tmp};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// A replica of the synthetic model, slowed to `delay_ms` per engine step
/// so streams last long enough to be cut.
fn replica(model: &str, delay_ms: u32) -> Server {
    Server::start(&[
        "--model",
        model,
        "--chaos-step-delay-ms",
        &delay_ms.to_string(),
    ])
}

fn router(urls: &[String], extra: &[&str]) -> Server {
    let list = urls.join(",");
    let mut args = vec![
        "router",
        "--replica",
        &list,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--health-interval",
        "0.2",
        "--breaker-open-s",
        "1",
    ];
    args.extend_from_slice(extra);
    Server::launch(&args, "sdlab router on")
}

fn completion(prompt: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true, "stream": stream})
}

fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true, "stream": stream})
}

/// The text of a non-streaming answer.
fn text_of(v: &Value) -> String {
    let c = &v["choices"][0];
    c["text"]
        .as_str()
        .or(c["message"]["content"].as_str())
        .unwrap_or_else(|| panic!("no text in {v}"))
        .to_string()
}

/// A streaming POST over HTTP/1.0: the `data:` payloads as they arrive.
fn sse(base: &str, path: &str, body: &Value) -> impl Iterator<Item = String> {
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines().map_while(Result::ok);
    let status = lines.next().unwrap_or_default();
    assert!(status.contains(" 200 "), "{status}");
    lines
        .skip_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
}

/// The text a stream's chunk adds.
fn piece(data: &str) -> String {
    let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
    assert!(v.get("error").is_none(), "error event: {data}");
    let c = &v["choices"][0];
    c["text"]
        .as_str()
        .or(c["delta"]["content"].as_str())
        .unwrap_or("")
        .to_string()
}

fn counter(server: &Server, name: &str) -> f64 {
    let (_, body) = http_get(&server.url, "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const PROMPTS: [&str; 6] = [
    "The router keeps every stream alive",
    "A replica died in the middle of a sentence",
    "Tokens, not text, cross the failover",
    "Consistent hashing with bounded loads",
    "Power of two choices",
    "Greedy decoding is deterministic",
];

#[test]
fn a_replica_killed_mid_stream_costs_no_token() {
    let model = tmp("router-failover");
    synth(&model, 11);
    let m = model.to_str().unwrap();
    let mut replicas: Vec<Server> = (0..3).map(|_| replica(m, 15)).collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let front = router(&urls, &["--policy", "round-robin"]);
    // What each request gives with no failure, straight from a replica.
    let requests: Vec<(&str, Value)> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 3 == 2 {
                ("/v1/chat/completions", chat(p, 60, false))
            } else {
                ("/v1/completions", completion(p, 60, false))
            }
        })
        .collect();
    let want: Vec<String> = requests
        .iter()
        .map(|(path, body)| {
            let (status, b) = http_post(&urls[0], path, body).unwrap();
            assert_eq!(status, 200, "{b}");
            text_of(&serde_json::from_str(&b).unwrap())
        })
        .collect();
    let started = Arc::new(Barrier::new(requests.len() + 1));
    let streams: Vec<_> = requests
        .iter()
        .map(|(path, body)| {
            let (path, mut body) = (path.to_string(), body.clone());
            body["stream"] = json!(true);
            let (base, started) = (front.url.clone(), started.clone());
            thread::spawn(move || {
                let mut events = sse(&base, &path, &body);
                let mut text = String::new();
                for _ in 0..3 {
                    text += &piece(&events.next().expect("a first chunk"));
                }
                started.wait();
                for e in events {
                    if e == "[DONE]" {
                        return (text, true);
                    }
                    text += &piece(&e);
                }
                (text, false)
            })
        })
        .collect();
    started.wait();
    // Every stream is under way: kill one replica (SIGKILL).
    drop(replicas.remove(1));
    for (i, s) in streams.into_iter().enumerate() {
        let (text, done) = s.join().unwrap();
        assert!(done, "stream {i} ended without [DONE]");
        assert_eq!(text, want[i], "stream {i} differs after the failover");
    }
    assert!(
        counter(&front, "sdlab_router_failovers_total") >= 1.0,
        "{}",
        http_get(&front.url, "/metrics").unwrap().1
    );
    let _ = std::fs::remove_dir_all(model);
}

#[test]
fn chaos_under_load_loses_no_request_and_keys_answer_once() {
    let model = tmp("router-chaos");
    synth(&model, 12);
    let m = model.to_str().unwrap().to_string();
    let mut replicas: Vec<Server> = (0..3).map(|_| replica(&m, 5)).collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let front = router(&urls, &["--policy", "p2c"]);
    let json = tmp("router-chaos.json");
    let load = {
        let (url, json) = (front.url.clone(), json.clone());
        thread::spawn(move || {
            sdlab(&[
                "bench",
                "serve",
                "--url",
                &url,
                "--num-prompts",
                "48",
                "--request-rate",
                "16",
                "--dataset",
                "random",
                "--input-len",
                "16",
                "--output-len",
                "48",
                "--ignore-eos",
                "--seed",
                "3",
                "--json",
                json.to_str().unwrap(),
            ])
        })
    };
    thread::sleep(Duration::from_millis(900));
    let victim = replicas.remove(2);
    let port = victim.url.rsplit(':').next().unwrap().to_string();
    drop(victim);
    // An idempotent request while a replica is down: one generation.
    let key_req = completion("idempotent", 8, false);
    let first = post_with_key(&front.url, "k-1", &key_req);
    thread::sleep(Duration::from_millis(1200));
    let back = Server::launch(
        &[
            "serve",
            "--model",
            &m,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--chaos-step-delay-ms",
            "5",
        ],
        "",
    );
    let out = load.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["completed"], 48, "{report}");
    let second = post_with_key(&front.url, "k-1", &key_req);
    assert_eq!(first.0, 200);
    assert_eq!(second.0, 200);
    assert_eq!(
        first.2, second.2,
        "a replayed key must give the first answer"
    );
    assert!(second
        .1
        .to_ascii_lowercase()
        .contains("idempotent-replayed: true"));
    let reuse = post_with_key(&front.url, "k-1", &completion("something else", 8, false));
    assert_eq!(reuse.0, 422, "{}", reuse.2);
    assert_eq!(
        counter(&front, "sdlab_router_idempotent_replays_total"),
        1.0
    );
    let recovered = counter(&front, "sdlab_router_retries_total")
        + counter(&front, "sdlab_router_failovers_total");
    assert!(
        recovered >= 1.0,
        "{}",
        http_get(&front.url, "/metrics").unwrap().1
    );
    drop(back);
    let _ = std::fs::remove_dir_all(model);
}

/// POST with an Idempotency-Key: (status, head, body).
fn post_with_key(base: &str, key: &str, body: &Value) -> (u16, String, String) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// A replica that answers health checks but fails every generation with
/// 500 until healed; then it answers "healed".
struct Flaky {
    url: String,
    broken: Arc<AtomicBool>,
    generations: Arc<AtomicUsize>,
}

fn flaky() -> Flaky {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let broken = Arc::new(AtomicBool::new(true));
    let generations = Arc::new(AtomicUsize::new(0));
    let (b, g) = (broken.clone(), generations.clone());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut len = 0;
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
                if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let (status, out) = if first.starts_with("POST") {
                g.fetch_add(1, Ordering::SeqCst);
                if b.load(Ordering::SeqCst) {
                    (
                        "500 Internal Server Error",
                        json!({"error": {"message": "boom", "type": "server_error"}}),
                    )
                } else {
                    (
                        "200 OK",
                        json!({"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "healed", "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
                    )
                }
            } else {
                ("200 OK", json!({"status": "ok", "data": []}))
            };
            let out = out.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                out.len()
            );
        }
    });
    Flaky {
        url,
        broken,
        generations,
    }
}

#[test]
fn a_failing_replica_trips_its_breaker_and_comes_back_healed() {
    let model = tmp("router-breaker");
    synth(&model, 13);
    let good = replica(model.to_str().unwrap(), 0);
    let bad = flaky();
    let front = router(
        &[good.url.clone(), bad.url.clone()],
        &["--policy", "round-robin"],
    );
    for i in 0..12 {
        let (status, body) = http_post(
            &front.url,
            "/v1/completions",
            &completion(PROMPTS[i % 6], 4, false),
        )
        .unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        assert_ne!(text_of(&serde_json::from_str(&body).unwrap()), "healed");
    }
    let hits = bad.generations.load(Ordering::SeqCst);
    assert!(
        (3..=5).contains(&hits),
        "the breaker should stop traffic after ~3 failures: {hits}"
    );
    let trips = format!(
        "sdlab_router_breaker_trips_total{{replica=\"{}\"}}",
        bad.url
    );
    assert!(
        counter(&front, &trips) >= 1.0,
        "{}",
        http_get(&front.url, "/metrics").unwrap().1
    );
    bad.broken.store(false, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(1300));
    let healed = (0..12)
        .filter(|i| {
            let (status, body) = http_post(
                &front.url,
                "/v1/completions",
                &completion(PROMPTS[i % 6], 4, false),
            )
            .unwrap();
            assert_eq!(status, 200, "{body}");
            text_of(&serde_json::from_str(&body).unwrap()) == "healed"
        })
        .count();
    assert!(
        healed >= 3,
        "traffic should return to the healed replica: {healed} of 12"
    );
    let state = format!("sdlab_router_breaker_state{{replica=\"{}\"}}", bad.url);
    assert_eq!(counter(&front, &state), 0.0);
    let _ = std::fs::remove_dir_all(model);
}

#[test]
fn over_the_rate_limit_is_429_and_the_key_is_required() {
    let model = tmp("router-limit");
    synth(&model, 14);
    let r = replica(model.to_str().unwrap(), 0);
    let front = router(
        std::slice::from_ref(&r.url),
        &["--rate-limit", "0.5", "--burst", "3", "--api-key", "sk-1"],
    );
    let get = |auth: bool| {
        let addr = front.url.strip_prefix("http://").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        let h = if auth {
            "Authorization: Bearer sk-1\r\n"
        } else {
            ""
        };
        write!(s, "GET /v1/models HTTP/1.0\r\nHost: {addr}\r\n{h}\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    assert!(get(false).starts_with("HTTP/1.0 401"), "{}", get(false));
    let answers: Vec<String> = (0..6).map(|_| get(true)).collect();
    let ok = answers.iter().filter(|a| a.contains(" 200 ")).count();
    let limited: Vec<&String> = answers.iter().filter(|a| a.contains(" 429 ")).collect();
    assert_eq!((ok, limited.len()), (3, 3), "{answers:?}");
    assert!(limited[0].to_ascii_lowercase().contains("retry-after:"));
    assert!(limited[0].contains("rate_limit_exceeded"));
    assert_eq!(http_get(&front.url, "/health").unwrap().0, 200);
    assert!(counter(&front, "sdlab_router_shed_total") >= 3.0);
    let _ = std::fs::remove_dir_all(model);
}

#[test]
fn up_starts_replicas_behind_a_router_and_stops_them_all() {
    let model = tmp("router-up");
    synth(&model, 15);
    let mut up = Server::launch(
        &[
            "up",
            "--replicas",
            "2",
            "--model",
            model.to_str().unwrap(),
            "--port",
            "0",
        ],
        "sdlab router on",
    );
    let replicas: Vec<String> = up
        .log()
        .lines()
        .filter(|l| l.contains(" is up at "))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(replicas.len(), 2, "{}", up.log());
    let (status, body) =
        http_post(&up.url, "/v1/completions", &completion("hello", 4, false)).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_get(&up.url, "/v1/models").unwrap();
    assert_eq!(status, 200);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &up.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(
        up.wait_exit(Duration::from_secs(20)).is_some(),
        "sdlab up did not stop"
    );
    for r in replicas {
        assert!(
            http_get(&r, "/health").is_none(),
            "replica {r} still answers"
        );
    }
    let _ = std::fs::remove_dir_all(model);
}

#[test]
fn router_flags_are_checked() {
    let out = sdlab(&["router", "--replica", "localhost:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://"));
    let out = sdlab(&["up", "--replicas", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replicas"));
}
