use super::*;
use proptest::prelude::*;

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
    }
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i as usize * 31 + k * 7) as u8).collect()
}

#[test]
fn append_read_fetch_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.next_offset(), 0);
    assert_eq!(log.read(0).unwrap(), None);
    let msgs: Vec<Vec<u8>> = (0..200)
        .map(|i| payload(i, (i as usize * 13) % 150))
        .collect();
    for (i, m) in msgs.iter().enumerate().take(50) {
        assert_eq!(log.append(m).unwrap(), i as u64);
    }
    let range = log
        .append_batch(msgs[50..].iter().map(Vec::as_slice))
        .unwrap();
    assert_eq!(range, 50..200);
    assert!(
        log.segment_count() > 5,
        "small segments roll: {}",
        log.segment_count()
    );
    assert!(log.index_entries() > 0);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().as_ref(), Some(m), "offset {i}");
    }
    let got = log.fetch(37, 100).unwrap();
    assert_eq!(got.len(), 100);
    assert!(got
        .iter()
        .enumerate()
        .all(|(k, (off, p))| *off == 37 + k as u64 && p == &msgs[37 + k]));
    assert_eq!(log.fetch(190, 100).unwrap().len(), 10);
    assert!(log.fetch(200, 5).unwrap().is_empty());
    // Segment files are named by their base offset.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    assert_eq!(names[0], "00000000000000000000.log");
    assert_eq!(names.len(), log.segment_count());
}

#[test]
fn reopen_keeps_everything_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let msgs: Vec<Vec<u8>> = (0..120).map(|i| payload(i, 40)).collect();
    {
        let mut log = Log::open(dir.path(), small()).unwrap();
        log.append_batch(msgs.iter().map(Vec::as_slice)).unwrap();
    }
    let mut log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.truncated_bytes_on_open(), 0);
    assert_eq!(log.next_offset(), 120);
    assert_eq!(log.append(b"more").unwrap(), 120);
    let all = log.fetch(0, 1000).unwrap();
    assert_eq!(all.len(), 121);
    assert_eq!(all[120].1, b"more");
    assert!(all[..120].iter().zip(&msgs).all(|((_, a), b)| a == b));
}

#[test]
fn big_record_gets_its_own_segment_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    log.append(b"a").unwrap();
    let big = vec![9u8; 5000];
    assert_eq!(log.append(&big).unwrap(), 1);
    assert_eq!(log.read(1).unwrap(), Some(big));
    assert_eq!(log.segment_count(), 2);
    let too_big = vec![0u8; MAX_RECORD_LEN + 1];
    assert!(matches!(
        log.append(&too_big),
        Err(LogError::RecordTooLarge(_))
    ));
    assert!(matches!(
        Log::open(
            dir.path(),
            LogConfig {
                segment_bytes: 0,
                ..small()
            }
        ),
        Err(LogError::BadConfig(_))
    ));
}

#[test]
fn consumer_offsets_persist_atomically() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), small()).unwrap();
        log.append_batch((0..10).map(|_| b"x".as_slice())).unwrap();
        log.commit("billing", 4).unwrap();
        log.commit("billing", 7).unwrap();
        log.commit("search-indexer", 10).unwrap();
        assert!(matches!(
            log.commit("bad/name", 1),
            Err(LogError::BadGroup(_))
        ));
        assert!(matches!(log.commit("", 1), Err(LogError::BadGroup(_))));
        assert!(matches!(
            log.commit("billing", 11),
            Err(LogError::OffsetPastEnd { .. })
        ));
        assert_eq!(log.committed("billing"), Some(7));
    }
    // A crash between writing the temp file and the rename leaves a stray
    // temp file: the old offset stands.
    fs::write(
        dir.path().join(OFFSETS_DIR).join("billing.offset.tmp"),
        [1, 2, 3],
    )
    .unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.committed("billing"), Some(7));
    assert_eq!(log.committed("search-indexer"), Some(10));
    assert_eq!(log.committed("nobody"), None);
    assert!(!dir
        .path()
        .join(OFFSETS_DIR)
        .join("billing.offset.tmp")
        .exists());
}

#[test]
fn corrupt_closed_segment_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    log.append_batch(
        (0..100)
            .map(|i| payload(i, 50))
            .collect::<Vec<_>>()
            .iter()
            .map(Vec::as_slice),
    )
    .unwrap();
    assert!(log.segment_count() > 2);
    drop(log);
    // Flip a payload byte of record 0 (offset 0, in the first, closed segment).
    let first = dir.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&first).unwrap();
    bytes[HEADER_LEN + 3] ^= 0xFF;
    fs::write(&first, bytes).unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    assert!(matches!(log.read(0), Err(LogError::Corrupt(0))));
    assert_eq!(log.read(1).unwrap(), Some(payload(1, 50)));
}

#[test]
fn damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let msgs: Vec<Vec<u8>> = (0..100).map(|i| payload(i, 30)).collect();
    {
        let mut log = Log::open(dir.path(), small()).unwrap();
        log.append_batch(msgs.iter().map(Vec::as_slice)).unwrap();
    }
    fs::write(dir.path().join("00000000000000000000.index"), [0xFF; 13]).unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().as_ref(), Some(m));
    }
}

#[test]
fn memory_queue_loses_everything() {
    let mut q = MemoryQueue::new();
    assert_eq!(q.append(b"a"), 0);
    assert_eq!(q.append(b"b"), 1);
    q.commit("g", 1);
    assert_eq!(q.read(1), Some(b"b".as_slice()));
    assert_eq!(q.fetch(0, 10).len(), 2);
    let q = q.crash();
    assert_eq!(q.next_offset(), 0);
    assert_eq!(q.committed("g"), None);
}

#[test]
fn lesson_loses_nothing_acknowledged() {
    let r = lesson_with(42, 2000, 512, 50);
    assert_eq!(
        r.naive["messages_lost_after_crash"], 2000.0,
        "{:?}",
        r.naive
    );
    assert_eq!(
        r.optimal["messages_lost_after_crash"], 0.0,
        "{:?} {}",
        r.optimal, r.notes
    );
    assert_eq!(r.optimal["committed_offset_survived"], 1.0);
    assert_eq!(r.naive["committed_offset_survived"], 0.0);
    assert!(r.optimal["torn_bytes_truncated"] > 0.0);
    assert_eq!(r.optimal["random_read_errors"], 0.0);
    assert!(r.optimal["append_mb_s"] > 0.0 && r.optimal["read_mb_s"] > 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random appends, a torn tail (a random prefix of unacknowledged
    /// records, or garbage), reopen: every acknowledged record comes back in
    /// order, followed only by complete unacknowledged records, and the log
    /// keeps working.
    #[test]
    fn crash_loses_nothing_acknowledged(
        sizes in proptest::collection::vec(0usize..300, 1..80),
        batch_every in 1usize..8,
        extra_sizes in proptest::collection::vec(0usize..300, 1..4),
        cut_frac in 0.0f64..1.0,
        garbage in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| payload(i as u64, n)).collect();
        {
            let mut log = Log::open(dir.path(), small()).unwrap();
            let mut next = 0;
            for chunk in msgs.chunks(batch_every) {
                let r = log.append_batch(chunk.iter().map(Vec::as_slice)).unwrap();
                prop_assert_eq!(r.start, next);
                next = r.end;
            }
            // The crash: part of an unacknowledged write reaches the file.
            let mut torn = Vec::new();
            let mut ends = Vec::new();
            if garbage {
                torn = (0..extra_sizes[0] + 1).map(|k| (k * 131 + 7) as u8).collect();
            } else {
                for (k, &n) in extra_sizes.iter().enumerate() {
                    encode_record(&payload(1000 + k as u64, n), &mut torn);
                    ends.push(torn.len());
                }
            }
            let cut = ((torn.len() as f64) * cut_frac) as usize;
            let path = log.active_segment_path().unwrap().to_path_buf();
            drop(log);
            let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(&torn[..cut]).unwrap();
            let complete = ends.iter().filter(|&&e| e <= cut).count();

            let mut log = Log::open(dir.path(), small()).unwrap();
            let all = log.fetch(0, usize::MAX).unwrap();
            prop_assert_eq!(all.len(), msgs.len() + complete);
            for (i, (off, p)) in all.iter().enumerate() {
                prop_assert_eq!(*off, i as u64);
                if i < msgs.len() {
                    prop_assert_eq!(p, &msgs[i]);
                } else {
                    let k = i - msgs.len();
                    prop_assert_eq!(p, &payload(1000 + k as u64, extra_sizes[k]));
                }
            }
            // Still appendable, and reads agree with fetch.
            let off = log.append(b"after").unwrap();
            prop_assert_eq!(off, all.len() as u64);
            prop_assert_eq!(log.read(off).unwrap(), Some(b"after".to_vec()));
            let probe = (msgs.len() / 2) as u64;
            prop_assert_eq!(log.read(probe).unwrap(), Some(msgs[probe as usize].clone()));
        }
    }
}
