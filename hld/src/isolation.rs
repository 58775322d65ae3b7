//! Moving money between accounts concurrently: statements without a
//! transaction against one transaction that takes the write lock up front
//! (SQLite `BEGIN IMMEDIATE`).
//!
//! **The pattern.** A transfer reads two balances, checks the source can
//! pay, and writes both. Run many at once on shared accounts and three
//! things can go wrong: a *lost update* (two transfers read the same
//! balance and the second write erases the first), a *broken constraint*
//! (two transfers both see enough money and together overdraw), and a *torn
//! read* (an auditor summing the balances sees the money after it left one
//! account and before it reached the other).
//!
//! **The naive way** ([`transfer_naive`]): four autocommit statements
//! (read from, read to, write from, write to) with the client computing the
//! new balances. Every statement is atomic on its own; the transfer is not.
//!
//! **The optimal way** ([`transfer_tx`]): the same statements inside `BEGIN
//! IMMEDIATE ... COMMIT`. `IMMEDIATE` takes SQLite's single write lock at
//! the start, so transfers are serializable (one at a time, the strongest
//! level), while WAL readers keep reading the last committed snapshot and so
//! never see half a transfer. A plain (deferred) `BEGIN` would start as a
//! reader and fail with `SQLITE_BUSY` when it tried to upgrade after a
//! concurrent commit; in Postgres the equivalent choices are `SELECT ... FOR
//! UPDATE` under READ COMMITTED (lock the rows you will write) or
//! SERIALIZABLE with a retry on serialization failure. Cost: writers are
//! serialized, which on one SQLite file is already the case.

use crate::ticketmaster::{open, ScratchDir};
use crate::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The lesson's command-line name.
pub const NAME: &str = "isolation";
/// A short human title.
pub const TITLE: &str = "Transaction isolation: bare statements vs BEGIN IMMEDIATE on SQLite";

/// Why a transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("no such account {0}")]
    NoAccount(i64),
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Creates `accounts(id, balance)` with `n` accounts of `balance` each.
pub fn create_accounts(conn: &Connection, n: i64, balance: i64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);",
    )?;
    let mut stmt = conn.prepare("INSERT INTO accounts (id, balance) VALUES (?1, ?2)")?;
    for id in 0..n {
        stmt.execute(params![id, balance])?;
    }
    Ok(())
}

fn balance(conn: &Connection, id: i64) -> Result<i64, TransferError> {
    conn.query_row(
        "SELECT balance FROM accounts WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )
    .map_err(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => TransferError::NoAccount(id),
        e => e.into(),
    })
}

fn pause(d: Duration) {
    if d.is_zero() {
        std::thread::yield_now();
    } else {
        std::thread::sleep(d);
    }
}

/// Transfers `amount` from `from` to `to` with separate autocommit
/// statements, pausing `gap` between the reads and the writes and again
/// between the two writes (where a real server does work or is descheduled).
pub fn transfer_naive(
    conn: &Connection,
    from: i64,
    to: i64,
    amount: i64,
    gap: Duration,
) -> Result<(), TransferError> {
    let a = balance(conn, from)?;
    let b = balance(conn, to)?;
    if a < amount {
        return Err(TransferError::InsufficientFunds);
    }
    pause(gap);
    conn.execute(
        "UPDATE accounts SET balance = ?1 WHERE id = ?2",
        params![a - amount, from],
    )?;
    pause(gap);
    conn.execute(
        "UPDATE accounts SET balance = ?1 WHERE id = ?2",
        params![b + amount, to],
    )?;
    Ok(())
}

/// The same transfer, with the same pauses, inside `BEGIN IMMEDIATE`.
pub fn transfer_tx(
    conn: &mut Connection,
    from: i64,
    to: i64,
    amount: i64,
    gap: Duration,
) -> Result<(), TransferError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let a = balance(&tx, from)?;
    let b = balance(&tx, to)?;
    if a < amount {
        return Err(TransferError::InsufficientFunds); // rolled back on drop
    }
    pause(gap);
    tx.execute(
        "UPDATE accounts SET balance = ?1 WHERE id = ?2",
        params![a - amount, from],
    )?;
    pause(gap);
    tx.execute(
        "UPDATE accounts SET balance = ?1 WHERE id = ?2",
        params![b + amount, to],
    )?;
    tx.commit()?;
    Ok(())
}

/// Which transfer function the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    NoTransaction,
    BeginImmediate,
}

/// The bank's state after a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankStats {
    pub transfers_ok: u64,
    pub refused: u64,
    /// `|sum of balances at the end - sum at the start|`.
    pub lost_money: i64,
    /// Accounts with a negative balance at the end.
    pub negative_accounts: u64,
    /// Audits (a `SELECT SUM` run during the transfers) that did not see
    /// the starting total.
    pub torn_audits: u64,
    pub audits: u64,
    pub elapsed_ms: f64,
}

impl BankStats {
    /// Negative balances plus audits that saw the wrong total.
    pub fn invariant_violations(&self) -> u64 {
        self.negative_accounts + self.torn_audits
    }
}

/// Parameters of a run.
#[derive(Debug, Clone, Copy)]
pub struct BankConfig {
    pub accounts: i64,
    pub initial_balance: i64,
    pub threads: usize,
    pub transfers_per_thread: usize,
    /// Amounts are drawn from `1..=max_amount`.
    pub max_amount: i64,
    pub gap: Duration,
}

/// Runs `threads` workers (own connection each, started together) doing
/// seeded random transfers, and one auditor summing balances meanwhile.
pub fn run_bank(
    dir: &Path,
    mode: Mode,
    seed: u64,
    cfg: BankConfig,
) -> Result<BankStats, TransferError> {
    let file = dir.join(format!("{mode:?}.db"));
    let _ = std::fs::remove_file(&file);
    let setup = open(&file)?;
    create_accounts(&setup, cfg.accounts, cfg.initial_balance)?;
    let total = cfg.accounts * cfg.initial_balance;
    let conns = (0..cfg.threads)
        .map(|_| open(&file))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let auditor = open(&file)?;
    let barrier = Barrier::new(cfg.threads + 1);
    let ok = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let running = AtomicBool::new(true);
    let start = Instant::now();
    let (audits, torn) = std::thread::scope(|s| -> Result<(u64, u64), TransferError> {
        let workers: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(t, mut conn)| {
                let (barrier, ok, refused) = (&barrier, &ok, &refused);
                s.spawn(move || -> Result<(), TransferError> {
                    let mut rng = StdRng::seed_from_u64(
                        seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    barrier.wait();
                    for _ in 0..cfg.transfers_per_thread {
                        let from = rng.random_range(0..cfg.accounts);
                        let to = (from + rng.random_range(1..cfg.accounts.max(2))) % cfg.accounts;
                        let amount = rng.random_range(1..=cfg.max_amount.max(1));
                        let r = match mode {
                            Mode::NoTransaction => transfer_naive(&conn, from, to, amount, cfg.gap),
                            Mode::BeginImmediate => {
                                transfer_tx(&mut conn, from, to, amount, cfg.gap)
                            }
                        };
                        match r {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(TransferError::InsufficientFunds) => {
                                refused.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => return Err(e),
                        };
                    }
                    Ok(())
                })
            })
            .collect();
        let (barrier_a, running_a) = (&barrier, &running);
        let audit = s.spawn(move || -> Result<(u64, u64), TransferError> {
            barrier_a.wait();
            let (mut audits, mut torn) = (0, 0);
            while running_a.load(Ordering::Relaxed) {
                let sum: i64 =
                    auditor.query_row("SELECT SUM(balance) FROM accounts", [], |r| r.get(0))?;
                audits += 1;
                torn += u64::from(sum != total);
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok((audits, torn))
        });
        let mut first_err = None;
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(_) => first_err = first_err.or(Some(TransferError::NoAccount(-1))),
            }
        }
        running.store(false, Ordering::Relaxed);
        let audit = audit.join().unwrap_or(Ok((0, 0)));
        match first_err {
            Some(e) => Err(e),
            None => audit,
        }
    })?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    let sum: i64 = setup.query_row("SELECT SUM(balance) FROM accounts", [], |r| r.get(0))?;
    let negative: i64 =
        setup.query_row("SELECT COUNT(*) FROM accounts WHERE balance < 0", [], |r| {
            r.get(0)
        })?;
    Ok(BankStats {
        transfers_ok: ok.into_inner(),
        refused: refused.into_inner(),
        lost_money: (sum - total).abs(),
        negative_accounts: negative.max(0) as u64,
        torn_audits: torn,
        audits,
        elapsed_ms,
    })
}

/// The experiment at a chosen size.
pub fn lesson_with(seed: u64, cfg: BankConfig) -> LessonReport {
    let report = LessonReport::new(NAME, TITLE);
    let dir = match ScratchDir::new(&format!("sdlab-isolation-{seed}")) {
        Ok(d) => d,
        Err(e) => return report.notes(format!("could not create a temp dir: {e}")),
    };
    let n = run_bank(dir.path(), Mode::NoTransaction, seed, cfg);
    let o = run_bank(dir.path(), Mode::BeginImmediate, seed, cfg);
    let (n, o) = match (n, o) {
        (Ok(n), Ok(o)) => (n, o),
        (Err(e), _) | (_, Err(e)) => return report.notes(format!("run failed: {e}")),
    };
    report
        .both("transfers_ok", n.transfers_ok as f64, o.transfers_ok as f64)
        .both("refused_insufficient", n.refused as f64, o.refused as f64)
        .both("lost_money", n.lost_money as f64, o.lost_money as f64)
        .both("negative_accounts", n.negative_accounts as f64, o.negative_accounts as f64)
        .both("torn_audits", n.torn_audits as f64, o.torn_audits as f64)
        .both("audits", n.audits as f64, o.audits as f64)
        .both("invariant_violations", n.invariant_violations() as f64, o.invariant_violations() as f64)
        .both("elapsed_ms", n.elapsed_ms, o.elapsed_ms)
        .notes(format!(
            "{} threads (own SQLite connection each) make {} random transfers of up to {} between {} \
             accounts of {} while an auditor sums the balances. As bare statements the total drifted by \
             {} (lost updates: two transfers read the same balance and the last write wins), {} accounts \
             went negative and {} of {} audits saw money in flight. Inside BEGIN IMMEDIATE (the write lock \
             taken at the start, so transfers serialize; WAL readers see only committed snapshots) the total \
             is exact and every audit agrees. Beyond one SQLite file: Postgres SERIALIZABLE or SELECT ... \
             FOR UPDATE; across shards, a distributed SQL database (Spanner, CockroachDB) runs the same \
             transaction with 2PC and timestamps, or the transfer becomes a saga with a ledger of entries.",
            cfg.threads,
            cfg.threads * cfg.transfers_per_thread,
            cfg.max_amount,
            cfg.accounts,
            cfg.initial_balance,
            n.lost_money,
            n.negative_accounts,
            n.torn_audits,
            n.audits,
        ))
}

/// The full-size experiment: 8 threads x 150 transfers over 10 accounts.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(
        seed,
        BankConfig {
            accounts: 10,
            initial_balance: 100,
            threads: 8,
            transfers_per_thread: 150,
            max_amount: 60,
            gap: Duration::from_micros(200),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(n: i64, bal: i64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("b.db")).unwrap();
        create_accounts(&conn, n, bal).unwrap();
        (dir, conn)
    }

    #[test]
    fn single_transfers_move_money_and_refuse_overdrafts() {
        let (_d, mut conn) = bank(2, 100);
        transfer_tx(&mut conn, 0, 1, 30, Duration::ZERO).unwrap();
        transfer_naive(&conn, 1, 0, 10, Duration::ZERO).unwrap();
        assert_eq!(balance(&conn, 0).unwrap(), 80);
        assert_eq!(balance(&conn, 1).unwrap(), 120);
        assert!(matches!(
            transfer_tx(&mut conn, 0, 1, 81, Duration::ZERO),
            Err(TransferError::InsufficientFunds)
        ));
        assert!(matches!(
            transfer_naive(&conn, 0, 1, 81, Duration::ZERO),
            Err(TransferError::InsufficientFunds)
        ));
        assert!(matches!(
            transfer_tx(&mut conn, 0, 7, 1, Duration::ZERO),
            Err(TransferError::NoAccount(7))
        ));
        // The refused transaction was rolled back: the lock is free again.
        transfer_tx(&mut conn, 0, 1, 80, Duration::ZERO).unwrap();
        assert_eq!(balance(&conn, 0).unwrap(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        /// Sequential transactional transfers keep the total and never
        /// leave a negative balance, whatever the amounts.
        #[test]
        fn transactions_preserve_the_total(ops in proptest::collection::vec((0i64..4, 1i64..4, 1i64..80), 1..30)) {
            let (_d, mut conn) = bank(4, 50);
            for (from, step, amount) in ops {
                let _ = transfer_tx(&mut conn, from, (from + step) % 4, amount, Duration::ZERO);
            }
            let sum: i64 = conn.query_row("SELECT SUM(balance) FROM accounts", [], |r| r.get(0)).unwrap();
            let min: i64 = conn.query_row("SELECT MIN(balance) FROM accounts", [], |r| r.get(0)).unwrap();
            proptest::prop_assert_eq!(sum, 200);
            proptest::prop_assert!(min >= 0);
        }
    }

    #[test]
    fn small_run_breaks_invariants_only_without_a_transaction() {
        let r = lesson_with(
            5,
            BankConfig {
                accounts: 4,
                initial_balance: 100,
                threads: 4,
                transfers_per_thread: 40,
                max_amount: 60,
                gap: Duration::from_micros(200),
            },
        );
        assert!(r.naive["lost_money"] > 0.0, "{}", r.table());
        assert!(r.naive["invariant_violations"] > 0.0, "{}", r.table());
        assert_eq!(r.optimal["lost_money"], 0.0, "{}", r.table());
        assert_eq!(r.optimal["invariant_violations"], 0.0, "{}", r.table());
        assert!(r.optimal["audits"] > 0.0);
    }
}
