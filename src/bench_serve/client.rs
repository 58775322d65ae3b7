//! One streamed request against an OpenAI-compatible endpoint, timed chunk by
//! chunk.
//!
//! The body is read incrementally from `reqwest`'s byte stream and cut into
//! server-sent events; every event whose choice carries non-empty text
//! (`choices[0].text`, or `choices[0].delta.content` for chat) counts as a
//! token arrival. A request succeeds only if the status is 2xx, the stream
//! names a `finish_reason` and ends with `data: [DONE]`, all within the
//! timeout; anything else (including bad JSON in the stream) is a failure with
//! a message, never a panic.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Which OpenAI route to load.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// POST /v1/completions with `prompt`.
    Completions,
    /// POST /v1/chat/completions with one user message.
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// The JSON body of one greedy, streamed request.
pub fn request_body(
    endpoint: Endpoint,
    model: &str,
    prompt: &str,
    max_tokens: usize,
    ignore_eos: bool,
) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    match endpoint {
        Endpoint::Completions => body["prompt"] = json!(prompt),
        Endpoint::Chat => body["messages"] = json!([{ "role": "user", "content": prompt }]),
    }
    if ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    body
}

/// What one request saw.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The failure, if any.
    pub error: Option<String>,
    /// `usage.prompt_tokens` from the stream, when sent.
    pub usage_prompt_tokens: Option<u64>,
    /// `usage.completion_tokens` from the stream, when sent.
    pub usage_completion_tokens: Option<u64>,
    /// Events that carried non-empty text.
    pub content_chunks: u64,
    /// First text chunk, from the intended send time.
    pub ttft: Option<Duration>,
    /// Last byte (or the failure), from the intended send time.
    pub e2e: Duration,
    /// Gaps between successive text chunks.
    pub itl: Vec<Duration>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Output tokens: the server's usage when sent, else the text chunks.
    pub fn output_tokens(&self) -> u64 {
        self.usage_completion_tokens.unwrap_or(self.content_chunks)
    }
}

/// Splits a byte stream into server-sent events' `data` payloads.
///
/// Lines end with `\n` (a trailing `\r` is dropped); `data:` lines accumulate
/// into one event (joined by `\n`, as the SSE spec says) that a blank line
/// dispatches; comments and other fields are ignored.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds `bytes`, appending every event completed by them to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + n;
            let line = self.buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.buf[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, out);
        }
        self.buf.drain(..start);
    }

    /// Ends the stream: a last event without its blank line still counts.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            self.line(rest.trim_end_matches('\r'), out);
        }
        if let Some(d) = self.data.take() {
            out.push(d);
        }
    }

    fn line(&mut self, line: &str, out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(d) = self.data.take() {
                out.push(d);
            }
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
    }
}

/// Stream bookkeeping for one request.
#[derive(Default)]
struct StreamState {
    done: bool,
    finish_reason: bool,
    last: Option<Instant>,
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Applies one event's payload, arrived at `now`.
fn on_event(
    data: &str,
    now: Instant,
    st: &mut StreamState,
    out: &mut Outcome,
    intended: Instant,
) -> Result<(), String> {
    if data.trim() == "[DONE]" {
        st.done = true;
        return Ok(());
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("bad JSON in the stream ({e}): {}", snippet(data)))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        return Err(format!("error event in the stream: {}", snippet(&msg)));
    }
    if let Some(choice) = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    {
        let text = choice
            .get("text")
            .and_then(Value::as_str)
            .or_else(|| choice.pointer("/delta/content").and_then(Value::as_str))
            .or_else(|| {
                choice
                    .pointer("/delta/reasoning_content")
                    .and_then(Value::as_str)
            })
            .unwrap_or("");
        if !text.is_empty() {
            out.content_chunks += 1;
            match st.last {
                Some(prev) => out.itl.push(now.saturating_duration_since(prev)),
                None => out.ttft = Some(now.saturating_duration_since(intended)),
            }
            st.last = Some(now);
        }
        if choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
        {
            st.finish_reason = true;
        }
    }
    if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
        if let Some(p) = usage.get("prompt_tokens").and_then(Value::as_u64) {
            out.usage_prompt_tokens = Some(p);
        }
        if let Some(c) = usage.get("completion_tokens").and_then(Value::as_u64) {
            out.usage_completion_tokens = Some(c);
        }
    }
    Ok(())
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

async fn stream(
    client: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    body: &Value,
    intended: Instant,
    st: &mut StreamState,
    out: &mut Outcome,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let mut req = client.post(url).json(body);
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", snippet(&text)));
    }
    let mut bytes = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| format!("reading the stream: {}", chain(&e)))?;
        let now = Instant::now();
        parser.feed(&chunk, &mut events);
        for e in events.drain(..) {
            on_event(&e, now, st, out, intended)?;
        }
        if st.done {
            return Ok(());
        }
    }
    parser.finish(&mut events);
    let now = Instant::now();
    for e in events.drain(..) {
        on_event(&e, now, st, out, intended)?;
    }
    Ok(())
}

/// Sends one request and times it from `intended` (its intended send time).
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    body: &Value,
    intended: Instant,
    timeout: Duration,
) -> Outcome {
    let mut out = Outcome::default();
    let mut st = StreamState::default();
    let res = tokio::time::timeout(
        timeout,
        stream(client, url, api_key, body, intended, &mut st, &mut out),
    )
    .await;
    out.e2e = Instant::now().saturating_duration_since(intended);
    out.error = match res {
        Err(_) => Some(format!("timed out after {:.1} s", timeout.as_secs_f64())),
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) if !st.done => Some("the stream ended before `data: [DONE]`".into()),
        Ok(Ok(())) if !st.finish_reason => Some("the stream ended without a finish_reason".into()),
        Ok(Ok(())) => None,
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_survive_any_split() {
        let wire = "data: {\"a\":1}\r\n\r\n: comment\nevent: x\ndata:{\"b\":2}\n\ndata: one\ndata: two\n\ndata: [DONE]";
        let want = vec!["{\"a\":1}", "{\"b\":2}", "one\ntwo", "[DONE]"];
        for cut in 0..wire.len() {
            let mut p = SseParser::default();
            let mut got = Vec::new();
            p.feed(&wire.as_bytes()[..cut], &mut got);
            p.feed(&wire.as_bytes()[cut..], &mut got);
            p.finish(&mut got);
            assert_eq!(got, want, "split at {cut}");
        }
    }

    #[test]
    fn events_count_text_usage_and_errors() {
        let t0 = Instant::now();
        let (mut st, mut out) = (StreamState::default(), Outcome::default());
        for e in [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"choices":[{"text":" there","finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        ] {
            on_event(e, Instant::now(), &mut st, &mut out, t0).unwrap();
        }
        assert_eq!(out.content_chunks, 2);
        assert_eq!(out.itl.len(), 1);
        assert!(st.finish_reason && !st.done);
        assert_eq!((out.usage_prompt_tokens, out.output_tokens()), (Some(5), 2));
        on_event("[DONE]", Instant::now(), &mut st, &mut out, t0).unwrap();
        assert!(st.done);
        assert!(on_event("{nope", t0, &mut st, &mut out, t0)
            .unwrap_err()
            .contains("bad JSON"));
        let e = on_event(r#"{"error":{"message":"boom"}}"#, t0, &mut st, &mut out, t0);
        assert!(e.unwrap_err().contains("boom"));
    }
}
