use super::*;
use proptest::prelude::*;

fn s(series: u32, ts_ms: u64, value: f64) -> Sample {
    Sample {
        series,
        ts_ms,
        value,
    }
}

#[test]
fn aggregate_add_and_merge() {
    let mut a = Aggregate::of(1, 0, 5.0);
    a.add(-1.0);
    a.add(3.0);
    assert_eq!((a.count, a.sum, a.min, a.max), (3, 7.0, -1.0, 5.0));
    let mut b = Aggregate::of(1, 0, 10.0);
    assert!(b.merge(&a));
    assert_eq!((b.count, b.sum, b.min, b.max), (4, 17.0, -1.0, 10.0));
    assert!((b.mean() - 4.25).abs() < 1e-12);
    assert!(!b.merge(&Aggregate::of(2, 0, 1.0)));
    assert!(!b.merge(&Aggregate::of(1, 10, 1.0)));
    assert_eq!(b.count, 4);
}

#[test]
fn bad_config_and_windows() {
    assert_eq!(
        RollupPipeline::new(0, 0, 1).err(),
        Some(MetricsError::BadConfig)
    );
    assert_eq!(
        RollupPipeline::new(10, 0, 0).err(),
        Some(MetricsError::BadConfig)
    );
    assert_eq!(window_start(12_345, 10_000), 10_000);
    assert_eq!(window_start(9_999, 10_000), 0);
}

#[test]
fn storage_counts_writes_and_round_trips() {
    let mut st = Storage::new();
    st.write(&[s(1, 2, 3.0)]).unwrap();
    st.write(&[s(4, 5, 6.0), s(7, 8, 9.0)]).unwrap();
    assert_eq!(st.writes(), 2);
    assert!(st.bytes() > 0);
    let back: Vec<Sample> = st.read_all().unwrap();
    assert_eq!(back, vec![s(1, 2, 3.0), s(4, 5, 6.0), s(7, 8, 9.0)]);
}

#[test]
fn windows_close_on_the_watermark_and_batch() {
    let mut p = RollupPipeline::new(10, 5, 2).unwrap();
    p.ingest(s(0, 1, 1.0)).unwrap();
    p.ingest(s(1, 2, 2.0)).unwrap();
    p.ingest(s(0, 9, 3.0)).unwrap();
    assert_eq!(p.open_windows(), 2);
    // ts 14 < 10 + 5: window [0,10) still open.
    p.ingest(s(0, 14, 4.0)).unwrap();
    assert_eq!(p.storage.writes(), 0);
    // ts 15: closes [0,10) for both series: a full batch of 2.
    p.ingest(s(0, 15, 5.0)).unwrap();
    assert_eq!(p.storage.writes(), 1);
    // Late sample for the closed window: a partial.
    p.ingest(s(0, 3, 10.0)).unwrap();
    assert_eq!(p.late_partials(), 1);
    p.finish().unwrap();
    let got = merge_rollups(p.storage.read_all::<Aggregate>().unwrap());
    let a = got[&(0, 0)];
    assert_eq!((a.count, a.sum, a.min, a.max), (3, 14.0, 1.0, 10.0));
    assert_eq!(got[&(0, 10)].count, 2);
    assert_eq!(got[&(1, 0)].count, 1);
    assert_eq!(got.len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the arrival order, lateness and batch size, the merged
    /// stored roll-ups equal the aggregates of the raw samples, and the
    /// pipeline never writes more than one op per `batch` aggregates
    /// plus one.
    #[test]
    fn rollups_equal_raw_aggregates(
        raw in proptest::collection::vec((0u32..5, 0u64..200, -1e6f64..1e6), 0..300),
        window in 1u64..50,
        lateness in 0u64..60,
        batch in 1usize..40,
    ) {
        let samples: Vec<Sample> = raw.iter().map(|&(a, b, c)| s(a, b, c)).collect();
        let st = run(&samples, window, lateness, batch).unwrap();
        prop_assert!(st.results_match);
        prop_assert_eq!(st.naive_writes, samples.len() as u64);
        let stored = st.rollups as u64 + st.late_partials;
        prop_assert!(st.rollup_writes <= stored.div_ceil(batch as u64) + 1);
    }

    #[test]
    fn merge_of_a_split_is_the_whole(values in proptest::collection::vec(-1e3f64..1e3, 2..50), cut in 1usize..49) {
        let cut = cut.min(values.len() - 1);
        let fold = |vs: &[f64]| {
            let mut a = Aggregate::of(0, 0, vs[0]);
            vs[1..].iter().for_each(|v| a.add(*v));
            a
        };
        let mut left = fold(&values[..cut]);
        prop_assert!(left.merge(&fold(&values[cut..])));
        prop_assert!(left.approx_eq(&fold(&values)));
    }
}

#[test]
fn lesson_shows_fewer_writes_and_bytes() {
    let r = lesson_with(9, 50, 120);
    let (n, o) = (&r.naive, &r.optimal);
    assert_eq!(o["results_match"], 1.0, "{}", r.table());
    assert_eq!(n["writes"], 6_000.0);
    assert!(o["writes"] * 100.0 < n["writes"], "{}", r.table());
    assert!(o["bytes"] * 3.0 < n["bytes"], "{}", r.table());
    assert!(o["rollups"] >= 50.0 * 12.0, "{}", r.table());
}
