//! The rank skip list: levels of forward links with spans, in a `Vec`
//! arena.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::PlayerId;

const MAX_LEVEL: usize = 32;
const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// Leaderboard order of two `(score, player)` keys: `Less` ranks first.
pub fn rank_order(a: (i64, PlayerId), b: (i64, PlayerId)) -> Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

#[derive(Debug, Clone, Copy)]
struct Link {
    next: u32,
    /// Level-0 entries from this node to `next` (to the end when `next` is
    /// NIL).
    span: u32,
    /// The key of `next`, cached so that deciding whether to move right
    /// never has to load the next node (one cache miss fewer per step).
    key: (i64, PlayerId),
}

const NIL_LINK: Link = Link {
    next: NIL,
    span: 0,
    key: (0, 0),
};

/// Links of the two lowest levels live inside the node (15 in 16 nodes
/// have no more), higher ones in `hi`.
#[derive(Debug, Clone)]
struct SkNode {
    key: (i64, PlayerId),
    lo: [Link; 2],
    hi: Box<[Link]>,
}

impl SkNode {
    fn new(key: (i64, PlayerId), level: usize) -> Self {
        Self {
            key,
            lo: [NIL_LINK; 2],
            hi: vec![NIL_LINK; level.saturating_sub(2)].into_boxed_slice(),
        }
    }
}

/// A skip list of `(score, player)` keys in leaderboard order, with spans
/// for rank queries.
#[derive(Debug, Clone)]
pub struct RankSkipList {
    nodes: Vec<SkNode>,
    free: Vec<u32>,
    level: usize,
    len: usize,
    rng: u64,
}

impl Default for RankSkipList {
    fn default() -> Self {
        Self::new(0x5eed)
    }
}

impl RankSkipList {
    /// An empty list; `seed` drives the level coin flips.
    pub fn new(seed: u64) -> Self {
        Self {
            nodes: vec![SkNode::new((0, 0), MAX_LEVEL)],
            free: Vec::new(),
            level: 1,
            len: 0,
            rng: seed | 1,
        }
    }

    fn link(&self, n: u32, i: usize) -> Link {
        let n = &self.nodes[n as usize];
        if i < 2 {
            n.lo[i]
        } else {
            n.hi[i - 2]
        }
    }

    fn link_mut(&mut self, n: u32, i: usize) -> &mut Link {
        let n = &mut self.nodes[n as usize];
        if i < 2 {
            &mut n.lo[i]
        } else {
            &mut n.hi[i - 2]
        }
    }

    /// Builds from keys in `O(n log n)` (the sort) plus `O(n)` linking:
    /// every node is appended at the tail of each of its levels. Duplicate
    /// keys are kept once.
    pub fn from_keys(mut keys: Vec<(i64, PlayerId)>, seed: u64) -> Self {
        keys.sort_unstable_by(|&a, &b| rank_order(a, b));
        keys.dedup();
        let mut s = Self::new(seed);
        s.nodes.reserve(keys.len());
        let mut last = [HEAD; MAX_LEVEL];
        let mut last_rank = [0u32; MAX_LEVEL];
        for (r, key) in keys.into_iter().enumerate() {
            let r = r as u32 + 1;
            let lvl = s.random_level();
            let id = s.nodes.len() as u32;
            s.nodes.push(SkNode::new(key, lvl));
            for i in 0..lvl {
                *s.link_mut(last[i], i) = Link {
                    next: id,
                    span: r - last_rank[i],
                    key,
                };
                last[i] = id;
                last_rank[i] = r;
            }
            s.level = s.level.max(lvl);
            s.len += 1;
        }
        let len = s.len as u32;
        for i in 0..MAX_LEVEL {
            *s.link_mut(last[i], i) = Link {
                span: len - last_rank[i],
                ..NIL_LINK
            };
        }
        s
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of levels in use (about `log4 n`).
    pub fn height(&self) -> usize {
        self.level
    }

    /// Arena slots, including the head and freed slots awaiting reuse.
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// 1 + the number of heads in a row of 1/4-coins (capped).
    fn random_level(&mut self) -> usize {
        let mut lvl = 1;
        loop {
            // xorshift64*
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let mut bits = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
            // 32 two-bit coins per draw; "00" (probability 1/4) = one more.
            for _ in 0..32 {
                if bits & 3 != 0 || lvl == MAX_LEVEL {
                    return lvl;
                }
                lvl += 1;
                bits >>= 2;
            }
        }
    }

    /// Per level, the last node whose key sorts before `key`, and that
    /// node's rank.
    fn find_update(&self, key: (i64, PlayerId)) -> ([u32; MAX_LEVEL], [u32; MAX_LEVEL]) {
        let mut update = [HEAD; MAX_LEVEL];
        let mut rank = [0u32; MAX_LEVEL];
        let mut x = HEAD;
        for i in (0..self.level).rev() {
            rank[i] = if i + 1 == self.level { 0 } else { rank[i + 1] };
            loop {
                let l = self.link(x, i);
                if l.next != NIL && rank_order(l.key, key) == Ordering::Less {
                    rank[i] += l.span;
                    x = l.next;
                } else {
                    break;
                }
            }
            update[i] = x;
        }
        (update, rank)
    }

    /// Inserts a key: `O(log n)` expected. `false` if it was already there.
    pub fn insert(&mut self, score: i64, player: PlayerId) -> bool {
        let key = (score, player);
        let (mut update, mut rank) = self.find_update(key);
        let l0 = self.link(update[0], 0);
        if l0.next != NIL && l0.key == key {
            return false;
        }
        let lvl = self.random_level();
        if lvl > self.level {
            for i in self.level..lvl {
                rank[i] = 0;
                update[i] = HEAD;
                *self.link_mut(HEAD, i) = Link {
                    span: self.len as u32,
                    ..NIL_LINK
                };
            }
            self.level = lvl;
        }
        let node = SkNode::new(key, lvl);
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        for i in 0..lvl {
            let before = self.link(update[i], i);
            let gap = rank[0] - rank[i];
            *self.link_mut(id, i) = Link {
                span: before.span - gap,
                ..before
            };
            *self.link_mut(update[i], i) = Link {
                next: id,
                span: gap + 1,
                key,
            };
        }
        for (i, &u) in update.iter().enumerate().take(self.level).skip(lvl) {
            self.link_mut(u, i).span += 1;
        }
        self.len += 1;
        true
    }

    /// Removes a key: `O(log n)` expected. `false` if it was absent.
    pub fn remove(&mut self, score: i64, player: PlayerId) -> bool {
        let key = (score, player);
        let (update, _) = self.find_update(key);
        let x = self.link(update[0], 0);
        if x.next == NIL || x.key != key {
            return false;
        }
        let x = x.next;
        for (i, &u) in update.iter().enumerate().take(self.level) {
            let ul = self.link(u, i);
            if ul.next == x {
                let xl = self.link(x, i);
                *self.link_mut(u, i) = Link {
                    span: ul.span + xl.span - 1,
                    ..xl
                };
            } else {
                self.link_mut(u, i).span -= 1;
            }
        }
        while self.level > 1 && self.link(HEAD, self.level - 1).next == NIL {
            self.level -= 1;
        }
        self.nodes[x as usize].hi = Box::new([]);
        self.free.push(x);
        self.len -= 1;
        true
    }

    /// The 1-based rank of a key, summing the spans crossed: `O(log n)`.
    pub fn rank(&self, score: i64, player: PlayerId) -> Option<usize> {
        let key = (score, player);
        let mut x = HEAD;
        let mut rank = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.link(x, i);
                if l.next == NIL {
                    break;
                }
                match rank_order(l.key, key) {
                    Ordering::Less => {
                        rank += l.span as usize;
                        x = l.next;
                    }
                    Ordering::Equal => return Some(rank + l.span as usize),
                    Ordering::Greater => break,
                }
            }
        }
        None
    }

    /// The node at a 1-based rank, following spans down: `O(log n)`.
    fn node_at(&self, rank: usize) -> Option<u32> {
        if rank == 0 || rank > self.len {
            return None;
        }
        let mut x = HEAD;
        let mut walked = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let l = self.link(x, i);
                if l.next != NIL && walked + l.span as usize <= rank {
                    walked += l.span as usize;
                    x = l.next;
                } else {
                    break;
                }
            }
            if walked == rank {
                return Some(x);
            }
        }
        None
    }

    /// `(score, player)` at a 1-based rank.
    pub fn at_rank(&self, rank: usize) -> Option<(i64, PlayerId)> {
        self.node_at(rank).map(|n| self.nodes[n as usize].key)
    }

    /// Up to `count` keys from a 1-based rank on: `O(log n + count)`.
    pub fn range(&self, from_rank: usize, count: usize) -> Vec<(i64, PlayerId)> {
        let mut out = Vec::with_capacity(count.min(self.len));
        let Some(mut x) = self.node_at(from_rank) else {
            return out;
        };
        if count > 0 {
            out.push(self.nodes[x as usize].key);
        }
        // Level 0's cached keys: the walk never loads the nodes it lists.
        while out.len() < count {
            let l = self.link(x, 0);
            if l.next == NIL {
                break;
            }
            out.push(l.key);
            x = l.next;
        }
        out
    }

    /// Every key in order (level 0).
    pub fn iter(&self) -> impl Iterator<Item = (i64, PlayerId)> + '_ {
        let mut x = HEAD;
        std::iter::from_fn(move || {
            let l = self.link(x, 0);
            (l.next != NIL).then(|| {
                x = l.next;
                l.key
            })
        })
    }

    /// Checks the structure: every level sorted, every span equal to the
    /// rank difference it jumps, every cached key equal to its target's,
    /// the length right. For tests.
    pub fn is_consistent(&self) -> bool {
        let mut rank_of = HashMap::new();
        let mut x = self.link(HEAD, 0).next;
        let mut r = 0u32;
        let mut prev: Option<(i64, PlayerId)> = None;
        while x != NIL {
            r += 1;
            let key = self.nodes[x as usize].key;
            if prev.is_some_and(|p| rank_order(p, key) != Ordering::Less) {
                return false;
            }
            prev = Some(key);
            rank_of.insert(x, r);
            x = self.link(x, 0).next;
        }
        if r as usize != self.len {
            return false;
        }
        for i in 0..self.level {
            let (mut x, mut rx) = (HEAD, 0u32);
            loop {
                let l = self.link(x, i);
                let rn = if l.next == NIL {
                    self.len as u32
                } else {
                    match rank_of.get(&l.next) {
                        Some(&rn) if self.nodes[l.next as usize].key == l.key => rn,
                        _ => return false,
                    }
                };
                if l.span != rn - rx {
                    return false;
                }
                if l.next == NIL {
                    break;
                }
                (x, rx) = (l.next, rn);
            }
        }
        true
    }
}
