use super::*;
use proptest::prelude::*;

fn msg(i: u64) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.extend_from_slice(b"payload");
    m
}

#[test]
fn queue_broker_copies_per_subscriber_and_loses_on_disconnect() {
    let b = QueueBroker::new();
    let a = b.subscribe();
    let c = b.subscribe();
    assert_eq!(b.subscribers(), 2);
    assert_eq!(b.publish_batch(&[msg(0), msg(1)]), 4);
    assert_eq!(b.bytes_copied(), 4 * 15);
    assert_eq!(a.pending(), 2);
    drop(c); // two unread messages go with it
    assert_eq!(b.subscribers(), 1);
    b.publish_batch(&[msg(2)]);
    let c = b.subscribe();
    b.publish_batch(&[msg(3)]);
    let got: Vec<_> = c
        .poll(10, Duration::ZERO)
        .iter()
        .filter_map(|m| sequence_of(m))
        .collect();
    assert_eq!(
        got,
        vec![3],
        "0, 1 and 2 are lost for the reconnected subscriber"
    );
    let got: Vec<_> = a
        .poll(10, Duration::ZERO)
        .iter()
        .filter_map(|m| sequence_of(m))
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[test]
fn log_resumes_from_the_committed_cursor() {
    let log = TopicLog::new();
    assert_eq!(log.append_batch(&[msg(0), msg(1), msg(2)]), 0);
    let mut s = log.subscribe("a");
    let got = s.poll(2, Duration::ZERO).unwrap();
    assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 1]);
    s.commit();
    drop(s);
    assert_eq!(log.append_batch(&[msg(3)]), 3);
    let mut s = log.subscribe("a");
    assert_eq!(s.cursor(), 2);
    let got = s.poll(10, Duration::ZERO).unwrap();
    let seqs: Vec<_> = got.iter().filter_map(|(_, m)| sequence_of(m)).collect();
    assert_eq!(seqs, vec![2, 3]);
    // Not committed: a new connection replays (at-least-once).
    drop(s);
    assert_eq!(log.subscribe("a").cursor(), 2);
    assert_eq!(log.committed("a"), Some(2));
    assert_eq!(log.committed("b"), None);
    assert_eq!(log.bytes(), 4 * 15);
}

#[test]
fn trimming_and_bad_offsets() {
    let log = TopicLog::new();
    log.append_batch(&[msg(0), msg(1), msg(2)]);
    assert_eq!(log.trim_consumed(), 0, "no cursor, nothing trimmed");
    log.commit("a", 2);
    log.commit("b", 1);
    assert_eq!(log.trim_consumed(), 1);
    assert_eq!((log.start_offset(), log.end_offset()), (1, 3));
    assert_eq!(
        log.read(0, 5),
        Err(PubSubError::Trimmed {
            offset: 0,
            start: 1
        })
    );
    assert_eq!(
        log.read(9, 5),
        Err(PubSubError::PastEnd { offset: 9, end: 3 })
    );
    assert!(log.read(3, 5).unwrap().is_empty());
    assert_eq!(log.bytes(), 2 * 15);
    assert_eq!(log.appended_bytes(), 3 * 15);
    // A subscriber whose cursor was trimmed resumes at the start.
    log.commit("c", 0);
    assert_eq!(log.subscribe("c").cursor(), 1);
    assert_eq!(sequence_of(b"short"), None);
}

#[test]
fn read_wait_wakes_on_append() {
    let log = TopicLog::new();
    std::thread::scope(|s| {
        let h = s.spawn(|| log.read_wait(0, 10, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(5));
        log.append_batch(&[msg(7)]);
        let got = h.join().unwrap().unwrap();
        // Either the wait saw the append or it timed out first; with a
        // 10 s timeout it saw it.
        assert_eq!(got.len(), 1);
        assert_eq!(sequence_of(&got[0].1), Some(7));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// However the stream is batched and wherever the subscriber
    /// disconnects (after committing), it receives every message exactly
    /// once and in order.
    #[test]
    fn log_subscriber_gets_everything_once_in_order(
        batches in proptest::collection::vec(1usize..20, 1..20),
        polls in proptest::collection::vec(1usize..30, 1..50),
        disconnect_every in 1usize..5,
    ) {
        let log = TopicLog::new();
        let mut next = 0u64;
        let mut got = Vec::new();
        let mut sub = log.subscribe("s");
        let mut p = polls.iter().cycle();
        for (k, n) in batches.iter().enumerate() {
            let b: Vec<_> = (0..*n).map(|_| { next += 1; msg(next - 1) }).collect();
            log.append_batch(&b);
            let r = sub.poll(*p.next().unwrap(), Duration::ZERO).unwrap();
            got.extend(r.iter().filter_map(|(_, m)| sequence_of(m)));
            sub.commit();
            if k % disconnect_every == 0 {
                drop(sub);
                sub = log.subscribe("s");
            }
        }
        loop {
            let r = sub.poll(7, Duration::ZERO).unwrap();
            if r.is_empty() { break; }
            got.extend(r.iter().filter_map(|(_, m)| sequence_of(m)));
        }
        prop_assert_eq!(got, (0..next).collect::<Vec<_>>());
    }
}

#[test]
fn lesson_shows_loss_and_copies() {
    let w = Workload {
        messages: 2_000,
        payload: 64,
        batch: 50,
        subscribers: 6,
        reconnecting: 2,
    };
    let r = lesson_with(3, w);
    let (n, o) = (&r.naive, &r.optimal);
    assert!(n["messages_lost"] > 0.0, "{}", r.table());
    assert_eq!(o["messages_lost"], 0.0, "{}", r.table());
    assert_eq!(n["messages_lost_steady"], 0.0, "{}", r.table());
    assert_eq!(o["messages_lost_steady"], 0.0, "{}", r.table());
    assert_eq!(o["duplicates"], 0.0);
    assert_eq!(o["out_of_order"], 0.0);
    assert_eq!(o["copies"], 2_000.0);
    assert_eq!(o["bytes"], 2_000.0 * 64.0);
    // Every connected subscriber got its own copy: more than 4 per
    // message on average even with two of six away for a while.
    assert!(n["copies"] > 4.0 * 2_000.0, "{}", r.table());
    assert!(n["bytes"] > 4.0 * o["bytes"], "{}", r.table());
}
