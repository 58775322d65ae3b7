//! The workload every batching mode runs, and what each request saw.
//!
//! One seeded workload (prompt lengths, output lengths, Poisson arrival
//! times) is built once and replayed by every mode, so the modes differ only
//! in how they batch. Latencies are measured from each request's *intended*
//! arrival time, so a mode that makes requests queue pays for it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSpec {
    pub num_prompts: usize,
    /// Requests per second of the Poisson arrival process; infinite: all at once.
    pub request_rate: f64,
    pub prompt_len: (usize, usize),
    pub output_len: (usize, usize),
    pub seed: u64,
}

/// One request of the workload.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrives, counted from the start of the run.
    pub arrival: Duration,
    pub prompt: Vec<u32>,
    /// Exactly this many tokens are generated (EOS is ignored).
    pub output_len: usize,
}

impl WorkloadSpec {
    /// Prompt and output lengths uniform in their ranges, token ids uniform
    /// over the vocabulary, exponential gaps between arrivals.
    pub fn build(&self, vocab_size: usize) -> Vec<Request> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut t = 0.0f64;
        (0..self.num_prompts)
            .map(|_| {
                if self.request_rate.is_finite() {
                    // Inverse-CDF draw of an Exp(rate) gap; 1-u is in (0, 1].
                    let u: f64 = rng.random();
                    t += -(1.0 - u).ln() / self.request_rate;
                }
                let plen = rng.random_range(self.prompt_len.0..=self.prompt_len.1);
                let olen = rng.random_range(self.output_len.0..=self.output_len.1);
                Request {
                    arrival: Duration::from_secs_f64(t),
                    prompt: (0..plen)
                        .map(|_| rng.random_range(0..vocab_size as u32))
                        .collect(),
                    output_len: olen,
                }
            })
            .collect()
    }
}

/// What one request saw, as instants.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub arrival: Instant,
    pub first_token: Instant,
    pub finish: Instant,
    pub output_tokens: usize,
}

impl Timing {
    pub fn ttft(&self) -> Duration {
        self.first_token - self.arrival
    }

    /// Time per output token after the first; `None` for one-token outputs.
    pub fn tpot(&self) -> Option<Duration> {
        (self.output_tokens > 1)
            .then(|| (self.finish - self.first_token) / (self.output_tokens - 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rate: f64) -> WorkloadSpec {
        WorkloadSpec {
            num_prompts: 200,
            request_rate: rate,
            prompt_len: (4, 9),
            output_len: (2, 5),
            seed: 3,
        }
    }

    #[test]
    fn workload_is_seeded_and_within_ranges() {
        let a = spec(4.0).build(100);
        let b = spec(4.0).build(100);
        assert_eq!(a.len(), 200);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.prompt, y.prompt);
            assert_eq!((x.arrival, x.output_len), (y.arrival, y.output_len));
            assert!((4..=9).contains(&x.prompt.len()));
            assert!((2..=5).contains(&x.output_len));
            assert!(x.prompt.iter().all(|&t| t < 100));
        }
        assert!(a.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        // 200 arrivals at 4/s: the last lands near 50 s (sd of the sum ~3.5 s).
        let last = a.last().unwrap().arrival.as_secs_f64();
        assert!((35.0..65.0).contains(&last), "{last}");
    }

    #[test]
    fn infinite_rate_means_everything_arrives_at_once() {
        assert!(spec(f64::INFINITY)
            .build(100)
            .iter()
            .all(|r| r.arrival.is_zero()));
    }
}
