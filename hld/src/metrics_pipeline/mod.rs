//! A metrics pipeline (Q5, "design a monitoring system"): writing every
//! sample against buffering, rolling up and writing in batches.
//!
//! **The pattern.** Thousands of series (a metric name plus labels: CPU of
//! host 17, p99 latency of endpoint /buy) each report a sample every second
//! or so. Dashboards and alerts mostly ask for aggregates over windows ("the
//! max over each 10 s"), and old data is only ever read at coarse
//! resolution.
//!
//! **The naive way** ([`DirectWriter`]): every sample is one write to
//! storage. The number of storage operations equals the number of samples
//! (each with its round trip, its request overhead and its index update),
//! and storage keeps every raw point forever.
//!
//! **The optimal way** ([`RollupPipeline`]): buffer in memory, fold each
//! sample into its series' current window (`count`, `sum`, `min`, `max`:
//! [`Aggregate`], which is *mergeable*, so partial aggregates of the same
//! window combine exactly), close a window once the newest timestamp seen is
//! past its end plus an allowed lateness (a watermark), and write closed
//! aggregates in batches of `batch_size`. A sample that arrives after its
//! window was closed is not dropped: it becomes a one-sample partial
//! aggregate that the query side merges ([`merge_rollups`]). Ingest is
//! `O(log open windows)` per sample; storage operations fall from one per
//! sample to one per `batch_size` aggregates, and bytes from one record per
//! sample to one per series per window. What is lost is resolution below the
//! window (and quantiles: `count/sum/min/max` cannot give a p99; a sketch
//! such as a t-digest or an HDR histogram per window can).
//!
//! [`Storage`] is the stand-in backend: each write is one operation that
//! stores a postcard-encoded batch, so `bytes` are real encoded bytes and
//! reading back decodes them.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The lesson's command-line name.
pub const NAME: &str = "metrics-pipeline";
/// A short human title.
pub const TITLE: &str = "Metrics pipeline: a write per sample vs buffered 10 s roll-ups in batches";

/// Errors of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("window and batch size must be positive")]
    BadConfig,
    #[error("storage encoding: {0}")]
    Encoding(String),
}

/// One raw point of one series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub series: u32,
    pub ts_ms: u64,
    pub value: f64,
}

/// count/sum/min/max of one series over one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub series: u32,
    pub window_start_ms: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Aggregate {
    /// The aggregate of one sample.
    pub fn of(series: u32, window_start_ms: u64, value: f64) -> Self {
        Self {
            series,
            window_start_ms,
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    /// Folds one more value in.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Folds another aggregate of the same series and window in. False (and
    /// nothing changed) if they are of different series or windows.
    pub fn merge(&mut self, other: &Aggregate) -> bool {
        if (self.series, self.window_start_ms) != (other.series, other.window_start_ms) {
            return false;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        true
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// Equal counts, mins and maxes, and sums within `1e-9` of the sum of
    /// absolute values (a float sum depends on the order of the additions).
    pub fn approx_eq(&self, other: &Aggregate) -> bool {
        // Bound on the sum of |values|: count * max |value|.
        let scale = |a: &Aggregate| a.count as f64 * a.min.abs().max(a.max.abs());
        let tol = 1e-9 * scale(self).max(scale(other)).max(1.0);
        self.series == other.series
            && self.window_start_ms == other.window_start_ms
            && self.count == other.count
            && self.min == other.min
            && self.max == other.max
            && (self.sum - other.sum).abs() <= tol
    }
}

/// The stand-in storage backend: every [`write`](Self::write) is one
/// operation that appends one postcard-encoded batch.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    segments: Vec<Vec<u8>>,
    writes: u64,
    bytes: u64,
}

impl Storage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `batch` as one operation.
    pub fn write<R: Serialize>(&mut self, batch: &[R]) -> Result<(), MetricsError> {
        let enc =
            postcard::to_allocvec(batch).map_err(|e| MetricsError::Encoding(e.to_string()))?;
        self.writes += 1;
        self.bytes += enc.len() as u64;
        self.segments.push(enc);
        Ok(())
    }

    /// Decodes every stored record (all writes must have been of `R`).
    pub fn read_all<R: DeserializeOwned>(&self) -> Result<Vec<R>, MetricsError> {
        let mut out = Vec::new();
        for seg in &self.segments {
            let batch: Vec<R> =
                postcard::from_bytes(seg).map_err(|e| MetricsError::Encoding(e.to_string()))?;
            out.extend(batch);
        }
        Ok(out)
    }

    /// Storage operations so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Encoded bytes stored.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The naive pipeline: one storage write per sample.
#[derive(Debug, Clone, Default)]
pub struct DirectWriter {
    pub storage: Storage,
}

impl DirectWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn ingest(&mut self, s: Sample) -> Result<(), MetricsError> {
        self.storage.write(&[s])
    }
}

/// Start of the window of length `window_ms` holding `ts_ms`.
pub fn window_start(ts_ms: u64, window_ms: u64) -> u64 {
    ts_ms - ts_ms % window_ms.max(1)
}

/// The optimal pipeline: per-series window aggregates, closed by a
/// watermark, written in batches.
#[derive(Debug, Clone)]
pub struct RollupPipeline {
    window_ms: u64,
    lateness_ms: u64,
    batch_size: usize,
    /// Open windows, keyed by (window start, series) so the oldest close
    /// first.
    open: BTreeMap<(u64, u32), Aggregate>,
    /// Closed aggregates waiting for the next batch write.
    ready: Vec<Aggregate>,
    /// Windows starting before this were closed.
    closed_before: u64,
    max_ts: u64,
    late_partials: u64,
    pub storage: Storage,
}

impl RollupPipeline {
    /// Windows of `window_ms`, closed once a sample `lateness_ms` past their
    /// end has been seen, written `batch_size` aggregates at a time.
    pub fn new(window_ms: u64, lateness_ms: u64, batch_size: usize) -> Result<Self, MetricsError> {
        if window_ms == 0 || batch_size == 0 {
            return Err(MetricsError::BadConfig);
        }
        Ok(Self {
            window_ms,
            lateness_ms,
            batch_size,
            open: BTreeMap::new(),
            ready: Vec::new(),
            closed_before: 0,
            max_ts: 0,
            late_partials: 0,
            storage: Storage::new(),
        })
    }

    /// Folds `s` into its window, closes the windows the watermark has
    /// passed, and writes a batch when one is full.
    pub fn ingest(&mut self, s: Sample) -> Result<(), MetricsError> {
        let w = window_start(s.ts_ms, self.window_ms);
        if w < self.closed_before {
            // Late: its window is already written. Emit a partial that the
            // query side merges.
            self.late_partials += 1;
            self.ready.push(Aggregate::of(s.series, w, s.value));
        } else {
            self.open
                .entry((w, s.series))
                .and_modify(|a| a.add(s.value))
                .or_insert_with(|| Aggregate::of(s.series, w, s.value));
        }
        if s.ts_ms > self.max_ts {
            self.max_ts = s.ts_ms;
            self.close_until(self.max_ts.saturating_sub(self.lateness_ms));
        }
        self.flush_full()
    }

    /// Closes every window that ends at or before `watermark`.
    fn close_until(&mut self, watermark: u64) {
        while let Some(entry) = self.open.first_entry() {
            let w = entry.key().0;
            if w + self.window_ms > watermark {
                break;
            }
            self.closed_before = self.closed_before.max(w + self.window_ms);
            self.ready.push(entry.remove());
        }
    }

    fn flush_full(&mut self) -> Result<(), MetricsError> {
        while self.ready.len() >= self.batch_size {
            let rest = self.ready.split_off(self.batch_size);
            let batch = std::mem::replace(&mut self.ready, rest);
            self.storage.write(&batch)?;
        }
        Ok(())
    }

    /// Closes every open window and writes what is left (at shutdown).
    pub fn finish(&mut self) -> Result<(), MetricsError> {
        self.close_until(u64::MAX);
        self.flush_full()?;
        if !self.ready.is_empty() {
            let batch = std::mem::take(&mut self.ready);
            self.storage.write(&batch)?;
        }
        Ok(())
    }

    /// Samples that arrived after their window was closed.
    pub fn late_partials(&self) -> u64 {
        self.late_partials
    }

    /// Windows held open in memory now.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }
}

/// Key of a roll-up: (series, window start).
pub type RollupKey = (u32, u64);

/// Merges partial aggregates of the same series and window (the query
/// side of late data).
pub fn merge_rollups(aggs: impl IntoIterator<Item = Aggregate>) -> BTreeMap<RollupKey, Aggregate> {
    let mut out: BTreeMap<RollupKey, Aggregate> = BTreeMap::new();
    for a in aggs {
        out.entry((a.series, a.window_start_ms))
            .and_modify(|m| {
                m.merge(&a);
            })
            .or_insert(a);
    }
    out
}

/// The reference: aggregates computed straight from raw samples.
pub fn aggregate_raw(samples: &[Sample], window_ms: u64) -> BTreeMap<RollupKey, Aggregate> {
    merge_rollups(
        samples
            .iter()
            .map(|s| Aggregate::of(s.series, window_start(s.ts_ms, window_ms), s.value)),
    )
}

/// True if both maps have the same keys and approximately equal aggregates.
pub fn rollups_match(
    a: &BTreeMap<RollupKey, Aggregate>,
    b: &BTreeMap<RollupKey, Aggregate>,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, x), (kb, y))| ka == kb && x.approx_eq(y))
}

/// Samples of `series` series, one per second each for `seconds` seconds
/// (random walk values, jittered timestamps), in *arrival* order: each is
/// delayed by up to 3 s, and one in a thousand by up to 60 s.
pub fn generate(seed: u64, series: u32, seconds: u64) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut level: Vec<f64> = (0..series).map(|_| rng.random_range(0.0..100.0)).collect();
    let mut arrivals: Vec<(u64, Sample)> = Vec::with_capacity(series as usize * seconds as usize);
    for sec in 0..seconds {
        for (sid, v) in level.iter_mut().enumerate() {
            *v += rng.random_range(-1.0..1.0);
            let ts_ms = sec * 1000 + rng.random_range(0..1000);
            let delay = if rng.random_range(0..1000) == 0 {
                rng.random_range(0..60_000)
            } else {
                rng.random_range(0..3_000)
            };
            arrivals.push((
                ts_ms + delay,
                Sample {
                    series: sid as u32,
                    ts_ms,
                    value: *v,
                },
            ));
        }
    }
    arrivals.sort_by_key(|(arrive, s)| (*arrive, s.series));
    arrivals.into_iter().map(|(_, s)| s).collect()
}

/// What one run of both pipelines measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineStats {
    pub naive_writes: u64,
    pub naive_bytes: u64,
    pub rollup_writes: u64,
    pub rollup_bytes: u64,
    pub rollups: usize,
    pub late_partials: u64,
    pub results_match: bool,
}

/// Runs both pipelines over `samples` and checks the stored roll-ups
/// against aggregates of the stored raw samples.
pub fn run(
    samples: &[Sample],
    window_ms: u64,
    lateness_ms: u64,
    batch_size: usize,
) -> Result<PipelineStats, MetricsError> {
    let mut naive = DirectWriter::new();
    let mut rollup = RollupPipeline::new(window_ms, lateness_ms, batch_size)?;
    for &s in samples {
        naive.ingest(s)?;
        rollup.ingest(s)?;
    }
    rollup.finish()?;
    let raw: Vec<Sample> = naive.storage.read_all()?;
    let stored: Vec<Aggregate> = rollup.storage.read_all()?;
    let expected = aggregate_raw(&raw, window_ms);
    let got = merge_rollups(stored);
    Ok(PipelineStats {
        naive_writes: naive.storage.writes(),
        naive_bytes: naive.storage.bytes(),
        rollup_writes: rollup.storage.writes(),
        rollup_bytes: rollup.storage.bytes(),
        rollups: got.len(),
        late_partials: rollup.late_partials(),
        results_match: raw.len() == samples.len() && rollups_match(&expected, &got),
    })
}

/// The experiment at a given size: `series` series for `seconds` seconds,
/// 10 s windows, 5 s allowed lateness, batches of 500 aggregates.
pub fn lesson_with(seed: u64, series: u32, seconds: u64) -> LessonReport {
    let samples = generate(seed, series, seconds);
    let report = LessonReport::new(NAME, TITLE);
    let st = match run(&samples, 10_000, 5_000, 500) {
        Ok(st) => st,
        Err(e) => return report.notes(format!("pipeline failed: {e}")),
    };
    let n = samples.len() as f64;
    let m = |b: bool| if b { 1.0 } else { 0.0 };
    report
        .both("samples", n, n)
        .both("writes", st.naive_writes as f64, st.rollup_writes as f64)
        .both("bytes", st.naive_bytes as f64, st.rollup_bytes as f64)
        .both(
            "bytes_per_sample",
            st.naive_bytes as f64 / n.max(1.0),
            st.rollup_bytes as f64 / n.max(1.0),
        )
        .both("stored_records", n, st.rollups as f64 + st.late_partials as f64)
        .optimal("rollups", st.rollups as f64)
        .optimal("late_partials", st.late_partials as f64)
        .both("results_match", 1.0, m(st.results_match))
        .notes(format!(
            "{series} series report one sample a second for {seconds} s ({} samples, arriving up to 3 s late and \
             one in a thousand up to 60 s late). Writing each sample costs {} storage operations and {:.1} MB; \
             folding them into per-series 10 s count/sum/min/max windows, closed 5 s after their end and written \
             500 at a time, costs {} operations and {:.2} MB ({:.0}x fewer writes), and the {} late samples become \
             partial aggregates that merge exactly on read (results_match = {}). The price is resolution: below \
             10 s, and quantiles, are gone unless a sketch is kept per window. At scale this is Prometheus remote \
             write (samples batched and compressed per shard) into M3 or Thanos/Cortex with downsampling \
             (5 min and 1 h roll-ups), or InfluxDB tasks that downsample into a coarser retention bucket.",
            samples.len(),
            st.naive_writes,
            st.naive_bytes as f64 / 1e6,
            st.rollup_writes,
            st.rollup_bytes as f64 / 1e6,
            st.naive_writes as f64 / st.rollup_writes.max(1) as f64,
            st.late_partials,
            st.results_match,
        ))
}

/// The full-size experiment: 500 series for 10 minutes (300,000 samples).
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 500, 600)
}

#[cfg(test)]
mod tests;
