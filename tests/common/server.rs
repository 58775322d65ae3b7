//! A real `sdlab serve` process for end-to-end tests, and plain HTTP/1.0
//! requests to it (no client library, no chunked encoding).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The server process, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `sdlab serve ARGS --port 0`; the URL is read from its log (which
    /// `tracing` writes to stdout).
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--host", "127.0.0.1", "--port", "0"]);
        Self::launch(&all, "")
    }

    /// `sdlab ARGS`; its URL is the first `http://127.0.0.1:PORT` on a
    /// stdout line containing `marker`, and it is up when `/health` is 200.
    pub fn launch(args: &[&str], marker: &str) -> Server {
        let marker = marker.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sdlab"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("SDLAB_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting sdlab");
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            // Keep draining, so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line
                    .find("http://127.0.0.1:")
                    .filter(|_| line.contains(&marker))
                {
                    let port: String = line[at + 17..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let _ = tx.send(format!("http://127.0.0.1:{port}"));
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        server.url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => panic!("the server never said where it listens:\n{}", server.log()),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&server.url, "/health").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "/health never answered 200:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The value of a Prometheus counter on /metrics.
    pub fn counter(&self, name: &str) -> u64 {
        let (status, body) = http_get(&self.url, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
            .trim()
            .parse::<f64>()
            .unwrap() as u64
    }
}

/// GET over plain HTTP/1.0 (no chunking): (status, body).
pub fn http_get(base: &str, path: &str) -> Option<(u16, String)> {
    let addr = base.strip_prefix("http://")?;
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// POSTs a JSON body over plain HTTP/1.0: (status, body).
pub fn http_post(base: &str, path: &str, body: &serde_json::Value) -> Option<(u16, String)> {
    let addr = base.strip_prefix("http://")?;
    let mut s = TcpStream::connect(addr).ok()?;
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
