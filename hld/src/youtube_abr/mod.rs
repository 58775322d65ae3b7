//! Video streaming (Q8, "design YouTube"): always fetching the top bitrate
//! against buffer-based adaptive bitrate (BBA), on a mobile-like bandwidth
//! trace, in virtual time.
//!
//! **The pattern.** A video is cut into segments of a few seconds, each
//! encoded at every rung of a bitrate *ladder* (here 235 kbps to 5800 kbps,
//! like common 240p..1080p ladders). The player downloads one segment at a
//! time into a playback buffer and, before each download, picks the rung.
//! The network underneath changes from second to second. If the buffer runs
//! dry the video stalls (a *rebuffer*), which viewers hate far more than a
//! softer picture: rebuffering is the metric streaming services watch first.
//!
//! **The naive way** ([`Policy::TopBitrate`]): always fetch the best rung.
//! Whenever the bandwidth drops below the bitrate, each 4 s segment takes
//! more than 4 s to arrive, the buffer drains, and playback stops.
//!
//! **The optimal way** ([`Policy::Bba`], after Huang et al., "A
//! Buffer-Based Approach to Rate Adaptation", SIGCOMM 2014): choose the rung
//! from the *buffer level* alone. Below a *reservoir* (10 s) fetch the
//! lowest rung; above reservoir + *cushion* (10 + 40 s) fetch the top rung;
//! in between map the buffer linearly onto the ladder and take the highest
//! rung at or below the mapped rate. The buffer is the integral of past
//! throughput, so it reacts to a sustained drop without trusting noisy
//! per-segment bandwidth estimates, and a nearly empty buffer is always
//! refilled with the cheapest segments. For comparison the lesson also runs
//! a throughput-based player ([`Policy::Throughput`]: the harmonic mean of
//! the last five segment throughputs, times 0.8), reported in the notes.
//!
//! **What to look at.** `rebuffer_ratio` = stall time / (stall + play time):
//! the naive player stalls for a sizeable fraction of the session, BBA close
//! to never. The price is `avg_bitrate_kbps`: BBA streams a lower average
//! rate (it spends the start and every dip at low rungs). `bitrate_switches`
//! counts quality changes (also annoying when frequent).
//!
//! The simulation is deterministic: the bandwidth trace (a Markov chain of
//! good, fair and poor network states with jitter inside each, one value per
//! second) comes from the seed, and a download of `bits` starting at time
//! `t` ends when the integral of the trace from `t` reaches `bits`.
//!
//! **At scale** players are hybrids: dash.js runs BOLA (a buffer-based
//! utility maximiser) together with a throughput rule, Netflix and YouTube
//! tune their own buffer/throughput mixes, and the CDN (Open Connect,
//! Google's edge caches) keeps every rung of popular segments close to the
//! viewer; the ladder itself is chosen per title (per-title encoding).

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The lesson's command-line name.
pub const NAME: &str = "youtube-abr";
/// A short human title.
pub const TITLE: &str = "Video streaming: always the top bitrate vs buffer-based adaptive bitrate";

/// The bitrate ladder, kbps, lowest first.
pub const LADDER_KBPS: [f64; 10] = [
    235.0, 375.0, 560.0, 750.0, 1050.0, 1750.0, 2350.0, 3000.0, 4300.0, 5800.0,
];

/// Bandwidth, kbps, one value per second; read cyclically past its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub kbps: Vec<f64>,
}

impl Trace {
    /// Bandwidth during second `floor(t)`.
    pub fn at(&self, t: f64) -> f64 {
        let n = self.kbps.len().max(1);
        self.kbps
            .get((t.max(0.0) as usize) % n)
            .copied()
            .unwrap_or(0.0)
    }

    /// Seconds needed to download `kbits` starting at time `t`, integrating
    /// the trace slot by slot. Infinite if the trace is empty or all zero.
    pub fn download_secs(&self, t: f64, kbits: f64) -> f64 {
        if kbits <= 0.0 {
            return 0.0;
        }
        if self.kbps.iter().all(|&b| b <= 0.0) {
            return f64::INFINITY;
        }
        let mut now = t;
        let mut left = kbits;
        loop {
            let bw = self.at(now);
            let slot_end = now.floor() + 1.0;
            let span = slot_end - now;
            let can = bw * span;
            if can >= left {
                return now + left / bw - t;
            }
            left -= can;
            now = slot_end;
        }
    }

    pub fn mean_kbps(&self) -> f64 {
        self.kbps.iter().sum::<f64>() / self.kbps.len().max(1) as f64
    }

    /// Fraction of seconds below `kbps`.
    pub fn fraction_below(&self, kbps: f64) -> f64 {
        self.kbps.iter().filter(|&&b| b < kbps).count() as f64 / self.kbps.len().max(1) as f64
    }
}

/// A mobile-like trace of `secs` seconds: a Markov chain over good (~7
/// Mbps), fair (~2.5 Mbps) and poor (~0.9 Mbps) states, each held for a
/// random 5..40 s, with multiplicative jitter each second; never below 450
/// kbps (above the lowest rung, so a careful player need never stall).
pub fn generate_trace(seed: u64, secs: usize) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let levels = [7000.0, 2500.0, 900.0];
    let mut state = 0usize;
    let mut hold = 0usize;
    let mut kbps = Vec::with_capacity(secs);
    for _ in 0..secs {
        if hold == 0 {
            // Move to another state: from good mostly to fair, from poor
            // mostly back to fair.
            let u: f64 = rng.random();
            state = match state {
                0 => {
                    if u < 0.7 {
                        1
                    } else {
                        2
                    }
                }
                1 => {
                    if u < 0.55 {
                        0
                    } else {
                        2
                    }
                }
                _ => {
                    if u < 0.6 {
                        1
                    } else {
                        0
                    }
                }
            };
            hold = rng.random_range(5..40);
        }
        hold -= 1;
        let jitter: f64 = rng.random_range(0.6..1.4);
        kbps.push((levels[state] * jitter).max(450.0));
    }
    Trace { kbps }
}

/// How the player picks the next segment's rung.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Always the top rung.
    TopBitrate,
    /// BBA-0: lowest rung below `reservoir_s` of buffer, top rung above
    /// `reservoir_s + cushion_s`, linear in between.
    Bba { reservoir_s: f64, cushion_s: f64 },
    /// Highest rung at or below `safety` times the harmonic mean of the
    /// last `window` segment throughputs (the lowest rung before any).
    Throughput { window: usize, safety: f64 },
}

/// Index of the highest rung of `ladder` at or below `kbps` (0 if none).
pub fn rung_at_or_below(ladder: &[f64], kbps: f64) -> usize {
    ladder.iter().rposition(|&r| r <= kbps).unwrap_or(0)
}

/// BBA's rate map: the rung for a buffer of `buffer_s` seconds.
pub fn bba_rung(ladder: &[f64], buffer_s: f64, reservoir_s: f64, cushion_s: f64) -> usize {
    let (lo, hi) = match (ladder.first(), ladder.last()) {
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => return 0,
    };
    if buffer_s <= reservoir_s {
        return 0;
    }
    if buffer_s >= reservoir_s + cushion_s {
        return ladder.len() - 1;
    }
    let rate = lo + (buffer_s - reservoir_s) / cushion_s.max(1e-9) * (hi - lo);
    rung_at_or_below(ladder, rate)
}

/// Harmonic mean (0 if empty): the mean that is not fooled by one fast
/// outlier.
pub fn harmonic_mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.len() as f64 / xs.iter().map(|x| 1.0 / x.max(1e-9)).sum::<f64>()
}

impl Policy {
    /// The rung for the next segment, given the buffer and the measured
    /// throughputs (kbps) of past segments, oldest first.
    pub fn choose(&self, ladder: &[f64], buffer_s: f64, history_kbps: &[f64]) -> usize {
        match *self {
            Policy::TopBitrate => ladder.len().saturating_sub(1),
            Policy::Bba {
                reservoir_s,
                cushion_s,
            } => bba_rung(ladder, buffer_s, reservoir_s, cushion_s),
            Policy::Throughput { window, safety } => {
                if history_kbps.is_empty() {
                    return 0;
                }
                let recent = &history_kbps[history_kbps.len().saturating_sub(window.max(1))..];
                rung_at_or_below(ladder, safety * harmonic_mean(recent))
            }
        }
    }
}

/// The player's fixed parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Player {
    pub segment_s: f64,
    pub segments: usize,
    /// The player stops downloading while the buffer holds more than this
    /// minus one segment.
    pub max_buffer_s: f64,
}

/// What one playback session measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Rung index of each segment.
    pub rungs: Vec<usize>,
    /// Time before the first frame (the first download).
    pub startup_s: f64,
    /// Stalled time after playback started.
    pub stall_s: f64,
    pub stalls: u64,
    pub play_s: f64,
    pub avg_bitrate_kbps: f64,
    pub switches: u64,
    /// Virtual wall time of the whole session.
    pub wall_s: f64,
}

impl Session {
    /// Stall time over stall plus play time.
    pub fn rebuffer_ratio(&self) -> f64 {
        let total = self.stall_s + self.play_s;
        if total > 0.0 {
            self.stall_s / total
        } else {
            0.0
        }
    }
}

/// Plays `player.segments` segments over `trace` with `policy`, in virtual
/// time: before each download the policy picks a rung, the download takes
/// the trace's time for `bitrate * segment_s` kbits, and during it the
/// buffer drains at one second per second (stalling at zero).
pub fn simulate(policy: Policy, ladder: &[f64], trace: &Trace, player: Player) -> Session {
    let mut now = 0.0f64;
    let mut buffer = 0.0f64;
    let mut started = false;
    let (mut startup, mut stall, mut play) = (0.0, 0.0, 0.0);
    let mut stalls = 0u64;
    let mut history = Vec::with_capacity(player.segments);
    let mut rungs = Vec::with_capacity(player.segments);
    for _ in 0..player.segments {
        // Buffer full: idle (and play) until one segment fits.
        let room = player.max_buffer_s - player.segment_s;
        if buffer > room {
            let wait = buffer - room;
            now += wait;
            play += wait;
            buffer = room;
        }
        let rung = policy.choose(ladder, buffer, &history);
        let kbits = ladder[rung] * player.segment_s;
        let d = trace.download_secs(now, kbits);
        if !d.is_finite() {
            break;
        }
        now += d;
        if !started {
            startup = d;
            started = true;
        } else if buffer >= d {
            buffer -= d;
            play += d;
        } else {
            // The buffer ran dry before this segment arrived: one stall
            // (playback resumes when it lands).
            play += buffer;
            stall += d - buffer;
            stalls += 1;
            buffer = 0.0;
        }
        buffer += player.segment_s;
        history.push(kbits / d.max(1e-9));
        rungs.push(rung);
    }
    // Play out what is left.
    play += buffer;
    now += buffer;
    let avg = if rungs.is_empty() {
        0.0
    } else {
        rungs.iter().map(|&r| ladder[r]).sum::<f64>() / rungs.len() as f64
    };
    let switches = rungs.windows(2).filter(|w| w[0] != w[1]).count() as u64;
    Session {
        rungs,
        startup_s: startup,
        stall_s: stall,
        stalls,
        play_s: play,
        avg_bitrate_kbps: avg,
        switches,
        wall_s: now,
    }
}

/// The lesson's players: 4 s segments, a 60 s buffer.
pub const PLAYER: Player = Player {
    segment_s: 4.0,
    segments: 150,
    max_buffer_s: 60.0,
};
/// BBA with a 10 s reservoir and a 40 s cushion.
pub const BBA: Policy = Policy::Bba {
    reservoir_s: 10.0,
    cushion_s: 40.0,
};
/// Harmonic mean of the last 5 throughputs, times 0.8.
pub const THROUGHPUT: Policy = Policy::Throughput {
    window: 5,
    safety: 0.8,
};

/// The experiment: a 10-minute video (150 segments of 4 s) over a
/// 15-minute trace from `seed`, played by all three policies.
pub fn lesson(seed: u64) -> LessonReport {
    let trace = generate_trace(seed, 900);
    let naive = simulate(Policy::TopBitrate, &LADDER_KBPS, &trace, PLAYER);
    let bba = simulate(BBA, &LADDER_KBPS, &trace, PLAYER);
    let tput = simulate(THROUGHPUT, &LADDER_KBPS, &trace, PLAYER);
    let top = LADDER_KBPS[LADDER_KBPS.len() - 1];
    LessonReport::new(NAME, TITLE)
        .both(
            "rebuffer_ratio",
            naive.rebuffer_ratio(),
            bba.rebuffer_ratio(),
        )
        .both(
            "avg_bitrate_kbps",
            naive.avg_bitrate_kbps,
            bba.avg_bitrate_kbps,
        )
        .both("stall_s", naive.stall_s, bba.stall_s)
        .both("stall_events", naive.stalls as f64, bba.stalls as f64)
        .both("startup_s", naive.startup_s, bba.startup_s)
        .both(
            "bitrate_switches",
            naive.switches as f64,
            bba.switches as f64,
        )
        .both("session_wall_s", naive.wall_s, bba.wall_s)
        .notes(format!(
            "A 10-minute video in 4 s segments over a seeded mobile-like trace (mean {:.0} kbps, below the \
             {top:.0} kbps top rung {:.0}% of the time). Always fetching the top rung stalls {:.0} s in {} \
             stalls (rebuffer_ratio {:.3}, and {:.1} s before the first frame). Buffer-based BBA (lowest rung \
             under a 10 s reservoir, top rung above 50 s, linear in between) stalls {:.1} s (ratio {:.4}) at an \
             average {:.0} kbps instead of {:.0}: a softer picture in the dips instead of a frozen one. A \
             throughput rule (0.8 x harmonic mean of the last 5 segments) gets ratio {:.4} at {:.0} kbps with \
             {} switches (BBA: {}). At scale players mix both signals (dash.js BOLA plus a throughput rule, \
             Netflix's and YouTube's own ABR) and a CDN (Open Connect, Google's edge caches) serves every rung \
             from close to the viewer.",
            trace.mean_kbps(),
            100.0 * trace.fraction_below(top),
            naive.stall_s,
            naive.stalls,
            naive.rebuffer_ratio(),
            naive.startup_s,
            bba.stall_s,
            bba.rebuffer_ratio(),
            bba.avg_bitrate_kbps,
            naive.avg_bitrate_kbps,
            tput.rebuffer_ratio(),
            tput.avg_bitrate_kbps,
            tput.switches,
            bba.switches,
        ))
}

#[cfg(test)]
mod tests;
