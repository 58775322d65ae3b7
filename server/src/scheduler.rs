//! Iteration-level (continuous) batching with chunked prefill and preemption
//! by recompute.
//!
//! Every model step the scheduler picks, under one token budget
//! (`max_num_batched_tokens`), how many tokens of which sequences to compute.
//! A sequence is just "tokens known" vs "tokens computed": a decode is a
//! sequence one token behind, a prefill is one many tokens behind, and a long
//! prompt is split into chunks over several steps (chunked prefill) so it
//! cannot stall the decodes of everyone else. This is the vLLM v1 policy:
//!
//! 1. Running sequences first, oldest first. If the KV pool is out of blocks,
//!    the most recently admitted running sequence is preempted: its blocks are
//!    freed, its computed progress forgotten (its tokens, including generated
//!    ones, are kept and recomputed later, mostly from the prefix cache) and
//!    it goes to the front of the waiting queue.
//! 2. Then, only if nothing was preempted, waiting sequences are admitted in
//!    FCFS order while seats (`max_num_seqs`), budget and blocks last.
//!
//! Progress is guaranteed: `add` rejects any request whose full length could
//! not fit in the pool alone, the oldest running sequence is never chosen as a
//! victim while others run, and a sequence alone always gets its blocks.
//!
//! With speculative decoding on ([`crate::spec_decode`]), a decode also
//! carries a prompt-lookup draft: the step computes `1 + draft` tokens for it
//! (all counted against the budget), and [`Scheduler::on_step_done`] keeps
//! the K/V of the drafted tokens the engine accepted. A draft never reaches
//! past `max_tokens`, and it is dropped rather than preempt anyone for its
//! blocks.
//!
//! The scheduler is pure bookkeeping: no model, no tensors. The engine calls
//! [`Scheduler::schedule`], runs the model on the [`SchedulerOutput`], then
//! reports back with [`Scheduler::on_step_done`].

use std::collections::{HashMap, VecDeque};

use crate::block_manager::{BlockManager, SeqBlocks};
use crate::spec_decode::{self, NgramConfig};

/// Caller-chosen sequence (request) id.
pub type SeqId = u64;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most sequences running at once (batch seats).
    pub max_num_seqs: usize,
    /// Most tokens computed in one step, over all sequences.
    pub max_num_batched_tokens: usize,
    /// Longest sequence (prompt + generated) the model accepts.
    pub max_model_len: usize,
    /// KV-cache blocks in the pool.
    pub num_blocks: usize,
    /// Tokens per KV-cache block.
    pub block_size: usize,
    pub enable_prefix_caching: bool,
    /// Prompt-lookup speculation for decodes; `None` decodes one token a step.
    pub speculative: Option<NgramConfig>,
}

/// Why a request was rejected by [`Scheduler::add`]. Such a request could never run.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("the prompt is empty; at least one token is needed")]
    EmptyPrompt,
    #[error("max_tokens is 0; ask for at least one token")]
    ZeroMaxTokens,
    #[error(
        "prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) = {} exceeds the \
         model's maximum length of {max_model_len} tokens; shorten the prompt or lower max_tokens",
        prompt_len + max_tokens
    )]
    PromptTooLong {
        prompt_len: usize,
        max_tokens: usize,
        max_model_len: usize,
    },
    #[error(
        "the request needs {needed_blocks} KV-cache blocks ({num_tokens} tokens) but the \
         cache only has {total_blocks} blocks in total; raise --kv-cache-mb or lower max_tokens"
    )]
    WontFit {
        num_tokens: usize,
        needed_blocks: usize,
        total_blocks: usize,
    },
    #[error("a sequence with id {0} is already queued or running")]
    DuplicateId(SeqId),
}

/// Where a sequence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// Queued (new, or preempted): holds no blocks.
    Waiting,
    /// Admitted: holds blocks, scheduled every step while budget lasts.
    Running,
    /// Generated `max_tokens` tokens; blocks released, waiting for `remove`.
    Finished,
}

/// One request as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    /// Prompt, then generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Leading tokens whose KV is in the cache.
    pub num_computed_tokens: usize,
    pub max_tokens: usize,
    pub adapter: Option<u32>,
    pub blocks: SeqBlocks,
    pub status: SeqStatus,
    /// Times this sequence was preempted.
    pub num_preemptions: u32,
    /// Tokens served from the prefix cache at the last admission.
    pub num_cached_tokens: usize,
}

impl Sequence {
    pub fn num_generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// The generated tokens so far.
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    pub fn is_finished(&self) -> bool {
        self.status == SeqStatus::Finished
    }
}

/// Work for one sequence in one step: compute `tokens[start..start + len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: SeqId,
    /// First position computed this step (= `num_computed_tokens` before).
    pub start: usize,
    /// Tokens computed this step (known tokens, then the draft).
    pub len: usize,
    /// This chunk reaches the end of the known tokens, so the logits of its
    /// last position give the next token.
    pub samples: bool,
    /// Drafted tokens fed after the last known one (the last `draft.len()`
    /// of `len`); the model returns logits at each of the last
    /// `1 + draft.len()` positions to verify them.
    pub draft: Vec<u32>,
}

impl ScheduledSeq {
    /// Positions whose logits the engine needs: 0 mid-prefill, else one per
    /// token it may sample (the draft's positions and the one after).
    pub fn logit_rows(&self) -> usize {
        if self.samples {
            1 + self.draft.len()
        } else {
            0
        }
    }

    /// Known tokens computed this step (`len` without the draft).
    pub fn num_known(&self) -> usize {
        self.len - self.draft.len()
    }
}

/// One step's batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    /// Running sequences first (admission order), then newly admitted ones.
    pub scheduled: Vec<ScheduledSeq>,
    /// Sequences preempted this step (now waiting; none is in `scheduled`).
    pub preempted: Vec<SeqId>,
    /// Sum of `len` over `scheduled`; at most `max_num_batched_tokens`.
    pub num_batched_tokens: usize,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}

/// The continuous-batching scheduler; owns the KV block pool.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    bm: BlockManager,
    waiting: VecDeque<SeqId>,
    /// In admission order: the last one is the first preemption victim.
    running: Vec<SeqId>,
    seqs: HashMap<SeqId, Sequence>,
    num_preemptions: u64,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Self {
        assert!(cfg.max_num_seqs > 0, "max_num_seqs must be positive");
        assert!(
            cfg.max_num_batched_tokens > 0,
            "max_num_batched_tokens must be positive"
        );
        assert!(cfg.block_size > 0, "block_size must be positive");
        let bm = BlockManager::new(cfg.num_blocks, cfg.block_size, cfg.enable_prefix_caching);
        Self {
            cfg,
            bm,
            waiting: VecDeque::new(),
            running: Vec::new(),
            seqs: HashMap::new(),
            num_preemptions: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Validate and queue at the back of waiting. A request that could never
    /// run is rejected and not queued.
    pub fn add(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        max_tokens: usize,
        adapter: Option<u32>,
    ) -> Result<(), ScheduleError> {
        if prompt.is_empty() {
            return Err(ScheduleError::EmptyPrompt);
        }
        if max_tokens == 0 {
            return Err(ScheduleError::ZeroMaxTokens);
        }
        let prompt_len = prompt.len();
        let num_tokens = prompt_len.saturating_add(max_tokens);
        if num_tokens > self.cfg.max_model_len {
            return Err(ScheduleError::PromptTooLong {
                prompt_len,
                max_tokens,
                max_model_len: self.cfg.max_model_len,
            });
        }
        let needed_blocks = self.bm.blocks_for(num_tokens);
        if needed_blocks > self.bm.num_blocks() {
            return Err(ScheduleError::WontFit {
                num_tokens,
                needed_blocks,
                total_blocks: self.bm.num_blocks(),
            });
        }
        if self.seqs.contains_key(&id) {
            return Err(ScheduleError::DuplicateId(id));
        }
        self.seqs.insert(
            id,
            Sequence {
                id,
                tokens: prompt,
                prompt_len,
                num_computed_tokens: 0,
                max_tokens,
                adapter,
                blocks: SeqBlocks::default(),
                status: SeqStatus::Waiting,
                num_preemptions: 0,
                num_cached_tokens: 0,
            },
        );
        self.waiting.push_back(id);
        Ok(())
    }

    /// Pick this step's batch (see the module doc for the policy).
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.cfg.max_num_batched_tokens;

        // 1. Running sequences, oldest first.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = self.seqs.get_mut(&id).expect("running seq exists");
            debug_assert_eq!(seq.status, SeqStatus::Running);
            let num_new = (seq.tokens.len() - seq.num_computed_tokens).min(budget);
            if num_new == 0 {
                // Nothing known left to compute (no token sampled for it yet).
                i += 1;
                continue;
            }
            let target = seq.num_computed_tokens + num_new;
            let start = seq.num_computed_tokens;
            let samples = target == seq.tokens.len();
            if samples && num_new == 1 {
                if let Some(draft) = self.try_draft(id, budget - 1) {
                    budget -= 1 + draft.len();
                    out.scheduled.push(ScheduledSeq {
                        id,
                        start,
                        len: 1 + draft.len(),
                        samples,
                        draft,
                    });
                    i += 1;
                    continue;
                }
            }
            let mut self_preempted = false;
            loop {
                let seq = self.seqs.get_mut(&id).expect("running seq exists");
                if self.bm.allocate_slots(&mut seq.blocks, target) {
                    break;
                }
                let victim = self.running.pop().expect("current seq is running");
                // Victims come from the back, at or after `i`: never already scheduled.
                assert!(out.scheduled.iter().all(|s| s.id != victim));
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == id {
                    self_preempted = true;
                    break;
                }
            }
            if self_preempted {
                break;
            }
            out.scheduled.push(ScheduledSeq {
                id,
                start,
                len: num_new,
                samples,
                draft: Vec::new(),
            });
            budget -= num_new;
            i += 1;
        }

        // 2. Admit waiting sequences, FCFS, unless memory was just short.
        if out.preempted.is_empty() {
            while self.running.len() < self.cfg.max_num_seqs && budget > 0 {
                let Some(&id) = self.waiting.front() else {
                    break;
                };
                let seq = self.seqs.get_mut(&id).expect("waiting seq exists");
                debug_assert!(seq.blocks.block_table.is_empty());
                let cached =
                    self.bm
                        .acquire_cached_prefix(&mut seq.blocks, &seq.tokens, seq.adapter);
                seq.num_computed_tokens = cached;
                let num_new = (seq.tokens.len() - cached).min(budget);
                if !self.bm.allocate_slots(&mut seq.blocks, cached + num_new) {
                    self.bm.free(&mut seq.blocks);
                    self.bm.retract_prefix_query(seq.tokens.len(), cached);
                    seq.num_computed_tokens = 0;
                    break;
                }
                seq.num_cached_tokens = cached;
                seq.status = SeqStatus::Running;
                out.scheduled.push(ScheduledSeq {
                    id,
                    start: cached,
                    len: num_new,
                    samples: cached + num_new == seq.tokens.len(),
                    draft: Vec::new(),
                });
                budget -= num_new;
                self.waiting.pop_front();
                self.running.push(id);
            }
        }

        out.num_batched_tokens = self.cfg.max_num_batched_tokens - budget;
        out
    }

    /// Record a finished model step: advance each scheduled sequence, cache
    /// its newly full blocks, and append the `sampled` tokens. A sequence
    /// verified with a draft may appear several times, in order: its tokens
    /// equal to the draft, then the one the sampler chose; the K/V of those
    /// accepted draft tokens is kept, the rest is beyond the computed length.
    /// A sequence that reaches `max_tokens` becomes [`SeqStatus::Finished`]:
    /// its blocks are released at once and it waits for [`Scheduler::remove`].
    /// Sequences removed since `schedule` are skipped.
    pub fn on_step_done(&mut self, out: &SchedulerOutput, sampled: &[(SeqId, u32)]) {
        let mut any_finished = false;
        let mut rest = sampled;
        for s in &out.scheduled {
            let Some(seq) = self.seqs.get_mut(&s.id) else {
                continue;
            };
            if seq.status != SeqStatus::Running || seq.num_computed_tokens != s.start {
                debug_assert!(false, "stale schedule entry for seq {}", s.id);
                continue;
            }
            // This sequence's sampled tokens (the engine reports in batch order).
            let skip = rest.iter().take_while(|(id, _)| *id != s.id).count();
            let mine = rest[skip..]
                .iter()
                .take_while(|(id, _)| *id == s.id)
                .count();
            let tokens = &rest[skip..skip + mine];
            if mine > 0 {
                rest = &rest[skip + mine..];
            }
            debug_assert!(
                s.samples || tokens.is_empty(),
                "token sampled for seq {} mid-prefill",
                s.id
            );
            debug_assert!(tokens.len() <= 1 + s.draft.len());
            // The known tokens, then the accepted draft (all but the last sampled).
            seq.num_computed_tokens = s.start + s.num_known() + tokens.len().saturating_sub(1);
            seq.tokens.extend(tokens.iter().map(|&(_, t)| t));
            self.bm.cache_full_blocks(
                &mut seq.blocks,
                &seq.tokens,
                seq.num_computed_tokens,
                seq.adapter,
            );
            if !tokens.is_empty() && seq.num_generated() >= seq.max_tokens {
                seq.status = SeqStatus::Finished;
                self.bm.free(&mut seq.blocks);
                any_finished = true;
            }
        }
        if any_finished {
            let seqs = &self.seqs;
            self.running
                .retain(|id| seqs[id].status == SeqStatus::Running);
        }
    }

    /// Remove a sequence in any state (finished, aborted), freeing its blocks.
    pub fn remove(&mut self, id: SeqId) -> Option<Sequence> {
        let mut seq = self.seqs.remove(&id)?;
        match seq.status {
            SeqStatus::Waiting => {
                if let Some(pos) = self.waiting.iter().position(|&w| w == id) {
                    self.waiting.remove(pos);
                }
            }
            SeqStatus::Running => {
                if let Some(pos) = self.running.iter().position(|&r| r == id) {
                    self.running.remove(pos);
                }
            }
            SeqStatus::Finished => {}
        }
        self.bm.free(&mut seq.blocks);
        Some(seq)
    }

    pub fn get(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Whether any sequence is waiting or running (finished ones don't count).
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn block_manager(&self) -> &BlockManager {
        &self.bm
    }

    pub fn block_manager_mut(&mut self) -> &mut BlockManager {
        &mut self.bm
    }

    /// Total preemptions since start.
    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    /// A draft for running decode `id`, with its slots allocated, or `None`
    /// (speculation off, nothing to propose, or no free blocks for it: a
    /// draft never preempts anyone). At most `room` tokens, and never past
    /// the request's `max_tokens` (the token after the draft is sampled too).
    fn try_draft(&mut self, id: SeqId, room: usize) -> Option<Vec<u32>> {
        let spec = self.cfg.speculative?;
        let seq = self.seqs.get_mut(&id)?;
        let left = seq.max_tokens.saturating_sub(seq.num_generated() + 1);
        let k = spec.num_speculative_tokens.min(room).min(left);
        let draft = spec_decode::propose(
            &seq.tokens,
            k,
            spec.prompt_lookup_min,
            spec.prompt_lookup_max,
        );
        if draft.is_empty() {
            return None;
        }
        let target = seq.tokens.len() + draft.len();
        self.bm
            .allocate_slots(&mut seq.blocks, target)
            .then_some(draft)
    }

    /// Free `id`'s blocks, forget its progress, queue it at the front.
    fn preempt(&mut self, id: SeqId) {
        let seq = self.seqs.get_mut(&id).expect("preempted seq exists");
        self.bm.free(&mut seq.blocks);
        seq.num_computed_tokens = 0;
        seq.num_preemptions += 1;
        seq.status = SeqStatus::Waiting;
        self.waiting.push_front(id);
        self.num_preemptions += 1;
    }
}

#[cfg(test)]
mod tests;
