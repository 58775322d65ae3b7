//! Tree of thoughts: beam search over partial solutions of the Game of 24
//! against one greedy chain.
//!
//! **The pattern.** Some problems are solved in steps, and an early step
//! can doom the rest. The Game of 24 is one: four numbers from 1 to 13,
//! combine two of them with `+ - * /` into one number, three times, and the
//! last number must be 24 (`4 7 8 8`: `7 - 8/8 = 6`, `4 * 6 = 24`). Each
//! partial state (the numbers left) is a "thought"; a *proposer* lists the
//! next thoughts and a *value function* scores how promising each is.
//!
//! **The naive way** is chain of thought as one path: at each step take the
//! best-scored next state and never look back ([`search`] with beam width
//! 1). One wrong first step and the puzzle is lost, however good the later
//! steps are.
//!
//! **The optimal way** is tree of thoughts (Yao et al., 2023): keep the
//! best `b` states at each depth (breadth-limited BFS, a beam; the paper
//! uses `b = 5` on this very game), expand all of them, score, keep the
//! best `b` again, and check the finished ones. It costs about `b` times
//! the expansions of the chain and recovers most of the chain's dead ends.
//! The numbers to look at: `solved` (the fraction of *solvable* puzzles
//! solved; every claimed solution is replayed and checked exactly by
//! [`verify`]), `states_expanded` and `states_scored` (in the paper each
//! one is an LLM call, the real cost), `ms`.
//!
//! **What is real and what is not.** The puzzles are real (drawn from the
//! seed; a brute-force solver over exact rationals, [`solvable`], labels
//! which have an answer) and so are the arithmetic and the search. In the
//! paper an LLM proposes the thoughts and judges them "sure / likely /
//! impossible"; here the proposer enumerates every operation and the value
//! is a hand-written heuristic ([`value`]: exact on two numbers, a guess
//! from the sum and the product on three). So the lesson shows what the
//! *search* buys with a fixed, imperfect value function, not what a model
//! does. The same shape runs under self-consistency sampling, best-of-n
//! with a verifier, and the search used for reasoning models at test time.

use crate::report::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "tree-of-thoughts";
/// A short human title.
pub const TITLE: &str = "Tree of thoughts: beam search against one greedy chain on the Game of 24";

/// An exact rational `n / d`, `d > 0`, in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rat {
    pub n: i64,
    pub d: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rat {
    /// `n / d` in lowest terms, None when `d == 0`.
    pub fn new(n: i64, d: i64) -> Option<Rat> {
        if d == 0 {
            return None;
        }
        let g = gcd(n, d).max(1) * d.signum();
        Some(Rat { n: n / g, d: d / g })
    }

    pub fn int(n: i64) -> Rat {
        Rat { n, d: 1 }
    }

    pub fn f64(self) -> f64 {
        self.n as f64 / self.d as f64
    }
}

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    /// `a op b`, None for a division by zero.
    pub fn apply(self, a: Rat, b: Rat) -> Option<Rat> {
        match self {
            Op::Add => Rat::new(a.n * b.d + b.n * a.d, a.d * b.d),
            Op::Sub => Rat::new(a.n * b.d - b.n * a.d, a.d * b.d),
            Op::Mul => Rat::new(a.n * b.n, a.d * b.d),
            Op::Div => Rat::new(a.n * b.d, a.d * b.n),
        }
    }
}

/// One thought: `a op b = result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub a: Rat,
    pub op: Op,
    pub b: Rat,
    pub result: Rat,
}

/// The numbers left, sorted.
pub type State = Vec<Rat>;

/// Every next state: each pair, each operation (both orders for `-` and
/// `/`), with duplicate states kept once (first one proposed).
pub fn children(state: &[Rat]) -> Vec<(Step, State)> {
    let mut out: Vec<(Step, State)> = Vec::new();
    for i in 0..state.len() {
        for j in i + 1..state.len() {
            let rest = || {
                state
                    .iter()
                    .enumerate()
                    .filter(|&(x, _)| x != i && x != j)
                    .map(|(_, &v)| v)
            };
            let (x, y) = (state[i], state[j]);
            let ops = [
                (x, Op::Add, y),
                (x, Op::Mul, y),
                (x, Op::Sub, y),
                (y, Op::Sub, x),
                (x, Op::Div, y),
                (y, Op::Div, x),
            ];
            for (a, op, b) in ops {
                let Some(result) = op.apply(a, b) else {
                    continue;
                };
                let mut next: State = rest().chain([result]).collect();
                next.sort();
                if out.iter().all(|(_, s)| *s != next) {
                    out.push((Step { a, op, b, result }, next));
                }
            }
        }
    }
    out
}

fn is_24(state: &[Rat]) -> bool {
    state == [Rat::int(24)]
}

/// Brute force: can `state` reach 24? (Exhaustive depth-first search.)
pub fn solvable(state: &[Rat]) -> bool {
    if state.len() == 1 {
        return is_24(state);
    }
    children(state).iter().any(|(_, s)| solvable(s))
}

/// How far `x` is from 24, in log terms (non-positive numbers are far).
fn distance(x: f64) -> f64 {
    if x <= 0.0 {
        5.0
    } else {
        (x / 24.0).ln().abs()
    }
}

/// The value function, higher is better. One number: 24 or not. Two
/// numbers: exact ("sure" when one operation makes 24, else "impossible"),
/// as a reader can tell at a glance. Three or more: a guess, the closer of
/// the sum and the product to 24, less a penalty per fraction.
pub fn value(state: &[Rat]) -> f64 {
    match state.len() {
        0 => -100.0,
        1 if is_24(state) => 100.0,
        1 => -100.0,
        2 if children(state).iter().any(|(_, s)| is_24(s)) => 50.0,
        2 => -50.0,
        _ => {
            let sum: f64 = state.iter().map(|r| r.f64()).sum();
            let prod: f64 = state.iter().map(|r| r.f64()).product();
            let fractions = state.iter().filter(|r| r.d != 1).count() as f64;
            -distance(sum).min(distance(prod)) - fractions
        }
    }
}

/// What a search did on one puzzle.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// The steps to 24, when found.
    pub solution: Option<Vec<Step>>,
    /// States whose children were proposed.
    pub expanded: usize,
    /// Child states scored by the value function.
    pub scored: usize,
}

/// Breadth-limited search: at each depth expand every state of the beam,
/// score all children with [`value`], keep the best `width` distinct ones
/// (stable: ties keep proposal order). Width 1 is a greedy chain.
pub fn search(start: &[Rat], width: usize) -> SearchResult {
    let mut start: State = start.to_vec();
    start.sort();
    let mut beam: Vec<(State, Vec<Step>)> = vec![(start, Vec::new())];
    let (mut expanded, mut scored) = (0, 0);
    while beam.iter().any(|(s, _)| s.len() > 1) {
        let mut cands: Vec<(f64, State, Vec<Step>)> = Vec::new();
        for (state, path) in &beam {
            expanded += 1;
            for (step, child) in children(state) {
                scored += 1;
                if cands.iter().any(|(_, s, _)| *s == child) {
                    continue;
                }
                let mut p = path.clone();
                p.push(step);
                cands.push((value(&child), child, p));
            }
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        cands.truncate(width.max(1));
        beam = cands.into_iter().map(|(_, s, p)| (s, p)).collect();
    }
    let solution = beam.into_iter().find(|(s, _)| is_24(s)).map(|(_, p)| p);
    SearchResult {
        solution,
        expanded,
        scored,
    }
}

/// Replays `steps` from the four `numbers`: each operand must be one of
/// the numbers left, each result exact, and the last number 24.
pub fn verify(numbers: &[Rat], steps: &[Step]) -> bool {
    let mut left: Vec<Rat> = numbers.to_vec();
    for s in steps {
        for operand in [s.a, s.b] {
            match left.iter().position(|&x| x == operand) {
                Some(i) => {
                    left.swap_remove(i);
                }
                None => return false,
            }
        }
        if s.op.apply(s.a, s.b) != Some(s.result) {
            return false;
        }
        left.push(s.result);
    }
    is_24(&left)
}

/// `count` puzzles of four numbers from 1 to 13, from the seed.
pub fn puzzles(seed: u64, count: usize) -> Vec<[i64; 4]> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x24);
    (0..count)
        .map(|_| std::array::from_fn(|_| rng.random_range(1..=13)))
        .collect()
}

/// One strategy's totals over the solvable puzzles.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub solved: usize,
    pub wrong_claims: usize,
    pub expanded: usize,
    pub scored: usize,
    pub ms: f64,
}

/// Runs the search with `width` over the puzzles.
pub fn run(puzzles: &[Vec<Rat>], width: usize) -> Tally {
    let t = Instant::now();
    let mut tally = Tally::default();
    for p in puzzles {
        let r = search(p, width);
        tally.expanded += r.expanded;
        tally.scored += r.scored;
        match r.solution {
            Some(steps) if verify(p, &steps) => tally.solved += 1,
            Some(_) => tally.wrong_claims += 1,
            None => {}
        }
    }
    tally.ms = t.elapsed().as_secs_f64() * 1e3;
    tally
}

/// The experiment on `count` puzzles with beam width `width`.
pub fn lesson_with(seed: u64, count: usize, width: usize) -> LessonReport {
    let all: Vec<Vec<Rat>> = puzzles(seed, count)
        .iter()
        .map(|p| p.iter().map(|&x| Rat::int(x)).collect())
        .collect();
    let t = Instant::now();
    let solvable_set: Vec<Vec<Rat>> = all.iter().filter(|p| solvable(p)).cloned().collect();
    let brute_ms = t.elapsed().as_secs_f64() * 1e3;
    let n = solvable_set.len().max(1) as f64;
    let chain = run(&solvable_set, 1);
    let tree = run(&solvable_set, width);
    let frac = |t: &Tally| t.solved as f64 / n;
    LessonReport::new(NAME, TITLE)
        .both("solved", frac(&chain), frac(&tree))
        .both("states_expanded", chain.expanded as f64, tree.expanded as f64)
        .both("states_scored", chain.scored as f64, tree.scored as f64)
        .both("ms", chain.ms, tree.ms)
        .both("wrong_claims", chain.wrong_claims as f64, tree.wrong_claims as f64)
        .both("solvable_puzzles", n, n)
        .both("beam_width", 1.0, width as f64)
        .notes(format!(
            "{count} Game of 24 puzzles from the seed, {} of them solvable (brute force over exact rationals, \
             {brute_ms:.0} ms). With the same proposer and value function, the greedy chain solves {:.1}% of the \
             solvable ones and the width-{width} beam {:.1}%, for {:.1}x the expansions ({} against {}) and {:.1}x the \
             scored states; every answer was replayed and checked exactly. The chain loses a puzzle whenever its \
             first step, chosen by a heuristic guess, leads to three numbers that cannot make 24; the beam keeps {width} \
             such guesses alive. In the paper (Yao et al., 2023) an LLM proposes and scores (GPT-4: 4% with chain of \
             thought, 74% with a width-5 tree); here the value is a heuristic, so this shows the search, not the model.",
            solvable_set.len(),
            100.0 * frac(&chain),
            100.0 * frac(&tree),
            tree.expanded as f64 / chain.expanded.max(1) as f64,
            tree.expanded,
            chain.expanded,
            tree.scored as f64 / chain.scored.max(1) as f64,
        ))
}

/// The lesson at full size: 600 puzzles, beam width 5 (as in the paper).
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 600, 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rats(xs: &[i64]) -> Vec<Rat> {
        xs.iter().map(|&x| Rat::int(x)).collect()
    }

    #[test]
    fn rationals_are_exact_and_reduced() {
        let third = Rat::new(1, 3).unwrap();
        assert_eq!(Rat::new(2, -6), Some(Rat { n: -1, d: 3 }));
        assert_eq!(Op::Add.apply(third, third), Rat::new(2, 3));
        assert_eq!(Op::Mul.apply(third, Rat::int(3)), Some(Rat::int(1)));
        assert_eq!(
            Op::Div.apply(Rat::int(8), Rat::new(1, 3).unwrap()),
            Some(Rat::int(24))
        );
        assert_eq!(Op::Div.apply(Rat::int(1), Rat::int(0)), None);
        assert_eq!(Rat::new(0, 5), Some(Rat::int(0)));
    }

    #[test]
    fn brute_force_knows_the_classics() {
        // 3 3 8 8: 8 / (3 - 8/3) = 24, which needs fractions.
        assert!(solvable(&rats(&[3, 3, 8, 8])));
        assert!(solvable(&rats(&[4, 7, 8, 8])));
        assert!(solvable(&rats(&[1, 5, 5, 5])), "5 * (5 - 1/5)");
        assert!(!solvable(&rats(&[1, 1, 1, 1])));
        assert!(!solvable(&rats(&[13, 13, 13, 13])));
        assert!(!solvable(&rats(&[1, 1, 1, 2])));
    }

    #[test]
    fn a_wide_enough_beam_is_exhaustive_and_finds_3_3_8_8() {
        let p = rats(&[3, 3, 8, 8]);
        let r = search(&p, 10_000);
        let steps = r
            .solution
            .expect("exhaustive beam solves a solvable puzzle");
        assert!(verify(&p, &steps), "{steps:?}");
        assert_eq!(steps.len(), 3);
        assert!(search(&rats(&[1, 1, 1, 1]), 10_000).solution.is_none());
    }

    #[test]
    fn verify_rejects_bad_replays() {
        let p = rats(&[4, 7, 8, 8]);
        let s = |a: i64, op, b: i64, r: i64| Step {
            a: Rat::int(a),
            op,
            b: Rat::int(b),
            result: Rat::int(r),
        };
        let good = [
            s(8, Op::Div, 8, 1),
            s(7, Op::Sub, 1, 6),
            s(4, Op::Mul, 6, 24),
        ];
        assert!(verify(&p, &good));
        // 9 is not on the table; a wrong result; stopping short of one number.
        assert!(!verify(&p, &[s(9, Op::Div, 8, 1), good[1], good[2]]));
        assert!(!verify(&p, &[s(8, Op::Div, 8, 2), good[1], good[2]]));
        assert!(!verify(&p, &good[..2]));
    }

    #[test]
    fn children_cover_all_pairs_and_ops_without_duplicates() {
        // 4 distinct numbers: 6 pairs x 6 results, some results coincide.
        let c = children(&rats(&[1, 2, 3, 4]));
        assert!(c.len() > 20 && c.len() <= 36, "{}", c.len());
        for (step, next) in &c {
            assert_eq!(next.len(), 3);
            assert!(next.contains(&step.result));
        }
        // Identical numbers: 2 2 gives 4, 4 (twice, deduplicated), 0, 1.
        assert_eq!(children(&rats(&[2, 2])).len(), 3);
    }

    #[test]
    fn value_is_exact_on_two_numbers() {
        assert_eq!(value(&rats(&[24])), 100.0);
        assert_eq!(value(&rats(&[4, 6])), 50.0);
        assert_eq!(value(&rats(&[5, 7])), -50.0);
        // Three numbers: a guess, but 1 2 12 (product 24) beats 13 13 13.
        assert!(value(&rats(&[1, 2, 12])) > value(&rats(&[13, 13, 13])));
    }

    #[test]
    fn greedy_is_width_one_and_the_beam_never_does_worse_here() {
        let ps: Vec<Vec<Rat>> = puzzles(11, 80)
            .iter()
            .map(|p| rats(p))
            .filter(|p| solvable(p))
            .collect();
        let chain = run(&ps, 1);
        let tree = run(&ps, 5);
        assert_eq!(chain.expanded, ps.len() * 3, "one state per depth");
        assert!(tree.solved >= chain.solved);
        assert!(tree.expanded > chain.expanded);
        assert_eq!(chain.wrong_claims + tree.wrong_claims, 0);
    }
}
