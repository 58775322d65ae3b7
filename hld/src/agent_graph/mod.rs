//! Agent graph: a tool-using agent as an explicit state graph with a step
//! budget, retries and checkpoints, against a free-running loop.
//!
//! **The pattern.** An LLM agent alternates between asking the model what
//! to do and running the tool it names, until the model answers. The model
//! is not reliable: it repeats itself, and when a tool errors it may make
//! up an answer. Tools fail transiently (timeouts, 503s), and the worker
//! running the agent can crash halfway through a task.
//!
//! **The naive way** ([`run_naive`]) is `loop { ask the model; run the
//! tool }`: no step limit (only the lesson's hard safety cap of
//! [`SAFETY_CAP`] model calls stops a runaway), tool errors go straight
//! back to the model (which sometimes retries by itself and sometimes
//! guesses), and a crash loses the transcript, so the task starts over and
//! every step done so far is replayed, tool calls included.
//!
//! **The optimal way** ([`run_graph`]) makes the control flow explicit:
//! nodes `Plan`, `CallTool`, `Observe`, `Answer`, `Fail`, and typed edges
//! with guards ([`EDGES`]): `Plan -> Fail` when the step budget is spent or
//! the model asks again for a call that already succeeded (a loop), `CallTool`
//! retries a transient error with exponential backoff before `Observe`, and
//! `Observe -> Fail` when a tool is still down, so the model never answers
//! from an error. After every node the state is checkpointed (serialised
//! to a store), and a crashed run resumes from its last checkpoint: only
//! the node in flight is replayed. Every task ends in `Answer` or `Fail`
//! within the budget, so `runaway_loops` is 0 by construction.
//!
//! The numbers: `completed_tasks` (correct answers), `failed_tasks`,
//! `runaway_loops`, `tool_calls`, `model_calls` (the cost: tokens),
//! `replayed_steps` (work redone after crashes).
//!
//! **What is real and what is scripted.** The tools are real functions (a
//! calculator that parses `a op b`, a price lookup table) wrapped in a
//! seeded fault injector; the "model" is a deterministic script
//! ([`model`]), not an LLM: it plans lookup, multiply, add, answer; on a
//! tool error it guesses an answer for some tasks and repeats the call for
//! others; a few tasks make it loop on the same lookup forever. Backoff is
//! counted in virtual milliseconds, not slept. Crashes are injected between
//! a tool call and its checkpoint. In production: LangGraph (a state graph
//! with checkpointers, recursion limits and interrupts), Temporal and
//! other durable-execution engines (workflow history replayed on another
//! worker, activities retried with backoff); a tool call replayed after a
//! crash must be idempotent, as every retried call must.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The lesson's command-line name.
pub const NAME: &str = "agent-graph";
/// A short human title.
pub const TITLE: &str =
    "Agent graph: a free-running tool loop against a state graph with budget, retries, checkpoints";

/// The harness's hard stop: model calls per task, for either runner.
pub const SAFETY_CAP: usize = 50;

/// A tool call the model asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolCall {
    /// Price of an item, from the lookup table.
    Lookup(String),
    /// `a op b` on integers.
    Calc(String),
}

/// Evaluates `a op b` (`+ - * /`, integers, spaces around the operator).
pub fn calc(expr: &str) -> Result<i64, String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let [a, op, b] = parts[..] else {
        return Err(format!("cannot parse `{expr}`"));
    };
    let (a, b): (i64, i64) = match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(format!("not integers: `{expr}`")),
    };
    match op {
        "+" => Ok(a + b),
        "-" => Ok(a - b),
        "*" => Ok(a * b),
        "/" if b != 0 => Ok(a / b),
        "/" => Err("division by zero".into()),
        _ => Err(format!("unknown operator `{op}`")),
    }
}

/// The tools, with a seeded fault injector in front.
#[derive(Debug, Clone)]
pub struct Tools {
    pub prices: BTreeMap<String, i64>,
    /// Chance that a call fails transiently (before doing anything).
    pub fail_rate: f64,
    rng: StdRng,
    pub calls: usize,
}

impl Tools {
    pub fn new(prices: BTreeMap<String, i64>, fail_rate: f64, seed: u64) -> Self {
        Self {
            prices,
            fail_rate,
            rng: StdRng::seed_from_u64(seed),
            calls: 0,
        }
    }

    /// Runs `call`. `Err((true, _))` is transient (worth retrying).
    pub fn call(&mut self, call: &ToolCall) -> Result<i64, (bool, String)> {
        self.calls += 1;
        if self.rng.random_bool(self.fail_rate) {
            return Err((true, "503: tool unavailable".into()));
        }
        match call {
            ToolCall::Lookup(item) => self
                .prices
                .get(item)
                .copied()
                .ok_or((false, format!("no item `{item}`"))),
            ToolCall::Calc(expr) => calc(expr).map_err(|e| (false, e)),
        }
    }
}

/// One task: the cost of `qty` units of `item` plus `shipping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub item: String,
    pub qty: i64,
    pub shipping: i64,
    /// The model loops on the lookup for this task.
    pub loops: bool,
    /// The correct answer (from the same table the tool reads).
    pub answer: i64,
}

/// A tool call and what came back.
pub type Entry = (ToolCall, Result<i64, String>);

/// What the model decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Call(ToolCall),
    Answer(i64),
}

/// The scripted, deterministic "model". Reads the transcript: after an
/// error it guesses (`qty * 10 + shipping`) for about 40% of (task, step)
/// pairs and repeats the failed call otherwise; then lookup, `price * qty`,
/// `+ shipping`, answer; a looping task repeats the lookup forever.
pub fn model(task: &Task, transcript: &[Entry]) -> Action {
    let got = |c: &ToolCall| {
        transcript.iter().find_map(|(k, r)| {
            if k == c {
                r.as_ref().ok().copied()
            } else {
                None
            }
        })
    };
    let lookup = ToolCall::Lookup(task.item.clone());
    let price = got(&lookup);
    if task.loops && price.is_some() {
        // Stuck: whatever came back, it looks the price up again.
        return Action::Call(lookup);
    }
    if let Some((call, Err(_))) = transcript.last() {
        let key = format!("{}:{}", task.id, transcript.len());
        return if crate::hash::hash_bytes(key.as_bytes(), 9) % 100 < 40 {
            Action::Answer(task.qty * 10 + task.shipping)
        } else {
            Action::Call(call.clone())
        };
    }
    let Some(price) = price else {
        return Action::Call(lookup);
    };
    let mul = ToolCall::Calc(format!("{price} * {}", task.qty));
    let Some(sub) = got(&mul) else {
        return Action::Call(mul);
    };
    let add = ToolCall::Calc(format!("{sub} + {}", task.shipping));
    match got(&add) {
        Some(total) => Action::Answer(total),
        None => Action::Call(add),
    }
}

/// How one task ended, and what it cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub answer: Option<i64>,
    pub runaway: bool,
    pub fail_reason: Option<String>,
    pub model_calls: usize,
    pub tool_calls: usize,
    pub replayed_steps: usize,
    pub crashes: usize,
    pub retries: usize,
    pub backoff_ms: u64,
    /// `(from, to)` node names of every transition (graph runs only).
    pub transitions: Vec<(&'static str, &'static str)>,
}

/// The free-running loop. `crash()` is asked after every tool call whether
/// the worker dies there; a crash loses the transcript.
pub fn run_naive(task: &Task, tools: &mut Tools, crash: &mut dyn FnMut() -> bool) -> Outcome {
    let mut out = Outcome::default();
    let mut transcript: Vec<Entry> = Vec::new();
    loop {
        if out.model_calls >= SAFETY_CAP {
            out.runaway = true;
            return out;
        }
        out.model_calls += 1;
        match model(task, &transcript) {
            Action::Answer(v) => {
                out.answer = Some(v);
                return out;
            }
            Action::Call(c) => {
                out.tool_calls += 1;
                let r = tools.call(&c).map_err(|e| e.1);
                transcript.push((c, r));
            }
        }
        if crash() {
            // Start over: every step of this attempt will be done again.
            out.crashes += 1;
            out.replayed_steps += transcript.len();
            transcript.clear();
        }
    }
}

/// A node of the agent graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    Plan,
    CallTool(ToolCall),
    Observe(ToolCall, Result<i64, String>),
    Answer(i64),
    Fail(String),
}

impl Node {
    pub fn name(&self) -> &'static str {
        match self {
            Node::Plan => "Plan",
            Node::CallTool(_) => "CallTool",
            Node::Observe(..) => "Observe",
            Node::Answer(_) => "Answer",
            Node::Fail(_) => "Fail",
        }
    }
}

/// Every edge of the graph: `(from, to, guard)`.
pub const EDGES: &[(&str, &str, &str)] = &[
    ("Plan", "Fail", "step budget spent"),
    (
        "Plan",
        "Fail",
        "model repeats a call that already succeeded (loop)",
    ),
    ("Plan", "Answer", "model answers"),
    ("Plan", "CallTool", "model asks for a new tool call"),
    ("CallTool", "Observe", "success, or error after retries"),
    ("Observe", "Plan", "tool succeeded"),
    ("Observe", "Fail", "tool still failing after retries"),
];

/// The graph's settings.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Plan steps per task.
    pub budget: usize,
    /// Tool attempts per call (1 = no retry).
    pub attempts: usize,
    /// First backoff; doubles each retry.
    pub backoff_ms: u64,
}

/// The checkpointed state of one run: where it is and what it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub node: Node,
    pub transcript: Vec<Entry>,
    pub steps: usize,
}

/// A durable store of checkpoints (serialised JSON by task id).
#[derive(Debug, Default)]
pub struct CheckpointStore {
    saved: HashMap<u64, String>,
    pub writes: usize,
}

impl CheckpointStore {
    pub fn save(&mut self, id: u64, s: &AgentState) {
        self.writes += 1;
        let json = serde_json::to_string(s).expect("agent state serialises");
        self.saved.insert(id, json);
    }

    pub fn load(&self, id: u64) -> Option<AgentState> {
        serde_json::from_str(self.saved.get(&id)?).ok()
    }
}

/// The state graph. After each tool call, `crash()` may kill the worker
/// before the checkpoint is written; the run then reloads the last
/// checkpoint (at `CallTool`) and makes the call again.
pub fn run_graph(
    task: &Task,
    tools: &mut Tools,
    policy: Policy,
    store: &mut CheckpointStore,
    crash: &mut dyn FnMut() -> bool,
) -> Outcome {
    let mut out = Outcome::default();
    let mut s = store.load(task.id).unwrap_or(AgentState {
        node: Node::Plan,
        transcript: Vec::new(),
        steps: 0,
    });
    store.save(task.id, &s);
    loop {
        if out.model_calls >= SAFETY_CAP {
            out.runaway = true;
            return out;
        }
        let next = match &s.node {
            Node::Answer(v) => {
                out.answer = Some(*v);
                return out;
            }
            Node::Fail(why) => {
                out.fail_reason = Some(why.clone());
                return out;
            }
            Node::Plan if s.steps >= policy.budget => Node::Fail("step budget spent".into()),
            Node::Plan => {
                out.model_calls += 1;
                match model(task, &s.transcript) {
                    Action::Answer(v) => Node::Answer(v),
                    Action::Call(c) if s.transcript.iter().any(|(k, r)| *k == c && r.is_ok()) => {
                        Node::Fail("loop: the model repeats a call that already succeeded".into())
                    }
                    Action::Call(c) => Node::CallTool(c),
                }
            }
            Node::CallTool(c) => {
                let mut r = Err((true, String::new()));
                for attempt in 0..policy.attempts.max(1) {
                    if attempt > 0 {
                        out.retries += 1;
                        out.backoff_ms += policy.backoff_ms << (attempt - 1);
                    }
                    out.tool_calls += 1;
                    r = tools.call(c);
                    if !matches!(r, Err((true, _))) {
                        break;
                    }
                }
                Node::Observe(c.clone(), r.map_err(|e| e.1))
            }
            Node::Observe(c, r) => {
                s.transcript.push((c.clone(), r.clone()));
                s.steps += 1;
                match r {
                    Ok(_) => Node::Plan,
                    Err(e) => Node::Fail(format!("tool still failing: {e}")),
                }
            }
        };
        if matches!(s.node, Node::CallTool(_)) && crash() {
            // The call's result is lost: reload and call again.
            out.crashes += 1;
            out.replayed_steps += 1;
            s = store.load(task.id).expect("a checkpoint was written");
            continue;
        }
        out.transitions.push((s.node.name(), next.name()));
        s.node = next;
        store.save(task.id, &s);
    }
}

/// The item table and `count` tasks, `loop_share` of them looping.
pub fn workload(seed: u64, count: usize, loop_share: f64) -> (BTreeMap<String, i64>, Vec<Task>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xa9e7);
    let prices: BTreeMap<String, i64> = (0..40)
        .map(|i| (format!("item-{i:02}"), rng.random_range(2..500)))
        .collect();
    let names: Vec<&String> = prices.keys().collect();
    let tasks = (0..count as u64)
        .map(|id| {
            let item = names[rng.random_range(0..names.len())].clone();
            let (qty, shipping) = (rng.random_range(1..20), rng.random_range(0..30));
            Task {
                id,
                answer: prices[&item] * qty + shipping,
                item,
                qty,
                shipping,
                loops: rng.random_bool(loop_share),
            }
        })
        .collect();
    (prices, tasks)
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    completed: usize,
    failed: usize,
    runaway: usize,
    model_calls: usize,
    tool_calls: usize,
    replayed: usize,
    crashes: usize,
    retries: usize,
    backoff_ms: u64,
}

impl Totals {
    fn add(&mut self, t: &Task, o: &Outcome) {
        if o.answer == Some(t.answer) {
            self.completed += 1;
        } else {
            self.failed += 1;
        }
        self.runaway += o.runaway as usize;
        self.model_calls += o.model_calls;
        self.tool_calls += o.tool_calls;
        self.replayed += o.replayed_steps;
        self.crashes += o.crashes;
        self.retries += o.retries;
        self.backoff_ms += o.backoff_ms;
    }
}

/// The experiment: `count` tasks, tool failure rate, crash chance per step.
pub fn lesson_with(seed: u64, count: usize, fail_rate: f64, crash_rate: f64) -> LessonReport {
    let (prices, tasks) = workload(seed, count, 0.1);
    let policy = Policy {
        budget: 10,
        attempts: 4,
        backoff_ms: 100,
    };
    let (mut naive, mut graph) = (Totals::default(), Totals::default());
    let mut store = CheckpointStore::default();
    for t in &tasks {
        let task_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ t.id;
        let mut tools = Tools::new(prices.clone(), fail_rate, task_seed);
        let mut crashes = StdRng::seed_from_u64(task_seed ^ 1);
        naive.add(
            t,
            &run_naive(t, &mut tools, &mut || crashes.random_bool(crash_rate)),
        );
        let mut tools = Tools::new(prices.clone(), fail_rate, task_seed);
        let mut crashes = StdRng::seed_from_u64(task_seed ^ 1);
        let o = run_graph(t, &mut tools, policy, &mut store, &mut || {
            crashes.random_bool(crash_rate)
        });
        graph.add(t, &o);
    }
    let loops = tasks.iter().filter(|t| t.loops).count();
    LessonReport::new(NAME, TITLE)
        .both("completed_tasks", naive.completed as f64, graph.completed as f64)
        .both("failed_tasks", naive.failed as f64, graph.failed as f64)
        .both("runaway_loops", naive.runaway as f64, graph.runaway as f64)
        .both("tool_calls", naive.tool_calls as f64, graph.tool_calls as f64)
        .both("model_calls", naive.model_calls as f64, graph.model_calls as f64)
        .both("replayed_steps", naive.replayed as f64, graph.replayed as f64)
        .both("crashes", naive.crashes as f64, graph.crashes as f64)
        .optimal("tool_retries", graph.retries as f64)
        .optimal("backoff_ms_virtual", graph.backoff_ms as f64)
        .optimal("checkpoint_writes", store.writes as f64)
        .notes(format!(
            "{count} tasks (look up a price, multiply, add shipping, answer) for a scripted model; tools fail \
             transiently {:.0}% of calls and the worker crashes after {:.0}% of tool calls. The free loop completes {} \
             ({} of the {loops} looping tasks run into the {SAFETY_CAP}-call safety cap, and the model guesses after \
             some tool errors), spends {} model calls and {} tool calls, and replays {} steps after {} crashes \
             because it starts over. The graph completes {} with 0 runaways: loops and dead tools end in Fail within \
             a {}-step budget, {} retries with backoff absorb the transient errors, and resuming from checkpoints \
             replays only the {} interrupted tool call(s). The model is a deterministic script, not an LLM.",
            100.0 * fail_rate,
            100.0 * crash_rate,
            naive.completed,
            naive.runaway,
            naive.model_calls,
            naive.tool_calls,
            naive.replayed,
            naive.crashes,
            graph.completed,
            policy.budget,
            graph.retries,
            graph.replayed,
        ))
}

/// The lesson at full size: 400 tasks, 25% tool failures, 3% crashes.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 400, 0.25, 0.03)
}

#[cfg(test)]
mod tests;
