//! The replicas behind the router, their health and load, and the four
//! ways of choosing one.
//!
//! Every replica carries the router's own in-flight count (exact, updated
//! as requests start and end), the load its `/metrics` last reported
//! (running, waiting, KV usage: fresher than nothing, staler than the
//! in-flight count), a health flag (the health loop's last `/health`, or a
//! failed connection) and a circuit breaker (`hld::circuit_breaker`), which
//! opens after a run of failures and lets probes through after a pause.
//!
//! Policies:
//! - `round-robin`: the next replica in turn.
//! - `least-loaded`: the lowest load score.
//! - `p2c` (power of two choices, Mitzenmacher): two replicas at random,
//!   the less loaded of the two. Nearly as good as least-loaded, and it
//!   does not send every request to the same replica while loads are stale.
//! - `prefix-hash`: consistent hashing with bounded loads over the prompt's
//!   opening bytes and the model (adapter) name, so requests that share a
//!   prefix land where its KV blocks are cached; a replica over 1.25x the
//!   mean in-flight load is skipped for the next one on the ring.
//!
//! Replicas that are unhealthy, whose breaker refuses, or that this request
//! already tried are passed over in every policy.

use super::metrics::RouterMetrics;
use hld::circuit_breaker::{BreakerConfig, CircuitBreaker, Decision, Outcome, Permit, State};
use hld::consistent_hashing::HashRing;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the router picks a replica (`--policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    PrefixHash,
    P2c,
    RoundRobin,
    LeastLoaded,
}

/// A replica's load, as its `/metrics` last said.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub running: f64,
    pub waiting: f64,
    pub kv_usage: f64,
}

pub struct Replica {
    /// Base URL, no trailing slash.
    pub url: String,
    inflight: AtomicUsize,
    healthy: AtomicBool,
    breaker: Mutex<CircuitBreaker>,
    load: Mutex<Load>,
    /// The context length `/v1/models` reports (0 until known).
    max_model_len: AtomicUsize,
}

impl Replica {
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn max_model_len(&self) -> usize {
        self.max_model_len.load(Ordering::Relaxed)
    }

    pub fn load(&self) -> Load {
        *self.load.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In-flight requests or the replica's own queue, whichever is larger,
    /// plus KV usage as the tie-breaker.
    fn score(&self) -> f64 {
        let l = self.load();
        (self.inflight() as f64).max(l.running + l.waiting) + l.kv_usage
    }
}

/// The replicas and the policy over them.
pub struct Pool {
    pub replicas: Vec<Replica>,
    ring: HashRing,
    policy: Policy,
    next: AtomicUsize,
    started: Instant,
    pub metrics: Arc<RouterMetrics>,
}

/// A chosen replica: counts as in flight until dropped; report how the
/// call went with [`Pick::done`] (a pick dropped without it counts as a
/// failure, e.g. a client that went away mid-stream is not the replica's
/// fault, so callers report success in that case).
pub struct Pick {
    pool: Arc<Pool>,
    pub index: usize,
    permit: Option<Permit>,
}

impl Pick {
    pub fn replica(&self) -> &Replica {
        &self.pool.replicas[self.index]
    }

    /// Records the outcome with the breaker; a failure also marks the
    /// replica unhealthy until the health loop sees it answer again.
    pub fn done(mut self, ok: bool) {
        self.record(ok);
    }

    fn record(&mut self, ok: bool) {
        if let Some(permit) = self.permit.take() {
            let now = self.pool.started.elapsed();
            let outcome = if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            self.replica()
                .breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(now, permit, outcome);
        }
    }

    /// Marks the replica down at once (a refused or broken connection).
    pub fn mark_down(&self) {
        self.replica().healthy.store(false, Ordering::Relaxed);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.record(false);
        self.replica().inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Load factor of consistent hashing with bounded loads.
const BOUNDED_LOAD: f64 = 1.25;

impl Pool {
    pub fn new(
        urls: &[String],
        policy: Policy,
        breaker: BreakerConfig,
        metrics: Arc<RouterMetrics>,
    ) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("give at least one --replica URL".into());
        }
        let mut replicas = Vec::with_capacity(urls.len());
        for u in urls {
            let url = u.trim_end_matches('/').to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "--replica {u}: expected an http:// or https:// URL"
                ));
            }
            replicas.push(Replica {
                url,
                inflight: AtomicUsize::new(0),
                // Optimistic until the first health check says otherwise.
                healthy: AtomicBool::new(true),
                breaker: Mutex::new(CircuitBreaker::new(breaker).map_err(|e| e.to_string())?),
                load: Mutex::new(Load::default()),
                max_model_len: AtomicUsize::new(0),
            });
        }
        let names: Vec<&str> = replicas.iter().map(|r| r.url.as_str()).collect();
        let ring = HashRing::with_nodes(160, 0x5d1ab, &names).map_err(|e| e.to_string())?;
        Ok(Self {
            replicas,
            ring,
            policy,
            next: AtomicUsize::new(0),
            started: Instant::now(),
            metrics,
        })
    }

    /// The breaker's state for each replica: 0 closed, 1 half-open, 2 open.
    pub fn breaker_states(&self) -> Vec<(u8, u64)> {
        let now = self.started.elapsed();
        self.replicas
            .iter()
            .map(|r| {
                let b = r.breaker.lock().unwrap_or_else(|e| e.into_inner());
                let s = match b.state(now) {
                    State::Closed => 0,
                    State::HalfOpen => 1,
                    State::Open { .. } => 2,
                };
                (s, b.trips())
            })
            .collect()
    }

    /// Chooses a replica for a request whose routing key is `key`, passing
    /// over the `tried` ones; `None` when no replica can take it now.
    pub fn pick(self: &Arc<Self>, key: &[u8], tried: &[usize]) -> Option<Pick> {
        let open: Vec<usize> = (0..self.replicas.len())
            .filter(|i| !tried.contains(i) && self.replicas[*i].is_healthy())
            .collect();
        if open.is_empty() {
            return None;
        }
        let order = self.order(key, &open);
        // The ring's owner of this key, for the affinity rate.
        let owner = (self.policy == Policy::PrefixHash)
            .then(|| {
                self.ring
                    .node_indices_from(key)
                    .into_iter()
                    .find(|i| open.contains(i))
            })
            .flatten();
        let now = self.started.elapsed();
        for i in order {
            let r = &self.replicas[i];
            let decision = r
                .breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(now);
            if let Decision::Allow(permit) = decision {
                if self.policy == Policy::PrefixHash {
                    self.metrics.affinity(owner == Some(i));
                }
                r.inflight.fetch_add(1, Ordering::Relaxed);
                self.metrics.sent(i);
                return Some(Pick {
                    pool: self.clone(),
                    index: i,
                    permit: Some(permit),
                });
            }
        }
        None
    }

    /// The candidates in the order the policy prefers them.
    fn order(&self, key: &[u8], open: &[usize]) -> Vec<usize> {
        let by_score = || {
            let mut v = open.to_vec();
            v.sort_by(|&a, &b| {
                self.replicas[a]
                    .score()
                    .total_cmp(&self.replicas[b].score())
            });
            v
        };
        match self.policy {
            Policy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let n = self.replicas.len();
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|i| open.contains(i))
                    .collect()
            }
            Policy::LeastLoaded => by_score(),
            Policy::P2c => {
                let mut rng = rand::rng();
                let mut rest = open.to_vec();
                let a = rest.swap_remove(rng.random_range(0..rest.len()));
                let mut first = vec![a];
                if !rest.is_empty() {
                    let b = rest.swap_remove(rng.random_range(0..rest.len()));
                    first.push(b);
                    first.sort_by(|&x, &y| {
                        self.replicas[x]
                            .score()
                            .total_cmp(&self.replicas[y].score())
                    });
                }
                rest.sort_by(|&x, &y| {
                    self.replicas[x]
                        .score()
                        .total_cmp(&self.replicas[y].score())
                });
                first.extend(rest);
                first
            }
            Policy::PrefixHash => {
                let ring: Vec<usize> = self
                    .ring
                    .node_indices_from(key)
                    .into_iter()
                    .filter(|i| open.contains(i))
                    .collect();
                let total: usize = open.iter().map(|&i| self.replicas[i].inflight()).sum();
                let cap = (BOUNDED_LOAD * (total + 1) as f64 / open.len() as f64).ceil() as usize;
                let (under, over): (Vec<usize>, Vec<usize>) = ring
                    .into_iter()
                    .partition(|&i| self.replicas[i].inflight() < cap);
                under.into_iter().chain(over).collect()
            }
        }
    }

    /// One round of health checks: `/health`, then the load on `/metrics`
    /// and the context length on `/v1/models`.
    pub async fn check_health(&self, client: &reqwest::Client, timeout: Duration) {
        let checks = self.replicas.iter().map(|r| async move {
            let ok = client
                .get(format!("{}/health", r.url))
                .timeout(timeout)
                .send()
                .await
                .is_ok_and(|resp| resp.status().is_success());
            r.healthy.store(ok, Ordering::Relaxed);
            if !ok {
                return;
            }
            if let Some(text) = get_text(client, &format!("{}/metrics", r.url), timeout).await {
                let mut load = r.load.lock().unwrap_or_else(|e| e.into_inner());
                load.running = sample(&text, "sdlab_requests_running").unwrap_or(0.0);
                load.waiting = sample(&text, "sdlab_requests_waiting").unwrap_or(0.0);
                load.kv_usage = sample(&text, "sdlab_kv_cache_usage_ratio").unwrap_or(0.0);
            }
            if r.max_model_len() == 0 {
                if let Some(text) = get_text(client, &format!("{}/v1/models", r.url), timeout).await
                {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if let Some(n) = v["data"][0]["max_model_len"].as_u64() {
                        r.max_model_len.store(n as usize, Ordering::Relaxed);
                    }
                }
            }
        });
        futures_util::future::join_all(checks).await;
    }
}

async fn get_text(client: &reqwest::Client, url: &str, timeout: Duration) -> Option<String> {
    let resp = client.get(url).timeout(timeout).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// The value of the first sample of `name` in a Prometheus exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        rest.rsplit(' ').next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(policy: Policy, n: usize) -> Arc<Pool> {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9000 + i))
            .collect();
        let breaker = BreakerConfig {
            window: 4,
            min_calls: 2,
            failure_rate: 0.5,
            open_timeout: Duration::from_secs(60),
            half_open_probes: 1,
        };
        Arc::new(Pool::new(&urls, policy, breaker, Arc::new(RouterMetrics::new(&urls))).unwrap())
    }

    /// Picks and reports success at once.
    fn take(p: &Arc<Pool>, key: &[u8], tried: &[usize]) -> usize {
        let pick = p.pick(key, tried).unwrap();
        let i = pick.index;
        pick.done(true);
        i
    }

    #[test]
    fn round_robin_cycles_and_skips_what_was_tried() {
        let p = pool(Policy::RoundRobin, 3);
        let got: Vec<usize> = (0..6).map(|_| take(&p, b"k", &[])).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(take(&p, b"k", &[0, 1]), 2);
        assert!(p.pick(b"k", &[0, 1, 2]).is_none());
    }

    #[test]
    fn least_loaded_and_p2c_avoid_the_busy_replica() {
        for policy in [Policy::LeastLoaded, Policy::P2c] {
            let p = pool(policy, 2);
            let busy: Vec<Pick> = (0..5).map(|_| p.pick(b"k", &[1]).unwrap()).collect();
            for _ in 0..20 {
                assert_eq!(take(&p, b"k", &[]), 1, "{policy:?}");
            }
            busy.into_iter().for_each(|b| b.done(true));
        }
    }

    #[test]
    fn prefix_hash_is_sticky_and_spills_over_when_loaded() {
        let p = pool(Policy::PrefixHash, 3);
        let home = take(&p, b"shared prefix", &[]);
        for _ in 0..10 {
            assert_eq!(take(&p, b"shared prefix", &[]), home);
        }
        // Hold requests on the home replica: past 1.25x the mean it spills.
        let held: Vec<Pick> = (0..4)
            .map(|_| p.pick(b"shared prefix", &[]).unwrap())
            .collect();
        assert!(held.iter().any(|h| h.index != home));
        let homes = held.iter().filter(|h| h.index == home).count();
        assert!(homes >= 2, "{homes}");
        let (hits, lookups) = p.metrics.affinity_counts();
        assert!(hits < lookups && hits >= 12, "{hits}/{lookups}");
        held.into_iter().for_each(|h| h.done(true));
    }

    #[test]
    fn failures_open_the_breaker_and_unhealthy_replicas_are_skipped() {
        let p = pool(Policy::RoundRobin, 2);
        for _ in 0..2 {
            p.pick(b"k", &[1]).unwrap().done(false);
        }
        assert_eq!(p.breaker_states()[0].0, 2, "open after 2 of 2 failures");
        for _ in 0..4 {
            assert_eq!(take(&p, b"k", &[]), 1);
        }
        let pick = p.pick(b"k", &[]).unwrap();
        pick.mark_down();
        pick.done(true);
        assert!(
            p.pick(b"k", &[]).is_none(),
            "one open breaker, one down replica"
        );
    }

    #[test]
    fn samples_are_read_by_exact_name() {
        let text = "# TYPE x gauge\nsdlab_requests_running 3\nsdlab_requests_running_total 9\n\
                    sdlab_kv_cache_usage_ratio{a=\"b\"} 0.5\n";
        assert_eq!(sample(text, "sdlab_requests_running"), Some(3.0));
        assert_eq!(sample(text, "sdlab_kv_cache_usage_ratio"), Some(0.5));
        assert_eq!(sample(text, "sdlab_requests_waiting"), None);
    }
}
