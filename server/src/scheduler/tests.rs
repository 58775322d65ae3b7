//! Unit and property tests for the scheduler, driven by a fake model.

use super::*;
use proptest::prelude::*;

fn cfg(budget: usize, max_seqs: usize, num_blocks: usize, block_size: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: max_seqs,
        max_num_batched_tokens: budget,
        max_model_len: 4096,
        num_blocks,
        block_size,
        enable_prefix_caching: false,
        speculative: None,
    }
}

/// The fake model's "sampled" token: a deterministic function of id and position.
fn fake_token(id: SeqId, pos: usize) -> u32 {
    ((id as usize * 31 + pos * 7) % 5) as u32
}

/// Sample for every scheduled sequence whose chunk reaches its end; a
/// drafted sequence keeps each draft token equal to the fake model's, then
/// the model's own (as the engine's verification does).
fn fake_sample(s: &Scheduler, out: &SchedulerOutput) -> Vec<(SeqId, u32)> {
    let mut sampled = Vec::new();
    for x in out.scheduled.iter().filter(|x| x.samples) {
        let pos = s.get(x.id).unwrap().tokens.len();
        for i in 0..=x.draft.len() {
            let t = fake_token(x.id, pos + i);
            sampled.push((x.id, t));
            if x.draft.get(i) != Some(&t) {
                break;
            }
        }
    }
    sampled
}

fn ngram(k: usize) -> Option<crate::spec_decode::NgramConfig> {
    Some(crate::spec_decode::NgramConfig {
        num_speculative_tokens: k,
        prompt_lookup_max: 2,
        prompt_lookup_min: 1,
    })
}

/// Speculation changes how many steps a request takes, never its tokens:
/// the fake model's output is periodic, so drafts are accepted, and every
/// request ends with the tokens plain decoding gives.
#[test]
fn speculation_saves_steps_and_keeps_outputs() {
    let run = |speculative| {
        let mut s = Scheduler::new(SchedulerConfig {
            speculative,
            ..cfg(64, 4, 64, 4)
        });
        for id in 0..4u64 {
            s.add(id, vec![1, 2, 3], 40, None).unwrap();
        }
        let (mut steps, mut drafted, mut outputs) = (0, 0, HashMap::new());
        while s.has_work() {
            let (out, finished) = step(&mut s);
            drafted += out.scheduled.iter().map(|x| x.draft.len()).sum::<usize>();
            for x in &out.scheduled {
                assert!(x.draft.is_empty() || x.num_known() == 1);
                assert!(x.draft.len() <= 3);
            }
            outputs.extend(finished.into_iter().map(|q| (q.id, q.output().to_vec())));
            steps += 1;
        }
        (steps, drafted, outputs)
    };
    let (plain_steps, plain_drafted, plain) = run(None);
    let (spec_steps, drafted, spec) = run(ngram(3));
    assert_eq!(plain_drafted, 0);
    assert!(drafted > 0);
    assert_eq!(spec, plain);
    for (id, output) in &spec {
        assert_eq!(output, &expected_output(*id, 3, 40));
    }
    assert!(
        spec_steps < plain_steps / 2,
        "{spec_steps} vs {plain_steps}"
    );
}

/// A draft never takes blocks from another sequence: with the pool full,
/// the step decodes one token instead of preempting for the draft.
#[test]
fn draft_is_dropped_rather_than_preempting() {
    let mut s = Scheduler::new(SchedulerConfig {
        speculative: ngram(4),
        ..cfg(64, 4, 3, 4)
    });
    // The fake model samples 0 after [0, 5], so the context [0, 5, 0]
    // drafts [5, 0], whose slots would need a second block.
    assert_eq!(fake_token(1, 2), 0);
    s.add(1, vec![0, 5], 8, None).unwrap();
    let (first, _) = step(&mut s);
    assert!(
        first.scheduled[0].draft.is_empty(),
        "a prefill carries no draft"
    );
    let mut hog = crate::block_manager::SeqBlocks::default();
    assert!(s.block_manager_mut().allocate_slots(&mut hog, 8));
    let (out, _) = step(&mut s);
    assert!(out.preempted.is_empty());
    assert_eq!((out.scheduled[0].len, out.scheduled[0].draft.len()), (1, 0));
    s.block_manager_mut().free(&mut hog);
    let mut drafted = false;
    while s.has_work() {
        drafted |= !step(&mut s).0.scheduled[0].draft.is_empty();
    }
    assert!(drafted, "with blocks free, it drafts again");
}

/// Schedule, run the fake model, report back; return the output and the ids
/// that finished this step (removed from the scheduler).
fn step(s: &mut Scheduler) -> (SchedulerOutput, Vec<Sequence>) {
    let out = s.schedule();
    let sampled = fake_sample(s, &out);
    s.on_step_done(&out, &sampled);
    s.block_manager().check_invariants().unwrap();
    let mut done: Vec<SeqId> = sampled
        .iter()
        .map(|&(id, _)| id)
        .filter(|&id| s.get(id).is_some_and(Sequence::is_finished))
        .collect();
    done.dedup();
    let finished = done.into_iter().map(|id| s.remove(id).unwrap()).collect();
    (out, finished)
}

fn expected_output(id: SeqId, prompt_len: usize, max_tokens: usize) -> Vec<u32> {
    (0..max_tokens)
        .map(|k| fake_token(id, prompt_len + k))
        .collect()
}

fn sched(out: &SchedulerOutput) -> Vec<(SeqId, usize, usize, bool)> {
    out.scheduled
        .iter()
        .map(|x| (x.id, x.start, x.len, x.samples))
        .collect()
}

#[test]
fn token_budget_is_respected() {
    let mut s = Scheduler::new(cfg(16, 8, 64, 4));
    for id in 1..=3 {
        s.add(id, vec![1; 10], 4, None).unwrap();
    }
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(1, 0, 10, true), (2, 0, 6, false)]);
    assert_eq!(out.num_batched_tokens, 16);
    assert_eq!((s.num_running(), s.num_waiting()), (2, 1));
    let (out, _) = step(&mut s);
    assert_eq!(
        sched(&out),
        vec![(1, 10, 1, true), (2, 6, 4, true), (3, 0, 10, true)]
    );
    assert_eq!(out.num_batched_tokens, 15);
}

#[test]
fn max_num_seqs_is_respected() {
    let mut s = Scheduler::new(cfg(64, 2, 64, 4));
    for id in 1..=3 {
        s.add(id, vec![1, 2, 3], 2, None).unwrap();
    }
    let (out, _) = step(&mut s);
    assert_eq!(out.scheduled.len(), 2);
    assert_eq!((s.num_running(), s.num_waiting()), (2, 1));
    let (out, finished) = step(&mut s);
    assert_eq!(out.scheduled.len(), 2, "seats full: seq 3 still waits");
    assert_eq!(finished.len(), 2);
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(3, 0, 3, true)]);
}

#[test]
fn chunked_prefill_samples_only_on_last_chunk() {
    let mut s = Scheduler::new(cfg(16, 4, 64, 4));
    s.add(7, (0..50).collect(), 3, None).unwrap();
    let mut chunks = Vec::new();
    for _ in 0..4 {
        let (out, _) = step(&mut s);
        chunks.extend(sched(&out));
    }
    assert_eq!(
        chunks,
        vec![
            (7, 0, 16, false),
            (7, 16, 16, false),
            (7, 32, 16, false),
            (7, 48, 2, true)
        ]
    );
    assert_eq!(s.get(7).unwrap().num_generated(), 1);
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(7, 50, 1, true)]);
    let (_, finished) = step(&mut s);
    assert_eq!(finished[0].output(), expected_output(7, 50, 3));
    assert!(!s.has_work());
    assert_eq!(s.block_manager().num_free_blocks(), 64);
}

#[test]
fn decodes_are_served_before_new_prefills() {
    let mut s = Scheduler::new(cfg(16, 4, 64, 4));
    s.add(1, vec![1; 4], 5, None).unwrap();
    step(&mut s);
    s.add(2, vec![2; 40], 5, None).unwrap();
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(1, 4, 1, true), (2, 0, 15, false)]);
    // The running chunked prefill comes before a newly waiting seq too.
    s.add(3, vec![3; 8], 5, None).unwrap();
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(1, 5, 1, true), (2, 15, 15, false)]);
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn preempts_most_recent_seq_when_blocks_run_out() {
    // 4 blocks of 4 tokens: each seq alone fits (6 + 10 = 16 tokens), two do not.
    let mut s = Scheduler::new(cfg(64, 4, 4, 4));
    s.add(1, vec![1; 6], 10, None).unwrap();
    s.add(2, vec![2; 6], 10, None).unwrap();
    for _ in 0..3 {
        let (out, _) = step(&mut s);
        assert!(out.preempted.is_empty());
        assert_eq!(out.scheduled.len(), 2);
    }
    // Both have 8 tokens computed in 2 blocks; position 8 needs a third block.
    assert_eq!(s.block_manager().num_free_blocks(), 0);
    let (out, _) = step(&mut s);
    assert_eq!(out.preempted, vec![2]);
    assert_eq!(sched(&out), vec![(1, 8, 1, true)]);
    let b = s.get(2).unwrap();
    assert_eq!(b.status, SeqStatus::Waiting);
    assert!(b.blocks.block_table.is_empty());
    assert_eq!(b.num_computed_tokens, 0);
    assert_eq!(b.num_generated(), 3, "generated tokens are kept");
    assert_eq!(b.num_preemptions, 1);
    assert_eq!(s.num_preemptions(), 1);
    assert_eq!(s.block_manager().num_free_blocks(), 1);

    // A later arrival queues behind the preempted seq (it went to the front).
    s.add(3, vec![3; 2], 1, None).unwrap();
    let mut finished = Vec::new();
    for _ in 0..40 {
        if !s.has_work() {
            break;
        }
        let (out, f) = step(&mut s);
        if out.scheduled.iter().any(|x| x.id == 3) {
            assert!(
                out.scheduled.iter().any(|x| x.id == 2),
                "seq 3 must not jump the preempted seq 2"
            );
        }
        finished.extend(f);
    }
    assert!(!s.has_work());
    assert_eq!(finished.len(), 3);
    assert_eq!(finished[0].id, 1);
    for q in &finished {
        assert_eq!(
            q.output(),
            expected_output(q.id, q.prompt_len, q.max_tokens)
        );
    }
    assert_eq!(s.block_manager().num_free_blocks(), 4);
}

#[test]
fn last_running_seq_preempts_itself() {
    // 3 blocks of 4. Seq 1 (older) can decode in its blocks; seq 2, last in
    // running, needs a new block and is its own victim.
    let mut s = Scheduler::new(cfg(64, 4, 3, 4));
    s.add(1, vec![1; 6], 2, None).unwrap();
    s.add(2, vec![2; 4], 5, None).unwrap();
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(1, 0, 6, true), (2, 0, 4, true)]);
    assert_eq!(s.block_manager().num_free_blocks(), 0);
    let (out, finished) = step(&mut s);
    assert_eq!(out.preempted, vec![2]);
    assert_eq!(sched(&out), vec![(1, 6, 1, true)]);
    assert_eq!(finished.len(), 1);
    assert_eq!(s.get(2).unwrap().status, SeqStatus::Waiting);
    // Alone now, it is readmitted and recomputes prompt + its generated token.
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(2, 0, 5, true)]);
    while s.has_work() {
        let (_, f) = step(&mut s);
        for q in f {
            assert_eq!(q.output(), expected_output(2, 4, 5));
        }
    }
}

#[test]
fn rejects_requests_that_can_never_run() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_model_len: 100,
        ..cfg(64, 4, 4, 4)
    });
    let err = s.add(1, vec![1; 10], 10, None).unwrap_err();
    assert_eq!(
        err,
        ScheduleError::WontFit {
            num_tokens: 20,
            needed_blocks: 5,
            total_blocks: 4
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("5 KV-cache blocks") && msg.contains("4 blocks"),
        "{msg}"
    );
    assert!(msg.contains("--kv-cache-mb"), "{msg}");
    let err = s.add(1, vec![1; 90], 20, None).unwrap_err();
    assert!(matches!(
        err,
        ScheduleError::PromptTooLong { prompt_len: 90, .. }
    ));
    assert!(err.to_string().contains("100"), "{err}");
    assert_eq!(s.add(1, vec![], 5, None), Err(ScheduleError::EmptyPrompt));
    assert_eq!(
        s.add(1, vec![1], 0, None),
        Err(ScheduleError::ZeroMaxTokens)
    );
    assert!(!s.has_work(), "rejected requests are not queued");
    s.add(1, vec![1; 6], 10, None).unwrap();
    assert_eq!(
        s.add(1, vec![1], 1, None),
        Err(ScheduleError::DuplicateId(1))
    );
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn prefix_cache_hit_for_shared_prefix() {
    let mut s = Scheduler::new(SchedulerConfig {
        enable_prefix_caching: true,
        ..cfg(256, 4, 64, 16)
    });
    let prefix: Vec<u32> = (0..64).map(|t| t % 11).collect();
    let mut a = prefix.clone();
    a.extend([100, 101, 102]);
    let mut b = prefix.clone();
    b.extend([200, 201]);
    s.add(1, a, 4, None).unwrap();
    step(&mut s);
    s.add(2, b, 4, None).unwrap();
    let (out, _) = step(&mut s);
    assert_eq!(sched(&out), vec![(1, 67, 1, true), (2, 64, 2, true)]);
    let seq2 = s.get(2).unwrap();
    assert_eq!(seq2.num_cached_tokens, 64);
    let seq1 = s.get(1).unwrap();
    assert_eq!(seq1.blocks.block_table[..4], seq2.blocks.block_table[..4]);
    assert_eq!(s.block_manager().ref_cnt(seq1.blocks.block_table[0]), 2);
    let stats = s.block_manager().stats();
    assert_eq!(stats.hit_tokens, 64);
    assert_eq!(stats.queries_tokens, 67 + 66);
    while s.has_work() {
        step(&mut s);
    }
    assert_eq!(s.block_manager().num_free_blocks(), 64);
}

#[test]
fn failed_admission_does_not_inflate_cache_stats() {
    let mut s = Scheduler::new(SchedulerConfig {
        enable_prefix_caching: true,
        ..cfg(64, 4, 4, 4)
    });
    s.add(1, vec![1; 10], 6, None).unwrap();
    // Seq 2 shares seq 1's first block but needs 2 more; only 1 is free.
    let mut prompt2 = vec![1; 4];
    prompt2.extend([2; 8]);
    s.add(2, prompt2, 1, None).unwrap();
    for _ in 0..3 {
        let (out, _) = step(&mut s);
        assert_eq!(sched(&out)[0].0, 1);
        assert_eq!(s.num_waiting(), 1);
        assert_eq!(s.block_manager().stats().queries_tokens, 10);
    }
    while s.has_work() {
        step(&mut s);
    }
    let stats = s.block_manager().stats();
    assert_eq!(stats.queries_tokens, 22);
    assert_eq!(stats.hit_tokens, 4, "seq 2 reuses seq 1's first block");
}

#[test]
fn remove_aborts_in_any_state() {
    let mut s = Scheduler::new(cfg(8, 4, 16, 4));
    s.add(1, vec![1; 20], 4, None).unwrap();
    s.add(2, vec![2; 4], 4, None).unwrap();
    step(&mut s);
    assert_eq!((s.num_running(), s.num_waiting()), (1, 1));
    let r = s.remove(1).unwrap();
    assert_eq!(r.num_computed_tokens, 8);
    let w = s.remove(2).unwrap();
    assert_eq!(w.status, SeqStatus::Waiting);
    assert!(s.remove(2).is_none());
    assert!(!s.has_work());
    assert_eq!(s.block_manager().num_free_blocks(), 16);
}

// ---- property test: random workload simulation ----

#[derive(Debug, Clone)]
struct Req {
    arrival: usize,
    prompt: Vec<u32>,
    max_tokens: usize,
    adapter: Option<u32>,
    abort_at: Option<usize>,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0usize..30,
        prop::collection::vec(0u32..3, 1..40),
        1usize..12,
        prop::option::of(0u32..2),
        prop::option::weighted(0.15, 0usize..60),
    )
        .prop_map(|(arrival, prompt, max_tokens, adapter, abort_at)| Req {
            arrival,
            prompt,
            max_tokens,
            adapter,
            abort_at,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn simulation_finishes_everything(
        reqs in prop::collection::vec(req(), 1..16),
        budget in 1usize..48,
        max_seqs in 1usize..6,
        num_blocks in 2usize..24,
        block_size in prop::sample::select(vec![1usize, 2, 4, 8]),
        caching in any::<bool>(),
        spec in prop::option::of(1usize..4),
    ) {
        let config = SchedulerConfig {
            max_num_seqs: max_seqs,
            max_num_batched_tokens: budget,
            max_model_len: 48,
            num_blocks,
            block_size,
            enable_prefix_caching: caching,
            speculative: spec.and_then(ngram),
        };
        let mut s = Scheduler::new(config);
        let mut accepted: HashMap<SeqId, &Req> = HashMap::new();
        let mut done: HashMap<SeqId, Vec<u32>> = HashMap::new();
        let mut aborted = 0usize;
        // Every step computes at least one token of the oldest running seq;
        // preemption recompute is bounded by the work of the seqs ahead of it.
        let total_work: usize = reqs.iter().map(|r| r.prompt.len() + r.max_tokens).sum();
        let max_steps = 40 + total_work * (reqs.len() + 1);
        let mut step_no = 0;
        loop {
            for (i, r) in reqs.iter().enumerate() {
                let id = i as SeqId;
                if r.arrival == step_no {
                    let total = r.prompt.len() + r.max_tokens;
                    match s.add(id, r.prompt.clone(), r.max_tokens, r.adapter) {
                        Ok(()) => {
                            prop_assert!(total <= 48 && total.div_ceil(block_size) <= num_blocks);
                            accepted.insert(id, r);
                        }
                        Err(ScheduleError::PromptTooLong { .. }) => prop_assert!(total > 48),
                        Err(ScheduleError::WontFit { needed_blocks, .. }) => {
                            prop_assert!(needed_blocks > num_blocks);
                        }
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                if r.abort_at == Some(step_no) && s.remove(id).is_some() {
                    aborted += 1;
                }
            }
            let arrivals_left = reqs.iter().any(|r| r.arrival > step_no);
            if !s.has_work() && !arrivals_left {
                break;
            }
            prop_assert!(step_no < max_steps, "no progress after {} steps", step_no);
            step_no += 1;

            let out = s.schedule();
            let sum: usize = out.scheduled.iter().map(|x| x.len).sum();
            prop_assert_eq!(sum, out.num_batched_tokens);
            prop_assert!(sum <= budget);
            prop_assert!(out.scheduled.len() <= max_seqs);
            prop_assert!(s.num_running() <= max_seqs);
            let mut ids: Vec<SeqId> = out.scheduled.iter().map(|x| x.id).collect();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), out.scheduled.len(), "seq scheduled twice");
            for x in &out.scheduled {
                prop_assert!(!out.preempted.contains(&x.id));
                prop_assert!(x.len > 0);
                let q = s.get(x.id).unwrap();
                prop_assert_eq!(q.num_computed_tokens, x.start);
                prop_assert_eq!(x.samples, x.start + x.num_known() == q.tokens.len());
                prop_assert!(x.draft.is_empty() || (x.samples && x.num_known() == 1));
                prop_assert!(q.num_generated() + 1 + x.draft.len() <= q.max_tokens);
                prop_assert!(q.blocks.block_table.len() * block_size >= x.start + x.len);
            }
            // A step with waiting work and free seats never idles.
            if s.num_waiting() + s.num_running() > 0 {
                prop_assert!(!out.scheduled.is_empty() || !out.preempted.is_empty());
            }
            let sampled = fake_sample(&s, &out);
            s.on_step_done(&out, &sampled);
            for &(id, _) in &sampled {
                if s.get(id).is_some_and(Sequence::is_finished) {
                    let q = s.remove(id).unwrap();
                    prop_assert_eq!(q.num_generated(), q.max_tokens);
                    done.insert(id, q.output().to_vec());
                }
            }
            if let Err(e) = s.block_manager().check_invariants() {
                return Err(TestCaseError::fail(e));
            }
        }
        prop_assert_eq!(done.len() + aborted, accepted.len());
        for (id, output) in &done {
            let r = accepted[id];
            prop_assert_eq!(output, &expected_output(*id, r.prompt.len(), r.max_tokens));
        }
        prop_assert_eq!(s.block_manager().num_free_blocks(), num_blocks);
        prop_assert!(!s.has_work());
    }
}
