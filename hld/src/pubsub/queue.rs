//! The naive broker: a queue per connected subscriber, each published
//! message copied into every queue.

use super::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One subscriber's queue in the naive broker.
#[derive(Debug, Default)]
struct Mailbox {
    queue: Mutex<VecDeque<Vec<u8>>>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    next_id: u64,
    queues: HashMap<u64, Arc<Mailbox>>,
    copies: u64,
    bytes_copied: u64,
}

/// The naive broker: a queue per connected subscriber; every published
/// message is copied into each of them.
#[derive(Debug, Default)]
pub struct QueueBroker {
    state: Mutex<QueueState>,
}

impl QueueBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects a subscriber: a fresh, empty queue that receives what is
    /// published from now on. Dropping the subscription disconnects it and
    /// throws its queue away.
    pub fn subscribe(&self) -> QueueSubscription<'_> {
        let mut st = lock(&self.state);
        let id = st.next_id;
        st.next_id += 1;
        let mailbox = Arc::new(Mailbox::default());
        st.queues.insert(id, Arc::clone(&mailbox));
        QueueSubscription {
            broker: self,
            id,
            mailbox,
        }
    }

    /// Copies every message of `batch` into every connected subscriber's
    /// queue. Returns the number of copies made.
    pub fn publish_batch(&self, batch: &[Vec<u8>]) -> u64 {
        let mut st = lock(&self.state);
        let mut copies = 0u64;
        let mut bytes = 0u64;
        for mailbox in st.queues.values() {
            let mut q = lock(&mailbox.queue);
            for m in batch {
                q.push_back(m.clone());
                copies += 1;
                bytes += m.len() as u64;
            }
            drop(q);
            mailbox.ready.notify_one();
        }
        st.copies += copies;
        st.bytes_copied += bytes;
        copies
    }

    /// Connected subscribers.
    pub fn subscribers(&self) -> usize {
        lock(&self.state).queues.len()
    }

    /// Message copies made so far.
    pub fn copies(&self) -> u64 {
        lock(&self.state).copies
    }

    /// Payload bytes copied into queues so far.
    pub fn bytes_copied(&self) -> u64 {
        lock(&self.state).bytes_copied
    }
}

/// A connection to a [`QueueBroker`].
#[derive(Debug)]
pub struct QueueSubscription<'a> {
    broker: &'a QueueBroker,
    id: u64,
    mailbox: Arc<Mailbox>,
}

impl QueueSubscription<'_> {
    /// Takes up to `max` messages, waiting up to `timeout` for the first.
    pub fn poll(&self, max: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let mut q = lock(&self.mailbox.queue);
        if q.is_empty() && !timeout.is_zero() {
            q = match self.mailbox.ready.wait_timeout(q, timeout) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Messages waiting in this subscriber's queue.
    pub fn pending(&self) -> usize {
        lock(&self.mailbox.queue).len()
    }
}

impl Drop for QueueSubscription<'_> {
    fn drop(&mut self) {
        lock(&self.broker.state).queues.remove(&self.id);
    }
}
