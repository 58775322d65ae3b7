//! The router's own Prometheus metrics: per-replica in-flight requests,
//! health and breaker state, requests sent, retries, failovers, shed
//! requests, idempotent replays and the prefix-cache affinity rate.

use super::pool::Pool;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    pub replica: String,
}

pub struct RouterMetrics {
    registry: Registry,
    urls: Vec<String>,
    inflight: Family<ReplicaLabel, Gauge>,
    healthy: Family<ReplicaLabel, Gauge>,
    breaker_state: Family<ReplicaLabel, Gauge>,
    breaker_trips: Family<ReplicaLabel, Counter>,
    sent: Family<ReplicaLabel, Counter>,
    pub retries: Counter,
    pub failovers: Counter,
    pub shed: Counter,
    pub replays: Counter,
    affinity_hits: Counter,
    affinity_lookups: Counter,
    /// Trips already counted, per replica.
    trips_seen: Mutex<Vec<u64>>,
}

impl RouterMetrics {
    pub fn new(urls: &[String]) -> Self {
        let mut r = Registry::default();
        let m = Self {
            registry: Registry::default(),
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            inflight: Family::default(),
            healthy: Family::default(),
            breaker_state: Family::default(),
            breaker_trips: Family::default(),
            sent: Family::default(),
            retries: Counter::default(),
            failovers: Counter::default(),
            shed: Counter::default(),
            replays: Counter::default(),
            affinity_hits: Counter::default(),
            affinity_lookups: Counter::default(),
            trips_seen: Mutex::new(vec![0; urls.len()]),
        };
        r.register(
            "sdlab_router_replica_inflight",
            "Requests the router has in flight on each replica",
            m.inflight.clone(),
        );
        r.register(
            "sdlab_router_replica_healthy",
            "1 when the replica's last health check (or request) succeeded",
            m.healthy.clone(),
        );
        r.register(
            "sdlab_router_breaker_state",
            "Circuit breaker per replica: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        r.register(
            "sdlab_router_breaker_trips",
            "Times each replica's breaker opened",
            m.breaker_trips.clone(),
        );
        r.register(
            "sdlab_router_requests_sent",
            "Requests sent to each replica (retries and failovers included)",
            m.sent.clone(),
        );
        r.register(
            "sdlab_router_retries",
            "Requests sent again to another replica after a failure before any output",
            m.retries.clone(),
        );
        r.register(
            "sdlab_router_failovers",
            "Streams continued on another replica after theirs failed mid-stream",
            m.failovers.clone(),
        );
        r.register(
            "sdlab_router_shed",
            "Requests refused by the router (rate limit, or no replica available)",
            m.shed.clone(),
        );
        r.register(
            "sdlab_router_idempotent_replays",
            "Requests answered with the stored result of an earlier one with the same Idempotency-Key",
            m.replays.clone(),
        );
        r.register(
            "sdlab_router_affinity_hits",
            "prefix-hash requests sent to the replica that owns their prefix",
            m.affinity_hits.clone(),
        );
        r.register(
            "sdlab_router_affinity_lookups",
            "prefix-hash routing decisions",
            m.affinity_lookups.clone(),
        );
        Self { registry: r, ..m }
    }

    fn label(&self, i: usize) -> ReplicaLabel {
        ReplicaLabel {
            replica: self.urls[i].clone(),
        }
    }

    pub fn sent(&self, i: usize) {
        self.sent.get_or_create(&self.label(i)).inc();
    }

    pub fn affinity(&self, hit: bool) {
        self.affinity_lookups.inc();
        if hit {
            self.affinity_hits.inc();
        }
    }

    /// (hits, lookups) of prefix-hash routing so far.
    #[cfg(test)]
    pub fn affinity_counts(&self) -> (u64, u64) {
        (self.affinity_hits.get(), self.affinity_lookups.get())
    }

    /// The exposition, after refreshing the per-replica gauges from `pool`.
    pub fn render(&self, pool: &Pool) -> String {
        let states = pool.breaker_states();
        let mut seen = self.trips_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (i, r) in pool.replicas.iter().enumerate() {
            let l = self.label(i);
            self.inflight.get_or_create(&l).set(r.inflight() as i64);
            self.healthy.get_or_create(&l).set(r.is_healthy() as i64);
            let (state, trips) = states[i];
            self.breaker_state.get_or_create(&l).set(state as i64);
            self.breaker_trips
                .get_or_create(&l)
                .inc_by(trips.saturating_sub(seen[i]));
            seen[i] = seen[i].max(trips);
            // Make the per-replica counter exist from the start.
            let _ = self.sent.get_or_create(&l);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
