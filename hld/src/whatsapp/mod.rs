//! A chat service (WhatsApp): clients polling the database every second
//! against WebSockets with store-and-forward.
//!
//! **The pattern.** Hundreds of users, each connected from a phone. A
//! message from one user to another must arrive, fast, exactly once in the
//! user's eyes, even when the recipient was offline when it was sent. Most
//! users receive nothing most of the time; a few are in busy conversations.
//!
//! **The naive way** ([`server::PollServer`], [`client::poll_client`]):
//! `POST /send` stamps the message with the server clock when the request
//! arrives, does the send path's work and commits the row; every client
//! asks `GET /poll?user=..&since=..` once a second and moves its cursor to
//! the newest timestamp it got (`WHERE recipient = ? AND ts > since`). Three
//! problems, all measured: every client costs a query a second whether or
//! not anything arrived (`db_queries`); a message waits up to a whole
//! interval for the next poll (`delivery_ms_p99` sits near the interval);
//! and messages are lost. The loss is the classic timestamp-cursor bug, not
//! an injected fault: the stamp is taken when the send *arrives* but the
//! row only becomes visible when it *commits*. The send path in between
//! (validation, abuse checks, media, waiting for the write lock) takes a
//! varying time, 0-150 ms in the lesson and 200-400 ms for one send in
//! 200, so a slower send commits after a faster one stamped later. A poll
//! in between returns the later message, the cursor jumps past the slower
//! one's stamp, and no poll ever returns it. It needs a busy inbox
//! (several sends in flight to one user at once: a business account, a
//! member of a lively group); the lesson's two busy inboxes hit it in every
//! run. The same bug hits any cursor on a value assigned before commit:
//! clocks, or database sequences handed out before the transaction ends.
//!
//! **The optimal way** ([`server::PushServer`], [`client::push_client`]):
//! each client keeps a WebSocket (axum on the server, tokio-tungstenite on
//! the client) and the server keeps a registry of who is connected. A send
//! is persisted first, under the recipient's next *sequence number*, taken
//! inside the insert, so sequence order is commit order; then it is pushed
//! to the recipient's socket if the registry has one (store-and-forward: if
//! not, it just waits in the store). On (re)connect the client sends the
//! highest sequence number up to which it has everything (its ack), and
//! the server replays everything after it, then live pushes continue. The
//! connection registers *before* it reads what to replay, so a message
//! committed meanwhile is pushed, replayed, or both, never neither; the
//! client drops duplicates by sequence number ([`client::Cursor`]). The
//! server also keeps each inbox's newest sequence number in memory, so a
//! client that missed nothing reconnects without touching the database.
//! Database work is one insert per message plus one query per reconnect
//! that has something to replay.
//!
//! The lesson runs both on the same workload: real servers on
//! `127.0.0.1`, every user a tokio task started together (HTTP through
//! reqwest, WebSockets through tokio-tungstenite), messages sent on a
//! seeded schedule (60% of them to two busy inboxes, the rest spread over
//! everyone), a fifth of the users offline for one to two seconds in the
//! middle, and SQLite (WAL) as the store. Look at `messages_lost` (naive above 0, optimal exactly 0),
//! `db_queries` (naive dominated by empty polls) and `delivery_ms_p99`
//! (naive near the poll interval plus the send path; optimal the send path
//! alone). Delivery time counts from the send, or from the reconnect for a
//! message sent while its recipient was offline.
//!
//! **Beyond one machine.** WhatsApp ran this on Erlang (ejabberd, later
//! its own server): millions of long-lived connections per gateway
//! machine. At scale it is a tier of WebSocket gateways that only hold
//! connections, a presence/session registry (which gateway holds which
//! user, in memory, replicated), a durable message store partitioned by
//! recipient (Cassandra or HBase, sequence numbers per inbox), and a log
//! such as Kafka between the send path and the gateways, so a gateway that
//! restarts replays instead of losing. Messages are deleted once the
//! recipient acknowledges them, and an offline user gets a push
//! notification (APNs/FCM) instead of a socket push.

pub mod client;
pub mod server;
pub mod store;

#[cfg(test)]
mod tests;

use crate::report::LessonReport;
use crate::ticketmaster::ScratchDir;
use client::{ClientPlan, Tally};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use server::{PollServer, PushServer, SendPath};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Message, SequenceStore, TimestampStore};

/// The lesson's command-line name.
pub const NAME: &str = "whatsapp";
/// A short human title.
pub const TITLE: &str =
    "WhatsApp: polling the database every second vs WebSockets with store-and-forward";

/// Shape of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    pub users: usize,
    /// The first `busy` users get `busy_share` of all messages.
    pub busy: usize,
    pub busy_share: f64,
    pub messages: usize,
    /// Sends are spread over this long (after a short warm-up).
    pub send_window: Duration,
    /// Share of users that go offline once, for `offline_ms` (uniform).
    pub offline_share: f64,
    pub offline_ms: (u64, u64),
    pub poll_interval: Duration,
    /// How long to wait for stragglers after the last send.
    pub drain: Duration,
    pub send_path: SendPath,
}

impl Workload {
    /// The lesson's size.
    pub fn lesson(seed: u64) -> Self {
        Self {
            users: 500,
            busy: 2,
            busy_share: 0.6,
            messages: 1200,
            send_window: Duration::from_secs(4),
            offline_share: 0.2,
            offline_ms: (1000, 2000),
            poll_interval: Duration::from_secs(1),
            drain: Duration::from_millis(2500),
            send_path: SendPath {
                seed,
                fast_ms: (0, 150),
                slow_ms: (200, 400),
                slow_fraction: 0.005,
            },
        }
    }
}

/// The seeded schedule both sides run: each user's plan and each send.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub plans: Vec<ClientPlan>,
    /// `(offset from the epoch, message)`, in time order.
    pub sends: Vec<(Duration, Message)>,
}

/// When sends begin after the epoch.
const WARM_UP: Duration = Duration::from_millis(200);
/// How long before the epoch the clients start connecting (so a slow
/// start-up is not counted as delivery time).
const SETUP: Duration = Duration::from_millis(500);

impl Schedule {
    pub fn new(w: &Workload, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let window_ms = w.send_window.as_millis() as u64;
        let plans: Vec<ClientPlan> = (0..w.users as u32)
            .map(|user| {
                let offline = rng.random_bool(w.offline_share).then(|| {
                    let start = WARM_UP.as_millis() as u64 + rng.random_range(0..window_ms / 2);
                    let len = rng.random_range(w.offline_ms.0..=w.offline_ms.1);
                    (
                        Duration::from_millis(start),
                        Duration::from_millis(start + len),
                    )
                });
                ClientPlan { user, offline }
            })
            .collect();
        let mut times: Vec<u64> = (0..w.messages)
            .map(|_| WARM_UP.as_micros() as u64 + rng.random_range(0..window_ms * 1000))
            .collect();
        times.sort_unstable();
        let sends = times
            .into_iter()
            .enumerate()
            .map(|(i, us)| {
                let at = Duration::from_micros(us);
                let to = if w.busy > 0 && rng.random_bool(w.busy_share) {
                    rng.random_range(0..w.busy)
                } else {
                    rng.random_range(0..w.users)
                } as u32;
                // A sender is someone online at that moment.
                let mut from = to;
                for _ in 0..100 {
                    let f = rng.random_range(0..w.users) as u32;
                    if f != to && !plans[f as usize].is_offline(at) {
                        from = f;
                        break;
                    }
                }
                let msg = Message {
                    id: i as u64,
                    from,
                    to,
                    sent_us: us,
                };
                (at, msg)
            })
            .collect();
        Self { plans, sends }
    }
}

/// Which side to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Polling,
    Push,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunStats {
    pub sent: u64,
    pub send_failures: u64,
    pub received: u64,
    pub messages_lost: u64,
    pub duplicates_dropped: u64,
    pub db_queries: u64,
    pub polls: u64,
    pub delivery_ms_p50: f64,
    pub delivery_ms_p99: f64,
    pub elapsed_s: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Sends every message of the schedule at its time through `POST /send`.
/// Returns the failed sends.
async fn drive_sends(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    sends: &[(Duration, Message)],
    epoch: Instant,
) -> u64 {
    let tasks: Vec<_> = sends
        .iter()
        .map(|&(at, msg)| {
            let http = http.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until((epoch + at).into()).await;
                let r = http
                    .post(format!("http://{addr}/send"))
                    .json(&msg)
                    .send()
                    .await;
                r.is_ok_and(|r| r.status().is_success())
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        if !t.await.unwrap_or(false) {
            failed += 1;
        }
    }
    failed
}

/// Runs one side of the lesson on its own runtime and database file.
pub fn run(side: Side, w: &Workload, schedule: &Schedule) -> std::io::Result<RunStats> {
    let dir = ScratchDir::new("sdlab-whatsapp")?;
    let db = dir.path().join(match side {
        Side::Polling => "poll.db",
        Side::Push => "push.db",
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let sql = |e: rusqlite::Error| std::io::Error::other(e.to_string());
    let stats = rt.block_on(async {
        let http = reqwest::Client::new();
        let epoch = Instant::now() + SETUP;
        let tally = Arc::new(Tally::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut rng = StdRng::seed_from_u64(w.send_path.seed ^ 0x5EED);
        let (addr, queries): (_, Box<dyn Fn() -> u64 + Send>) = match side {
            Side::Polling => {
                let s = Arc::new(PollServer {
                    store: TimestampStore::open(&db).map_err(sql)?,
                    epoch,
                    path: w.send_path,
                });
                let addr = server::serve(s.clone().router()).await?;
                (addr, Box::new(move || s.store.queries()))
            }
            Side::Push => {
                let store = SequenceStore::open(&db).map_err(sql)?;
                let s = Arc::new(PushServer::new(store, w.send_path).map_err(sql)?);
                let addr = server::serve(s.clone().router()).await?;
                (addr, Box::new(move || s.store.queries()))
            }
        };
        let clients: Vec<_> = schedule
            .plans
            .iter()
            .map(|&plan| {
                let (tally, stop) = (tally.clone(), stop_rx.clone());
                match side {
                    Side::Polling => {
                        let phase = rng.random_range(Duration::ZERO..w.poll_interval);
                        let http = http.clone();
                        let interval = w.poll_interval;
                        tokio::spawn(client::poll_client(
                            http, addr, plan, interval, phase, epoch, tally, stop,
                        ))
                    }
                    Side::Push => tokio::spawn(client::push_client(addr, plan, epoch, tally, stop)),
                }
            })
            .collect();
        let send_failures = drive_sends(&http, addr, &schedule.sends, epoch).await;
        let sent = schedule.sends.len() as u64;
        let deadline = Instant::now() + w.drain;
        while tally.distinct() < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        let mut counted = 0;
        for c in clients {
            counted += c.await.unwrap_or(0);
        }
        let received = tally.distinct();
        let lat = tally.latencies_ms();
        let (polls, duplicates_dropped) = match side {
            Side::Polling => (counted, 0),
            Side::Push => (0, counted),
        };
        Ok::<_, std::io::Error>(RunStats {
            sent,
            send_failures,
            received,
            messages_lost: sent - received.min(sent),
            duplicates_dropped,
            db_queries: queries(),
            polls,
            delivery_ms_p50: percentile(&lat, 0.50),
            delivery_ms_p99: percentile(&lat, 0.99),
            elapsed_s: epoch.elapsed().as_secs_f64(),
        })
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(stats)
}

/// Runs both sides on workload `w` and reports them.
pub fn lesson_with(seed: u64, w: &Workload) -> LessonReport {
    let schedule = Schedule::new(w, seed);
    let report = LessonReport::new(NAME, TITLE);
    let (naive, optimal) = match (
        run(Side::Polling, w, &schedule),
        run(Side::Push, w, &schedule),
    ) {
        (Ok(n), Ok(o)) => (n, o),
        (Err(e), _) | (_, Err(e)) => return report.notes(format!("the run failed: {e}")),
    };
    let offline = schedule
        .plans
        .iter()
        .filter(|p| p.offline.is_some())
        .count();
    report
        .both(
            "messages_lost",
            naive.messages_lost as f64,
            optimal.messages_lost as f64,
        )
        .both(
            "db_queries",
            naive.db_queries as f64,
            optimal.db_queries as f64,
        )
        .both(
            "delivery_ms_p99",
            naive.delivery_ms_p99,
            optimal.delivery_ms_p99,
        )
        .both(
            "delivery_ms_p50",
            naive.delivery_ms_p50,
            optimal.delivery_ms_p50,
        )
        .both("messages_sent", naive.sent as f64, optimal.sent as f64)
        .both(
            "send_failures",
            naive.send_failures as f64,
            optimal.send_failures as f64,
        )
        .both("run_s", naive.elapsed_s, optimal.elapsed_s)
        .naive("polls", naive.polls as f64)
        .optimal("duplicates_dropped", optimal.duplicates_dropped as f64)
        .notes(format!(
            "{} users ({} offline for {}-{} ms mid-run), {} messages over {:.0} s, \
             {:.0}% of them to {} busy inboxes; the send path takes {}-{} ms, or {}-{} ms \
             for {:.1}% of sends. Polling every {} ms: {} of {} messages never reach \
             their recipient, because a slow send committed after a faster one stamped \
             later and a poll in between moved the timestamp cursor past it; {} of the \
             {} queries are polls, most of them empty; delivery p99 {:.0} ms is the \
             wait for the next poll on top of the send path. WebSockets with \
             store-and-forward: {} lost (per-recipient sequence numbers taken at \
             commit, replay from the client's ack on reconnect, {} duplicates dropped \
             by sequence number), {} queries (an insert per message plus a replay per \
             reconnect that missed something), delivery p99 {:.0} ms.",
            w.users,
            offline,
            w.offline_ms.0,
            w.offline_ms.1,
            naive.sent,
            w.send_window.as_secs_f64(),
            w.busy_share * 100.0,
            w.busy,
            w.send_path.fast_ms.0,
            w.send_path.fast_ms.1,
            w.send_path.slow_ms.0,
            w.send_path.slow_ms.1,
            w.send_path.slow_fraction * 100.0,
            w.poll_interval.as_millis(),
            naive.messages_lost,
            naive.sent,
            naive.polls,
            naive.db_queries,
            naive.delivery_ms_p99,
            optimal.messages_lost,
            optimal.duplicates_dropped,
            optimal.db_queries,
            optimal.delivery_ms_p99,
        ))
}

/// Runs the lesson at its full size.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, &Workload::lesson(seed))
}
