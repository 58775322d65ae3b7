use super::*;

fn flat(kbps: f64, secs: usize) -> Trace {
    Trace {
        kbps: vec![kbps; secs],
    }
}

#[test]
fn download_integrates_the_trace() {
    let t = Trace {
        kbps: vec![1000.0, 500.0, 2000.0],
    };
    // 1000 kbit from 0: exactly the first second.
    assert!((t.download_secs(0.0, 1000.0) - 1.0).abs() < 1e-9);
    // 1250 kbit from 0: 1000 in second 0, 250 at 500 kbps = 0.5 s.
    assert!((t.download_secs(0.0, 1250.0) - 1.5).abs() < 1e-9);
    // From 0.5: 500 kbit in the rest of second 0, 500 in second 1, then
    // 1000 at 2000 kbps = 0.5 s: 2 s in all.
    assert!((t.download_secs(0.5, 2000.0) - 2.0).abs() < 1e-9);
    // Cyclic past the end.
    assert!((t.at(3.2) - 1000.0).abs() < 1e-9);
    assert_eq!(t.download_secs(1.0, 0.0), 0.0);
    assert!(flat(0.0, 3).download_secs(0.0, 1.0).is_infinite());
}

#[test]
fn bba_maps_buffer_to_rungs() {
    let l = &LADDER_KBPS;
    let top = l.len() - 1;
    // Reservoir: lowest rung, whatever the buffer inside it.
    for b in [0.0, 5.0, 10.0] {
        assert_eq!(bba_rung(l, b, 10.0, 40.0), 0, "buffer {b}");
    }
    // Above reservoir + cushion: top rung.
    for b in [50.0, 55.0, 60.0] {
        assert_eq!(bba_rung(l, b, 10.0, 40.0), top, "buffer {b}");
    }
    // Halfway: rate (235 + 5800) / 2 = 3017.5 -> the 3000 rung.
    assert_eq!(l[bba_rung(l, 30.0, 10.0, 40.0)], 3000.0);
    // Monotone in the buffer.
    let mut prev = 0;
    for i in 0..=600 {
        let r = bba_rung(l, i as f64 / 10.0, 10.0, 40.0);
        assert!(r >= prev);
        prev = r;
    }
    assert_eq!(bba_rung(&[], 30.0, 10.0, 40.0), 0);
}

#[test]
fn throughput_rule_uses_the_harmonic_mean() {
    assert!((harmonic_mean(&[1000.0, 4000.0]) - 1600.0).abs() < 1e-9);
    assert_eq!(harmonic_mean(&[]), 0.0);
    let p = THROUGHPUT;
    assert_eq!(p.choose(&LADDER_KBPS, 0.0, &[]), 0);
    // 0.8 * 2000 = 1600 -> the 1050 rung.
    assert_eq!(
        LADDER_KBPS[p.choose(&LADDER_KBPS, 0.0, &[2000.0, 2000.0])],
        1050.0
    );
    assert_eq!(Policy::TopBitrate.choose(&LADDER_KBPS, 0.0, &[]), 9);
}

#[test]
fn enough_bandwidth_never_stalls_and_too_little_always_does() {
    let fast = simulate(Policy::TopBitrate, &LADDER_KBPS, &flat(8000.0, 100), PLAYER);
    assert_eq!(fast.stall_s, 0.0);
    assert_eq!(fast.rungs.len(), PLAYER.segments);
    assert_eq!(fast.avg_bitrate_kbps, 5800.0);
    // Play time is the whole video.
    assert!((fast.play_s - 600.0).abs() < 1e-6, "{}", fast.play_s);

    let slow = simulate(Policy::TopBitrate, &LADDER_KBPS, &flat(2900.0, 100), PLAYER);
    // Each 4 s segment takes 8 s: 4 s of stall per segment after the first.
    assert!(
        (slow.stall_s - 4.0 * 149.0).abs() < 1e-6,
        "{}",
        slow.stall_s
    );
    assert_eq!(slow.stalls, 149);
    assert!((slow.rebuffer_ratio() - 596.0 / 1196.0).abs() < 1e-9);

    // BBA on the same slow link settles where it keeps up.
    let bba = simulate(BBA, &LADDER_KBPS, &flat(2900.0, 100), PLAYER);
    assert_eq!(bba.stall_s, 0.0);
    assert!(bba.avg_bitrate_kbps < 2900.0);
}

#[test]
fn on_generated_traces_top_bitrate_rebuffers_and_bba_does_not() {
    for seed in 0..20 {
        let trace = generate_trace(seed, 900);
        assert!(trace.kbps.iter().all(|&b| b >= 450.0));
        assert_eq!(trace, generate_trace(seed, 900), "deterministic");
        let naive = simulate(Policy::TopBitrate, &LADDER_KBPS, &trace, PLAYER);
        let bba = simulate(BBA, &LADDER_KBPS, &trace, PLAYER);
        assert!(naive.rebuffer_ratio() > 0.05, "seed {seed}: {naive:?}");
        assert!(bba.rebuffer_ratio() < 0.01, "seed {seed}: {bba:?}");
        assert!(bba.avg_bitrate_kbps < naive.avg_bitrate_kbps);
        // Both play the whole video.
        assert_eq!(bba.rungs.len(), PLAYER.segments);
        assert!((bba.play_s - 600.0).abs() < 1e-6);
        assert!((naive.play_s - 600.0).abs() < 1e-6);
    }
}

#[test]
fn lesson_reports_the_required_metrics() {
    let r = lesson(7);
    for side in [&r.naive, &r.optimal] {
        assert!(side.contains_key("rebuffer_ratio"));
        assert!(side.contains_key("avg_bitrate_kbps"));
    }
    assert!(r.naive["rebuffer_ratio"] > r.optimal["rebuffer_ratio"]);
}
