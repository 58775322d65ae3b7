//! Latency percentiles for the benchmarks: durations recorded into an
//! `hdrhistogram` histogram in microseconds (3 significant digits, so
//! percentiles are within 0.1%), the mean kept exactly.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Mean and percentiles of one latency, in milliseconds.
#[derive(Serialize, Clone, Copy, Debug)]
pub struct Stats {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// A latency histogram in microseconds.
pub struct Latency {
    h: Histogram<u64>,
    sum_us: f64,
}

impl Latency {
    pub fn new() -> Self {
        Self {
            h: Histogram::new(3).expect("3 significant digits is a valid histogram"),
            sum_us: 0.0,
        }
    }

    pub fn add(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        if self.h.record(us).is_err() {
            self.h.saturating_record(us);
        }
        self.sum_us += d.as_secs_f64() * 1e6;
    }

    pub fn stats(&self) -> Option<Stats> {
        if self.h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Stats {
            mean: self.sum_us / self.h.len() as f64 / 1000.0,
            p50: ms(self.h.value_at_quantile(0.50)),
            p90: ms(self.h.value_at_quantile(0.90)),
            p99: ms(self.h.value_at_quantile(0.99)),
            max: ms(self.h.max()),
        })
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl FromIterator<Duration> for Latency {
    fn from_iter<I: IntoIterator<Item = Duration>>(iter: I) -> Self {
        let mut l = Self::new();
        for d in iter {
            l.add(d);
        }
        l
    }
}
