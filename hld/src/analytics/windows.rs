//! The streaming operator: fixed (tumbling, sliding) and session windows
//! in event time, a watermark, allowed lateness, and the result store they
//! write to.

use super::{Click, WindowConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Which window family a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Tumbling,
    Sliding,
    Session,
}

/// A result row: (family, key (page, or user for sessions), window start).
pub type ResultKey = (Kind, u32, u64);

/// Per (key, window start) counts of one family.
pub type Counts = BTreeMap<(u32, u64), u64>;

/// The serving store windows write into: every upsert or delete is one
/// write (the thing the naive pipeline does once per click).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultStore {
    rows: BTreeMap<ResultKey, u64>,
    pub writes: u64,
    /// Writes that changed an already emitted result (late firings).
    pub updates: u64,
    /// Writes that removed a result (sessions merged away).
    pub deletes: u64,
}

impl ResultStore {
    pub fn upsert(&mut self, key: ResultKey, count: u64, update: bool) {
        self.writes += 1;
        if update {
            self.updates += 1;
        }
        self.rows.insert(key, count);
    }

    pub fn delete(&mut self, key: ResultKey) {
        if self.rows.remove(&key).is_some() {
            self.writes += 1;
            self.deletes += 1;
        }
    }

    pub fn get(&self, key: ResultKey) -> Option<u64> {
        self.rows.get(&key).copied()
    }

    /// The rows of one family.
    pub fn counts(&self, kind: Kind) -> Counts {
        self.rows
            .iter()
            .filter(|(k, _)| k.0 == kind)
            .map(|(k, &v)| ((k.1, k.2), v))
            .collect()
    }
}

/// Starts of the windows of length `size` every `hop` that hold `t`
/// (windows start at multiples of `hop`, never before 0).
pub fn window_starts(t: u64, size: u64, hop: u64) -> impl Iterator<Item = u64> {
    let hop = hop.max(1);
    let last = t - t % hop;
    let first = (t + 1).saturating_sub(size.max(1));
    let first = first.div_ceil(hop) * hop;
    (first..=last).step_by(hop as usize)
}

/// Tumbling (`hop == size`) or sliding (`hop < size`) windows per key.
#[derive(Debug, Clone)]
pub struct FixedWindows {
    kind: Kind,
    size: u64,
    hop: u64,
    lateness: u64,
    /// Not yet fired, by (start, key): the oldest end first.
    open: BTreeMap<(u64, u32), u64>,
    /// Fired, kept until the watermark passes end + allowed lateness.
    fired: BTreeMap<(u64, u32), u64>,
}

impl FixedWindows {
    pub fn new(kind: Kind, size: u64, hop: u64, lateness: u64) -> Self {
        Self {
            kind,
            size: size.max(1),
            hop: hop.max(1),
            lateness,
            open: BTreeMap::new(),
            fired: BTreeMap::new(),
        }
    }

    /// Counts one event of `key` at `t`. A window the watermark has already
    /// passed fires again at once with the new count (a late update).
    pub fn add(&mut self, key: u32, t: u64, wm: u64, store: &mut ResultStore) {
        for start in window_starts(t, self.size, self.hop) {
            if start + self.size <= wm {
                let c = self.fired.entry((start, key)).or_insert(0);
                let update = *c > 0;
                *c += 1;
                store.upsert((self.kind, key, start), *c, update);
            } else {
                *self.open.entry((start, key)).or_insert(0) += 1;
            }
        }
    }

    /// Fires every open window that ends at or before `wm` and forgets
    /// fired windows past their allowed lateness.
    pub fn advance(&mut self, wm: u64, store: &mut ResultStore) {
        while let Some(e) = self.open.first_entry() {
            let (start, key) = *e.key();
            if start.saturating_add(self.size) > wm {
                break;
            }
            let c = e.remove();
            store.upsert((self.kind, key, start), c, false);
            self.fired.insert((start, key), c);
        }
        while let Some(e) = self.fired.first_entry() {
            if e.key()
                .0
                .saturating_add(self.size)
                .saturating_add(self.lateness)
                > wm
            {
                break;
            }
            e.remove();
        }
    }

    /// Windows held in memory (open and fired-but-retained).
    pub fn held(&self) -> usize {
        self.open.len() + self.fired.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    end: u64,
    count: u64,
    fired: bool,
}

/// Session windows per key: each event opens `[t, t + gap)`, and
/// overlapping windows of the same key merge.
#[derive(Debug, Clone)]
pub struct SessionWindows {
    gap: u64,
    lateness: u64,
    by_key: HashMap<u32, BTreeMap<u64, Session>>,
    /// Unfired sessions by (end, key, start).
    pending: BTreeSet<(u64, u32, u64)>,
    /// Fired sessions by (end, key, start), kept for allowed lateness.
    retained: BTreeSet<(u64, u32, u64)>,
}

impl SessionWindows {
    pub fn new(gap: u64, lateness: u64) -> Self {
        Self {
            gap: gap.max(1),
            lateness,
            by_key: HashMap::new(),
            pending: BTreeSet::new(),
            retained: BTreeSet::new(),
        }
    }

    /// Adds an event of `key` at `t`, merging every session it overlaps.
    /// A merged session the watermark has passed fires at once (an update
    /// if any part had fired); results of sessions merged away are deleted,
    /// so the store only ever holds the results of fired sessions.
    pub fn add(&mut self, key: u32, t: u64, wm: u64, store: &mut ResultStore) {
        let sessions = self.by_key.entry(key).or_default();
        let (mut start, mut end, mut count) = (t, t + self.gap, 1u64);
        let mut any_fired = false;
        let mut old_fired = Vec::new();
        // Sessions of a key are disjoint, so sorted by start they are sorted
        // by end too: walk back from the last one starting before t + gap
        // while they still reach past t.
        let overlapping: Vec<u64> = sessions
            .range(..t + self.gap)
            .rev()
            .take_while(|(_, s)| s.end > t)
            .map(|(&st, _)| st)
            .collect();
        for st in overlapping {
            let s = sessions.remove(&st).unwrap_or(Session {
                end: st,
                count: 0,
                fired: false,
            });
            if s.fired {
                self.retained.remove(&(s.end, key, st));
                any_fired = true;
                old_fired.push(st);
            } else {
                self.pending.remove(&(s.end, key, st));
            }
            start = start.min(st);
            end = end.max(s.end);
            count += s.count;
        }
        // Results of merged-away sessions are retracted; so is the result
        // under the same start if the merged session reaches past the
        // watermark (it is pending again and fires later).
        let fired = end <= wm;
        for st in old_fired {
            if st != start || !fired {
                store.delete((Kind::Session, key, st));
            }
        }
        if fired {
            store.upsert((Kind::Session, key, start), count, any_fired);
            self.retained.insert((end, key, start));
        } else {
            self.pending.insert((end, key, start));
        }
        sessions.insert(start, Session { end, count, fired });
    }

    /// Fires sessions that end at or before `wm`; forgets fired sessions
    /// past their allowed lateness.
    pub fn advance(&mut self, wm: u64, store: &mut ResultStore) {
        while let Some(&(end, key, start)) = self.pending.first() {
            if end > wm {
                break;
            }
            self.pending.pop_first();
            if let Some(s) = self.by_key.get_mut(&key).and_then(|m| m.get_mut(&start)) {
                s.fired = true;
                store.upsert((Kind::Session, key, start), s.count, false);
            }
            self.retained.insert((end, key, start));
        }
        while let Some(&(end, key, start)) = self.retained.first() {
            if end.saturating_add(self.lateness) > wm {
                break;
            }
            self.retained.pop_first();
            if let Some(m) = self.by_key.get_mut(&key) {
                m.remove(&start);
                if m.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    /// Sessions held in memory.
    pub fn held(&self) -> usize {
        self.pending.len() + self.retained.len()
    }
}

/// The windowed operator: tumbling and sliding counts per page, sessions
/// per user, one event-time watermark (`max event time - bound`), and one
/// lateness rule for all three: an event more than the allowed lateness
/// behind the watermark is dropped (every window holding it is then past
/// its allowed lateness too); one behind the watermark but within it
/// updates results already written.
#[derive(Debug, Clone)]
pub struct WindowOperator {
    cfg: WindowConfig,
    max_ts: Option<u64>,
    watermark: u64,
    pub tumbling: FixedWindows,
    pub sliding: FixedWindows,
    pub sessions: SessionWindows,
    pub store: ResultStore,
    /// Ids of the dropped events.
    pub dropped: Vec<u64>,
    /// Events that arrived behind the watermark but within the lateness.
    pub late_accepted: u64,
}

impl WindowOperator {
    pub fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            max_ts: None,
            watermark: 0,
            tumbling: FixedWindows::new(
                Kind::Tumbling,
                cfg.tumble_ms,
                cfg.tumble_ms,
                cfg.allowed_lateness_ms,
            ),
            sliding: FixedWindows::new(
                Kind::Sliding,
                cfg.slide_size_ms,
                cfg.slide_hop_ms,
                cfg.allowed_lateness_ms,
            ),
            sessions: SessionWindows::new(cfg.session_gap_ms, cfg.allowed_lateness_ms),
            store: ResultStore::default(),
            dropped: Vec::new(),
            late_accepted: 0,
        }
    }

    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Processes one event, then moves the watermark if it is the newest.
    pub fn process(&mut self, c: &Click) {
        let wm = self.watermark;
        if c.event_ms.saturating_add(self.cfg.allowed_lateness_ms) < wm {
            self.dropped.push(c.id);
            return;
        }
        if c.event_ms < wm {
            self.late_accepted += 1;
        }
        self.tumbling.add(c.page, c.event_ms, wm, &mut self.store);
        self.sliding.add(c.page, c.event_ms, wm, &mut self.store);
        self.sessions.add(c.user, c.event_ms, wm, &mut self.store);
        if self.max_ts.is_none_or(|m| c.event_ms > m) {
            self.max_ts = Some(c.event_ms);
            let wm = c.event_ms.saturating_sub(self.cfg.out_of_order_ms);
            self.advance_to(wm);
        }
    }

    fn advance_to(&mut self, wm: u64) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        self.tumbling.advance(wm, &mut self.store);
        self.sliding.advance(wm, &mut self.store);
        self.sessions.advance(wm, &mut self.store);
    }

    /// End of stream: the watermark jumps to infinity and every window
    /// fires.
    pub fn finish(&mut self) {
        self.advance_to(u64::MAX);
    }

    /// Windows and sessions held in memory.
    pub fn held(&self) -> usize {
        self.tumbling.held() + self.sliding.held() + self.sessions.held()
    }
}

/// Batch reference: counts per (key, window start) of fixed windows.
pub fn batch_fixed(events: &[Click], size: u64, hop: u64) -> Counts {
    let mut out = Counts::new();
    for c in events {
        for s in window_starts(c.event_ms, size, hop) {
            *out.entry((c.page, s)).or_insert(0) += 1;
        }
    }
    out
}

/// Batch reference: sessions per user (a new session when the next click
/// is `gap` or more after the previous one), counted by (user, start).
pub fn batch_sessions(events: &[Click], gap: u64) -> Counts {
    let mut by_user: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for c in events {
        by_user.entry(c.user).or_default().push(c.event_ms);
    }
    let mut out = Counts::new();
    for (user, mut ts) in by_user {
        ts.sort_unstable();
        let mut start = ts[0];
        let mut prev = ts[0];
        let mut n = 0;
        for t in ts {
            if t >= prev + gap {
                out.insert((user, start), n);
                start = t;
                n = 0;
            }
            n += 1;
            prev = t;
        }
        out.insert((user, start), n);
    }
    out
}
