//! The two chat clients: one that polls `GET /poll` every interval with a
//! timestamp cursor, one that keeps a WebSocket open and resumes from its
//! last acknowledged sequence number. Both go offline for their planned
//! window and record every message they get into a shared [`Tally`].

use super::server::Hello;
use super::store::{Message, Sequenced, Stamped};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// One user's plan: who it is and when (if ever) it is offline, as offsets
/// from the run's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPlan {
    pub user: u32,
    pub offline: Option<(Duration, Duration)>,
}

impl ClientPlan {
    pub fn is_offline(&self, at: Duration) -> bool {
        self.offline.is_some_and(|(a, b)| at >= a && at < b)
    }

    /// When the current online session began (the start of the run, or
    /// the end of the offline window once it is over).
    fn session_start(&self, at: Duration) -> Duration {
        match self.offline {
            Some((_, b)) if at >= b => b,
            _ => Duration::ZERO,
        }
    }
}

/// Every message any client received, shared by all clients of one run.
#[derive(Default)]
pub struct Tally {
    seen: Mutex<HashSet<u64>>,
    latencies_ms: Mutex<Vec<f64>>,
    distinct: AtomicU64,
}

impl Tally {
    /// Records message `msg` arriving at `at`; `since` is when the
    /// recipient's session began. The delivery time counts from the send,
    /// or from the reconnect for a message sent while the recipient was
    /// away. Returns false for a message already recorded.
    pub fn record(&self, msg: &Message, at: Duration, since: Duration) -> bool {
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(msg.id)
        {
            return false;
        }
        let from = (msg.sent_us as f64 / 1000.0).max(since.as_secs_f64() * 1000.0);
        let ms = (at.as_secs_f64() * 1000.0 - from).max(0.0);
        self.latencies_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ms);
        self.distinct.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Distinct messages received so far.
    pub fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    /// Whether message `id` was received.
    pub fn has(&self, id: u64) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// The delivery times in milliseconds, sorted.
    pub fn latencies_ms(&self) -> Vec<f64> {
        let mut v = self
            .latencies_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// A client's view of its inbox sequence: everything up to `acked` is in
/// hand, plus the numbers above it that arrived early (a live push can
/// overtake a replay, or two pushes each other). A number seen before is a
/// duplicate and is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub acked: u64,
    ahead: BTreeSet<u64>,
    pub duplicates: u64,
}

impl Cursor {
    /// Takes sequence number `seq`; true if it is new.
    pub fn take(&mut self, seq: u64) -> bool {
        if seq <= self.acked || !self.ahead.insert(seq) {
            self.duplicates += 1;
            return false;
        }
        while self.ahead.remove(&(self.acked + 1)) {
            self.acked += 1;
        }
        true
    }
}

/// Polls `GET /poll?user=..&since=..` every `interval` (first at `phase`)
/// while online, moving `since` to the newest timestamp it got, until
/// `stop` fires. Returns the number of polls it made.
#[allow(clippy::too_many_arguments)]
pub async fn poll_client(
    http: reqwest::Client,
    addr: SocketAddr,
    plan: ClientPlan,
    interval: Duration,
    phase: Duration,
    epoch: Instant,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut since = 0u64;
    let mut next = epoch + phase;
    let mut polls = 0;
    loop {
        tokio::select! {
            _ = sleep_until(next.into()) => {}
            _ = stop.changed() => return polls,
        }
        next += interval;
        let now = epoch.elapsed();
        if plan.is_offline(now) {
            continue;
        }
        let url = format!("http://{addr}/poll?user={}&since={since}", plan.user);
        let Ok(resp) = http.get(url).send().await else {
            continue;
        };
        polls += 1;
        let Ok(rows) = resp.json::<Vec<Stamped>>().await else {
            continue;
        };
        let at = epoch.elapsed();
        for r in rows {
            since = since.max(r.ts);
            tally.record(&r.msg, at, plan.session_start(at));
        }
    }
}

/// One WebSocket session of [`push_client`]: connect, say `Hello` with the
/// cursor, take frames until `until` or `stop`. Returns false when `stop`
/// fired (or the server is gone).
async fn ws_session(
    addr: SocketAddr,
    plan: &ClientPlan,
    cursor: &mut Cursor,
    epoch: Instant,
    until: Option<Instant>,
    tally: &Tally,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let url = format!("ws://{addr}/ws?user={}", plan.user);
    let mut ws = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break ws,
            Err(_) => tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.changed() => return false,
            },
        }
    };
    let hello = serde_json::to_string(&Hello {
        last_seq: cursor.acked,
    })
    .unwrap_or_default();
    if ws.send(WsMessage::text(hello)).await.is_err() {
        return !*stop.borrow();
    }
    let end = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
    let keep_going = loop {
        tokio::select! {
            _ = sleep_until(end.into()) => break true,
            _ = stop.changed() => break false,
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(t))) => {
                    let Ok(m) = serde_json::from_str::<Sequenced>(&t) else { continue };
                    if cursor.take(m.seq) {
                        let at = epoch.elapsed();
                        tally.record(&m.msg, at, plan.session_start(at));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break true,
            },
        }
    };
    let _ = ws.close(None).await;
    keep_going
}

/// Keeps a WebSocket to `/ws` open while online: disconnects for the
/// offline window, reconnects with its cursor and gets the replay, until
/// `stop` fires. Returns the duplicates it dropped.
pub async fn push_client(
    addr: SocketAddr,
    plan: ClientPlan,
    epoch: Instant,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut cursor = Cursor::default();
    let sessions: Vec<(Duration, Option<Duration>)> = match plan.offline {
        Some((a, b)) => vec![(Duration::ZERO, Some(a)), (b, None)],
        None => vec![(Duration::ZERO, None)],
    };
    for (start, end) in sessions {
        // The first session opens at once (the epoch is a little ahead, to
        // give every client time to connect before the first send).
        if start > Duration::ZERO {
            tokio::select! {
                _ = sleep_until((epoch + start).into()) => {}
                _ = stop.changed() => break,
            }
        }
        let until = end.map(|e| epoch + e);
        if !ws_session(addr, &plan, &mut cursor, epoch, until, &tally, &mut stop).await {
            break;
        }
    }
    cursor.duplicates
}
