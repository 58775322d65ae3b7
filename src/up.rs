//! `sdlab up --replicas N`: N local `sdlab serve` processes on free ports
//! and `sdlab router` in front of them, for demos and load tests. Ctrl-C (or
//! SIGTERM) stops the router and then every replica.

use crate::router::{self, pool::Policy, RouterArgs};
use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Replicas to start.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// The model each replica serves.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// The router's port.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// How the router picks a replica.
    #[arg(long, value_enum, default_value = "prefix-hash")]
    pub policy: Policy,
    /// Seconds to wait for the replicas to come up.
    #[arg(long, default_value_t = 300)]
    pub startup_timeout: u64,
    /// Extra `sdlab serve` flags for every replica, after `--`.
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

/// The replica processes, killed when dropped.
struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// A port the OS says is free now (another process may still take it
/// before the replica binds; the replica then fails to start, loudly).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub fn run(a: UpArgs) -> Result<()> {
    if a.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    let exe = std::env::current_exe().context("finding the sdlab binary")?;
    let mut children = Replicas(Vec::new());
    let mut urls = Vec::new();
    for _ in 0..a.replicas {
        let port = free_port()?;
        let child = Command::new(&exe)
            .args(["serve", "--model", &a.model, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(&a.serve_args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a replica")?;
        children.0.push(child);
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    let deadline = Instant::now() + Duration::from_secs(a.startup_timeout);
    for (i, url) in urls.iter().enumerate() {
        loop {
            if let Some(status) = children.0[i].try_wait()? {
                bail!("replica {url} exited during start-up ({status})");
            }
            let up = std::net::TcpStream::connect(url.trim_start_matches("http://")).is_ok();
            if up && health_ok(url) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "replica {url} did not answer /health within {} s",
                    a.startup_timeout
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("replica {} of {} is up at {url}", i + 1, a.replicas);
    }
    let args = RouterArgs {
        replicas: urls,
        host: a.host,
        port: a.port,
        policy: a.policy,
        api_key: None,
        rate_limit: None,
        burst: 10,
        health_interval: 1.0,
        retry_deadline: 30.0,
        breaker_open_s: 5.0,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(router::serve(args, router::shutdown_signal()));
    drop(children);
    served
}

/// `GET /health` answers 200.
fn health_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(url.trim_start_matches("http://")) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /health HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}
