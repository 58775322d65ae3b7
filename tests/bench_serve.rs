//! `sdlab bench serve` end to end: against a real `sdlab serve` on a synthetic
//! model (the client's token counts must match the server's own counters),
//! against a hand-written fake server that fails on purpose (every failure
//! must be counted, none hidden), and with bad arguments.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

mod common;
use common::server::Server;
use common::{sdlab, synth, tmp};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Runs `sdlab bench serve ARGS --json FILE` and returns the JSON report.
fn bench(name: &str, args: &[&str]) -> Value {
    let json = tmp(&format!("{name}.json"));
    let mut all = vec!["bench", "serve"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = sdlab(&all);
    assert!(
        out.status.success(),
        "bench serve failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Serving Benchmark Result"), "{stdout}");
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    report
}

fn assert_ordered(report: &Value, key: &str) {
    let s = &report[key];
    let get = |k: &str| {
        s[k].as_f64()
            .unwrap_or_else(|| panic!("{key}.{k} missing: {s}"))
    };
    let (p50, p90, p99, max) = (get("p50"), get("p90"), get("p99"), get("max"));
    // Two chunks read together are 0 ms apart, so an ITL percentile may be 0.
    let least = if key == "itl_ms" {
        p50 >= 0.0
    } else {
        p50 > 0.0
    };
    assert!(least && get("mean") > 0.0 && max > 0.0, "{key}: {s}");
    assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{key}: {s}");
}

#[test]
fn bench_against_sdlab_matches_the_server_counters() {
    let model = tmp("synth");
    synth(&model, 5);
    let server = Server::start(&["--model", model.to_str().unwrap()]);
    let gen = "sdlab_generation_tokens_total";
    let prompt = "sdlab_prompt_tokens_total";
    let (gen0, prompt0) = (server.counter(gen), server.counter(prompt));

    // Closed loop, completions, random prompts; the model is discovered.
    let r = bench(
        "sdlab",
        &[
            "--url",
            &server.url,
            "--num-prompts",
            "8",
            "--max-concurrency",
            "4",
            "--dataset",
            "random",
            "--input-len",
            "16",
            "--output-len",
            "8",
            "--ignore-eos",
        ],
    );
    assert_eq!(r["completed"], 8, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["total_output_tokens"], 64, "{r}");
    assert_eq!(r["usage_source"], "usage", "{r}");
    assert_eq!(
        r["model"].as_str(),
        model.file_name().unwrap().to_str(),
        "{r}"
    );
    assert_eq!(r["max_concurrency"], 4);
    assert_eq!(r["request_rate"], "inf");
    assert_eq!(r["per_request"].as_array().unwrap().len(), 8);
    for key in ["ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"] {
        assert_ordered(&r, key);
    }
    assert!(r["output_throughput"].as_f64().unwrap() > 0.0);
    let (gen1, prompt1) = (server.counter(gen), server.counter(prompt));
    assert_eq!(
        gen1 - gen0,
        64,
        "server generation tokens against the client's"
    );
    assert_eq!(
        prompt1 - prompt0,
        r["total_input_tokens"].as_u64().unwrap(),
        "server prompt tokens against the client's"
    );

    // Open loop (Poisson arrivals), chat, Austen prompts.
    let r = bench(
        "sdlab-chat",
        &[
            "--url",
            &format!("{}/v1", server.url),
            "--endpoint",
            "chat",
            "--num-prompts",
            "4",
            "--request-rate",
            "40",
            "--dataset",
            "austen",
            "--input-len",
            "24",
            "--output-len",
            "5",
            "--ignore-eos",
            "--seed",
            "3",
        ],
    );
    assert_eq!(
        (r["completed"].as_u64(), r["failed"].as_u64()),
        (Some(4), Some(0)),
        "{r}"
    );
    assert_eq!(r["total_output_tokens"], 20, "{r}");
    assert_eq!(r["request_rate"], 40.0);
    assert_eq!(r["dataset"], "austen");
    assert_ordered(&r, "e2el_ms");
    assert_eq!(server.counter(gen) - gen1, 20);
    let _ = std::fs::remove_dir_all(model);
}

/// How the fake server answers one completion request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// HTTP 500 with an OpenAI-style error.
    Status500,
    /// Three text chunks, the last with a finish_reason, usage, `[DONE]`.
    Valid,
    /// Like Valid without the usage chunk.
    ValidNoUsage,
    /// Two chunks, then the connection closes.
    Cut,
    /// Valid, except no chunk names a finish_reason.
    NoFinish,
    /// One chunk, then silence.
    Stall,
}

/// A one-route-at-a-time HTTP/1.1 server on a thread: GET /v1/models names
/// `fake-model`, and the n-th POST is answered as `plan(n)` says. It keeps
/// every POST body it got.
struct Fake {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

fn fake_server(plan: fn(usize) -> Reply) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let kept = bodies.clone();
    thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (kept, count) = (kept.clone(), count.clone());
            thread::spawn(move || {
                let _ = answer(conn, plan, &kept, &count);
            });
        }
    });
    Fake { url, bodies }
}

fn answer(
    conn: TcpStream,
    plan: fn(usize) -> Reply,
    bodies: &Mutex<Vec<Value>>,
    count: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut w = conn;
    let send = |w: &mut TcpStream, status: &str, ctype: &str, body: &str| {
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if request_line.starts_with("GET /v1/models") {
        return send(
            &mut w,
            "200 OK",
            "application/json",
            r#"{"object":"list","data":[{"id":"fake-model","object":"model"}]}"#,
        );
    }
    if !request_line.starts_with("POST /v1/completions") {
        return send(&mut w, "404 Not Found", "text/plain", "no");
    }
    bodies
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    let reply = plan(count.fetch_add(1, Ordering::SeqCst));
    if let Reply::Status500 = reply {
        return send(
            &mut w,
            "500 Internal Server Error",
            "application/json",
            r#"{"error":{"message":"boom","type":"server_error"}}"#,
        );
    }
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = |text: &str, finish: Option<&str>| {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        format!(
            "data: {{\"object\":\"text_completion\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let finish = match reply {
        Reply::NoFinish => None,
        _ => Some("length"),
    };
    let events = [chunk("a", None), chunk("b", None), chunk("c", finish)];
    let take = match reply {
        Reply::Cut => 2,
        Reply::Stall => 1,
        _ => 3,
    };
    for e in &events[..take] {
        // Each event in two writes, so the client must reassemble it.
        let (x, y) = e.split_at(e.len() / 2);
        w.write_all(x.as_bytes())?;
        w.flush()?;
        thread::sleep(Duration::from_millis(3));
        w.write_all(y.as_bytes())?;
        w.flush()?;
        thread::sleep(Duration::from_millis(3));
    }
    match reply {
        Reply::Cut => return Ok(()),
        Reply::Stall => {
            thread::sleep(Duration::from_secs(30));
            return Ok(());
        }
        Reply::ValidNoUsage => {}
        _ => w.write_all(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n",
        )?,
    }
    w.write_all(b"data: [DONE]\n\n")
}

#[test]
fn every_failure_is_counted() {
    // 0, 2, 4, 6: HTTP 500; 1: cut before [DONE]; 3: no finish_reason; 5, 7: fine.
    let fake = fake_server(|n| match n {
        _ if n % 2 == 0 => Reply::Status500,
        1 => Reply::Cut,
        3 => Reply::NoFinish,
        _ => Reply::Valid,
    });
    let r = bench(
        "fake",
        &[
            "--url",
            &fake.url,
            "--num-prompts",
            "8",
            "--max-concurrency",
            "3",
            "--input-len",
            "8",
            "--output-len",
            "3",
            "--ignore-eos",
        ],
    );
    assert_eq!(r["model"], "fake-model");
    assert_eq!(
        (r["completed"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(6)),
        "{r}"
    );
    assert_eq!(r["total_output_tokens"], 6);
    assert_eq!(r["total_input_tokens"], 10);
    assert_eq!(r["usage_source"], "usage");
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 6, "{errors:?}");
    let count = |pat: &str| errors.iter().filter(|e| e.contains(pat)).count();
    assert_eq!(count("HTTP 500"), 4, "{errors:?}");
    assert_eq!(count("boom"), 4, "{errors:?}");
    assert_eq!(count("[DONE]"), 1, "{errors:?}");
    assert_eq!(count("finish_reason"), 1, "{errors:?}");
    let per = r["per_request"].as_array().unwrap();
    assert_eq!(per.iter().filter(|p| p["ok"] == true).count(), 2);
    assert_ordered(&r, "itl_ms");

    let bodies = fake.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 8);
    for b in bodies.iter() {
        assert_eq!(b["model"], "fake-model", "{b}");
        assert_eq!(b["max_tokens"], 3, "{b}");
        assert_eq!(b["stream"], true, "{b}");
        assert_eq!(b["stream_options"]["include_usage"], true, "{b}");
        assert_eq!(b["ignore_eos"], true, "{b}");
        assert!(b["prompt"].as_str().is_some_and(|p| !p.is_empty()), "{b}");
    }
}

#[test]
fn timeouts_fail_and_chunks_count_without_usage() {
    let fake = fake_server(|n| match n {
        0 => Reply::Stall,
        _ => Reply::ValidNoUsage,
    });
    let r = bench(
        "fake-timeout",
        &[
            "--url",
            &fake.url,
            "--model",
            "explicit",
            "--num-prompts",
            "3",
            "--max-concurrency",
            "1",
            "--timeout-s",
            "1",
        ],
    );
    assert_eq!(
        (r["completed"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert!(
        r["errors"][0].as_str().unwrap().contains("timed out"),
        "{r}"
    );
    assert_eq!(r["usage_source"], "chunks");
    assert_eq!(r["total_output_tokens"], 6);
    assert_eq!(r["model"], "explicit");
    assert_eq!(fake.bodies.lock().unwrap()[0]["model"], "explicit");
}

#[test]
fn bad_arguments_fail_clearly() {
    let cases: [(&[&str], &str); 6] = [
        (&["--num-prompts", "0"], "--num-prompts must be at least 1"),
        (&["--request-rate", "0"], "not a request rate"),
        (&["--request-rate", "fast"], "not a request rate"),
        (&["--max-concurrency", "0"], "--max-concurrency"),
        (&["--url", "localhost"], "--url"),
        (&["--url", "ftp://127.0.0.1:1"], "scheme must be http"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["bench", "serve"];
        if !extra.contains(&"--url") {
            args.extend_from_slice(&["--url", "http://127.0.0.1:1"]);
        }
        args.extend_from_slice(extra);
        let out = sdlab(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
    }
    // Nothing listens on port 1, so model discovery must fail and say so.
    let out = sdlab(&[
        "bench",
        "serve",
        "--url",
        "http://127.0.0.1:1",
        "--num-prompts",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/v1/models") && stderr.contains("--model"),
        "{stderr}"
    );
}
