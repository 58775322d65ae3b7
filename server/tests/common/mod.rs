//! Helpers for the end-to-end HTTP tests: a synthetic model, a server started
//! in-process on an ephemeral port with a shutdown switch the test holds, SSE
//! and Prometheus parsing, and OpenAI error-shape checks.

#![allow(dead_code)]

use serde_json::Value;
use server::http::{serve, AppState, Extensions, ServerConfig};
use server::lora::{AdapterRegistry, LoraOptions};
use server::runner::{start_llama_engine, EngineOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The name the test servers serve the synthetic model under.
pub const MODEL: &str = "tiny-test";

/// The tiny synthetic model, written once under the cargo target dir and
/// shared by every test (and every test binary) that needs it.
pub fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join("sdlab-synth-tiny-seed7");
        if !dir.join("model.safetensors").is_file() {
            // Write beside it and rename, so concurrent test binaries never
            // see a half-written model.
            let tmp = root.join(format!("sdlab-synth-tiny-seed7.{}", std::process::id()));
            let preset = models::synth::SynthPreset::by_name("tiny").unwrap();
            models::synth::write_synthetic_model(&tmp, &preset, 7).unwrap();
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        assert!(dir.join("model.safetensors").is_file());
        dir
    })
}

/// Engine limits for tests: a 4 MiB KV cache (8192 tokens of the tiny model).
pub fn engine_options() -> EngineOptions {
    EngineOptions {
        kv_cache_mb: 4,
        block_size: 16,
        max_num_seqs: 32,
        max_num_batched_tokens: 512,
        max_model_len: 0,
        enable_prefix_caching: true,
        speculative: None,
        chaos_step_delay: std::time::Duration::ZERO,
        device: server::runner::Device::Cpu,
    }
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        served_model_name: MODEL.into(),
        api_key: None,
        max_queue: 256,
        body_limit: 2 << 20,
        metrics_compat_vllm: true,
    }
}

/// A server running on its own thread and tokio runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<std::io::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(config: ServerConfig, opts: EngineOptions) -> Self {
        Self::start_with_loras(config, opts, LoraOptions::default())
    }

    pub fn start_with_loras(config: ServerConfig, opts: EngineOptions, loras: LoraOptions) -> Self {
        Self::start_full(config, opts, loras, Extensions::default())
    }

    /// A server with retrieval or a recommender (see [`Extensions`]).
    pub fn start_with_extensions(
        config: ServerConfig,
        opts: EngineOptions,
        extensions: Extensions,
    ) -> Self {
        Self::start_full(config, opts, LoraOptions::default(), extensions)
    }

    fn start_full(
        config: ServerConfig,
        opts: EngineOptions,
        loras: LoraOptions,
        extensions: Extensions,
    ) -> Self {
        let loaded = models::load(
            model_dir().to_str().unwrap(),
            models::LoadOptions::default(),
        )
        .unwrap();
        let registry =
            AdapterRegistry::new(loaded.model.cfg.clone(), &config.served_model_name, loras)
                .unwrap();
        let engine = start_llama_engine(loaded, &opts).unwrap();
        let state = AppState::with_extensions(engine, config, registry, extensions).unwrap();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("test-http-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let result = rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    addr_tx.send(listener.local_addr()?).unwrap();
                    serve(listener, st, async {
                        let _ = shutdown_rx.await;
                    })
                    .await
                });
                let _ = done_tx.send(result);
            })
            .unwrap();
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server did not start");
        Self {
            addr,
            base: format!("http://{addr}"),
            state,
            shutdown: Some(shutdown),
            done,
            thread: Some(thread),
        }
    }

    pub fn default_server() -> Self {
        Self::start(server_config(), engine_options())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Resolves the shutdown future `serve` was given.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// What `serve` returned, if it returned within `timeout`.
    pub fn wait_served(&mut self, timeout: Duration) -> Option<std::io::Result<()>> {
        let r = self.done.recv_timeout(timeout).ok()?;
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        Some(r)
    }

    /// KV blocks held by sequences, from the engine's own snapshot.
    pub fn blocks_used(&self) -> usize {
        let s = self.state.engine.stats();
        s.num_blocks - s.free_blocks
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
        if self.thread.is_some() {
            // Do not hang a failing test on a connection left open.
            let _ = self.wait_served(Duration::from_secs(10));
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A response read whole: status, headers, and the body as text.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }
}

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Reply {
        status,
        headers,
        text,
    }
}

/// POSTs raw bytes as JSON.
pub async fn post_raw(c: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> Reply {
    let resp = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    read(resp).await
}

pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> Reply {
    post_raw(c, url, body.to_string()).await
}

/// POSTs and expects 200 with a JSON body.
pub async fn post_ok(c: &reqwest::Client, url: &str, body: &Value) -> Value {
    let r = post(c, url, body).await;
    assert_eq!(r.status, 200, "POST {url} {body}: {}", r.text);
    r.json()
}

/// The `data: ` payloads of an SSE body; every non-empty line must be one.
pub fn sse_data(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let data = line
            .strip_prefix("data: ")
            .or_else(|| line.strip_prefix("data:"))
            .unwrap_or_else(|| panic!("not an SSE data line: {line:?}"));
        out.push(data.to_string());
    }
    out
}

/// POSTs a streaming request and returns its `data: ` payloads.
pub async fn post_sse(c: &reqwest::Client, url: &str, body: &Value) -> Vec<String> {
    let r = post(c, url, body).await;
    assert_eq!(r.status, 200, "POST {url} {body}: {}", r.text);
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    sse_data(&r.text)
}

/// Checks OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`
/// with a non-empty message and, when given, the parameter at fault.
pub fn assert_error(r: &Reply, status: u16, param: Option<&str>) -> Value {
    assert_eq!(r.status, status, "body: {}", r.text);
    let v = r.json();
    let obj = v.as_object().expect("error body is an object");
    assert_eq!(obj.len(), 1, "only `error` at the top: {v}");
    let e = v["error"].as_object().expect("`error` is an object");
    for k in ["message", "type", "param", "code"] {
        assert!(e.contains_key(k), "error body lacks `{k}`: {v}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["code"].is_null() || e["code"].is_string(), "{v}");
    if let Some(p) = param {
        assert_eq!(e["param"], Value::from(p), "param should name `{p}`: {v}");
    } else {
        assert!(e["param"].is_null() || e["param"].is_string(), "{v}");
    }
    v
}

/// One Prometheus sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the text exposition: comments start with `#`; every other
/// non-empty line is `name{label="value",...} value [timestamp]`.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or_else(|| err("label without ="))?;
                let key = rest[..eq].trim_start_matches(',').to_string();
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(err("bad label name"));
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or_else(|| err("label value not quoted"))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err(err("open escape")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(err("open label value")),
                    }
                };
                labels.push((key, value));
                rest = &rest[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a float"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<f64>().map_err(|_| err("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields"));
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// Sum of every sample called `name` (over all label sets); None if absent.
pub fn metric(samples: &[Sample], name: &str) -> Option<f64> {
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

pub async fn scrape(c: &reqwest::Client, base: &str) -> Vec<Sample> {
    let r = read(c.get(format!("{base}/metrics")).send().await.unwrap()).await;
    assert_eq!(r.status, 200);
    parse_prometheus(&r.text).unwrap_or_else(|e| panic!("{e}\n{}", r.text))
}

/// Polls `/metrics` until `sdlab_kv_blocks_used` is 0; returns how long it took.
pub async fn wait_blocks_free(c: &reqwest::Client, base: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let samples = scrape(c, base).await;
        let used = metric(&samples, "sdlab_kv_blocks_used").expect("sdlab_kv_blocks_used");
        if used == 0.0 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{used} KV blocks still used after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A greedy completion body that always runs to `max_tokens`.
pub fn greedy_completion(prompt: impl Into<Value>, max_tokens: u32) -> Value {
    serde_json::json!({
        "model": MODEL,
        "prompt": prompt.into(),
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    })
}

pub fn greedy_chat(content: &str, max_tokens: u32) -> Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": content},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    })
}

pub const TEXTS: [&str; 16] = [
    "The engine keeps many sequences in flight at once",
    "A block holds sixteen tokens of keys and values; a sequence asks for a new block only when the last one is full",
    "When memory runs out",
    "Prefix caching finds blocks that another request already computed and shares them",
    "The quick brown fox",
    "It is a truth universally acknowledged that a single model in possession of good weights must be in want of a tokenizer",
    "In 2024 there were 365 days",
    "fn main() { let x = vec![1, 2, 3]; }",
    "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e",
    "Questions and answers: what is the capital of France?",
    "Continuous batching lets sequences join and leave the batch at every step of decoding",
    "Throughput rises with the batch",
    "Latency is measured from the moment a request arrives",
    "def add(a, b): return a + b",
    "Paris is the capital of France. The quick brown fox jumps over the lazy dog",
    "One more prompt",
];

/// One request over a bare `TcpStream` (`Connection: close`), for cases a
/// full client reports as a send error: the whole request is written (write
/// errors are ignored, the server may answer and close before reading it
/// all), then the response is read to the end.
pub fn raw_http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A reset after the response arrived still leaves the response.
            Err(e) if !buf.is_empty() => {
                eprintln!("raw_http: read ended with {e}");
                break;
            }
            Err(e) => panic!("{method} {path}: no response: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let mut headers = reqwest::header::HeaderMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').expect("header line");
        headers.append(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_str().unwrap().contains("chunked"));
    assert!(!chunked, "raw_http reads only content-length bodies");
    Reply {
        status,
        headers,
        text: body.to_string(),
    }
}
