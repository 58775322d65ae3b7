use super::*;
use proptest::prelude::*;

fn order() -> Order {
    Order {
        id: 7,
        sku: 1,
        qty: 2,
        amount_cents: 1234,
    }
}

fn shop_failing(step: Step, mode: FailMode, times: u32) -> Shop {
    Shop::new(
        HashMap::from([(1, 10)]),
        Box::new(move |_, s, a| (s == step && a < times).then_some(mode)),
    )
}

#[test]
fn steps_are_idempotent() {
    let mut shop = shop_failing(Step::Ship, FailMode::Before, 0);
    let o = order();
    for _ in 0..3 {
        for s in Step::FORWARD {
            shop.call(&o, s, 0).unwrap();
        }
    }
    assert_eq!(shop.stock[&1], 8);
    assert_eq!(shop.net_charged(7), 1234);
    assert!(shop.is_consistent(&o));
    for _ in 0..2 {
        for s in [Step::CancelShipment, Step::Refund, Step::Release] {
            shop.call(&o, s, 0).unwrap();
        }
    }
    assert_eq!(shop.stock[&1], 10);
    assert_eq!(shop.net_charged(7), 0);
    assert!(shop.is_consistent(&o));
}

#[test]
fn naive_leaves_half_done_orders_at_each_step() {
    for (step, mode) in [
        (Step::Charge, FailMode::Before),
        (Step::Ship, FailMode::Before),
        (Step::Reserve, FailMode::After),
        (Step::Charge, FailMode::After),
    ] {
        let mut shop = shop_failing(step, mode, u32::MAX);
        assert!(place_order_naive(&mut shop, &order()).is_err());
        assert!(!shop.is_consistent(&order()), "{step:?} {mode:?}");
    }
}

#[test]
fn saga_compensates_in_reverse_order() {
    let mut shop = shop_failing(Step::Ship, FailMode::After, u32::MAX);
    let (out, log) = Saga::default().run(&mut shop, &order());
    assert_eq!(out, SagaOutcome::Compensated(Step::Ship));
    let comps: Vec<Step> = log
        .iter()
        .filter_map(|e| match e {
            SagaEvent::Compensated(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(
        comps,
        vec![Step::CancelShipment, Step::Refund, Step::Release]
    );
    assert!(shop.is_consistent(&order()));
    assert_eq!(shop.stock[&1], 10);
}

#[test]
fn saga_retries_transient_failures_and_reports_stuck_compensations() {
    let mut shop = shop_failing(Step::Charge, FailMode::After, 2);
    assert_eq!(
        Saga::default().run(&mut shop, &order()).0,
        SagaOutcome::Completed
    );
    assert_eq!(
        shop.net_charged(7),
        1234,
        "retried charge did not double charge"
    );

    let mut shop = Shop::new(
        HashMap::from([(1, 10)]),
        Box::new(|_, s, _| matches!(s, Step::Ship | Step::Refund).then_some(FailMode::Before)),
    );
    let (out, _) = Saga::default().run(&mut shop, &order());
    assert_eq!(out, SagaOutcome::Stuck(Step::Refund));
}

#[test]
fn out_of_stock_is_not_retried() {
    let mut shop = Shop::new(HashMap::from([(1, 1)]), Box::new(|_, _, _| None));
    let (out, log) = Saga::default().run(&mut shop, &order());
    assert_eq!(out, SagaOutcome::Compensated(Step::Reserve));
    assert!(!log.contains(&SagaEvent::Retried(Step::Reserve)));
    assert!(shop.is_consistent(&order()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the faults (compensations always succeed eventually),
    /// the saga leaves every order fully done or fully undone, and
    /// stock is conserved.
    #[test]
    fn saga_always_consistent(seed in any::<u64>(), perm in 0.0f64..0.5, trans in 0.0f64..0.4) {
        let script = FaultScript { seed, permanent_probability: perm, transient_probability: trans };
        let (_, o) = run_both(seed, 60, script);
        prop_assert_eq!(o.inconsistent, 0);
        prop_assert_eq!(o.stuck, 0);
    }
}

#[test]
fn small_run_shows_the_effect() {
    let r = lesson_with(11, 2_000);
    assert!(r.naive["inconsistent_orders"] > 0.0, "{}", r.table());
    assert_eq!(r.optimal["inconsistent_orders"], 0.0, "{}", r.table());
    for s in ["reserve", "charge", "ship"] {
        let k = format!("inconsistent_failed_at_{s}");
        assert_eq!(r.optimal[&k], 0.0);
    }
    assert!(
        r.naive["inconsistent_failed_at_charge"] > 0.0,
        "{}",
        r.table()
    );
    assert!(
        r.naive["inconsistent_failed_at_ship"] > 0.0,
        "{}",
        r.table()
    );
}
