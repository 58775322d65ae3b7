//! Tests of the semaphore-backpressure lesson.

use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn zero_capacity_is_an_error() {
    assert!(matches!(
        BoundedQueue::<u8>::new(0),
        Err(QueueError::ZeroCapacity)
    ));
    let load = Overload {
        items: 1,
        arrival_gap: Duration::from_micros(1),
        service_time: Duration::from_micros(1),
        payload: 1,
    };
    assert_eq!(
        run_pipe(Pipe::Semaphore(0), load, 1),
        Err(QueueError::ZeroCapacity)
    );
}

#[test]
fn bounded_queue_blocks_when_full_and_closes() {
    let q = BoundedQueue::new(2).unwrap();
    q.push(1).unwrap();
    q.push(2).unwrap();
    assert_eq!(q.try_push(3), Err(3), "full");
    assert_eq!(q.len(), 2);
    std::thread::scope(|s| {
        let h = s.spawn(|| q.push(3));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(q.len(), 2, "the pusher is still waiting");
        assert_eq!(q.pop(), Some(1));
        assert_eq!(h.join().unwrap(), Ok(()));
    });
    assert_eq!(q.max_len(), 2);
    q.close();
    assert_eq!(q.push(9), Err(QueueError::Closed));
    assert_eq!(q.pop(), Some(2));
    assert_eq!(q.pop(), Some(3));
    assert_eq!(q.pop(), None);
    assert!(q.is_empty());
    assert_eq!(q.capacity(), 2);
}

#[test]
fn close_wakes_a_blocked_pusher() {
    let q = BoundedQueue::new(1).unwrap();
    q.push(0).unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| q.push(1));
        std::thread::sleep(Duration::from_millis(10));
        q.close();
        assert_eq!(h.join().unwrap(), Err(QueueError::Closed));
    });
}

#[test]
fn unbounded_queue_is_fifo() {
    let q = UnboundedQueue::new();
    assert!(q.is_empty());
    for i in 0..100 {
        q.push(i).unwrap();
    }
    assert_eq!(q.max_len(), 100);
    q.close();
    assert_eq!(q.push(1), Err(QueueError::Closed));
    let got: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn semaphore_permits() {
    let s = Semaphore::new(2);
    let a = s.acquire();
    let b = s.try_acquire();
    assert!(b.is_some());
    assert!(s.try_acquire().is_none());
    assert!(s.acquire_timeout(Duration::from_millis(5)).is_none());
    drop(a);
    assert_eq!(s.available(), 1);
    assert!(s.acquire_timeout(Duration::from_millis(5)).is_some());
    drop(b);
    assert_eq!(s.available(), 2);
}

/// Runs `threads` workers that each enter a critical section `rounds`
/// times through `enter`, and returns the most that were inside at once.
fn max_concurrency(threads: usize, rounds: usize, enter: impl Fn(&dyn Fn()) + Sync) -> usize {
    let inside = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..rounds {
                    enter(&|| {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }
    });
    max.load(Ordering::SeqCst)
}

#[test]
fn semaphore_limits_concurrency_like_tokio() {
    let mine = Semaphore::new(3);
    let m = max_concurrency(8, 300, |f| {
        let _p = mine.acquire();
        f();
    });
    let theirs = Arc::new(tokio::sync::Semaphore::new(3));
    let t = max_concurrency(8, 300, |f| loop {
        // tokio's semaphore from plain threads: try_acquire in a loop.
        if let Ok(_p) = theirs.try_acquire() {
            f();
            break;
        }
        std::thread::yield_now();
    });
    assert!(m <= 3 && t <= 3, "mine {m}, tokio {t}");
    assert!(m >= 2, "8 threads should overlap: {m}");
    assert_eq!(mine.available(), 3);
    assert_eq!(theirs.available_permits(), 3);
}

#[test]
fn bounded_queue_delivers_like_sync_channel() {
    // Same items, same order, as std's bounded channel, with a producer
    // far faster than the consumer.
    let items: Vec<u32> = (0..2000).map(|i| i * 7 % 1001).collect();
    let q = BoundedQueue::new(4).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let (mine, theirs) = std::thread::scope(|s| {
        s.spawn(|| {
            for &i in &items {
                q.push(i).unwrap();
                tx.send(i).unwrap();
            }
            q.close();
            drop(tx);
        });
        let mine = s.spawn(|| std::iter::from_fn(|| q.pop()).collect::<Vec<_>>());
        let theirs: Vec<u32> = rx.iter().collect();
        (mine.join().unwrap(), theirs)
    });
    assert_eq!(mine, items);
    assert_eq!(theirs, items);
    assert!(q.max_len() <= 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn bounded_queue_never_exceeds_capacity(cap in 1usize..8, n in 0usize..300) {
        let q = BoundedQueue::new(cap).unwrap();
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..n {
                    q.push(i).unwrap();
                }
                q.close();
            });
            std::iter::from_fn(|| q.pop()).collect::<Vec<_>>()
        });
        prop_assert_eq!(got, (0..n).collect::<Vec<_>>());
        prop_assert!(q.max_len() <= cap);
    }

    #[test]
    fn quantile_is_an_element_in_range(mut v in proptest::collection::vec(0.0f64..100.0, 1..50), q in 0.0f64..1.0) {
        v.sort_by(f64::total_cmp);
        let x = quantile(&v, q);
        prop_assert!(v.contains(&x));
        prop_assert!(x >= v[0] && x <= v[v.len() - 1]);
    }
}

#[test]
fn small_lesson_shows_backpressure() {
    let load = Overload {
        items: 2000,
        arrival_gap: Duration::from_micros(25),
        service_time: Duration::from_micros(100),
        payload: 256,
    };
    let r = lesson_with(7, load, 16);
    let n = |k: &str| r.naive[k];
    let o = |k: &str| r.optimal[k];
    assert_eq!(n("processed"), 2000.0);
    assert_eq!(o("processed"), 2000.0);
    assert!(o("max_queue_len") <= 16.0);
    assert!(o("max_queue_len_semaphore") <= 16.0);
    assert!(n("max_queue_len") > 500.0, "{}", r.table());
    assert!(n("bytes") > 10.0 * o("bytes"), "{}", r.table());
    assert!(
        n("p99_latency_ms") > 5.0 * o("p99_latency_ms"),
        "{}",
        r.table()
    );
    assert!(o("producer_blocked_ms") > n("producer_blocked_ms"));
}
