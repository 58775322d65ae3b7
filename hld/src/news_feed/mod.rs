//! A news feed (Q6, "design Twitter's home timeline"): pull (merge on read)
//! against fan-out on write with pull for celebrities (the hybrid).
//!
//! **The pattern.** Users follow other users; a user's feed is the newest
//! `k` posts of everyone they follow. Reads outnumber writes by orders of
//! magnitude, and the follower graph is heavy-tailed: most users have a few
//! hundred followers, a handful of celebrities have a large share of
//! everyone.
//!
//! **The naive way** ([`PullStore`]): a post is one write to its author's
//! list; a read fetches the newest `k` posts of *every* followee and merges
//! them (a k-way merge with a heap). Writes are cheap (`writes_per_post` =
//! 1), but a read costs one fetch per followee, so users who follow many
//! accounts get the slowest feeds, and they set the tail latency.
//!
//! **The optimal way** ([`HybridStore`]): fan-out on write. A post is also
//! pushed into a bounded, precomputed timeline (the newest `k` ids) of each
//! follower, so a read is one timeline fetch. Fanning out a celebrity's post
//! to a large share of all users would make every one of their posts a
//! write storm (and a lag before the last follower sees it), so authors
//! above a follower threshold are *not* fanned out: their followers pull
//! their posts at read time and merge them with the timeline. A read then
//! costs one timeline plus one fetch per followed celebrity. This is the
//! hybrid Twitter described for its home timeline.
//!
//! **What to look at.** `read_ms_p99` (reader threads reading while writer
//! threads post, all started together) and `writes_per_post`: the hybrid
//! trades write amplification (and `timeline_entries` of memory) for reads
//! whose cost no longer grows with the number of followees. `post_us_mean`
//! shows where the work went. `feeds_match` checks, after the run, that the
//! hybrid read gives exactly the pull merge over the same posts.
//!
//! **At scale** the timelines live in a sharded in-memory store (Twitter's
//! Redis-based timeline cache, Instagram's Cassandra feeds), fan-out runs
//! asynchronously on a queue of workers (so a post returns at once and
//! followers see it within seconds), only active users' timelines are
//! kept, and a ranking service reorders the merged candidates.

mod store;

pub use store::{
    merge_newest, pull_feed, timeline_insert, FeedStore, HybridStore, PostLog, PullStore,
};

use crate::report::LessonReport;
use crate::workload::Zipf;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::Barrier;
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "news-feed";
/// A short human title.
pub const TITLE: &str =
    "News feed: merge followees' posts on read vs fan-out on write (pull for celebrities)";

/// Who follows whom, both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// `followees[u]`: the users `u` follows.
    pub followees: Vec<Vec<u32>>,
    /// `followers[u]`: the users following `u`.
    pub followers: Vec<Vec<u32>>,
}

impl Graph {
    /// Builds the graph from follow lists (`followees[u]`: whom `u`
    /// follows; duplicates and self-follows are ignored).
    pub fn from_followees(mut followees: Vec<Vec<u32>>) -> Self {
        let n = followees.len();
        let mut followers = vec![Vec::new(); n];
        for (u, fs) in followees.iter_mut().enumerate() {
            fs.retain(|&f| f as usize != u && (f as usize) < n);
            fs.sort_unstable();
            fs.dedup();
            for &f in fs.iter() {
                followers[f as usize].push(u as u32);
            }
        }
        Self {
            followees,
            followers,
        }
    }

    pub fn users(&self) -> usize {
        self.followees.len()
    }

    pub fn edges(&self) -> usize {
        self.followees.iter().map(Vec::len).sum()
    }
}

/// A heavy-tailed social graph: each user follows between `min_follows`
/// and `max_follows` others (log-uniform); a fifth of the follows go to a
/// Zipf-popular account (user `r` has rank `r`), the rest to a uniformly
/// random one. The Zipf share makes the first few users celebrities.
pub fn generate_graph(seed: u64, users: usize, min_follows: usize, max_follows: usize) -> Graph {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = Zipf::new(users.max(1), 1.0).expect("users > 0");
    let (lo, hi) = (
        (min_follows.max(1) as f64).ln(),
        (max_follows.max(min_follows).max(1) as f64 + 1.0).ln(),
    );
    let followees = (0..users)
        .map(|u| {
            let want = (rng.random_range(lo..hi).exp() as usize).min(users.saturating_sub(1));
            let mut set = HashSet::with_capacity(want);
            let mut tries = 0;
            while set.len() < want && tries < want * 20 {
                tries += 1;
                let f = if rng.random_range(0..5) == 0 {
                    zipf.sample(&mut rng)
                } else {
                    rng.random_range(0..users)
                };
                if f != u {
                    set.insert(f as u32);
                }
            }
            set.into_iter().collect()
        })
        .collect();
    Graph::from_followees(followees)
}

/// Shape of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub users: usize,
    pub min_follows: usize,
    pub max_follows: usize,
    /// Feed length.
    pub k: usize,
    /// Authors with more followers than this are not fanned out.
    pub celebrity_threshold: usize,
    /// Posts before the timed run (so feeds are full).
    pub preload_posts: usize,
    pub writers: usize,
    pub posts_per_writer: usize,
    pub readers: usize,
    pub reads_per_reader: usize,
}

/// The lesson's size: 10,000 users following 5..1,000 each, feeds of 50,
/// celebrities above 2,000 followers, 2 writers and 2 readers.
pub const WORKLOAD: Workload = Workload {
    users: 10_000,
    min_follows: 5,
    max_follows: 1_000,
    k: 50,
    celebrity_threshold: 2_000,
    preload_posts: 20_000,
    writers: 2,
    posts_per_writer: 3_000,
    readers: 2,
    reads_per_reader: 4_000,
};

/// What one store's timed run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    pub read_ms_p50: f64,
    pub read_ms_p99: f64,
    pub post_us_mean: f64,
    pub posts: u64,
    pub writes: u64,
    pub elapsed_ms: f64,
}

impl RunStats {
    pub fn writes_per_post(&self) -> f64 {
        self.writes as f64 / self.posts.max(1) as f64
    }
}

/// The `q`-quantile of sorted values (0 if empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Authors of posts in order: Zipf over users (rank = user id, so the
/// popular accounts also post the most).
pub fn post_authors(seed: u64, users: usize, n: usize) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = Zipf::new(users.max(1), 0.8).expect("users > 0");
    (0..n).map(|_| zipf.sample(&mut rng) as u32).collect()
}

/// Preloads `store`, then runs writer threads (posting `authors`) and
/// reader threads (reading the feeds of `readers_of`), all released by one
/// barrier, timing every read and post.
pub fn run_store(
    store: &dyn FeedStore,
    preload: &[u32],
    authors: &[Vec<u32>],
    readers_of: &[Vec<u32>],
) -> RunStats {
    for &a in preload {
        store.post(a);
    }
    let writes_before = store.writes();
    let barrier = Barrier::new(authors.len() + readers_of.len());
    let t = Instant::now();
    let (post_us, mut read_ms) = std::thread::scope(|s| {
        let b = &barrier;
        let writers: Vec<_> = authors
            .iter()
            .map(|list| {
                s.spawn(move || {
                    b.wait();
                    let t = Instant::now();
                    for &a in list {
                        store.post(a);
                    }
                    t.elapsed().as_secs_f64() * 1e6
                })
            })
            .collect();
        let readers: Vec<_> = readers_of
            .iter()
            .map(|list| {
                s.spawn(move || {
                    b.wait();
                    let mut lat = Vec::with_capacity(list.len());
                    let mut seen = 0usize;
                    for &u in list {
                        let t = Instant::now();
                        seen += store.read(u).len();
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    std::hint::black_box(seen);
                    lat
                })
            })
            .collect();
        let post_us: f64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
        let reads: Vec<f64> = readers
            .into_iter()
            .flat_map(|r| r.join().expect("reader"))
            .collect();
        (post_us, reads)
    });
    let elapsed_ms = t.elapsed().as_secs_f64() * 1e3;
    read_ms.sort_by(f64::total_cmp);
    let posts: u64 = authors.iter().map(|a| a.len() as u64).sum();
    RunStats {
        read_ms_p50: quantile(&read_ms, 0.5),
        read_ms_p99: quantile(&read_ms, 0.99),
        post_us_mean: post_us / posts.max(1) as f64,
        posts,
        writes: store.writes() - writes_before,
        elapsed_ms,
    }
}

/// True if the hybrid read of each of `users` equals the pull merge over
/// the hybrid's own posts.
pub fn hybrid_matches_pull(h: &HybridStore, g: &Graph, users: &[u32], k: usize) -> bool {
    users
        .iter()
        .all(|&u| h.read(u) == pull_feed(&h.log, &g.followees[u as usize], k))
}

/// The experiment with a given workload.
pub fn lesson_with(seed: u64, w: Workload) -> LessonReport {
    let g = generate_graph(seed, w.users, w.min_follows, w.max_follows);
    let preload = post_authors(seed ^ 1, w.users, w.preload_posts);
    let authors: Vec<Vec<u32>> = (0..w.writers)
        .map(|i| post_authors(seed ^ (100 + i as u64), w.users, w.posts_per_writer))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 2);
    let readers_of: Vec<Vec<u32>> = (0..w.readers)
        .map(|_| {
            (0..w.reads_per_reader)
                .map(|_| rng.random_range(0..w.users as u32))
                .collect()
        })
        .collect();

    let pull = PullStore::new(&g, w.k);
    let naive = run_store(&pull, &preload, &authors, &readers_of);
    drop(pull);
    let hybrid = HybridStore::new(&g, w.k, w.celebrity_threshold);
    let opt = run_store(&hybrid, &preload, &authors, &readers_of);
    let sample: Vec<u32> = (0..w.users as u32).step_by(37).collect();
    let matches = hybrid_matches_pull(&hybrid, &g, &sample, w.k);

    let mut fan: Vec<usize> = g.followers.iter().map(Vec::len).collect();
    fan.sort_unstable();
    let max_followers = fan.last().copied().unwrap_or(0);
    let median_followers = fan.get(fan.len() / 2).copied().unwrap_or(0);
    let max_follows = g.followees.iter().map(Vec::len).max().unwrap_or(0);
    let m = |b: bool| if b { 1.0 } else { 0.0 };
    LessonReport::new(NAME, TITLE)
        .both("read_ms_p99", naive.read_ms_p99, opt.read_ms_p99)
        .both("read_ms_p50", naive.read_ms_p50, opt.read_ms_p50)
        .both(
            "writes_per_post",
            naive.writes_per_post(),
            opt.writes_per_post(),
        )
        .both("post_us_mean", naive.post_us_mean, opt.post_us_mean)
        .both("run_ms", naive.elapsed_ms, opt.elapsed_ms)
        .both("timeline_entries", 0.0, hybrid.timeline_entries() as f64)
        .optimal("celebrities", hybrid.celebrities() as f64)
        .optimal("feeds_match", m(matches))
        .notes(format!(
            "{} users, {} follow edges (median {median_followers} followers, the top account {max_followers}; the \
             heaviest reader follows {max_follows}); {} writer threads post {} times while {} reader threads read \
             {} feeds of {}. Pull merges every followee's newest posts per read: p99 {:.3} ms, 1 write per post. \
             Fan-out on write into bounded timelines, pulling only the {} celebrities (over {} followers): p99 \
             {:.3} ms ({:.0}x faster) for {:.0} writes per post and {} timeline entries of memory; the hybrid feed \
             equals the pull merge over the same posts (feeds_match {}). At scale the timelines are a sharded \
             in-memory cache (Twitter's Redis timelines, Instagram on Cassandra) filled by asynchronous fan-out \
             workers from a queue, kept only for active users, and reordered by a ranking service.",
            w.users,
            g.edges(),
            w.writers,
            naive.posts,
            w.readers,
            w.readers * w.reads_per_reader,
            w.k,
            naive.read_ms_p99,
            hybrid.celebrities(),
            w.celebrity_threshold,
            opt.read_ms_p99,
            naive.read_ms_p99 / opt.read_ms_p99.max(1e-9),
            opt.writes_per_post(),
            hybrid.timeline_entries(),
            matches,
        ))
}

/// The full-size experiment.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, WORKLOAD)
}

#[cfg(test)]
mod tests;
