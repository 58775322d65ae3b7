//! The append-only log under a real crash: this test binary starts itself
//! again as a writer process that appends records and prints each offset
//! once `append` has returned (acknowledged, fsynced); the parent kills it
//! with SIGKILL mid-stream, reopens the log, and checks that every
//! acknowledged record is there, in order, with its exact payload.

use hld::append_only_log::{Log, LogConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WRITER_ENV: &str = "SDLAB_LOG_KILL9_WRITER_DIR";

fn config() -> LogConfig {
    // Small segments so the kill also lands across segment rolls.
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = 100 + (i * 37 % 900) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// The child's job: append forever, printing each acknowledged offset.
fn writer(dir: &str) {
    let mut log = Log::open(dir, config()).expect("open");
    for i in 0.. {
        let offset = log.append(&payload(i)).expect("append");
        assert_eq!(offset, i);
        println!("{offset}");
    }
}

#[test]
fn kill_9_mid_write_loses_no_acknowledged_record() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        writer(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill_9_mid_write_loses_no_acknowledged_record",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(WRITER_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged: Option<u64> = None;
    let started = Instant::now();
    // Let it write a few hundred records (several segments), then kill it.
    while let Some(Ok(line)) = lines.next() {
        if let Ok(o) = line.trim().parse::<u64>() {
            acknowledged = Some(o);
            if o >= 300 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer is too slow"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let acked = acknowledged.expect("the writer acknowledged records");
    let log = Log::open(dir.path(), config()).expect("the log opens after the kill");
    assert!(
        log.next_offset() > acked,
        "next offset {} <= acknowledged {acked}",
        log.next_offset()
    );
    for i in 0..=acked {
        let got = log
            .read(i)
            .unwrap()
            .unwrap_or_else(|| panic!("record {i} lost"));
        assert_eq!(got, payload(i), "record {i} corrupt");
    }
    assert!(log.segment_count() > 1, "the run crossed segments");
}
