//! The two chat servers on axum: the polling one (`POST /send`, `GET
//! /poll`) and the store-and-forward one (`POST /send`, `GET /ws`).
//!
//! Both take a send the same way: the request arrives, the send path does
//! its work ([`SendPath`]), the message is committed. They differ in what
//! orders a recipient's messages (a server timestamp against a
//! per-recipient sequence number) and in how a message reaches the
//! recipient (the next poll against a push on the live socket).

use super::store::{Message, SequenceStore, Sequenced, Stamped, TimestampStore};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long the server works on a send between taking it in and
/// committing it (validation, abuse checks, media, waiting for the write
/// lock): `fast_ms` uniform for most sends, `slow_ms` uniform for a
/// `slow_fraction` of them (the tail every real service has). Derived from
/// the message id, so both servers spend the same time on the same message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendPath {
    pub seed: u64,
    pub fast_ms: (u64, u64),
    pub slow_ms: (u64, u64),
    pub slow_fraction: f64,
}

impl SendPath {
    /// No work at all (tests that drive the order themselves).
    pub fn instant() -> Self {
        Self {
            seed: 0,
            fast_ms: (0, 0),
            slow_ms: (0, 0),
            slow_fraction: 0.0,
        }
    }

    /// The work time for message `id`.
    pub fn work(&self, id: u64) -> Duration {
        let mut h = splitmix(self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let slow = ((h >> 11) as f64 / (1u64 << 53) as f64) < self.slow_fraction;
        h = splitmix(h);
        let (lo, hi) = if slow { self.slow_ms } else { self.fast_ms };
        let us = lo * 1000 + h % ((hi.saturating_sub(lo)) * 1000 + 1);
        Duration::from_micros(us)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Binds `127.0.0.1:0` and serves `router` on the current runtime.
pub async fn serve(router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// The polling server's state.
pub struct PollServer {
    pub store: TimestampStore,
    /// The server clock: timestamps are microseconds since this instant.
    pub epoch: Instant,
    pub path: SendPath,
}

#[derive(Debug, serde::Deserialize)]
struct PollParams {
    user: u32,
    since: u64,
}

impl PollServer {
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/send", post(poll_send))
            .route("/poll", get(poll_poll))
            .with_state(self)
    }
}

/// The classic send handler: stamp the message with the server clock when
/// it arrives, do the work, commit. The stamp is the order clients read in.
async fn poll_send(State(s): State<Arc<PollServer>>, Json(msg): Json<Message>) -> StatusCode {
    let ts = s.epoch.elapsed().as_micros() as u64;
    tokio::time::sleep(s.path.work(msg.id)).await;
    let st = s.clone();
    match tokio::task::spawn_blocking(move || st.store.insert(&msg, ts)).await {
        Ok(Ok(())) => StatusCode::OK,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn poll_poll(State(s): State<Arc<PollServer>>, Query(p): Query<PollParams>) -> Response {
    let st = s.clone();
    match tokio::task::spawn_blocking(move || st.store.poll(p.user, p.since)).await {
        Ok(Ok(rows)) => Json::<Vec<Stamped>>(rows).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The first frame a WebSocket client sends: the highest sequence number
/// up to which it has everything (its acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub last_seq: u64,
}

/// The connection registry: who is online, and the socket to push to.
#[derive(Default)]
struct Registry {
    conns: HashMap<u32, (u64, mpsc::UnboundedSender<Sequenced>)>,
    next_conn: u64,
}

/// The store-and-forward server's state.
pub struct PushServer {
    pub store: SequenceStore,
    pub path: SendPath,
    registry: Mutex<Registry>,
    /// The newest sequence number per recipient, kept with every insert,
    /// so a client that missed nothing reconnects without a query.
    heads: Mutex<HashMap<u32, u64>>,
}

#[derive(Debug, serde::Deserialize)]
struct WsParams {
    user: u32,
}

impl PushServer {
    /// Wraps `store`, loading the inbox heads from it (one query).
    pub fn new(store: SequenceStore, path: SendPath) -> rusqlite::Result<Self> {
        let heads = store.heads()?.into_iter().collect();
        Ok(Self {
            store,
            path,
            registry: Mutex::new(Registry::default()),
            heads: Mutex::new(heads),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/send", post(push_send))
            .route("/ws", get(push_ws))
            .with_state(self)
    }

    /// Users with a registered live connection.
    pub fn online(&self) -> usize {
        lock(&self.registry).conns.len()
    }

    fn head(&self, user: u32) -> u64 {
        lock(&self.heads).get(&user).copied().unwrap_or(0)
    }

    /// Persists `msg` under the recipient's next sequence number, then
    /// pushes it to the recipient's socket if one is registered.
    ///
    /// Why nothing falls between the two: the head moves inside the insert,
    /// before the registry lookup. A connection registered before the
    /// lookup gets the push; one registered after it reads a head that
    /// already covers this message and replays it. Both can happen (the
    /// client drops the duplicate by its sequence number); neither is
    /// impossible, so the message is never skipped.
    pub fn store_and_forward(&self, msg: &Message) -> rusqlite::Result<u64> {
        let seq = self.store.insert(msg, |seq| {
            lock(&self.heads).insert(msg.to, seq);
        })?;
        let tx = lock(&self.registry)
            .conns
            .get(&msg.to)
            .map(|(_, tx)| tx.clone());
        if let Some(tx) = tx {
            // A closed channel means the socket just went away: the
            // message is stored and the next reconnect replays it.
            let _ = tx.send(Sequenced { msg: *msg, seq });
        }
        Ok(seq)
    }

    fn register(&self, user: u32) -> (u64, mpsc::UnboundedReceiver<Sequenced>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut reg = lock(&self.registry);
        reg.next_conn += 1;
        let id = reg.next_conn;
        reg.conns.insert(user, (id, tx));
        (id, rx)
    }

    fn unregister(&self, user: u32, conn: u64) {
        let mut reg = lock(&self.registry);
        if reg.conns.get(&user).is_some_and(|(id, _)| *id == conn) {
            reg.conns.remove(&user);
        }
    }
}

async fn push_send(State(s): State<Arc<PushServer>>, Json(msg): Json<Message>) -> StatusCode {
    tokio::time::sleep(s.path.work(msg.id)).await;
    let st = s.clone();
    match tokio::task::spawn_blocking(move || st.store_and_forward(&msg)).await {
        Ok(Ok(_)) => StatusCode::OK,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn push_ws(
    State(s): State<Arc<PushServer>>,
    Query(p): Query<WsParams>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| session(s, p.user, socket))
}

fn frame(m: &Sequenced) -> WsMessage {
    WsMessage::Text(serde_json::to_string(m).unwrap_or_default().into())
}

/// One connection: read the client's `Hello`, register, replay what it
/// missed (only if the head says there is something), then push live.
async fn session(s: Arc<PushServer>, user: u32, mut socket: WebSocket) {
    let last_seq = loop {
        match socket.recv().await {
            Some(Ok(WsMessage::Text(t))) => match serde_json::from_str::<Hello>(&t) {
                Ok(h) => break h.last_seq,
                Err(_) => return,
            },
            Some(Ok(_)) => continue,
            _ => return,
        }
    };
    let (conn, mut rx) = s.register(user);
    if s.head(user) > last_seq {
        let st = s.clone();
        let missed = tokio::task::spawn_blocking(move || st.store.replay(user, last_seq)).await;
        if let Ok(Ok(rows)) = missed {
            for m in &rows {
                if socket.send(frame(m)).await.is_err() {
                    s.unregister(user, conn);
                    return;
                }
            }
        }
    }
    loop {
        tokio::select! {
            pushed = rx.recv() => match pushed {
                Some(m) => {
                    if socket.send(frame(&m)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    s.unregister(user, conn);
}
