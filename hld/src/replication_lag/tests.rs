//! Tests of the replication-lag lesson.

use super::*;
use proptest::prelude::*;
use rand::Rng;
use std::collections::BTreeMap;

fn ms(x: u64) -> Micros {
    x * 1000
}

#[test]
fn replica_applies_in_order_after_its_lag() {
    let mut leader = Leader::new();
    let mut r = Replica::new();
    let e1 = leader.write(7, 100);
    let e2 = leader.write(7, 200);
    r.ship(e1, 0, ms(10)).unwrap();
    // Shorter lag, but it cannot overtake entry 1.
    r.ship(e2, ms(1), ms(2)).unwrap();
    assert_eq!(r.read(7, ms(5)), None);
    assert_eq!(r.applied_lsn(), 0);
    assert_eq!(r.ready_at(2), Some(ms(10)));
    assert_eq!(r.read(7, ms(10)), Some(Versioned { value: 200, lsn: 2 }));
    assert_eq!(r.applied_lsn(), 2);
    assert_eq!(r.ready_at(1), Some(0));
    assert_eq!(r.ready_at(3), None);
    assert_eq!(leader.read(7), Some(Versioned { value: 200, lsn: 2 }));
    assert_eq!(leader.last_lsn(), 2);
}

#[test]
fn gaps_and_bad_routing_are_errors() {
    let mut leader = Leader::new();
    let mut r = Replica::new();
    let _ = leader.write(1, 1);
    let e2 = leader.write(1, 2);
    assert_eq!(
        r.ship(e2, 0, 0),
        Err(GapError {
            expected: 1,
            got: 2
        })
    );
    assert!(matches!(Cluster::new(0), Err(ClusterError::NoReplicas)));
    let mut c = Cluster::new(2).unwrap();
    let s = Session::default();
    assert!(matches!(
        c.read(&s, 1, 0, 5, ReadPolicy::AnyReplica),
        Err(ClusterError::NoSuchReplica(5))
    ));
    let mut s = Session::default();
    assert!(c.write(&mut s, 1, 1, 0, &[0]).is_err());
}

#[test]
fn session_token_routes_around_a_lagging_replica() {
    let mut c = Cluster::new(2).unwrap();
    let mut s = Session::default();
    let lsn = c.write(&mut s, 9, 42, 0, &[ms(1), ms(50)]).unwrap();
    assert_eq!(s.last_write_lsn, lsn);
    let now = ms(5);
    // Naive: the slow replica has nothing yet.
    let naive = c.read(&s, 9, now, 1, ReadPolicy::AnyReplica).unwrap();
    assert_eq!(naive.value, None);
    // Token, leader fallback.
    let rw = ReadPolicy::ReadYourWrites(Fallback::Leader);
    let out = c.read(&s, 9, now, 1, rw).unwrap();
    assert_eq!(out.served_by, Server::Leader);
    assert_eq!(out.value.map(|v| v.value), Some(42));
    // The fast replica already has it: served there.
    let out = c.read(&s, 9, now, 0, rw).unwrap();
    assert_eq!(out.served_by, Server::Replica(0));
    assert_eq!(out.value.map(|v| v.value), Some(42));
    // Token, wait: served by the slow replica after 45 ms.
    let w = ReadPolicy::ReadYourWrites(Fallback::WaitForReplica);
    let out = c.read(&s, 9, now, 1, w).unwrap();
    assert_eq!(out.served_by, Server::Replica(1));
    assert_eq!(out.waited, ms(45));
    assert_eq!(out.value.map(|v| v.value), Some(42));
}

/// A replica's state at its applied LSN equals replaying that prefix of
/// the leader's log into a `BTreeMap`.
#[test]
fn replica_state_matches_log_prefix_replay() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut c = Cluster::new(3).unwrap();
    let mut s = Session::default();
    for t in 0..2_000u64 {
        let lags: Vec<Micros> = (0..3).map(|_| rng.random_range(0..ms(30))).collect();
        c.write(&mut s, rng.random_range(0..50), t, ms(t), &lags)
            .unwrap();
        if t % 97 == 0 {
            for r in &mut c.replicas {
                r.catch_up(ms(t));
                let mut want = BTreeMap::new();
                for e in &c.leader.log()[..r.applied_lsn() as usize] {
                    want.insert(
                        e.key,
                        Versioned {
                            value: e.value,
                            lsn: e.lsn,
                        },
                    );
                }
                let got: BTreeMap<u64, Versioned> = r.data.iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(got, want);
            }
        }
    }
    // Eventually every replica converges on the leader.
    for r in &mut c.replicas {
        r.catch_up(Micros::MAX);
        assert_eq!(r.applied_lsn(), c.leader.last_lsn());
        assert_eq!(r.data, c.leader.data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn read_your_writes_never_reads_stale(
        seed in any::<u64>(),
        lag_a in 0u64..50_000, lag_b in 0u64..50_000,
        think in 1u64..30_000,
    ) {
        let cfg = SimConfig {
            clients: 8,
            mean_lags: vec![lag_a, lag_b],
            max_think: think,
            max_idle: 20_000,
            duration: 2_000_000,
        };
        for fb in [Fallback::Leader, Fallback::WaitForReplica] {
            let r = simulate(seed, &cfg, ReadPolicy::ReadYourWrites(fb)).unwrap();
            prop_assert_eq!(r.stale_reads, 0);
            prop_assert!(r.reads > 0);
        }
        let naive = simulate(seed, &cfg, ReadPolicy::AnyReplica).unwrap();
        prop_assert_eq!(naive.leader_reads, 0);
    }

    #[test]
    fn applied_lsn_is_monotone_in_time(
        lags in proptest::collection::vec(0u64..10_000, 1..60),
        probes in proptest::collection::vec(0u64..700_000, 1..30),
    ) {
        let mut leader = Leader::new();
        let mut r = Replica::new();
        for (i, &lag) in lags.iter().enumerate() {
            r.ship(leader.write(i as u64 % 5, i as u64), i as u64 * 1000, lag).unwrap();
        }
        let mut probes = probes;
        probes.sort_unstable();
        let mut last = 0;
        for t in probes {
            r.catch_up(t);
            prop_assert!(r.applied_lsn() >= last);
            last = r.applied_lsn();
        }
    }
}

#[test]
fn small_lesson_shows_stale_reads_and_their_fix() {
    let cfg = SimConfig {
        clients: 10,
        duration: 5_000_000,
        ..SimConfig::default()
    };
    let r = lesson_with(42, &cfg);
    assert!(r.naive["stale_reads"] > 10.0, "{}", r.table());
    assert_eq!(r.optimal["stale_reads"], 0.0, "{}", r.table());
    assert_eq!(r.optimal["wait_variant_stale_reads"], 0.0);
    assert_eq!(r.naive["leader_reads"], 0.0);
    assert!(r.optimal["leader_reads"] > 0.0);
    assert!(r.optimal["leader_read_share"] < 1.0);
    assert!(r.optimal["wait_variant_mean_wait_ms"] > 0.0);
}

#[test]
fn full_lesson_prints() {
    let r = lesson(42);
    println!("{}", r.table());
    assert!(r.naive["stale_reads"] > 0.0);
    assert_eq!(r.optimal["stale_reads"], 0.0);
}
