use super::client::Cursor;
use super::server::{self, Hello, PushServer, SendPath};
use super::store::{Message, SequenceStore, Sequenced, TimestampStore};
use super::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn msg(id: u64, to: u32) -> Message {
    Message {
        id,
        from: 99,
        to,
        sent_us: id,
    }
}

#[test]
fn the_cursor_drops_duplicates_and_waits_for_gaps() {
    let mut c = Cursor::default();
    assert!(c.take(1));
    assert!(c.take(3), "3 is new even before 2");
    assert_eq!(c.acked, 1, "the ack stays below the gap");
    assert!(!c.take(3));
    assert!(!c.take(1));
    assert!(c.take(2));
    assert_eq!(c.acked, 3, "filling the gap moves the ack past 3");
    assert!(!c.take(2));
    assert_eq!(c.duplicates, 3);
}

#[test]
fn a_timestamp_cursor_misses_an_out_of_order_commit_and_a_sequence_does_not() {
    let dir = ScratchDir::new("whatsapp-test").unwrap();
    let ts = TimestampStore::open(&dir.path().join("t.db")).unwrap();
    // A arrives first (stamped 100) but is slow; B arrives later (stamped
    // 200) and commits first. A poll runs between the two commits.
    let (a, b) = (msg(1, 7), msg(2, 7));
    ts.insert(&b, 200).unwrap();
    let first = ts.poll(7, 0).unwrap();
    assert_eq!(first.len(), 1);
    let since = first.iter().map(|s| s.ts).max().unwrap();
    assert_eq!(since, 200);
    ts.insert(&a, 100).unwrap();
    assert!(ts.poll(7, since).unwrap().is_empty(), "A is never seen");
    assert_eq!(ts.poll(7, 0).unwrap().len(), 2, "yet it is in the table");
    assert_eq!(ts.queries(), 5);

    // The same commit order with sequence numbers taken at commit: A gets
    // the number after B's, so reading after B's number finds it.
    let sq = SequenceStore::open(&dir.path().join("s.db")).unwrap();
    assert_eq!(sq.insert(&b, |_| {}).unwrap(), 1);
    let first = sq.replay(7, 0).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(sq.insert(&a, |_| {}).unwrap(), 2);
    let next = sq.replay(7, first[0].seq).unwrap();
    assert_eq!(next.iter().map(|s| s.msg.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(sq.insert(&msg(3, 8), |_| {}).unwrap(), 1, "per recipient");
    assert_eq!(sq.heads().unwrap(), vec![(7, 2), (8, 1)]);
}

#[test]
fn send_path_work_is_deterministic_and_in_range() {
    let p = SendPath {
        seed: 3,
        fast_ms: (0, 20),
        slow_ms: (250, 450),
        slow_fraction: 0.05,
    };
    let works: Vec<Duration> = (0..2000).map(|i| p.work(i)).collect();
    assert_eq!(works, (0..2000).map(|i| p.work(i)).collect::<Vec<_>>());
    let slow = works
        .iter()
        .filter(|w| **w >= Duration::from_millis(250))
        .count();
    assert!(works.iter().all(|w| *w <= Duration::from_millis(450)));
    assert!((50..=150).contains(&slow), "about 5% slow: {slow}");
    assert!(works
        .iter()
        .all(|w| *w <= Duration::from_millis(20) || *w >= Duration::from_millis(250)));
    assert_eq!(SendPath::instant().work(5), Duration::ZERO);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr, user: u32, last_seq: u64) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?user={user}"))
        .await
        .unwrap();
    let hello = serde_json::to_string(&Hello { last_seq }).unwrap();
    ws.send(WsMessage::text(hello)).await.unwrap();
    ws
}

async fn next_frame(ws: &mut Ws) -> Option<Sequenced> {
    let f = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    match f {
        Ok(Some(Ok(WsMessage::Text(t)))) => serde_json::from_str(&t).ok(),
        _ => None,
    }
}

async fn wait_online(s: &PushServer, n: usize) {
    for _ in 0..500 {
        if s.online() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("online stayed at {} (want {n})", s.online());
}

#[test]
fn store_and_forward_replays_exactly_what_was_missed() {
    let dir = ScratchDir::new("whatsapp-test").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SequenceStore::open(&dir.path().join("s.db")).unwrap();
        let s = Arc::new(PushServer::new(store, SendPath::instant()).unwrap());
        let addr = server::serve(s.clone().router()).await.unwrap();

        // Online: two messages pushed live, in order.
        let mut ws = connect(addr, 1, 0).await;
        wait_online(&s, 1).await;
        for id in 0..2 {
            s.store_and_forward(&msg(id, 1)).unwrap();
        }
        let got: Vec<u64> = [next_frame(&mut ws).await, next_frame(&mut ws).await]
            .iter()
            .map(|f| f.unwrap().seq)
            .collect();
        assert_eq!(got, vec![1, 2]);
        ws.close(None).await.unwrap();
        wait_online(&s, 0).await;

        // Offline: three more are stored, pushed nowhere.
        for id in 2..5 {
            s.store_and_forward(&msg(id, 1)).unwrap();
        }
        // Back with ack 2: exactly 3, 4, 5, then nothing.
        let before = s.store.queries();
        let mut ws = connect(addr, 1, 2).await;
        let mut replayed = Vec::new();
        while let Some(f) = next_frame(&mut ws).await {
            replayed.push((f.seq, f.msg.id));
        }
        assert_eq!(replayed, vec![(3, 2), (4, 3), (5, 4)]);
        assert_eq!(s.store.queries(), before + 1, "one replay query");
        ws.close(None).await.unwrap();
        wait_online(&s, 0).await;

        // Back with everything acked: no replay, and no query at all.
        let before = s.store.queries();
        let mut ws = connect(addr, 1, 5).await;
        wait_online(&s, 1).await;
        assert!(next_frame(&mut ws).await.is_none());
        assert_eq!(s.store.queries(), before);
        // A live message after that still arrives, numbered 6.
        s.store_and_forward(&msg(5, 1)).unwrap();
        assert_eq!(next_frame(&mut ws).await.map(|f| f.seq), Some(6));
    });
}

#[test]
fn the_schedule_is_seeded_and_senders_are_online() {
    let w = Workload {
        users: 50,
        messages: 300,
        ..Workload::lesson(1)
    };
    let s = Schedule::new(&w, 1);
    assert_eq!(s, Schedule::new(&w, 1));
    assert_eq!(s.sends.len(), 300);
    assert!(s.sends.windows(2).all(|p| p[0].0 <= p[1].0));
    for (at, m) in &s.sends {
        assert_ne!(m.from, m.to);
        assert!(!s.plans[m.from as usize].is_offline(*at));
    }
    assert!(s.plans.iter().any(|p| p.offline.is_some()));
}

#[test]
fn a_small_lesson_loses_nothing_with_store_and_forward() {
    let w = Workload {
        users: 60,
        busy: 3,
        messages: 200,
        send_window: Duration::from_millis(2500),
        ..Workload::lesson(5)
    };
    let r = lesson_with(5, &w);
    let (n, o) = (&r.naive, &r.optimal);
    assert!(r.notes.len() > 40, "{}", r.notes);
    assert_eq!(o["messages_sent"], 200.0, "{}", r.table());
    assert_eq!(
        n["send_failures"] + o["send_failures"],
        0.0,
        "{}",
        r.table()
    );
    assert_eq!(o["messages_lost"], 0.0, "{}", r.table());
    assert_eq!(n["db_queries"], n["polls"] + 200.0, "{}", r.table());
    assert!(o["db_queries"] < n["db_queries"], "{}", r.table());
}
