//! The decoder on the GPU ([`models::gpu::GpuLlama`]) against the CPU
//! decoder, on synthetic models.
//!
//! With f32 weights ("tiny"), the f32 matmul sums in its own tile order, so
//! logits agree within |gpu - cpu| <= 1e-4 + 1e-4·|cpu| (two layers,
//! logits of order 1; on lavapipe the largest difference seen is 4e-6) and
//! greedy tokens must match exactly. With quantized weights (the "small"
//! model's projections in Q4_1 and its head in Q8_0, SmolLM2's formats),
//! every step computes the CPU's bits, so the logits must be identical.
//!
//! Without a Vulkan adapter the tests skip with a message, unless `CI=true`
//! or `SDLAB_REQUIRE_GPU=1`, where they fail.

mod common;

use common::argmax;
use kernels::gpu::GpuContext;
use models::gpu::{GpuLlama, MAX_RESIDENT};
use models::llama::Layer;
use models::lora::{LoraAdapter, Target};
use models::weights::Linear;
use models::{KvCache, Llama, SeqChunk};
use std::sync::{Arc, OnceLock};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-4;

/// The shared context, or `None` (after a message) when there is no adapter
/// and none is required. Panics when one is required and missing.
fn gpu_or_skip() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Option<Arc<GpuContext>>> = OnceLock::new();
    CTX.get_or_init(|| kernels::gpu::or_skip("the GPU forward tests", GpuContext::new_shared()))
        .clone()
}

fn synthetic(preset: &str) -> Llama {
    let dir = std::env::temp_dir().join(format!(
        "sdlab-models-gpu-forward-{preset}-{}",
        std::process::id()
    ));
    let preset = models::synth::SynthPreset::by_name(preset).unwrap();
    models::synth::write_synthetic_model(&dir, &preset, 13).unwrap();
    let loaded = models::load(dir.to_str().unwrap(), Default::default()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    loaded.model
}

fn tiny_model() -> &'static Llama {
    static MODEL: OnceLock<Llama> = OnceLock::new();
    MODEL.get_or_init(|| synthetic("tiny"))
}

/// The "small" synthetic model with SmolLM2's GGUF formats: Q4_1
/// projections and a Q8_0 LM head (untied).
fn quantized_small_model() -> &'static Llama {
    static MODEL: OnceLock<Llama> = OnceLock::new();
    MODEL.get_or_init(|| {
        let m = synthetic("small");
        let q4_1 = |l: &Linear| {
            let w = l.to_dense().unwrap();
            let q = kernels::quant::Q4_1Matrix::quantize(&w, l.out_features(), l.in_features());
            Linear::Q4_1(q.unwrap())
        };
        let layers = m
            .layers()
            .iter()
            .map(|l| Layer {
                attn_norm: l.attn_norm.clone(),
                wq: q4_1(&l.wq),
                wk: q4_1(&l.wk),
                wv: q4_1(&l.wv),
                wo: q4_1(&l.wo),
                ffn_norm: l.ffn_norm.clone(),
                w_gate: q4_1(&l.w_gate),
                w_up: q4_1(&l.w_up),
                w_down: q4_1(&l.w_down),
            })
            .collect();
        let head = m.lm_head();
        let q = kernels::q8_0::Q8_0Matrix::quantize(
            &head.to_dense().unwrap(),
            head.out_features(),
            head.in_features(),
        );
        let embed = Arc::new(m.embed().to_vec());
        let norm = m.final_norm().to_vec();
        Llama::new(m.cfg.clone(), embed, layers, norm, Linear::Q8_0(q.unwrap())).unwrap()
    })
}

/// A forward pass on one device, with its own KV pools.
enum Device<'a> {
    Cpu(&'a Llama, KvCache),
    Gpu(Box<GpuLlama>),
}

impl<'a> Device<'a> {
    fn cpu(model: &'a Llama, blocks: usize, block_size: usize) -> Self {
        Self::Cpu(model, KvCache::new(&model.cfg, blocks, block_size))
    }

    fn gpu(ctx: &Arc<GpuContext>, model: &'a Llama, blocks: usize, block_size: usize) -> Self {
        let g = GpuLlama::new(ctx.clone(), model, blocks, block_size).unwrap();
        Self::Gpu(Box::new(g))
    }

    fn forward(&mut self, tokens: &[u32], seqs: &[SeqChunk<'_>], rows: &[usize]) -> Vec<f32> {
        match self {
            Self::Cpu(m, cache) => m.forward(tokens, seqs, rows, cache).unwrap(),
            Self::Gpu(g) => g.forward(tokens, seqs, rows).unwrap(),
        }
    }
}

fn chunk(table: &[u32], start: usize, len: usize) -> SeqChunk<'_> {
    SeqChunk {
        block_table: table,
        start,
        len,
        adapter: None,
    }
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= ATOL + RTOL * w.abs(),
            "{what}[{i}]: gpu {g} vs cpu {w} (|Δ| {err:e})"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: {} logits, max |Δ| {worst:e}", got.len());
    worst
}

/// Prompts of different lengths, ids spread over the vocabulary.
fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    [(7usize, 3usize), (21, 5), (2, 11), (13, 17)]
        .iter()
        .map(|&(len, mul)| {
            (0..len)
                .map(|i| ((i * mul * 31 + len * 7) % (vocab - 4) + 3) as u32)
                .collect()
        })
        .collect()
}

/// Greedy decoding of `prompts` in one batch: a joint prefill, then joint
/// decode steps. Sequence `s` owns blocks `s * per_seq..`, laid out in
/// reverse so tables are not the identity. Returns each one's tokens and
/// the logits it was picked from.
fn greedy_batch(
    dev: &mut Device<'_>,
    prompts: &[Vec<u32>],
    n: usize,
    per_seq: usize,
    vocab: usize,
) -> Vec<(Vec<u32>, Vec<f32>)> {
    let tables: Vec<Vec<u32>> = (0..prompts.len())
        .map(|s| {
            (0..per_seq)
                .rev()
                .map(|b| (s * per_seq + b) as u32)
                .collect()
        })
        .collect();
    let mut seqs = prompts.to_vec();
    let mut fed = vec![0usize; prompts.len()];
    let mut out = vec![(Vec::new(), Vec::new()); prompts.len()];
    for _ in 0..n {
        let (mut tokens, mut chunks, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        for (s, seq) in seqs.iter().enumerate() {
            tokens.extend_from_slice(&seq[fed[s]..]);
            rows.push(tokens.len() - 1);
            chunks.push(chunk(&tables[s], fed[s], seq.len() - fed[s]));
        }
        let logits = dev.forward(&tokens, &chunks, &rows);
        for (s, row) in logits.chunks_exact(vocab).enumerate() {
            fed[s] = seqs[s].len();
            let next = argmax(row);
            seqs[s].push(next);
            out[s].0.push(next);
            out[s].1.extend_from_slice(row);
        }
    }
    out
}

/// (a) One batch mixing a first prefill chunk, a later prefill chunk of a
/// prompt already partly cached, and decodes, over scattered block tables;
/// every requested row's logits against the CPU's.
#[test]
fn mixed_prefill_and_decode_batch_matches_cpu() {
    let Some(ctx) = gpu_or_skip() else { return };
    let model = tiny_model();
    let vocab = model.cfg.vocab_size;
    let (blocks, bs) = (16, 4);
    let mut cpu = Device::cpu(model, blocks, bs);
    let mut gpu = Device::gpu(&ctx, model, blocks, bs);
    let tok = |n: usize, seed: usize| -> Vec<u32> {
        (0..n)
            .map(|i| ((i * 97 + seed * 13) % (vocab - 3) + 3) as u32)
            .collect()
    };
    let (ta, tb, tc) = ([9u32, 2, 14, 5], [0u32, 11, 7], [3u32, 15, 6, 1, 12]);
    // Step 1: A and C prefill whole prompts (every row's logits), B the
    // first 5 of its 10 prompt tokens (no logits: mid-prompt).
    let (a, b, c) = (tok(11, 1), tok(10, 2), tok(17, 3));
    let mut tokens = a.clone();
    tokens.extend_from_slice(&b[..5]);
    tokens.extend_from_slice(&c);
    let chunks = [chunk(&ta, 0, 11), chunk(&tb, 0, 5), chunk(&tc, 0, 17)];
    let rows: Vec<usize> = (0..11).chain(16..33).collect();
    let want = cpu.forward(&tokens, &chunks, &rows);
    let got = gpu.forward(&tokens, &chunks, &rows);
    assert_close("prefill rows", &got, &want);

    // Step 2: A decodes one token, B prefills the rest of its prompt (a
    // chunk starting at 5), C decodes one token; logits of A, B's last
    // two rows, and C.
    let mut tokens = vec![argmax(&want[10 * vocab..11 * vocab])];
    tokens.extend_from_slice(&b[5..]);
    tokens.push(argmax(&want[27 * vocab..28 * vocab]));
    let chunks = [chunk(&ta, 11, 1), chunk(&tb, 5, 5), chunk(&tc, 17, 1)];
    let rows = [0, 4, 5, 6];
    let want = cpu.forward(&tokens, &chunks, &rows);
    let got = gpu.forward(&tokens, &chunks, &rows);
    assert_eq!(got.len(), rows.len() * vocab);
    assert_close("mixed step rows", &got, &want);

    // Step 3: three decodes, each row's logits out of order.
    let tokens = [5u32, 6, 7];
    let chunks = [chunk(&ta, 12, 1), chunk(&tb, 10, 1), chunk(&tc, 18, 1)];
    let want = cpu.forward(&tokens, &chunks, &[2, 0, 1]);
    let got = gpu.forward(&tokens, &chunks, &[2, 0, 1]);
    assert_close("decode rows", &got, &want);
}

/// (b) Greedy decoding of 16 tokens for four prompts in one batch: the GPU
/// picks the CPU's tokens, one by one.
#[test]
fn greedy_tokens_match_cpu() {
    let Some(ctx) = gpu_or_skip() else { return };
    let model = tiny_model();
    let vocab = model.cfg.vocab_size;
    let ps = prompts(vocab);
    let (n, per_seq, bs) = (16, 3, 16);
    let blocks = per_seq * ps.len();
    let cpu = greedy_batch(&mut Device::cpu(model, blocks, bs), &ps, n, per_seq, vocab);
    let gpu = greedy_batch(
        &mut Device::gpu(&ctx, model, blocks, bs),
        &ps,
        n,
        per_seq,
        vocab,
    );
    for (i, ((ct, cl), (gt, gl))) in cpu.iter().zip(&gpu).enumerate() {
        assert_eq!(gt.len(), n);
        assert_eq!(gt, ct, "prompt {i}: GPU tokens vs CPU tokens");
        assert_close(&format!("prompt {i} step logits"), gl, cl);
    }
    // The prompts do not all decode alike, or the check proves little.
    assert!(cpu.iter().any(|(t, _)| t != &cpu[0].0));
}

/// (b') On quantized weights the GPU computes the CPU's bits: greedy
/// decoding of four prompts in one batch (a joint prefill of different
/// lengths, then 12 joint decode steps) gives the same tokens from
/// identical logits.
#[test]
fn quantized_weights_give_the_cpu_bits() {
    let Some(ctx) = gpu_or_skip() else { return };
    let model = quantized_small_model();
    let vocab = model.cfg.vocab_size;
    let ps = prompts(vocab);
    let (n, per_seq, bs) = (12, 3, 16);
    let blocks = per_seq * ps.len();
    let cpu = greedy_batch(&mut Device::cpu(model, blocks, bs), &ps, n, per_seq, vocab);
    let mut gpu = Device::gpu(&ctx, model, blocks, bs);
    let gpu = greedy_batch(&mut gpu, &ps, n, per_seq, vocab);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (i, ((ct, cl), (gt, gl))) in cpu.iter().zip(&gpu).enumerate() {
        assert_eq!(gt, ct, "prompt {i}: GPU tokens vs CPU tokens");
        let differ = bits(gl)
            .iter()
            .zip(bits(cl))
            .filter(|(g, c)| **g != *c)
            .count();
        assert_eq!(
            differ,
            0,
            "prompt {i}: {differ} of {} logits differ",
            cl.len()
        );
    }
    assert!(cpu.iter().any(|(t, _)| t != &cpu[0].0));
}

/// (c) Batch invariance on the GPU: each prompt decoded alone gives the
/// same tokens, and bit for bit the same logits, as in a batch with others.
#[test]
fn gpu_tokens_do_not_depend_on_the_batch() {
    let Some(ctx) = gpu_or_skip() else { return };
    let model = tiny_model();
    let vocab = model.cfg.vocab_size;
    let ps = prompts(vocab);
    let (n, per_seq, bs) = (16, 3, 16);
    let mut batched = Device::gpu(&ctx, model, per_seq * ps.len(), bs);
    let together = greedy_batch(&mut batched, &ps, n, per_seq, vocab);
    for (i, p) in ps.iter().enumerate() {
        let mut alone = Device::gpu(&ctx, model, per_seq, bs);
        let (tokens, logits) = greedy_batch(&mut alone, std::slice::from_ref(p), n, per_seq, vocab)
            .pop()
            .unwrap();
        assert_eq!(tokens, together[i].0, "prompt {i}: alone vs in a batch");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&logits) == bits(&together[i].1),
            "prompt {i}: logits alone differ from logits in a batch"
        );
    }
}

/// LoRA on the GPU: one batch mixing two adapters (different ranks and
/// targets) and a sequence without one gives the CPU decoder's logits, in
/// prefill and in decode: within rounding on f32 weights, bit for bit on
/// quantized ones.
#[test]
fn lora_batches_match_the_cpu() {
    let Some(ctx) = gpu_or_skip() else { return };
    lora_batch_matches_the_cpu(&ctx, tiny_model(), false);
    lora_batch_matches_the_cpu(&ctx, quantized_small_model(), true);
}

fn lora_batch_matches_the_cpu(ctx: &Arc<GpuContext>, model: &Llama, bitwise: bool) {
    let ctx = ctx.clone();
    let cfg = &model.cfg;
    let all = LoraAdapter::synth(cfg, 4, &Target::ALL, 1).unwrap();
    let qv = LoraAdapter::synth(cfg, 8, &[Target::Q, Target::V], 2).unwrap();
    let adapters = [Some(&all), None, Some(&qv)];
    let prompts: [&[u32]; 3] = [&[5, 6, 7, 8, 9], &[11, 12, 13], &[21, 22, 23, 24]];
    let tables: [Vec<u32>; 3] = [vec![0, 1], vec![2, 3], vec![4, 5]];
    let mut cpu = Device::cpu(model, 8, 16);
    let mut gpu = Device::gpu(&ctx, model, 8, 16);
    let mut tokens: Vec<u32> = prompts.concat();
    let mut starts = [0usize; 3];
    let mut lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
    for step in 0..4 {
        let seqs: Vec<SeqChunk<'_>> = (0..3)
            .map(|i| SeqChunk {
                adapter: adapters[i],
                ..chunk(&tables[i], starts[i], lens[i])
            })
            .collect();
        let mut rows = Vec::new();
        let mut end = 0;
        for &len in &lens {
            end += len;
            rows.push(end - 1);
        }
        let want = cpu.forward(&tokens, &seqs, &rows);
        let got = gpu.forward(&tokens, &seqs, &rows);
        assert_close(&format!("lora step {step}"), &got, &want);
        if bitwise {
            let same = got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "lora step {step}: logits differ from the CPU's bits");
        }
        // Next: each sequence's greedy token, one at a time.
        let next: Vec<u32> = want.chunks_exact(cfg.vocab_size).map(argmax).collect();
        for i in 0..3 {
            starts[i] += lens[i];
        }
        lens = vec![1; 3];
        tokens = next;
    }
    // The adapters changed the logits (the test would pass vacuously if
    // the deltas were never added).
    let mut plain = Device::gpu(&ctx, model, 8, 16);
    let base = plain.forward(prompts[0], &[chunk(&tables[0], 0, 5)], &[4]);
    let mut with = Device::gpu(&ctx, model, 8, 16);
    let seq = SeqChunk {
        adapter: Some(&all),
        ..chunk(&tables[0], 0, 5)
    };
    let adapted = with.forward(prompts[0], &[seq], &[4]);
    let moved = base.iter().zip(&adapted).any(|(a, b)| (a - b).abs() > 1e-2);
    assert!(moved, "the adapter did not change the logits");
}

/// Adapters beyond [`MAX_RESIDENT`] evict the least recently used; an
/// adapter whose factors change (a new alpha) is uploaded again rather than
/// served from the stale copy.
#[test]
fn lora_residency_evicts_and_never_serves_stale_factors() {
    let Some(ctx) = gpu_or_skip() else { return };
    let model = tiny_model();
    let cfg = &model.cfg;
    let adapters: Vec<LoraAdapter> = (0..MAX_RESIDENT as u64 + 2)
        .map(|seed| LoraAdapter::synth(cfg, 2, &[Target::Q, Target::Down], 10 + seed).unwrap())
        .collect();
    let mut g = GpuLlama::new(ctx.clone(), model, 4, 16).unwrap();
    let table = [0u32];
    let prompt = [5u32, 6, 7];
    let run = |g: &mut GpuLlama, a: &LoraAdapter| {
        let seq = SeqChunk {
            adapter: Some(a),
            ..chunk(&table, 0, 3)
        };
        g.forward(&prompt, &[seq], &[2]).unwrap()
    };
    let cpu = |a: &LoraAdapter| {
        let seq = SeqChunk {
            adapter: Some(a),
            ..chunk(&table, 0, 3)
        };
        let mut cache = KvCache::new(cfg, 4, 16);
        model.forward(&prompt, &[seq], &[2], &mut cache).unwrap()
    };
    for (i, a) in adapters.iter().enumerate() {
        assert_close(&format!("adapter {i}"), &run(&mut g, a), &cpu(a));
        assert!(g.lora_residency().0 <= MAX_RESIDENT);
    }
    // Reusing a resident adapter uploads nothing.
    let uploads = g.lora_residency().1;
    let last = adapters.last().unwrap();
    assert_close("resident again", &run(&mut g, last), &cpu(last));
    assert_eq!(g.lora_residency().1, uploads);
    // The first one was evicted; it comes back correct.
    assert_close(
        "evicted, back",
        &run(&mut g, &adapters[0]),
        &cpu(&adapters[0]),
    );
    assert_eq!(g.lora_residency().1, uploads + 1);
    // A changed alpha is a different adapter to the device.
    let mut louder = adapters[0].clone();
    louder.set_alpha(8.0);
    let got = run(&mut g, &louder);
    assert_close("new alpha", &got, &cpu(&louder));
}

/// A bad batch is refused with the CPU decoder's checks, before anything
/// runs.
#[test]
fn bad_batches_are_refused() {
    let Some(ctx) = gpu_or_skip() else { return };
    let model = tiny_model();
    let mut g = GpuLlama::new(ctx, model, 4, 16).unwrap();
    let table = [0u32];
    // An adapter for another model's depth.
    let mut other = model.cfg.clone();
    other.num_layers += 1;
    let adapter = LoraAdapter::synth(&other, 4, &[Target::Q], 1).unwrap();
    let seq = SeqChunk {
        adapter: Some(&adapter),
        ..chunk(&table, 0, 3)
    };
    let err = g.forward(&[5, 6, 7], &[seq], &[2]).unwrap_err();
    assert!(err.to_string().contains("adapter has"), "{err}");
    // Block 9 is outside the 4-block pool; token 100000 outside the vocabulary.
    let far = [9u32];
    assert!(g.forward(&[5], &[chunk(&far, 0, 1)], &[0]).is_err());
    assert!(g.forward(&[100_000], &[chunk(&table, 0, 1)], &[0]).is_err());
    // The pools still work after refused batches.
    let ok = g.forward(&[5, 6], &[chunk(&table, 0, 2)], &[1]).unwrap();
    assert_eq!(ok.len(), model.cfg.vocab_size);
}
