//! The message tables on SQLite, one per side, and the queries each side
//! issues (every call counts one query).
//!
//! Both stores are a single [`Connection`] behind a mutex (SQLite has one
//! writer anyway); the servers call them from `spawn_blocking`.

use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// One chat message as it travels: a unique id, who sent it to whom, and
/// when the sender pressed "send" (microseconds since the run's epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub id: u64,
    pub from: u32,
    pub to: u32,
    pub sent_us: u64,
}

/// A message as a polling client gets it back: with the server timestamp
/// that is also the client's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamped {
    pub msg: Message,
    pub ts: u64,
}

/// A message as the store-and-forward server delivers it: with the
/// recipient's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sequenced {
    pub msg: Message,
    pub seq: u64,
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let conn = crate::ticketmaster::open(path)?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// The naive store: `messages(recipient, ts, ...)`, read by `ts > since`.
pub struct TimestampStore {
    conn: Mutex<Connection>,
    queries: AtomicU64,
}

impl TimestampStore {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = open(
            path,
            "CREATE TABLE IF NOT EXISTS messages (
                 id INTEGER PRIMARY KEY,
                 sender INTEGER NOT NULL,
                 recipient INTEGER NOT NULL,
                 sent_us INTEGER NOT NULL,
                 ts INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS by_recipient_ts ON messages (recipient, ts);",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            queries: AtomicU64::new(0),
        })
    }

    /// Commits `msg` stamped `ts` (the time the server took when the send
    /// arrived, which may be well before this commit).
    pub fn insert(&self, msg: &Message, ts: u64) -> rusqlite::Result<()> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        lock(&self.conn).execute(
            "INSERT INTO messages (id, sender, recipient, sent_us, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                msg.id as i64,
                msg.from,
                msg.to,
                msg.sent_us as i64,
                ts as i64
            ],
        )?;
        Ok(())
    }

    /// Everything for `user` stamped after `since`, oldest first: one poll.
    pub fn poll(&self, user: u32, since: u64) -> rusqlite::Result<Vec<Stamped>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let conn = lock(&self.conn);
        let mut st = conn.prepare_cached(
            "SELECT id, sender, recipient, sent_us, ts FROM messages
             WHERE recipient = ?1 AND ts > ?2 ORDER BY ts",
        )?;
        let rows = st.query_map(params![user, since as i64], |r| {
            Ok(Stamped {
                msg: Message {
                    id: r.get::<_, i64>(0)? as u64,
                    from: r.get(1)?,
                    to: r.get(2)?,
                    sent_us: r.get::<_, i64>(3)? as u64,
                },
                ts: r.get::<_, i64>(4)? as u64,
            })
        })?;
        rows.collect()
    }

    /// Queries issued so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// The store-and-forward store: `inbox(recipient, seq, ...)`, where `seq`
/// counts 1, 2, 3, ... per recipient and is taken inside the insert itself,
/// so sequence order is commit order.
pub struct SequenceStore {
    conn: Mutex<Connection>,
    queries: AtomicU64,
}

impl SequenceStore {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = open(
            path,
            "CREATE TABLE IF NOT EXISTS inbox (
                 recipient INTEGER NOT NULL,
                 seq INTEGER NOT NULL,
                 id INTEGER NOT NULL,
                 sender INTEGER NOT NULL,
                 sent_us INTEGER NOT NULL,
                 PRIMARY KEY (recipient, seq)) WITHOUT ROWID;",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
            queries: AtomicU64::new(0),
        })
    }

    /// Persists `msg` as the recipient's next sequence number and returns
    /// it. `then` runs with the number while the store is still locked (the
    /// server records the inbox head there, so the head never runs ahead of
    /// or behind the table).
    pub fn insert(&self, msg: &Message, then: impl FnOnce(u64)) -> rusqlite::Result<u64> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let conn = lock(&self.conn);
        let seq: i64 = conn.query_row(
            "INSERT INTO inbox (recipient, seq, id, sender, sent_us)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox WHERE recipient = ?1),
                     ?2, ?3, ?4)
             RETURNING seq",
            params![msg.to, msg.id as i64, msg.from, msg.sent_us as i64],
            |r| r.get(0),
        )?;
        then(seq as u64);
        Ok(seq as u64)
    }

    /// Everything in `user`'s inbox after `after`, in sequence order: the
    /// replay a reconnecting client gets.
    pub fn replay(&self, user: u32, after: u64) -> rusqlite::Result<Vec<Sequenced>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let conn = lock(&self.conn);
        let mut st = conn.prepare_cached(
            "SELECT seq, id, sender, sent_us FROM inbox
             WHERE recipient = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = st.query_map(params![user, after as i64], |r| {
            Ok(Sequenced {
                seq: r.get::<_, i64>(0)? as u64,
                msg: Message {
                    id: r.get::<_, i64>(1)? as u64,
                    from: r.get(2)?,
                    to: user,
                    sent_us: r.get::<_, i64>(3)? as u64,
                },
            })
        })?;
        rows.collect()
    }

    /// The highest sequence number per recipient (what a restarted server
    /// loads into memory, one query).
    pub fn heads(&self) -> rusqlite::Result<Vec<(u32, u64)>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let conn = lock(&self.conn);
        let mut st = conn.prepare("SELECT recipient, MAX(seq) FROM inbox GROUP BY recipient")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        rows.collect()
    }

    /// Queries issued so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}
