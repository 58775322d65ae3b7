use super::*;
use proptest::prelude::*;

fn click(id: u64, page: u32, user: u32, event_ms: u64) -> Click {
    Click {
        id,
        page,
        user,
        event_ms,
    }
}

/// Only tumbling windows matter in most tests: 60 s windows, watermark 5 s
/// behind, 30 s allowed lateness, and a session gap of 10 s.
fn cfg() -> WindowConfig {
    WindowConfig {
        tumble_ms: 60_000,
        slide_size_ms: 60_000,
        slide_hop_ms: 20_000,
        session_gap_ms: 10_000,
        out_of_order_ms: 5_000,
        allowed_lateness_ms: 30_000,
    }
}

#[test]
fn window_starts_cover_exactly_the_windows_holding_t() {
    assert_eq!(window_starts(5, 60, 10).collect::<Vec<_>>(), vec![0]);
    assert_eq!(
        window_starts(65, 60, 10).collect::<Vec<_>>(),
        vec![10, 20, 30, 40, 50, 60]
    );
    assert_eq!(
        window_starts(60, 60, 10).collect::<Vec<_>>(),
        vec![10, 20, 30, 40, 50, 60]
    );
    assert_eq!(window_starts(119, 60, 60).collect::<Vec<_>>(), vec![60]);
    for t in [0u64, 7, 59, 60, 61, 1234] {
        for s in window_starts(t, 60, 20) {
            assert!(s <= t && t < s + 60 && s % 20 == 0);
        }
    }
}

#[test]
fn the_watermark_closes_a_window_exactly_when_it_passes_the_end() {
    let mut op = WindowOperator::new(cfg());
    op.process(&click(0, 1, 1, 10_000));
    op.process(&click(1, 1, 2, 50_000));
    // Newest 64,999: watermark 59,999 < 60,000, window [0, 60 s) still open.
    op.process(&click(2, 2, 3, 64_999));
    assert_eq!(op.watermark(), 59_999);
    assert_eq!(op.store.get((Kind::Tumbling, 1, 0)), None);
    // Newest 65,000: watermark reaches the end: the window fires, once.
    op.process(&click(3, 2, 3, 65_000));
    assert_eq!(op.watermark(), 60_000);
    assert_eq!(op.store.get((Kind::Tumbling, 1, 0)), Some(2));
    let writes = op.store.writes;
    op.process(&click(4, 2, 3, 65_500));
    assert_eq!(op.store.writes, writes, "no refiring without new events");
    // Window [60 s, 120 s) is still open.
    assert_eq!(op.store.get((Kind::Tumbling, 2, 60_000)), None);
    op.finish();
    assert_eq!(op.store.get((Kind::Tumbling, 2, 60_000)), Some(3));
}

#[test]
fn a_late_but_allowed_event_updates_and_a_too_late_one_is_dropped() {
    let mut op = WindowOperator::new(cfg());
    op.process(&click(0, 1, 1, 10_000));
    op.process(&click(1, 9, 9, 70_000)); // watermark 65 s: [0, 60 s) fires
    assert_eq!(op.store.get((Kind::Tumbling, 1, 0)), Some(1));
    let updates = op.store.updates;
    // 20 s behind the watermark, within the 30 s lateness: an update.
    op.process(&click(2, 1, 2, 45_000));
    assert_eq!(op.store.get((Kind::Tumbling, 1, 0)), Some(2));
    assert!(op.store.updates > updates);
    assert_eq!(op.late_accepted, 1);
    assert!(op.dropped.is_empty());
    // Watermark to 100 s: [0, 60 s) is past end + lateness (90 s).
    op.process(&click(3, 9, 9, 105_000));
    assert_eq!(op.watermark(), 100_000);
    // 69,999 + 30 s < 100 s: dropped, counted, nothing written.
    let writes = op.store.writes;
    op.process(&click(4, 1, 3, 69_999));
    assert_eq!(op.dropped, vec![4]);
    assert_eq!(op.store.writes, writes);
    // Exactly at the limit (70 s + 30 s = watermark): still accepted.
    op.process(&click(5, 1, 3, 70_000));
    assert_eq!(op.dropped, vec![4]);
    assert_eq!(op.store.get((Kind::Tumbling, 1, 0)), Some(2));
    // Its window [60 s, 120 s) is not due yet.
    assert_eq!(op.store.get((Kind::Tumbling, 1, 60_000)), None);
    op.finish();
    assert_eq!(op.store.get((Kind::Tumbling, 1, 60_000)), Some(1));
    // The fired window state was forgotten, not the result.
    assert_eq!(op.held(), 0);
}

#[test]
fn sessions_merge_when_a_late_click_fills_the_gap() {
    let mut op = WindowOperator::new(cfg());
    // User 7: clicks at 0 s and 15 s: two sessions with a 10 s gap.
    op.process(&click(0, 1, 7, 0));
    op.process(&click(1, 1, 7, 15_000));
    // Another user moves the watermark to 30 s: both sessions fire.
    op.process(&click(2, 2, 8, 35_000));
    assert_eq!(op.store.get((Kind::Session, 7, 0)), Some(1));
    assert_eq!(op.store.get((Kind::Session, 7, 15_000)), Some(1));
    // A late click at 8 s bridges them: one session [0, 25 s) of 3.
    op.process(&click(3, 1, 7, 8_000));
    assert_eq!(op.store.get((Kind::Session, 7, 0)), Some(3));
    assert_eq!(op.store.get((Kind::Session, 7, 15_000)), None);
    assert_eq!(op.store.deletes, 1);
    op.finish();
    let truth = batch_sessions(
        &[
            click(0, 1, 7, 0),
            click(1, 1, 7, 15_000),
            click(2, 2, 8, 35_000),
            click(3, 1, 7, 8_000),
        ],
        10_000,
    );
    assert_eq!(op.store.counts(Kind::Session), truth);
}

#[test]
fn a_fired_session_extended_past_the_watermark_is_retracted_until_it_fires_again() {
    // (Found by the proptest below.) Gap 10 s, watermark 5 s behind.
    let c = cfg();
    let events = [
        click(0, 0, 1, 119_103),
        click(1, 0, 0, 134_103), // watermark 129,103: user 1's session fires
        click(3, 0, 1, 119_104), // extends it to 129,104: pending again
        click(2, 0, 1, 117_286), // and a click before it moves its start
    ];
    let mut op = WindowOperator::new(c);
    op.process(&events[0]);
    op.process(&events[1]);
    assert_eq!(op.store.get((Kind::Session, 1, 119_103)), Some(1));
    op.process(&events[2]);
    assert_eq!(op.store.get((Kind::Session, 1, 119_103)), None);
    op.process(&events[3]);
    op.finish();
    assert_eq!(op.store.get((Kind::Session, 1, 117_286)), Some(3));
    assert_eq!(stored_all(&op.store), batch_all(&events, &c));
}

#[test]
fn batch_sessions_split_at_the_gap() {
    let ev = [
        click(0, 0, 1, 0),
        click(1, 0, 1, 9_999),
        click(2, 0, 1, 19_999), // exactly gap after the previous: new session
        click(3, 0, 2, 5),
    ];
    let s = batch_sessions(&ev, 10_000);
    assert_eq!(
        s.into_iter().collect::<Vec<_>>(),
        vec![((1, 0), 2), ((1, 19_999), 1), ((2, 5), 1)]
    );
}

#[test]
fn the_stream_run_matches_batch_and_writes_less() {
    let events = generate(3, 500, 50, 5);
    let st = run(&events, CONFIG);
    assert_eq!(st.events as usize, events.len());
    assert!(st.naive_match && st.windowed_match, "{st:?}");
    assert_eq!(st.naive_writes, st.events);
    assert!(st.writes < st.naive_writes, "{st:?}");
    assert!(st.dropped > 0, "{st:?}");
    assert!(st.updates > 0, "{st:?}");
}

fn arb_stream() -> impl Strategy<Value = Vec<Click>> {
    proptest::collection::vec((0u32..3, 0u32..4, 0u64..200_000, 0u64..60_000), 1..120).prop_map(
        |v| {
            let mut a: Vec<(u64, Click)> = v
                .into_iter()
                .enumerate()
                .map(|(i, (page, user, t, delay))| (t + delay, click(i as u64, page, user, t)))
                .collect();
            a.sort_by_key(|(arr, c)| (*arr, c.id));
            a.into_iter().map(|(_, c)| c).collect()
        },
    )
}

proptest! {
    #[test]
    fn windows_equal_a_batch_recomputation_over_the_kept_events(events in arb_stream()) {
        let c = cfg();
        let mut op = WindowOperator::new(c);
        for e in &events {
            op.process(e);
        }
        op.finish();
        let kept: Vec<Click> = events.iter().filter(|e| !op.dropped.contains(&e.id)).copied().collect();
        prop_assert_eq!(stored_all(&op.store), batch_all(&kept, &c));
        prop_assert_eq!(op.held(), 0);
    }

    #[test]
    fn in_order_streams_drop_nothing(mut ts in proptest::collection::vec(0u64..500_000, 1..100)) {
        ts.sort_unstable();
        let events: Vec<Click> = ts.iter().enumerate().map(|(i, &t)| click(i as u64, (i % 3) as u32, (i % 2) as u32, t)).collect();
        let mut op = WindowOperator::new(cfg());
        for e in &events {
            op.process(e);
        }
        op.finish();
        prop_assert!(op.dropped.is_empty());
        prop_assert_eq!(op.late_accepted, 0);
        prop_assert_eq!(op.store.updates, 0);
        prop_assert_eq!(stored_all(&op.store), batch_all(&events, &cfg()));
    }
}
