//! Tests of the agent-graph lesson.

use super::*;

fn task(loops: bool) -> (Tools, Task) {
    let prices: BTreeMap<String, i64> = [("widget".to_string(), 7)].into();
    let t = Task {
        id: 1,
        item: "widget".into(),
        qty: 3,
        shipping: 5,
        loops,
        answer: 26,
    };
    (Tools::new(prices, 0.0, 1), t)
}

fn policy() -> Policy {
    Policy {
        budget: 10,
        attempts: 4,
        backoff_ms: 100,
    }
}

#[test]
fn tools_are_real_functions() {
    assert_eq!(calc("6 * 7"), Ok(42));
    assert_eq!(calc("10 - 12"), Ok(-2));
    assert_eq!(calc("9 / 2"), Ok(4));
    assert!(calc("1 / 0").is_err());
    assert!(calc("1 +").is_err());
    assert!(calc("a + 1").is_err());
    assert!(calc("1 % 2").is_err());
    let (mut tools, _) = task(false);
    assert_eq!(tools.call(&ToolCall::Lookup("widget".into())), Ok(7));
    assert!(matches!(
        tools.call(&ToolCall::Lookup("gadget".into())),
        Err((false, _))
    ));
    assert_eq!(tools.calls, 2);
}

#[test]
fn both_runners_solve_a_clean_task_with_three_tool_calls() {
    let (mut tools, t) = task(false);
    let n = run_naive(&t, &mut tools, &mut || false);
    assert_eq!((n.answer, n.tool_calls, n.model_calls), (Some(26), 3, 4));
    let (mut tools, t) = task(false);
    let mut store = CheckpointStore::default();
    let g = run_graph(&t, &mut tools, policy(), &mut store, &mut || false);
    assert_eq!((g.answer, g.tool_calls, g.model_calls), (Some(26), 3, 4));
    for (from, to) in &g.transitions {
        assert!(
            EDGES.iter().any(|(f, t, _)| f == from && t == to),
            "{from}->{to}"
        );
    }
    assert_eq!(g.transitions.last(), Some(&("Plan", "Answer")));
}

#[test]
fn a_looping_model_runs_away_in_the_loop_and_fails_fast_in_the_graph() {
    let (mut tools, t) = task(true);
    let n = run_naive(&t, &mut tools, &mut || false);
    assert!(n.runaway && n.answer.is_none());
    assert_eq!(n.model_calls, SAFETY_CAP);
    assert_eq!(n.tool_calls, SAFETY_CAP);
    let (mut tools, t) = task(true);
    let g = run_graph(
        &t,
        &mut tools,
        policy(),
        &mut CheckpointStore::default(),
        &mut || false,
    );
    assert!(!g.runaway);
    assert!(g.fail_reason.unwrap().starts_with("loop"));
    assert_eq!((g.tool_calls, g.model_calls), (1, 2));
}

#[test]
fn the_step_budget_bounds_the_graph() {
    let (mut tools, t) = task(false);
    let tight = Policy {
        budget: 2,
        ..policy()
    };
    let g = run_graph(
        &t,
        &mut tools,
        tight,
        &mut CheckpointStore::default(),
        &mut || false,
    );
    assert_eq!(g.fail_reason.as_deref(), Some("step budget spent"));
    assert_eq!(g.model_calls, 2);
}

#[test]
fn retries_absorb_transient_failures_and_dead_tools_fail_cleanly() {
    let (tools, t) = task(false);
    let mut completed = 0;
    for seed in 0..50 {
        let mut flaky = Tools::new(tools.prices.clone(), 0.5, seed);
        let g = run_graph(
            &t,
            &mut flaky,
            policy(),
            &mut CheckpointStore::default(),
            &mut || false,
        );
        assert!(g.answer == Some(26) || g.fail_reason.is_some_and(|r| r.starts_with("tool")));
        completed += (g.answer == Some(26)) as usize;
    }
    // 3 calls each succeeding within 4 tries with p = 1 - 0.5^4.
    assert!(completed > 30, "{completed}");
    let mut dead = Tools::new(tools.prices.clone(), 1.0, 0);
    let g = run_graph(
        &t,
        &mut dead,
        policy(),
        &mut CheckpointStore::default(),
        &mut || false,
    );
    assert_eq!(
        (g.tool_calls, g.retries, g.backoff_ms),
        (4, 3, 100 + 200 + 400)
    );
    assert!(g.answer.is_none());
}

#[test]
fn a_crashed_graph_resumes_from_its_checkpoint() {
    let (mut tools, t) = task(false);
    let mut store = CheckpointStore::default();
    // Crash after the 1st and 3rd tool call: each is made again.
    let mut n = 0;
    let g = run_graph(&t, &mut tools, policy(), &mut store, &mut || {
        n += 1;
        n == 1 || n == 3
    });
    assert_eq!(g.answer, Some(26));
    assert_eq!((g.crashes, g.replayed_steps, g.tool_calls), (2, 2, 5));
    let state = store.load(t.id).unwrap();
    assert_eq!(state.node, Node::Answer(26));
    assert_eq!(state.transcript.len(), 3);
    // The loop, crashing at the same points, starts over each time.
    let (mut tools, t) = task(false);
    let mut n = 0;
    let r = run_naive(&t, &mut tools, &mut || {
        n += 1;
        n == 2 || n == 4
    });
    assert_eq!(r.answer, Some(26));
    assert_eq!(r.replayed_steps, 2 + 2);
    assert_eq!(r.tool_calls, 3 + 4);
}

#[test]
fn lesson_shows_the_graph_completing_more_without_runaways() {
    let r = lesson_with(3, 120, 0.25, 0.03);
    assert_eq!(r.optimal["runaway_loops"], 0.0);
    assert!(r.naive["runaway_loops"] > 0.0);
    assert!(r.optimal["completed_tasks"] > r.naive["completed_tasks"]);
    assert!(r.optimal["replayed_steps"] < r.naive["replayed_steps"]);
    assert!(r.optimal["model_calls"] < r.naive["model_calls"]);
}
