use super::*;
use proptest::prelude::*;

#[test]
fn lease_expires_and_tokens_grow() {
    let clock = Arc::new(ManualClock::new(100));
    let svc = LockService::new(Arc::clone(&clock), 10);
    let a = svc.try_acquire(1).unwrap();
    assert_eq!((a.token, a.expires_at_ms), (1, 110));
    assert!(svc.try_acquire(2).is_none());
    clock.advance(9);
    assert!(svc.is_valid(&a));
    let a2 = svc.renew(&a).unwrap();
    assert_eq!(a2.expires_at_ms, 119);
    clock.set(119);
    assert!(!svc.is_valid(&a2));
    assert!(svc.renew(&a2).is_none());
    let b = svc.try_acquire(2).unwrap();
    assert_eq!(b.token, 2);
    assert!(
        !svc.release(&a2),
        "an expired holder cannot release the new one"
    );
    assert!(svc.release(&b));
    assert_eq!(svc.try_acquire(3).unwrap().token, 3);
}

#[test]
fn fenced_store_rejects_older_tokens() {
    let s = FencedStore::default();
    s.write(33, 1).unwrap();
    assert_eq!(s.read(34), Ok(1));
    assert_eq!(
        s.write(33, 2),
        Err(StaleToken {
            token: 33,
            seen: 34
        })
    );
    s.write(34, 3).unwrap();
    assert_eq!(s.value(), 3);
    assert_eq!(s.max_token(), 34);
    let n = NaiveStore::default();
    n.write(34, 1).unwrap();
    n.write(33, 2).unwrap();
    assert_eq!(n.value(), 2);
}

#[test]
fn system_clock_moves_forward() {
    let c = SystemClock::default();
    let a = c.now_ms();
    std::thread::sleep(std::time::Duration::from_millis(3));
    assert!(c.now_ms() >= a + 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any interleaving of acquire / advance / release: at most one
    /// live lease at a time and tokens strictly increase.
    #[test]
    fn one_live_lease_and_increasing_tokens(ops in proptest::collection::vec((0u8..3, 0u64..4, 0u64..15), 1..80)) {
        let clock = Arc::new(ManualClock::new(0));
        let svc = LockService::new(Arc::clone(&clock), 10);
        let mut leases: Vec<Lease> = Vec::new();
        let mut last = 0;
        for (op, owner, dt) in ops {
            match op {
                0 => if let Some(l) = svc.try_acquire(owner) {
                    prop_assert!(l.token > last);
                    last = l.token;
                    leases.push(l);
                },
                1 => clock.advance(dt),
                _ => if let Some(l) = leases.last() { svc.release(l); },
            }
            prop_assert!(leases.iter().filter(|l| svc.is_valid(l)).count() <= 1);
        }
    }

    /// With fencing, the counter always equals the accepted writes.
    #[test]
    fn fencing_never_loses_an_update(seed in 0u64..1000) {
        let s = FencedStore::default();
        let st = simulate(&s, seed, Scenario { clients: 3, ticks: 2000, ttl_ms: 10, max_work_ms: 4, pause_probability: 0.2 });
        prop_assert_eq!(st.stale_writes, 0);
        prop_assert_eq!(st.lost_updates, 0);
        prop_assert_eq!(s.value() as u64, st.accepted_writes);
    }
}

#[test]
fn small_timeline_shows_stale_writes_only_without_fencing() {
    let r = lesson_with(
        9,
        Scenario {
            clients: 4,
            ticks: 20_000,
            ttl_ms: 20,
            max_work_ms: 8,
            pause_probability: 0.05,
        },
    );
    assert!(r.naive["stale_writes"] > 0.0, "{}", r.table());
    assert!(r.naive["lost_updates"] > 0.0, "{}", r.table());
    assert_eq!(r.optimal["stale_writes"], 0.0, "{}", r.table());
    assert_eq!(r.optimal["lost_updates"], 0.0, "{}", r.table());
    assert!(r.optimal["rejected_writes"] > 0.0, "{}", r.table());
}
