use super::*;
use proptest::prelude::*;

fn req(amount: u64) -> ChargeRequest {
    ChargeRequest {
        order: 1,
        customer: 1,
        amount_cents: amount,
        currency: "usd".into(),
    }
}

#[test]
fn same_key_same_params_returns_the_first_result() {
    let s = IdempotentServer::new(Ledger::default(), InFlightPolicy::Reject);
    let a = s.handle("k", &req(500)).unwrap();
    let b = s.handle("k", &req(500)).unwrap();
    assert_eq!(a, b);
    assert_eq!(s.ledger().charges().len(), 1);
    let c = s.handle("k2", &req(500)).unwrap();
    assert_ne!(a.id, c.id);
    assert_eq!(s.stats().replayed, 1);
}

#[test]
fn same_key_different_params_is_an_error() {
    let s = IdempotentServer::new(Ledger::default(), InFlightPolicy::Reject);
    s.handle("k", &req(500)).unwrap();
    assert_eq!(
        s.handle("k", &req(501)),
        Err(PaymentError::KeyReuse("k".into()))
    );
    assert_eq!(s.ledger().charges().len(), 1);
}

#[test]
fn errors_are_stored_and_replayed_too() {
    let s = IdempotentServer::new(Ledger::default(), InFlightPolicy::Reject);
    assert_eq!(s.handle("k", &req(0)), Err(PaymentError::Declined));
    assert_eq!(s.handle("k", &req(0)), Err(PaymentError::Declined));
    assert_eq!(s.stats().executed, 1);
}

#[test]
fn concurrent_duplicates_wait_for_the_in_flight_request() {
    let s = IdempotentServer::new(
        Ledger::new(Duration::from_millis(20)),
        InFlightPolicy::Wait(Duration::from_secs(5)),
    );
    let barrier = Barrier::new(8);
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| {
                    barrier.wait();
                    s.handle("k", &req(700))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(s.ledger().charges().len(), 1);
    assert!(results.iter().all(|r| r == &results[0] && r.is_ok()));
    assert!(s.stats().waited >= 1, "{:?}", s.stats());
}

#[test]
fn reject_policy_answers_conflict_while_in_flight() {
    let s = IdempotentServer::new(
        Ledger::new(Duration::from_millis(50)),
        InFlightPolicy::Reject,
    );
    std::thread::scope(|sc| {
        let first = sc.spawn(|| s.handle("k", &req(1)));
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            s.handle("k", &req(1)),
            Err(PaymentError::InFlight("k".into()))
        );
        assert!(first.join().unwrap().is_ok());
    });
    assert!(s.handle("k", &req(1)).is_ok());
    assert_eq!(s.ledger().charges().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any sequence of (key, amount) requests charges once per distinct
    /// key, and every answer for a key equals its first answer (or is a
    /// key-reuse error when the amount differs).
    #[test]
    fn one_charge_per_key(ops in proptest::collection::vec((0u8..6, 1u64..4), 1..40)) {
        let s = IdempotentServer::new(Ledger::default(), InFlightPolicy::Reject);
        let mut first: HashMap<u8, (u64, Charge)> = HashMap::new();
        for (k, amount) in ops {
            let key = format!("k{k}");
            let r = s.handle(&key, &req(amount));
            match first.get(&k) {
                None => { first.insert(k, (amount, r.unwrap())); }
                Some((a, c)) if *a == amount => prop_assert_eq!(r, Ok(c.clone())),
                Some(_) => prop_assert_eq!(r, Err(PaymentError::KeyReuse(key))),
            }
        }
        prop_assert_eq!(s.ledger().charges().len(), first.len());
    }
}

#[test]
fn small_storm_double_charges_only_without_keys() {
    let r = lesson_with(
        3,
        StormConfig {
            payments: 200,
            senders_per_payment: 2,
            threads: 4,
            lose_response: 0.3,
            max_attempts: 20,
            latency: Duration::from_micros(50),
        },
    );
    assert!(r.naive["double_charges"] > 0.0, "{}", r.table());
    assert_eq!(r.optimal["double_charges"], 0.0, "{}", r.table());
    assert_eq!(r.optimal["charges"], 200.0);
    assert_eq!(r.optimal["uncharged_payments"], 0.0);
}
