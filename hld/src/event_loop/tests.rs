//! Tests of the event-loop lesson.

use super::*;

fn waiter(e: &Event) -> (BoxFuture, Progress) {
    let (e, p) = (e.clone(), Progress::default());
    let p2 = p.clone();
    let fut: BoxFuture = Box::pin(async move {
        e.wait().await;
        p2.fetch_add(1, Ordering::Relaxed);
        7
    });
    (fut, p)
}

#[test]
fn a_woken_task_is_polled_and_an_unwoken_one_is_not() {
    let (a, b) = (Event::new(), Event::new());
    let mut ex = WakerExecutor::new();
    for e in [&a, &b] {
        let (f, p) = waiter(e);
        ex.spawn(f, p);
    }
    assert_eq!(ex.run_until_idle(), 2, "each task is polled once at first");
    assert_eq!(ex.run_until_idle(), 0, "nothing woken, nothing polled");
    a.fire();
    assert_eq!(ex.run_until_idle(), 1);
    assert_eq!(ex.polls_per_task, vec![2, 1]);
    assert!(ex.is_done(0) && !ex.is_done(1));
    b.fire();
    // Woken twice before it runs: still queued (and polled) once.
    b.fire();
    assert_eq!(ex.run_until_idle(), 1);
    assert_eq!(ex.polls_per_task, vec![2, 2]);
    assert!(ex.is_done(1));
    let s = ex.run();
    assert_eq!((s.results, s.wasted_polls), (vec![7, 7], 0));
}

#[test]
fn busy_executor_polls_unwoken_tasks() {
    let e = Event::new();
    let (f, p) = waiter(&e);
    let fire = e.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        fire.fire();
    });
    let mut ex = BusyExecutor::new();
    ex.spawn(f, p);
    let s = ex.run();
    t.join().unwrap();
    assert_eq!(s.results, vec![7]);
    // 20 ms of spinning is many more polls than the 2 needed.
    assert!(s.polls > 2 && s.wasted_polls > 0, "{s:?}");
}

#[test]
fn reactor_fires_at_or_after_the_deadline() {
    let r = Reactor::start();
    let t0 = Instant::now();
    let late = r.timer(Duration::from_millis(30));
    let early = r.timer(Duration::from_millis(5));
    while !early.is_fired() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(t0.elapsed() >= Duration::from_millis(5));
    while !late.is_fired() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(t0.elapsed() >= Duration::from_millis(30));
}

#[test]
fn both_executors_finish_every_task_with_the_same_results() {
    let r = lesson_with(3, 60, 3, 5);
    assert_eq!(r.optimal["results_match"], 1.0, "{}", r.table());
    assert!(r.optimal["polls"] <= 60.0 * 4.0, "{}", r.table());
    assert_eq!(r.optimal["wasted_polls"], 0.0);
    assert!(r.naive["wasted_polls"] > r.optimal["wasted_polls"]);
    assert!(r.naive["polls"] >= r.optimal["polls"]);
}

#[test]
fn delays_are_seeded_and_in_range() {
    let a = seeded_delays(9, 10, 4, 7);
    assert_eq!(a, seeded_delays(9, 10, 4, 7));
    assert_eq!(a.len(), 10);
    assert!(a.iter().flatten().all(|d| (1..=7).contains(&d.as_millis())));
}
