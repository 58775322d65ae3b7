//! The optimal broker: one append-only log per topic, subscribers as
//! committed cursors.

use super::{lock, PubSubError};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A message read from a [`TopicLog`]: its offset and its (shared) bytes.
pub type Delivery = (u64, Arc<[u8]>);

#[derive(Debug, Default)]
struct LogState {
    /// Offset of `entries[0]`.
    start: u64,
    entries: VecDeque<Arc<[u8]>>,
    bytes: u64,
    appended_bytes: u64,
    cursors: BTreeMap<String, u64>,
}

impl LogState {
    fn end(&self) -> u64 {
        self.start + self.entries.len() as u64
    }
}

/// One topic: an append-only log of messages plus the committed cursor of
/// each named subscriber.
#[derive(Debug, Default)]
pub struct TopicLog {
    state: Mutex<LogState>,
    appended: Condvar,
}

impl TopicLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends every message of `batch` once. Returns the offset of the
    /// first one (the end offset if `batch` is empty).
    pub fn append_batch(&self, batch: &[Vec<u8>]) -> u64 {
        let mut st = lock(&self.state);
        let first = st.end();
        for m in batch {
            st.bytes += m.len() as u64;
            st.appended_bytes += m.len() as u64;
            st.entries.push_back(Arc::from(m.as_slice()));
        }
        drop(st);
        self.appended.notify_all();
        first
    }

    /// Up to `max` messages from offset `from`, each with its offset. Empty
    /// at the end of the log.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Delivery>, PubSubError> {
        let st = lock(&self.state);
        Self::read_locked(&st, from, max)
    }

    fn read_locked(st: &LogState, from: u64, max: usize) -> Result<Vec<Delivery>, PubSubError> {
        if from < st.start {
            return Err(PubSubError::Trimmed {
                offset: from,
                start: st.start,
            });
        }
        if from > st.end() {
            return Err(PubSubError::PastEnd {
                offset: from,
                end: st.end(),
            });
        }
        let i = (from - st.start) as usize;
        Ok(st
            .entries
            .iter()
            .skip(i)
            .take(max)
            .enumerate()
            .map(|(k, m)| (from + k as u64, Arc::clone(m)))
            .collect())
    }

    /// Like [`read`](Self::read), but waits up to `timeout` for a message at
    /// `from` if there is none yet.
    pub fn read_wait(
        &self,
        from: u64,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, PubSubError> {
        let mut st = lock(&self.state);
        if st.end() <= from && !timeout.is_zero() {
            st = match self.appended.wait_timeout(st, timeout) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        Self::read_locked(&st, from, max)
    }

    /// Stores `next_offset` (the offset of the next message to read) as
    /// `subscriber`'s cursor.
    pub fn commit(&self, subscriber: &str, next_offset: u64) {
        lock(&self.state)
            .cursors
            .insert(subscriber.to_string(), next_offset);
    }

    /// `subscriber`'s committed cursor, if it ever committed.
    pub fn committed(&self, subscriber: &str) -> Option<u64> {
        lock(&self.state).cursors.get(subscriber).copied()
    }

    /// Connects `subscriber`: it resumes at its committed cursor, or at the
    /// oldest retained message the first time (and if its cursor was
    /// trimmed away).
    pub fn subscribe(&self, subscriber: &str) -> LogSubscription<'_> {
        let st = lock(&self.state);
        let cursor = st
            .cursors
            .get(subscriber)
            .copied()
            .unwrap_or(st.start)
            .max(st.start);
        LogSubscription {
            log: self,
            name: subscriber.to_string(),
            cursor,
        }
    }

    /// Offset of the oldest retained message.
    pub fn start_offset(&self) -> u64 {
        lock(&self.state).start
    }

    /// Offset the next appended message will get.
    pub fn end_offset(&self) -> u64 {
        lock(&self.state).end()
    }

    /// Payload bytes retained.
    pub fn bytes(&self) -> u64 {
        lock(&self.state).bytes
    }

    /// Payload bytes ever appended (each message once).
    pub fn appended_bytes(&self) -> u64 {
        lock(&self.state).appended_bytes
    }

    /// Drops the prefix of the log that every committed cursor has passed.
    /// Returns how many messages were dropped. With no cursor nothing is
    /// dropped.
    pub fn trim_consumed(&self) -> u64 {
        let mut st = lock(&self.state);
        let Some(&min) = st.cursors.values().min() else {
            return 0;
        };
        let mut dropped = 0;
        while st.start < min {
            match st.entries.pop_front() {
                Some(m) => {
                    st.bytes -= m.len() as u64;
                    st.start += 1;
                    dropped += 1;
                }
                None => break,
            }
        }
        dropped
    }
}

/// A connected subscriber of a [`TopicLog`]: a name and a cursor.
#[derive(Debug)]
pub struct LogSubscription<'a> {
    log: &'a TopicLog,
    name: String,
    cursor: u64,
}

impl LogSubscription<'_> {
    /// Up to `max` messages from the cursor (waiting up to `timeout` for
    /// one), and moves the cursor past them. Call [`commit`](Self::commit)
    /// once they are processed.
    pub fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PubSubError> {
        let got = self.log.read_wait(self.cursor, max, timeout)?;
        if let Some((last, _)) = got.last() {
            self.cursor = last + 1;
        }
        Ok(got)
    }

    /// Stores the cursor in the broker, so a later connection resumes here.
    pub fn commit(&self) {
        self.log.commit(&self.name, self.cursor);
    }

    /// The offset of the next message this subscriber will read.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }
}
