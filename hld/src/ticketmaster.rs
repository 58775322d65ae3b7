//! Selling the last seats of a concert (the Ticketmaster problem): a
//! read-modify-write race against optimistic locking, on a real SQLite file
//! shared by many threads.
//!
//! **The pattern.** Thousands of buyers hit "buy" at the same moment for a
//! few seats. Each purchase reads how many seats remain, decides, and writes
//! the new count. Two buyers that read the same count both decide "there is
//! a seat" and both write: one seat, two tickets.
//!
//! **The naive way** ([`buy_naive`]): `SELECT remaining`, then (after the
//! buyer's think time, two milliseconds in the lesson, which makes the race happen in
//! every run) `UPDATE events SET remaining = remaining - 1` and `INSERT` a
//! ticket, each statement its own autocommit transaction. Every buyer that
//! read `remaining > 0` gets a ticket, so with 200 buyers arriving together
//! for 100 seats, nearly all 200 are sold.
//!
//! **The optimal way** ([`buy_optimistic`]): a `version` column. The buyer
//! reads `(remaining, version)` without holding any lock, thinks, and then
//! writes with a *conditional* update `UPDATE ... SET remaining = remaining -
//! 1, version = version + 1 WHERE id = ? AND version = ?` in one transaction
//! with the ticket insert. If another buyer wrote in between, the version
//! moved on, the update matches 0 rows, and the buyer re-reads and retries
//! (or finds the event sold out). No lock is held during the think time, so
//! readers never wait; the price is retries under heavy contention (each
//! round only one of the contenders wins, so `k` contenders cost `O(k^2)`
//! attempts in the worst case). Under extreme contention a pessimistic lock
//! (`SELECT ... FOR UPDATE`, or SQLite's `BEGIN IMMEDIATE`) or a queue in
//! front of the hot row does better; see the `isolation` lesson.
//!
//! Every buyer has its own [`rusqlite::Connection`] to one database file in
//! WAL mode (readers do not block the single writer) with a busy timeout
//! (a writer waits for the write lock instead of failing at once).

use crate::LessonReport;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "ticketmaster";
/// A short human title.
pub const TITLE: &str = "Ticketmaster: read-modify-write vs optimistic locking on SQLite";

/// A directory under the system temp dir with a unique name, removed with
/// everything in it when dropped (the library's own small stand-in for
/// `tempfile::TempDir`, which is only a dev-dependency).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<temp>/<prefix>-<pid>-<nanos>-<counter>`.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Opens `path` the way every buyer does: WAL journal, `synchronous =
/// NORMAL` (a commit is durable at the next checkpoint, not fsynced each
/// time: fine for a lesson about races), and a busy timeout so a writer
/// waits for the lock.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
    Ok(conn)
}

/// Creates the schema (`events(id, remaining, version)`, `tickets(id,
/// event_id, buyer)`) if needed and an event with `seats` seats.
pub fn create_event(conn: &Connection, event_id: i64, seats: i64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (
             id INTEGER PRIMARY KEY,
             remaining INTEGER NOT NULL,
             version INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS tickets (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id INTEGER NOT NULL,
             buyer INTEGER NOT NULL);",
    )?;
    conn.execute(
        "INSERT INTO events (id, remaining, version) VALUES (?1, ?2, 0)",
        params![event_id, seats],
    )?;
    Ok(())
}

/// What one purchase attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase {
    /// A ticket was issued after `retries` failed conditional updates.
    Bought { retries: u32 },
    /// No seat left (seen after `retries` failed conditional updates).
    SoldOut { retries: u32 },
    /// The buyer gave up after `retries` conflicts in a row.
    GaveUp { retries: u32 },
}

impl Purchase {
    pub fn retries(&self) -> u32 {
        match *self {
            Purchase::Bought { retries }
            | Purchase::SoldOut { retries }
            | Purchase::GaveUp { retries } => retries,
        }
    }
}

/// The naive purchase: read, think for `think`, then decrement and issue a
/// ticket, each statement on its own. Racy by construction.
pub fn buy_naive(
    conn: &Connection,
    event_id: i64,
    buyer: i64,
    think: Duration,
) -> rusqlite::Result<Purchase> {
    let remaining: Option<i64> = conn
        .query_row(
            "SELECT remaining FROM events WHERE id = ?1",
            params![event_id],
            |r| r.get(0),
        )
        .optional()?;
    if remaining.unwrap_or(0) <= 0 {
        return Ok(Purchase::SoldOut { retries: 0 });
    }
    think_for(think);
    conn.execute(
        "UPDATE events SET remaining = remaining - 1 WHERE id = ?1",
        params![event_id],
    )?;
    conn.execute(
        "INSERT INTO tickets (event_id, buyer) VALUES (?1, ?2)",
        params![event_id, buyer],
    )?;
    Ok(Purchase::Bought { retries: 0 })
}

/// The optimistic purchase: read `(remaining, version)`, think, then a
/// conditional update on the version plus the ticket insert in one
/// transaction; on 0 rows updated someone else won, so re-read and retry,
/// at most `max_retries` times.
pub fn buy_optimistic(
    conn: &mut Connection,
    event_id: i64,
    buyer: i64,
    think: Duration,
    max_retries: u32,
) -> rusqlite::Result<Purchase> {
    let mut retries = 0;
    loop {
        let row: Option<(i64, i64)> = conn
            .query_row(
                "SELECT remaining, version FROM events WHERE id = ?1",
                params![event_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((remaining, version)) = row else {
            return Ok(Purchase::SoldOut { retries });
        };
        if remaining <= 0 {
            return Ok(Purchase::SoldOut { retries });
        }
        think_for(think);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE events SET remaining = remaining - 1, version = version + 1
             WHERE id = ?1 AND version = ?2 AND remaining > 0",
            params![event_id, version],
        )?;
        if changed == 1 {
            tx.execute(
                "INSERT INTO tickets (event_id, buyer) VALUES (?1, ?2)",
                params![event_id, buyer],
            )?;
            tx.commit()?;
            return Ok(Purchase::Bought { retries });
        }
        tx.rollback()?;
        retries += 1;
        if retries > max_retries {
            return Ok(Purchase::GaveUp { retries });
        }
        std::thread::yield_now();
    }
}

fn think_for(d: Duration) {
    if d.is_zero() {
        std::thread::yield_now();
    } else {
        std::thread::sleep(d);
    }
}

/// Which purchase function the buyers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    ReadModifyWrite,
    Optimistic,
}

/// The outcome of one sale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaleStats {
    /// Tickets in the `tickets` table.
    pub sold: u64,
    /// Tickets beyond the seats (`sold - seats` when positive).
    pub oversold: u64,
    /// Failed conditional updates, over all buyers.
    pub retries: u64,
    /// Buyers told "sold out".
    pub sold_out: u64,
    /// Buyers who gave up after too many conflicts.
    pub gave_up: u64,
    /// `remaining` in the events row at the end.
    pub remaining: i64,
    pub elapsed_ms: f64,
}

/// Errors of a sale run.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("a buyer thread panicked")]
    Panicked,
}

/// Runs one sale: a fresh database file in `dir`, an event with `seats`
/// seats, `buyers` threads released together by a [`Barrier`], each with its
/// own connection and one purchase attempt.
pub fn run_sale(
    dir: &Path,
    strategy: Strategy,
    seats: i64,
    buyers: usize,
    think: Duration,
) -> Result<SaleStats, SaleError> {
    let file = dir.join(format!("{strategy:?}.db"));
    let _ = std::fs::remove_file(&file);
    let setup = open(&file)?;
    create_event(&setup, 1, seats)?;
    // Open every connection before the start so the barrier releases buyers
    // straight into their purchase.
    let conns = (0..buyers)
        .map(|_| open(&file))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let barrier = Barrier::new(buyers);
    let start = Instant::now();
    let results: Vec<Result<rusqlite::Result<Purchase>, ()>> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    match strategy {
                        Strategy::ReadModifyWrite => buy_naive(&conn, 1, i as i64, think),
                        Strategy::Optimistic => {
                            buy_optimistic(&mut conn, 1, i as i64, think, 100_000)
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| ()))
            .collect()
    });
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut stats = SaleStats {
        sold: 0,
        oversold: 0,
        retries: 0,
        sold_out: 0,
        gave_up: 0,
        remaining: 0,
        elapsed_ms,
    };
    for r in results {
        match r.map_err(|_| SaleError::Panicked)?? {
            p @ Purchase::Bought { .. } => stats.retries += p.retries() as u64,
            p @ Purchase::SoldOut { .. } => {
                stats.retries += p.retries() as u64;
                stats.sold_out += 1;
            }
            p @ Purchase::GaveUp { .. } => {
                stats.retries += p.retries() as u64;
                stats.gave_up += 1;
            }
        }
    }
    let sold: i64 =
        setup.query_row("SELECT COUNT(*) FROM tickets WHERE event_id = 1", [], |r| {
            r.get(0)
        })?;
    stats.remaining = setup.query_row("SELECT remaining FROM events WHERE id = 1", [], |r| {
        r.get(0)
    })?;
    stats.sold = sold.max(0) as u64;
    stats.oversold = (sold - seats).max(0) as u64;
    Ok(stats)
}

/// The experiment: the same sale (`buyers` threads for `seats` seats, the
/// same think time) with both strategies. The seed only names the run: the
/// race is decided by the OS scheduler, not by a random draw.
pub fn lesson_with(seed: u64, seats: i64, buyers: usize, think: Duration) -> LessonReport {
    let report = LessonReport::new(NAME, TITLE);
    let dir = match ScratchDir::new(&format!("sdlab-ticketmaster-{seed}")) {
        Ok(d) => d,
        Err(e) => return report.notes(format!("could not create a temp dir: {e}")),
    };
    let naive = run_sale(dir.path(), Strategy::ReadModifyWrite, seats, buyers, think);
    let optimal = run_sale(dir.path(), Strategy::Optimistic, seats, buyers, think);
    let (naive, optimal) = match (naive, optimal) {
        (Ok(n), Ok(o)) => (n, o),
        (Err(e), _) | (_, Err(e)) => return report.notes(format!("sale failed: {e}")),
    };
    report
        .both("seats", seats as f64, seats as f64)
        .both("buyers", buyers as f64, buyers as f64)
        .both("sold", naive.sold as f64, optimal.sold as f64)
        .both("oversold", naive.oversold as f64, optimal.oversold as f64)
        .both("retries", naive.retries as f64, optimal.retries as f64)
        .both("told_sold_out", naive.sold_out as f64, optimal.sold_out as f64)
        .both("gave_up", naive.gave_up as f64, optimal.gave_up as f64)
        .both("remaining_column", naive.remaining as f64, optimal.remaining as f64)
        .both("elapsed_ms", naive.elapsed_ms, optimal.elapsed_ms)
        .notes(format!(
            "{buyers} threads, each with its own SQLite connection (WAL, busy timeout), start together \
             for {seats} seats and think {} ms between reading and writing. Read-then-decrement sold {} \
             tickets ({} oversold, remaining column {}): every buyer that read a positive count got a seat. \
             A version column with a conditional UPDATE ... WHERE version = ? sold exactly {} with {} \
             retries (an update that matched 0 rows means someone else won; re-read and try again), and \
             holds no lock while the buyer thinks. Past one database, Ticketmaster-style systems put a \
             virtual waiting room (a queue) in front of the hot event and hold seats with expiring \
             reservations (Redis SET NX PX, or a row with a TTL) sharded by event; Postgres offers the \
             same conditional UPDATE or SELECT ... FOR UPDATE SKIP LOCKED to hand out distinct seats.",
            think.as_secs_f64() * 1e3,
            naive.sold,
            naive.oversold,
            naive.remaining,
            optimal.sold,
            optimal.retries,
        ))
}

/// The full-size experiment: 200 buyers, 100 seats, 2 ms think time.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 100, 200, Duration::from_millis(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        create_event(&conn, 1, 2).unwrap();
        (dir, conn)
    }

    #[test]
    fn scratch_dir_is_removed_on_drop() {
        let p = {
            let d = ScratchDir::new("sdlab-test").unwrap();
            std::fs::write(d.path().join("x"), b"1").unwrap();
            assert!(d.path().exists());
            d.path().to_path_buf()
        };
        assert!(!p.exists());
    }

    #[test]
    fn single_buyer_paths() {
        let (_d, mut conn) = db();
        assert_eq!(
            buy_optimistic(&mut conn, 1, 1, Duration::ZERO, 3).unwrap(),
            Purchase::Bought { retries: 0 }
        );
        assert_eq!(
            buy_naive(&conn, 1, 2, Duration::ZERO).unwrap(),
            Purchase::Bought { retries: 0 }
        );
        assert_eq!(
            buy_optimistic(&mut conn, 1, 3, Duration::ZERO, 3).unwrap(),
            Purchase::SoldOut { retries: 0 }
        );
        assert_eq!(
            buy_naive(&conn, 1, 4, Duration::ZERO).unwrap(),
            Purchase::SoldOut { retries: 0 }
        );
        // Unknown event: sold out, not an error.
        assert!(matches!(
            buy_optimistic(&mut conn, 9, 1, Duration::ZERO, 3).unwrap(),
            Purchase::SoldOut { .. }
        ));
        let (rem, ver): (i64, i64) = conn
            .query_row(
                "SELECT remaining, version FROM events WHERE id=1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rem, ver), (0, 1));
    }

    #[test]
    fn conditional_update_fails_on_a_stale_version() {
        let (_d, conn) = db();
        // A concurrent writer bumps the version after our read.
        conn.execute("UPDATE events SET version = version + 1 WHERE id = 1", [])
            .unwrap();
        let changed = conn
            .execute(
                "UPDATE events SET remaining = remaining - 1, version = version + 1
                 WHERE id = 1 AND version = 0 AND remaining > 0",
                [],
            )
            .unwrap();
        assert_eq!(changed, 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// One buyer at a time, both strategies sell exactly
        /// `min(seats, buyers)` and the row agrees with the tickets.
        #[test]
        fn sequential_sales_never_oversell(seats in 0i64..6, buyers in 0usize..10, naive in proptest::bool::ANY) {
            let dir = tempfile::tempdir().unwrap();
            let mut conn = open(&dir.path().join("p.db")).unwrap();
            create_event(&conn, 1, seats).unwrap();
            let mut bought = 0i64;
            for b in 0..buyers as i64 {
                let p = if naive {
                    buy_naive(&conn, 1, b, Duration::ZERO).unwrap()
                } else {
                    buy_optimistic(&mut conn, 1, b, Duration::ZERO, 3).unwrap()
                };
                bought += i64::from(matches!(p, Purchase::Bought { .. }));
            }
            let tickets: i64 = conn.query_row("SELECT COUNT(*) FROM tickets", [], |r| r.get(0)).unwrap();
            let remaining: i64 = conn.query_row("SELECT remaining FROM events", [], |r| r.get(0)).unwrap();
            proptest::prop_assert_eq!(bought, seats.min(buyers as i64));
            proptest::prop_assert_eq!(tickets, bought);
            proptest::prop_assert_eq!(remaining, seats - bought);
        }
    }

    #[test]
    fn small_sale_shows_the_race_and_its_fix() {
        let r = lesson_with(7, 10, 40, Duration::from_millis(1));
        assert!(r.naive["oversold"] > 0.0, "{}", r.table());
        assert_eq!(r.optimal["oversold"], 0.0, "{}", r.table());
        assert_eq!(r.optimal["sold"], 10.0);
        assert_eq!(r.optimal["remaining_column"], 0.0);
        assert_eq!(r.optimal["gave_up"], 0.0);
        assert!(r.optimal["retries"] > 0.0);
        assert_eq!(r.naive["sold"], 10.0 + r.naive["oversold"]);
    }
}
