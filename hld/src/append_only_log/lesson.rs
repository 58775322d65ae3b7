//! The experiment: the same messages through the in-memory queue and the
//! log, a simulated crash, and the counts and throughputs.

use super::segment::encode_record;
use super::{Log, LogConfig, LogError, MemoryQueue, NAME, TITLE};
use crate::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The payload of message `i` in the experiment: a header naming it, then
/// seeded random bytes.
fn message(seed: u64, i: u64, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len.max(8)];
    m[..8].copy_from_slice(&i.to_le_bytes());
    StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).fill_bytes(&mut m[8..]);
    m
}

/// Simulates a crash in the middle of writing a batch that was never
/// acknowledged: a random prefix of its encoding lands in the active
/// segment. Returns the number of bytes written.
fn tear_tail(log: &Log, rng: &mut StdRng, seed: u64) -> Result<u64, LogError> {
    let path = log
        .active_segment_path()
        .ok_or(LogError::BadConfig("log has no segment"))?;
    let mut torn = Vec::new();
    for k in 0..3 {
        encode_record(&message(seed, u64::MAX - k, 1024), &mut torn);
    }
    let cut = rng.random_range(1..torn.len());
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(&torn[..cut])?;
    f.sync_data()?;
    Ok(cut as u64)
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the experiment in a fresh directory under the system temp dir:
/// `messages` messages of `msg_bytes`, appended in batches of `batch`.
pub fn lesson_with(seed: u64, messages: u64, msg_bytes: usize, batch: usize) -> LessonReport {
    match run_lesson(seed, messages, msg_bytes, batch.max(1)) {
        Ok(r) => r,
        Err(e) => LessonReport::new(NAME, TITLE).notes(format!("the experiment failed: {e}")),
    }
}

fn run_lesson(
    seed: u64,
    messages: u64,
    msg_bytes: usize,
    batch: usize,
) -> Result<LessonReport, LogError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = TempDir(
        std::env::temp_dir().join(format!("sdlab-aol-{}-{seed}-{nanos}", std::process::id())),
    );
    let msgs: Vec<Vec<u8>> = (0..messages).map(|i| message(seed, i, msg_bytes)).collect();
    let total_mb = msgs.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let half = messages / 2;

    // Naive: in memory.
    let mut queue = MemoryQueue::new();
    let t = Instant::now();
    for m in &msgs {
        queue.append(m);
    }
    let naive_append = total_mb / t.elapsed().as_secs_f64().max(1e-9);
    let t = Instant::now();
    let mut n_read = 0;
    let mut at = 0;
    while at < queue.next_offset() {
        let got = queue.fetch(at, 256);
        n_read += got.iter().map(|(_, p)| p.len()).sum::<usize>();
        at += got.len() as u64;
    }
    let naive_read = n_read as f64 / 1e6 / t.elapsed().as_secs_f64().max(1e-9);
    queue.commit("analytics", half);
    let queue = queue.crash();
    let naive_lost = (0..messages)
        .filter(|&i| queue.read(i) != Some(msgs[i as usize].as_slice()))
        .count();
    let naive_offset_kept = queue.committed("analytics") == Some(half);

    // Optimal: the segmented log. Group commit: one fsync per batch.
    let config = LogConfig {
        segment_bytes: 4 << 20,
        index_interval_bytes: 4096,
    };
    let mut log = Log::open(&tmp.0, config)?;
    let t = Instant::now();
    let mut acked = 0u64;
    for chunk in msgs.chunks(batch) {
        let range = log.append_batch(chunk.iter().map(Vec::as_slice))?;
        acked = range.end;
    }
    let log_append = total_mb / t.elapsed().as_secs_f64().max(1e-9);
    // One fsync per record, on a few records in a side log, for comparison.
    let single_n = 64.min(msgs.len());
    let mut side = Log::open(tmp.0.join("fsync-each"), config)?;
    let t = Instant::now();
    for m in &msgs[..single_n] {
        side.append(m)?;
    }
    let single_secs = t.elapsed().as_secs_f64().max(1e-9);
    let fsync_each_mb_s =
        msgs[..single_n].iter().map(Vec::len).sum::<usize>() as f64 / 1e6 / single_secs;
    drop(side);
    log.commit("analytics", half)?;
    let segments = log.segment_count();
    let index_entries = log.index_entries();

    // Crash mid-write of an unacknowledged batch, then restart.
    let mut rng = StdRng::seed_from_u64(seed);
    let torn = tear_tail(&log, &mut rng, seed)?;
    drop(log);
    let log = Log::open(&tmp.0, config)?;
    let t = Instant::now();
    let mut lost = 0u64;
    let mut read_bytes = 0usize;
    let mut at = 0;
    while at < acked {
        let got = log.fetch(at, 256)?;
        if got.is_empty() {
            break;
        }
        for (off, p) in &got {
            if msgs.get(*off as usize) != Some(p) {
                lost += 1;
            }
            read_bytes += p.len();
        }
        at += got.len() as u64;
    }
    let log_read = read_bytes as f64 / 1e6 / t.elapsed().as_secs_f64().max(1e-9);
    lost += acked.saturating_sub(at);
    let extra = log.next_offset().saturating_sub(acked);
    let offset_kept = log.committed("analytics") == Some(half);
    // Random reads through the sparse index.
    let probes = 2000;
    let t = Instant::now();
    let mut bad_reads = 0;
    for _ in 0..probes {
        let i = rng.random_range(0..messages);
        if log.read(i)?.as_deref() != Some(msgs[i as usize].as_slice()) {
            bad_reads += 1;
        }
    }
    let read_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(probes);

    Ok(LessonReport::new(NAME, TITLE)
        .both("messages_acknowledged", messages as f64, acked as f64)
        .both("messages_lost_after_crash", naive_lost as f64, lost as f64)
        .both("committed_offset_survived", f64::from(u8::from(naive_offset_kept)), f64::from(u8::from(offset_kept)))
        .both("append_mb_s", naive_append, log_append)
        .both("read_mb_s", naive_read, log_read)
        .optimal("append_mb_s_fsync_each", fsync_each_mb_s)
        .optimal("random_read_us", read_us)
        .optimal("random_read_errors", f64::from(bad_reads))
        .optimal("torn_bytes_truncated", log.truncated_bytes_on_open() as f64)
        .optimal("unacknowledged_records_after_crash", extra as f64)
        .optimal("segments", segments as f64)
        .optimal("index_entries", index_entries as f64)
        .notes(format!(
            "{messages} messages of {msg_bytes} bytes. The in-memory queue is fastest and loses all of them \
             (and the consumer's committed offset) on a crash. The log fsyncs before acknowledging (one fsync \
             per batch of {batch}: group commit; one fsync per record runs at {fsync_each_mb_s:.1} MB/s); after a \
             crash that tore {torn} bytes of an unacknowledged batch, reopening found the bad length/CRC, \
             truncated the tail, and returned every acknowledged message. Who outgrows one disk goes to Kafka \
             or Redpanda, which add partitions, replication with an in-sync replica set (acks=all), \
             retention and log compaction, and idempotent/transactional producers for exactly-once."
        )))
}

/// The lesson at full size: 32k messages of 1 KiB, batches of 64.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 32_768, 1024, 64)
}
