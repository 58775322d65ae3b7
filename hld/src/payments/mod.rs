//! Charging a card exactly once when the network loses responses (the
//! Stripe problem): blind retries against idempotency keys.
//!
//! **The pattern.** A client sends "charge $20", the server charges the card,
//! and the response is lost (a timeout, a dropped connection, a crashed load
//! balancer). The client cannot tell "never arrived" from "done, answer
//! lost", so it retries, and a user double-clicking or a hedging proxy sends
//! the same request twice at once.
//!
//! **The naive way** ([`NaiveServer`]): every request that arrives charges.
//! Each retry of a request whose answer was lost is one more charge.
//!
//! **The optimal way** ([`IdempotentServer`]): the client generates a unique
//! idempotency key per logical payment and sends it with every retry. The
//! server keeps, per key, the request's parameters and its result, with
//! Stripe's semantics:
//! - the first request with a key runs and its result is stored; any later
//!   request with the same key and the same parameters gets the stored
//!   result back without running again (errors included);
//! - the same key with *different* parameters is a client bug and is
//!   rejected ([`PaymentError::KeyReuse`]);
//! - a request arriving while the first one with its key is still running
//!   waits for it (a `Condvar`) and returns its result; Stripe itself
//!   answers `409 Conflict` there and lets the client retry, which
//!   [`InFlightPolicy::Reject`] does.
//!
//! The store here ([`IdempotencyStore`], shared with the tower
//! [`IdempotencyLayer`](crate::layers::IdempotencyLayer)) is a
//! `Mutex<HashMap<key, entry>>` with a `Condvar`: one process, in memory.
//! A real server keeps the key in the same database transaction as the charge (or in phases with recovery points, as in
//! Brandur Leach's Postgres design for Stripe-like APIs), so a crash between
//! charging and storing cannot lose the record, and expires keys after 24
//! hours. Lookups are `O(1)`; memory grows with the keys kept.

mod store;

pub use store::{Claim, IdempotencyStore};

use crate::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

/// The lesson's command-line name.
pub const NAME: &str = "payments";
/// A short human title.
pub const TITLE: &str = "Payments: blind retries vs idempotency keys";

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChargeRequest {
    /// The merchant's order this payment is for (metadata on the charge).
    pub order: u64,
    pub customer: u64,
    pub amount_cents: u64,
    pub currency: String,
}

/// A charge that hit the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: u64,
    pub order: u64,
    pub customer: u64,
    pub amount_cents: u64,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("idempotency key {0:?} was first used with different parameters")]
    KeyReuse(String),
    #[error("a request with idempotency key {0:?} is still in flight")]
    InFlight(String),
    #[error("timed out waiting for the in-flight request with key {0:?}")]
    WaitTimedOut(String),
    #[error("the card was declined")]
    Declined,
}

/// The card network: every call to [`charge`](Self::charge) moves money.
#[derive(Debug, Default)]
pub struct Ledger {
    next_id: AtomicU64,
    charges: Mutex<Vec<Charge>>,
    /// How long a charge takes (the call to the card network), which is
    /// the window in which a concurrent duplicate can arrive.
    latency: Duration,
}

impl Ledger {
    pub fn new(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// Charges the card. Amount 0 is declined (so errors exist too).
    pub fn charge(&self, req: &ChargeRequest) -> Result<Charge, PaymentError> {
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
        if req.amount_cents == 0 {
            return Err(PaymentError::Declined);
        }
        let c = Charge {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            order: req.order,
            customer: req.customer,
            amount_cents: req.amount_cents,
        };
        lock(&self.charges).push(c.clone());
        Ok(c)
    }

    /// Every charge so far.
    pub fn charges(&self) -> Vec<Charge> {
        lock(&self.charges).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A payment API: one request, possibly carrying an idempotency key.
pub trait PaymentServer: Sync {
    fn handle(&self, key: &str, req: &ChargeRequest) -> Result<Charge, PaymentError>;
    fn ledger(&self) -> &Ledger;
}

/// Charges on every request; the key is ignored.
#[derive(Debug, Default)]
pub struct NaiveServer {
    ledger: Ledger,
}

impl NaiveServer {
    pub fn new(ledger: Ledger) -> Self {
        Self { ledger }
    }
}

impl PaymentServer for NaiveServer {
    fn handle(&self, _key: &str, req: &ChargeRequest) -> Result<Charge, PaymentError> {
        self.ledger.charge(req)
    }
    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// What to do with a request whose key is still being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightPolicy {
    /// Wait (up to the timeout) for the first request and return its result.
    Wait(Duration),
    /// Answer [`PaymentError::InFlight`] at once (Stripe's `409 Conflict`).
    Reject,
}

/// Counters of what the idempotency layer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyStats {
    pub executed: u64,
    pub replayed: u64,
    pub waited: u64,
    pub key_reuse_rejected: u64,
    pub in_flight_rejected: u64,
}

/// Runs each idempotency key's request once and replays its result.
#[derive(Debug)]
pub struct IdempotentServer {
    ledger: Ledger,
    policy: InFlightPolicy,
    store: IdempotencyStore<ChargeRequest, Result<Charge, PaymentError>>,
    stats: Mutex<IdempotencyStats>,
}

impl IdempotentServer {
    pub fn new(ledger: Ledger, policy: InFlightPolicy) -> Self {
        Self {
            ledger,
            policy,
            store: IdempotencyStore::new(),
            stats: Mutex::new(IdempotencyStats::default()),
        }
    }

    pub fn stats(&self) -> IdempotencyStats {
        *lock(&self.stats)
    }

    fn bump(&self, f: impl FnOnce(&mut IdempotencyStats)) {
        f(&mut lock(&self.stats));
    }
}

impl PaymentServer for IdempotentServer {
    fn handle(&self, key: &str, req: &ChargeRequest) -> Result<Charge, PaymentError> {
        let wait = match self.policy {
            InFlightPolicy::Wait(d) => Some(d),
            InFlightPolicy::Reject => None,
        };
        let (claim, waited) = self.store.claim(key, req, wait);
        if waited {
            self.bump(|s| s.waited += 1);
        }
        match claim {
            Claim::Replay(result) => {
                self.bump(|s| s.replayed += 1);
                result
            }
            Claim::KeyReuse => {
                self.bump(|s| s.key_reuse_rejected += 1);
                Err(PaymentError::KeyReuse(key.into()))
            }
            Claim::InFlight => {
                self.bump(|s| s.in_flight_rejected += 1);
                Err(PaymentError::InFlight(key.into()))
            }
            Claim::TimedOut => Err(PaymentError::WaitTimedOut(key.into())),
            Claim::Run => {
                let result = self.ledger.charge(req);
                self.bump(|s| s.executed += 1);
                self.store.finish(key, result.clone());
                result
            }
        }
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// The retry storm.
#[derive(Debug, Clone, Copy)]
pub struct StormConfig {
    /// Logical payments (each with its own key and amount).
    pub payments: usize,
    /// Client threads that each send *every* payment (double clicks, a
    /// hedging proxy, two devices): at least 1.
    pub senders_per_payment: usize,
    /// Client threads per sender group.
    pub threads: usize,
    /// Probability that the server's answer is lost after it ran.
    pub lose_response: f64,
    /// Retries per request before the client gives up.
    pub max_attempts: u32,
    /// Card network latency.
    pub latency: Duration,
}

/// What the storm did to the ledger.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StormStats {
    pub requests: u64,
    pub lost_responses: u64,
    /// Charges beyond the first for a payment.
    pub double_charges: u64,
    /// Cents charged beyond the first charge of each payment.
    pub overcharged_cents: u64,
    /// Payments with no charge at all.
    pub uncharged_payments: u64,
    /// Client requests that got a "different parameters" error.
    pub key_reuse_errors: u64,
}

/// A logical payment's idempotency key and request, from the seed.
fn payment(seed: u64, i: usize) -> (String, ChargeRequest) {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (
        format!("pay-{seed:x}-{i}"),
        ChargeRequest {
            order: i as u64,
            customer: rng.random_range(1..1000),
            amount_cents: rng.random_range(100..100_000),
            currency: "usd".into(),
        },
    )
}

/// Runs the storm against `server`: `threads * senders_per_payment` client
/// threads start together; every payment is sent by `senders_per_payment`
/// of them, and each retries until it gets an answer (a lost answer looks
/// like a timeout) or runs out of attempts.
pub fn retry_storm(server: &dyn PaymentServer, seed: u64, cfg: StormConfig) -> StormStats {
    let senders = cfg.senders_per_payment.max(1);
    let threads = cfg.threads.max(1);
    let requests = AtomicU64::new(0);
    let lost = AtomicU64::new(0);
    let key_reuse = AtomicU64::new(0);
    let barrier = Barrier::new(threads * senders);
    std::thread::scope(|s| {
        for g in 0..senders {
            for t in 0..threads {
                let (requests, lost, key_reuse, barrier) = (&requests, &lost, &key_reuse, &barrier);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(
                        seed ^ ((g * threads + t) as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
                    );
                    barrier.wait();
                    for i in (t..cfg.payments).step_by(threads) {
                        let (key, req) = payment(seed, i);
                        for _ in 0..cfg.max_attempts.max(1) {
                            requests.fetch_add(1, Ordering::Relaxed);
                            let answer = server.handle(&key, &req);
                            if rng.random_bool(cfg.lose_response.clamp(0.0, 1.0)) {
                                lost.fetch_add(1, Ordering::Relaxed);
                                continue; // timed out: retry with the same key
                            }
                            match answer {
                                Err(PaymentError::InFlight(_)) => std::thread::yield_now(),
                                Err(PaymentError::KeyReuse(_)) => {
                                    key_reuse.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                _ => break,
                            }
                        }
                    }
                });
            }
        }
    });
    let mut per_payment: HashMap<u64, Vec<u64>> = HashMap::new();
    for c in server.ledger().charges() {
        per_payment.entry(c.order).or_default().push(c.amount_cents);
    }
    let mut double_charges = 0;
    let mut overcharged = 0;
    let mut uncharged = 0;
    for i in 0..cfg.payments {
        let (_, req) = payment(seed, i);
        match per_payment.get_mut(&req.order) {
            Some(v) if !v.is_empty() => {
                v.pop();
                // Every charge after the first is a double charge.
                double_charges += v.len() as u64;
                overcharged += v.iter().sum::<u64>();
            }
            _ => uncharged += 1,
        }
    }
    StormStats {
        requests: requests.into_inner(),
        lost_responses: lost.into_inner(),
        double_charges,
        overcharged_cents: overcharged,
        uncharged_payments: uncharged,
        key_reuse_errors: key_reuse.into_inner(),
    }
}

/// The experiment at a chosen size.
pub fn lesson_with(seed: u64, cfg: StormConfig) -> LessonReport {
    let naive = NaiveServer::new(Ledger::new(cfg.latency));
    let n = retry_storm(&naive, seed, cfg);
    let optimal = IdempotentServer::new(
        Ledger::new(cfg.latency),
        InFlightPolicy::Wait(Duration::from_secs(10)),
    );
    let o = retry_storm(&optimal, seed, cfg);
    let st = optimal.stats();
    LessonReport::new(NAME, TITLE)
        .both("payments", cfg.payments as f64, cfg.payments as f64)
        .both("requests", n.requests as f64, o.requests as f64)
        .both("lost_responses", n.lost_responses as f64, o.lost_responses as f64)
        .both("charges", naive.ledger().charges().len() as f64, optimal.ledger().charges().len() as f64)
        .both("double_charges", n.double_charges as f64, o.double_charges as f64)
        .both("overcharged_dollars", n.overcharged_cents as f64 / 100.0, o.overcharged_cents as f64 / 100.0)
        .both("uncharged_payments", n.uncharged_payments as f64, o.uncharged_payments as f64)
        .optimal("replayed_results", st.replayed as f64)
        .optimal("waited_for_in_flight", st.waited as f64)
        .notes(format!(
            "{} payments, each sent by {} client threads at once, with {:.0} % of answers lost after the \
             charge ran, so clients retry. Charging on every request charged {} times for {} payments \
             ({} double charges, ${:.2} too much). With an idempotency key per payment (stored with its \
             parameters and result in a Mutex'd HashMap, a Condvar for requests that arrive while the \
             first is in flight) the card was charged exactly once per payment: {} requests got a stored \
             result back and {} waited for the in-flight one. In production the key is stored in the \
             same database transaction as the charge (Stripe's design, 24-hour keys; Brandur Leach's \
             atomic phases on Postgres) so a crash cannot separate them, and a Kafka consumer or a \
             payment provider's webhook is deduplicated the same way.",
            cfg.payments,
            cfg.senders_per_payment,
            cfg.lose_response * 100.0,
            naive.ledger().charges().len(),
            cfg.payments,
            n.double_charges,
            n.overcharged_cents as f64 / 100.0,
            st.replayed,
            st.waited,
        ))
}

/// The full-size storm: 2000 payments, 2 senders each, 16 threads per
/// sender group, 30 % lost answers, 100 µs card latency.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(
        seed,
        StormConfig {
            payments: 2000,
            senders_per_payment: 2,
            threads: 16,
            lose_response: 0.3,
            max_attempts: 20,
            latency: Duration::from_micros(100),
        },
    )
}

#[cfg(test)]
mod tests;
