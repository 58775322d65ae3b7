//! The two feed stores: pull (merge on read) and the hybrid (fan-out on
//! write into bounded timelines, pull for celebrities).

use super::Graph;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `k` newest ids of several ascending lists, newest first: a k-way
/// merge with a max-heap over the lists' tails.
pub fn merge_newest(lists: &[Vec<u64>], k: usize) -> Vec<u64> {
    let mut heap: BinaryHeap<(u64, usize, usize)> = lists
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.last().map(|&id| (id, i, l.len() - 1)))
        .collect();
    let mut out = Vec::with_capacity(k);
    while out.len() < k {
        let Some((id, i, pos)) = heap.pop() else {
            break;
        };
        out.push(id);
        if pos > 0 {
            heap.push((lists[i][pos - 1], i, pos - 1));
        }
    }
    out
}

/// Every author's posts (ids ascending), each behind its own lock: the
/// "posts table" both designs write to.
#[derive(Debug)]
pub struct PostLog {
    posts: Vec<RwLock<Vec<u64>>>,
    next_id: AtomicU64,
}

impl PostLog {
    pub fn new(users: usize) -> Self {
        Self {
            posts: (0..users).map(|_| RwLock::new(Vec::new())).collect(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Appends a post by `author`; the id is taken under the author's lock,
    /// so each author's list stays sorted.
    pub fn append(&self, author: u32) -> u64 {
        let mut p = self.posts[author as usize]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        p.push(id);
        id
    }

    /// The newest `k` posts of `author`, ascending (one "query").
    pub fn latest(&self, author: u32, k: usize) -> Vec<u64> {
        let p = self.posts[author as usize]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        p[p.len().saturating_sub(k)..].to_vec()
    }

    pub fn total(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }
}

/// The pull feed of `user` over `log`: the newest `k` posts of everyone it
/// follows, merged at read time.
pub fn pull_feed(log: &PostLog, followees: &[u32], k: usize) -> Vec<u64> {
    let lists: Vec<Vec<u64>> = followees.iter().map(|&f| log.latest(f, k)).collect();
    merge_newest(&lists, k)
}

/// How a feed store is used by the lesson's threads.
pub trait FeedStore: Sync {
    /// Publishes a post by `author`; returns its id.
    fn post(&self, author: u32) -> u64;
    /// The newest `k` posts `user` should see, newest first.
    fn read(&self, user: u32) -> Vec<u64>;
    /// Storage writes so far (post rows plus timeline inserts).
    fn writes(&self) -> u64;
}

/// Naive: posts are written once; a read merges every followee's posts.
#[derive(Debug)]
pub struct PullStore<'g> {
    graph: &'g Graph,
    pub log: PostLog,
    k: usize,
    writes: AtomicU64,
}

impl<'g> PullStore<'g> {
    pub fn new(graph: &'g Graph, k: usize) -> Self {
        Self {
            graph,
            log: PostLog::new(graph.users()),
            k,
            writes: AtomicU64::new(0),
        }
    }
}

impl FeedStore for PullStore<'_> {
    fn post(&self, author: u32) -> u64 {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.log.append(author)
    }

    fn read(&self, user: u32) -> Vec<u64> {
        pull_feed(&self.log, &self.graph.followees[user as usize], self.k)
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// Inserts `id` into an ascending timeline bounded to `k` entries (ids from
/// concurrent writers can arrive slightly out of order).
pub fn timeline_insert(t: &mut VecDeque<u64>, id: u64, k: usize) {
    if t.len() >= k && t.front().is_some_and(|&f| id < f) {
        return;
    }
    let at = t.partition_point(|&x| x < id);
    t.insert(at, id);
    while t.len() > k {
        t.pop_front();
    }
}

/// Optimal: fan-out on write into every follower's bounded timeline,
/// except for celebrities (more than `threshold` followers), whose posts
/// are pulled and merged at read time.
#[derive(Debug)]
pub struct HybridStore<'g> {
    graph: &'g Graph,
    pub log: PostLog,
    k: usize,
    celebrity: Vec<bool>,
    /// Per user, the celebrities it follows.
    celeb_followees: Vec<Vec<u32>>,
    /// Per user, the newest `k` post ids of the non-celebrities it follows.
    timelines: Vec<Mutex<VecDeque<u64>>>,
    writes: AtomicU64,
}

impl<'g> HybridStore<'g> {
    pub fn new(graph: &'g Graph, k: usize, threshold: usize) -> Self {
        let celebrity: Vec<bool> = graph
            .followers
            .iter()
            .map(|f| f.len() > threshold)
            .collect();
        let celeb_followees = graph
            .followees
            .iter()
            .map(|fs| {
                fs.iter()
                    .copied()
                    .filter(|&f| celebrity[f as usize])
                    .collect()
            })
            .collect();
        Self {
            graph,
            log: PostLog::new(graph.users()),
            k,
            celebrity,
            celeb_followees,
            timelines: (0..graph.users())
                .map(|_| Mutex::new(VecDeque::with_capacity(k + 1)))
                .collect(),
            writes: AtomicU64::new(0),
        }
    }

    pub fn is_celebrity(&self, user: u32) -> bool {
        self.celebrity[user as usize]
    }

    pub fn celebrities(&self) -> usize {
        self.celebrity.iter().filter(|&&c| c).count()
    }

    /// Timeline entries held (the memory fan-out costs).
    pub fn timeline_entries(&self) -> usize {
        self.timelines.iter().map(|t| lock(t).len()).sum()
    }
}

impl FeedStore for HybridStore<'_> {
    fn post(&self, author: u32) -> u64 {
        let id = self.log.append(author);
        let mut writes = 1;
        if !self.celebrity[author as usize] {
            for &f in &self.graph.followers[author as usize] {
                timeline_insert(&mut lock(&self.timelines[f as usize]), id, self.k);
                writes += 1;
            }
        }
        self.writes.fetch_add(writes, Ordering::Relaxed);
        id
    }

    fn read(&self, user: u32) -> Vec<u64> {
        let celebs = &self.celeb_followees[user as usize];
        let mut lists = Vec::with_capacity(celebs.len() + 1);
        lists.push(Vec::from(lock(&self.timelines[user as usize]).clone()));
        lists.extend(celebs.iter().map(|&c| self.log.latest(c, self.k)));
        merge_newest(&lists, self.k)
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}
