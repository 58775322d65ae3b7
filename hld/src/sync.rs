//! The locks the shared (multi-request) pieces use, swappable for shuttle's.
//!
//! Normally these are `std::sync`'s. With the `shuttle` cargo feature they
//! are `shuttle::sync`'s, so `tests/shuttle.rs` can run the idempotency store
//! and the tower layers' shared state under shuttle's scheduler, which
//! explores many thread interleavings deterministically. Shuttle's types
//! only work inside a shuttle test, so with the feature on only that test
//! binary is meaningful (the lesson tests use these locks too).
//!
//! Only the pieces whose races matter go through here: the generic
//! [`IdempotencyStore`](crate::payments::IdempotencyStore) and the state the
//! layers in [`crate::layers`] share between cloned services.

#[cfg(feature = "shuttle")]
pub use shuttle::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(feature = "shuttle"))]
pub use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: every critical section here leaves the
/// data consistent even if a caller panicked while holding the lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
