//! Publish/subscribe: a copy per subscriber queue against one append-only
//! log per topic with per-subscriber cursors (Kafka's design).
//!
//! **The pattern.** One publisher, many subscribers, every subscriber must
//! see every message of the topic, in order, even if it disconnects for a
//! while (a deploy, a network blip, a GC pause).
//!
//! **The naive way** ([`QueueBroker`]): each connected subscriber owns a
//! queue, and publishing copies the message into every queue. The publisher
//! pays `O(subscribers)` copies per message, memory holds one copy per
//! subscriber, and the queue lives as long as the connection: a subscriber
//! that disconnects loses what was still in its queue, and whatever is
//! published until it reconnects was never put anywhere for it.
//!
//! **The optimal way** ([`TopicLog`]): the topic is one append-only log.
//! Publishing appends each message once (`O(1)` per message whatever the
//! number of subscribers); messages are shared by reference ([`Arc`](std::sync::Arc)). A
//! subscriber is just a *cursor*, an offset into the log, which the broker
//! stores under the subscriber's name when it commits ([`TopicLog::commit`]).
//! A reconnecting subscriber resumes from its committed cursor, so nothing
//! is lost; committing after processing gives at-least-once delivery (a
//! crash between processing and commit replays the batch). Reads are
//! `O(batch)`; memory is one copy of each retained message, and
//! [`TopicLog::trim_consumed`] drops the prefix every cursor has passed
//! (real brokers instead keep a time or size based retention, so a
//! subscriber can also replay history).
//!
//! The lesson runs both on real threads: one publisher and several
//! subscribers released together by a [`Barrier`]; some subscribers drop
//! their connection a third of the way through and reconnect after the
//! publisher has moved on.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "pubsub";
/// A short human title.
pub const TITLE: &str = "Pub/sub: a copy per subscriber queue vs one topic log with cursors";

/// Errors reading a [`TopicLog`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubSubError {
    #[error("offset {offset} was trimmed away (the log now starts at {start})")]
    Trimmed { offset: u64, start: u64 },
    #[error("offset {offset} is past the end of the log ({end})")]
    PastEnd { offset: u64, end: u64 },
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every
/// critical section here only pushes or pops whole messages).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

mod log;
mod queue;

pub use log::{Delivery, LogSubscription, TopicLog};
pub use queue::{QueueBroker, QueueSubscription};

/// The sequence number a lesson message carries in its first 8 bytes.
pub fn sequence_of(msg: &[u8]) -> Option<u64> {
    msg.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// Shape of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub messages: usize,
    pub payload: usize,
    pub batch: usize,
    pub subscribers: usize,
    /// The first `reconnecting` subscribers disconnect once mid-stream.
    pub reconnecting: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunStats {
    /// Messages never delivered to the reconnecting subscribers (summed).
    pub lost_reconnecting: u64,
    /// Messages never delivered to the always-connected subscribers.
    pub lost_steady: u64,
    /// Messages delivered more than once (summed over subscribers).
    pub duplicates: u64,
    /// Deliveries that came with a lower sequence number than the previous.
    pub out_of_order: u64,
    /// Median publisher time per batch, in milliseconds.
    pub publisher_ms_per_batch: f64,
    /// Message copies the broker stored.
    pub copies: u64,
    /// Payload bytes the broker stored (all copies).
    pub bytes: u64,
    pub elapsed_ms: f64,
}

/// A subscriber's record of what it got.
struct Received {
    seen: Vec<bool>,
    distinct: usize,
    duplicates: u64,
    out_of_order: u64,
    last: Option<u64>,
}

impl Received {
    fn new(n: usize) -> Self {
        Self {
            seen: vec![false; n],
            distinct: 0,
            duplicates: 0,
            out_of_order: 0,
            last: None,
        }
    }
    fn take(&mut self, msg: &[u8]) {
        let Some(seq) = sequence_of(msg) else { return };
        if self.last.is_some_and(|l| seq < l) {
            self.out_of_order += 1;
        }
        self.last = Some(seq);
        match self.seen.get_mut(seq as usize) {
            Some(s) if *s => self.duplicates += 1,
            Some(s) => {
                *s = true;
                self.distinct += 1;
            }
            None => {}
        }
    }
    fn count(&self) -> usize {
        self.distinct
    }
    fn lost(&self) -> u64 {
        (self.seen.len() - self.count()) as u64
    }
}

fn make_batches(seed: u64, w: &Workload) -> Vec<Vec<Vec<u8>>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let msgs: Vec<Vec<u8>> = (0..w.messages as u64)
        .map(|i| {
            let mut m = i.to_le_bytes().to_vec();
            m.extend((8..w.payload.max(8)).map(|_| rng.random::<u8>()));
            m
        })
        .collect();
    msgs.chunks(w.batch.max(1)).map(|c| c.to_vec()).collect()
}

/// Waits (yielding) until the publisher has published `target` messages or
/// is done: the subscriber stays disconnected while the stream moves on.
fn wait_for_progress(published: &AtomicU64, done: &AtomicBool, target: u64) {
    while published.load(Ordering::SeqCst) < target && !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The publisher of either run: after the barrier, publishes every batch
/// with `publish`, counting progress for the subscribers; returns the
/// milliseconds each batch took.
fn publish_all(
    barrier: &Barrier,
    batches: &[Vec<Vec<u8>>],
    published: &AtomicU64,
    done: &AtomicBool,
    mut publish: impl FnMut(&[Vec<u8>]),
) -> Vec<f64> {
    barrier.wait();
    let mut times = Vec::with_capacity(batches.len());
    for b in batches {
        let t = Instant::now();
        publish(b);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        published.fetch_add(b.len() as u64, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    times
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Where each reconnecting subscriber drops its connection (a message
/// count between a quarter and a half of the stream).
fn disconnect_points(seed: u64, w: &Workload) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xD15C);
    let lo = (w.messages / 4).max(1);
    let hi = (w.messages / 2).max(lo + 1);
    (0..w.subscribers)
        .map(|i| {
            if i < w.reconnecting {
                rng.random_range(lo..hi)
            } else {
                usize::MAX
            }
        })
        .collect()
}

/// The naive run: a queue per subscriber.
pub fn run_queues(seed: u64, w: &Workload) -> RunStats {
    let batches = make_batches(seed, w);
    let cuts = disconnect_points(seed, w);
    let broker = QueueBroker::new();
    let barrier = Barrier::new(w.subscribers + 1);
    let (published, done) = (AtomicU64::new(0), AtomicBool::new(false));
    let start = Instant::now();
    let (times, received) = std::thread::scope(|s| {
        let subs: Vec<_> = cuts
            .iter()
            .map(|&cut| {
                let (broker, barrier, published, done) = (&broker, &barrier, &published, &done);
                let batch = w.batch.max(1) as u64;
                s.spawn(move || {
                    let mut rec = Received::new(w.messages);
                    let mut sub = broker.subscribe();
                    let mut reconnected = false;
                    barrier.wait();
                    loop {
                        let got = sub.poll(256, Duration::from_millis(1));
                        for m in &got {
                            rec.take(m);
                        }
                        if !reconnected && rec.count() >= cut {
                            // Disconnect: the queue (and what is in it) goes.
                            drop(sub);
                            let at = published.load(Ordering::SeqCst);
                            wait_for_progress(published, done, at + 2 * batch);
                            sub = broker.subscribe();
                            reconnected = true;
                            continue;
                        }
                        if got.is_empty() && done.load(Ordering::SeqCst) {
                            let rest = sub.poll(usize::MAX, Duration::ZERO);
                            for m in &rest {
                                rec.take(m);
                            }
                            if rest.is_empty() {
                                break;
                            }
                        }
                    }
                    rec
                })
            })
            .collect();
        let publisher = s.spawn(|| {
            publish_all(&barrier, &batches, &published, &done, |b| {
                broker.publish_batch(b);
            })
        });
        let times = publisher.join().unwrap_or_default();
        let received: Vec<Option<Received>> = subs.into_iter().map(|h| h.join().ok()).collect();
        (times, received)
    });
    let mut stats = summarize(w, &cuts, received);
    stats.publisher_ms_per_batch = median(times);
    stats.copies = broker.copies();
    stats.bytes = broker.bytes_copied();
    stats.elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    stats
}

/// The optimal run: one log, a committed cursor per subscriber.
pub fn run_log(seed: u64, w: &Workload) -> RunStats {
    let batches = make_batches(seed, w);
    let cuts = disconnect_points(seed, w);
    let log = TopicLog::new();
    let barrier = Barrier::new(w.subscribers + 1);
    let (published, done) = (AtomicU64::new(0), AtomicBool::new(false));
    let start = Instant::now();
    let (times, received) = std::thread::scope(|s| {
        let subs: Vec<_> = cuts
            .iter()
            .enumerate()
            .map(|(i, &cut)| {
                let (log, barrier, published, done) = (&log, &barrier, &published, &done);
                let batch = w.batch.max(1) as u64;
                s.spawn(move || {
                    let name = format!("sub-{i}");
                    let mut rec = Received::new(w.messages);
                    let mut sub = log.subscribe(&name);
                    let mut reconnected = false;
                    barrier.wait();
                    loop {
                        // A trimmed cursor cannot happen here (nobody trims
                        // during the run); treat an error as "nothing new".
                        let got = sub.poll(256, Duration::from_millis(1)).unwrap_or_default();
                        for (_, m) in &got {
                            rec.take(m);
                        }
                        sub.commit();
                        if !reconnected && rec.count() >= cut {
                            drop(sub);
                            let at = published.load(Ordering::SeqCst);
                            wait_for_progress(published, done, at + 2 * batch);
                            sub = log.subscribe(&name);
                            reconnected = true;
                            continue;
                        }
                        if got.is_empty()
                            && done.load(Ordering::SeqCst)
                            && sub.cursor() >= log.end_offset()
                        {
                            break;
                        }
                    }
                    rec
                })
            })
            .collect();
        let publisher = s.spawn(|| {
            publish_all(&barrier, &batches, &published, &done, |b| {
                log.append_batch(b);
            })
        });
        let times = publisher.join().unwrap_or_default();
        let received: Vec<Option<Received>> = subs.into_iter().map(|h| h.join().ok()).collect();
        (times, received)
    });
    let mut stats = summarize(w, &cuts, received);
    stats.publisher_ms_per_batch = median(times);
    stats.copies = log.end_offset();
    stats.bytes = log.appended_bytes();
    stats.elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    stats
}

fn summarize(w: &Workload, cuts: &[usize], received: Vec<Option<Received>>) -> RunStats {
    let mut s = RunStats::default();
    for (cut, rec) in cuts.iter().zip(received) {
        // A subscriber thread that panicked lost everything.
        let (lost, dup, ooo) = rec.map_or((w.messages as u64, 0, 0), |r| {
            (r.lost(), r.duplicates, r.out_of_order)
        });
        if *cut == usize::MAX {
            s.lost_steady += lost;
        } else {
            s.lost_reconnecting += lost;
        }
        s.duplicates += dup;
        s.out_of_order += ooo;
    }
    s
}

/// The experiment at a given size.
pub fn lesson_with(seed: u64, w: Workload) -> LessonReport {
    let naive = run_queues(seed, &w);
    let optimal = run_log(seed, &w);
    LessonReport::new(NAME, TITLE)
        .both("messages", w.messages as f64, w.messages as f64)
        .both("subscribers", w.subscribers as f64, w.subscribers as f64)
        .both("reconnecting_subscribers", w.reconnecting as f64, w.reconnecting as f64)
        .both(
            "messages_lost",
            naive.lost_reconnecting as f64,
            optimal.lost_reconnecting as f64,
        )
        .both("messages_lost_steady", naive.lost_steady as f64, optimal.lost_steady as f64)
        .both("duplicates", naive.duplicates as f64, optimal.duplicates as f64)
        .both("out_of_order", naive.out_of_order as f64, optimal.out_of_order as f64)
        .both(
            "publisher_ms",
            naive.publisher_ms_per_batch,
            optimal.publisher_ms_per_batch,
        )
        .both("copies", naive.copies as f64, optimal.copies as f64)
        .both("bytes", naive.bytes as f64, optimal.bytes as f64)
        .both("elapsed_ms", naive.elapsed_ms, optimal.elapsed_ms)
        .notes(format!(
            "One publisher thread sends {} messages of {} bytes in batches of {} to {} subscriber threads; {} of \
             them disconnect once mid-stream and reconnect after the publisher has moved on. With a queue per \
             subscriber the publisher copies every message into each connected subscriber's queue ({} copies, {:.0} MB stored, {:.3} ms per batch against \
             {:.3} ms to append once), and the reconnecting subscribers lost {} messages: their queue died with the \
             connection. The topic log stores each message once and a subscriber is only a committed offset, so \
             the same subscribers resumed where they left off and lost {}. Past one machine this is Kafka (a \
             partitioned, replicated log with consumer-group offsets and retention), Redis Streams (XADD, \
             XREADGROUP, XACK) or NATS JetStream (durable consumers); plain Redis PUBLISH and core NATS are the \
             fire-and-forget naive side.",
            w.messages,
            w.payload,
            w.batch,
            w.subscribers,
            w.reconnecting,
            naive.copies,
            naive.bytes as f64 / 1e6,
            naive.publisher_ms_per_batch,
            optimal.publisher_ms_per_batch,
            naive.lost_reconnecting,
            optimal.lost_reconnecting,
        ))
}

/// The full-size experiment: 10,000 messages of 512 bytes in batches of
/// 100, 16 subscribers of which 4 reconnect.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(
        seed,
        Workload {
            messages: 10_000,
            payload: 512,
            batch: 100,
            subscribers: 16,
            reconnecting: 4,
        },
    )
}

#[cfg(test)]
mod tests;
