//! Quantization: f32 against 8-bit and 4-bit weights of the real model.
//!
//! **The pattern.** Decoding one token reads every weight of the model once
//! and does only two flops per weight read, so single-stream decode is bound
//! by memory bandwidth, not arithmetic. Storing weights in fewer bits reads
//! fewer bytes per token; the question is what it costs in accuracy.
//!
//! **The naive way** keeps every weight as an f32 (4 bytes) and multiplies
//! with sdlab's dense f32 kernel (`--weights f32`): the exact reference.
//!
//! **The optimal way** stores weights in blocks of 32 with a scale per block,
//! as llama.cpp's GGUF formats do, and multiplies straight from the packed
//! blocks (the activations are quantized to 8 bits on the fly and the dot
//! products run on integers): `Q8_0` (8-bit values and an f16 scale: 1.06
//! bytes per weight, `kernels::q8_0`), `Q4_1` (4-bit values with an f16
//! scale and minimum: 0.63 bytes per weight, sdlab's AVX2 kernel in
//! `kernels::quant`, the format the default model ships in) and `Q4_0`
//! (4-bit, scale only: 0.56 bytes, candle's `QMatMul`). The numbers to look
//! at: `weights_mb` (bytes of linear-layer weights read per token),
//! `ms_per_token` (decode), and against the f32 logits over a few hundred
//! positions of a text, `top1_agreement` (how often the most likely next
//! token is the same), `mean_kl` (the KL divergence of the next-token
//! distribution from f32's, in nats), `max_abs_logit_error` and
//! `perplexity` on the text.
//!
//! An honest caveat: the only weights shipped are the Q4_1 GGUF, so the f32
//! reference is that file dequantized. Q8_0 and Q4_0 quantize the reference
//! again (their error is the full weight rounding of their format); the Q4_1
//! row runs the original file, whose weights *are* the reference values, so
//! its error comes only from the kernel's 8-bit activations. Against the
//! original bf16 checkpoint Q4_1 would differ a little more; Q4_0 shows what
//! a fresh 4-bit rounding costs.
//!
//! llama.cpp made these block formats the standard for CPU and edge serving
//! (plus k-quants and i-quants with importance matrices); GPU servers use
//! GPTQ, AWQ, and fp8 / int8 (vLLM, TensorRT-LLM), often with 8-bit or fp8
//! KV caches too.

use super::decode_loop::{argmax, load_default, Seq};
use anyhow::Result;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use hld::LessonReport;
use models::llama::Layer;
use models::weights::Linear;
use models::{Llama, WeightFormat};
use std::sync::Arc;
use std::time::Instant;

/// The lesson's command-line name.
pub const NAME: &str = "quantization";
/// A short human title.
pub const TITLE: &str = "Quantization: f32 weights against Q8_0, Q4_1 and Q4_0 blocks";

/// The text whose next-token predictions are compared.
const TEXT: &str = "The library opens at nine in the morning and closes at six in the \
evening. On weekdays, students come to read, to study for their exams, and to borrow books \
for the week. The reading room on the second floor is quiet, and phones must be switched off. \
Children can join the story hour every Saturday, when a librarian reads aloud from a picture \
book and the children draw what they heard. Books can be renewed twice, online or at the front \
desk, unless another reader has reserved them. Late returns cost ten cents a day. The library \
also lends laptops, board games and musical instruments, and the basement has a small workshop \
with a 3D printer that anyone can book for an hour at a time. Every spring the friends of the \
library hold a book sale, and the money they raise pays for new furniture, longer opening \
hours and the summer reading programme, which last year drew more than four hundred children.";
/// Decode steps timed per format.
const DECODE_STEPS: usize = 8;

/// A requantized copy of a linear layer.
fn requantize(lin: &Linear, dtype: GgmlDType) -> Result<Linear> {
    let (n, k) = (lin.out_features(), lin.in_features());
    let w = lin.to_dense()?;
    Ok(match dtype {
        GgmlDType::Q8_0 => Linear::Q8_0(kernels::q8_0::Q8_0Matrix::quantize(&w, n, k)?),
        _ => {
            let t = Tensor::from_vec(w, (n, k), &Device::Cpu)?;
            Linear::from_qtensor(QTensor::quantize(&t, dtype)?, true)?
        }
    })
}

/// The model with every linear layer (and the LM head) requantized to `dtype`.
pub fn requantize_model(m: &Llama, dtype: GgmlDType) -> Result<Llama> {
    let q = |l: &Linear| requantize(l, dtype);
    let layers = m
        .layers()
        .iter()
        .map(|l| {
            Ok(Layer {
                attn_norm: l.attn_norm.clone(),
                wq: q(&l.wq)?,
                wk: q(&l.wk)?,
                wv: q(&l.wv)?,
                wo: q(&l.wo)?,
                ffn_norm: l.ffn_norm.clone(),
                w_gate: q(&l.w_gate)?,
                w_up: q(&l.w_up)?,
                w_down: q(&l.w_down)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Llama::new(
        m.cfg.clone(),
        Arc::new(m.embed().to_vec()),
        layers,
        m.final_norm().to_vec(),
        q(m.lm_head())?,
    )?)
}

/// Logits at every position of `tokens`, in one forward pass.
fn all_logits(m: &Llama, tokens: &[u32]) -> Result<Vec<f32>> {
    Seq::new(m, tokens.len()).feed(m, tokens, true)
}

/// Milliseconds per greedy decode step after the first 32 tokens of `tokens`.
fn decode_ms(m: &Llama, tokens: &[u32]) -> Result<f64> {
    let mut seq = Seq::new(m, 32 + DECODE_STEPS + 1);
    let mut next = argmax(&seq.feed(m, &tokens[..32], false)?);
    let t = Instant::now();
    for _ in 0..DECODE_STEPS {
        next = argmax(&seq.feed(m, &[next], false)?);
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / DECODE_STEPS as f64)
}

/// How far one model's logits are from the reference's.
#[derive(Debug, PartialEq)]
pub struct Error {
    pub max_abs_logit_error: f64,
    pub mean_kl: f64,
    pub top1_agreement: f64,
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = f64::from(m)
        + row
            .iter()
            .map(|&v| f64::from(v - m).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&v| f64::from(v) - lse).collect()
}

/// Compares `[rows, vocab]` logits against the reference `r`.
pub fn compare(r: &[f32], q: &[f32], vocab: usize) -> Error {
    let rows = r.len() / vocab;
    let (mut max_abs, mut kl, mut agree) = (0f64, 0f64, 0usize);
    for (a, b) in r.chunks_exact(vocab).zip(q.chunks_exact(vocab)) {
        for (x, y) in a.iter().zip(b) {
            max_abs = max_abs.max(f64::from((x - y).abs()));
        }
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl += la
            .iter()
            .zip(&lb)
            .map(|(p, q)| p.exp() * (p - q))
            .sum::<f64>();
        agree += usize::from(argmax(a) == argmax(b));
    }
    Error {
        max_abs_logit_error: max_abs,
        mean_kl: kl / rows as f64,
        top1_agreement: agree as f64 / rows as f64,
    }
}

/// Perplexity of `tokens` given logits at every position.
fn perplexity(logits: &[f32], tokens: &[u32], vocab: usize) -> f64 {
    let nll: f64 = logits
        .chunks_exact(vocab)
        .zip(&tokens[1..])
        .map(|(row, &next)| -log_softmax(row)[next as usize])
        .sum();
    (nll / (tokens.len() - 1) as f64).exp()
}

pub fn lesson(_seed: u64) -> Result<LessonReport> {
    let reference = load_default(WeightFormat::F32)?;
    let tokens = reference.tokenizer.encode(TEXT)?;
    let f32_model = &reference.model;
    let vocab = f32_model.cfg.vocab_size;
    let ref_logits = all_logits(f32_model, &tokens)?;
    let mb = |m: &Llama| m.weight_bytes() as f64 / 1e6;
    let f32_ms = decode_ms(f32_model, &tokens)?;
    let mut report = LessonReport::new(NAME, TITLE)
        .naive("weights_mb", mb(f32_model))
        .naive("ms_per_token", f32_ms)
        .naive("perplexity", perplexity(&ref_logits, &tokens, vocab))
        .naive("top1_agreement", 1.0);

    let shipped = load_default(WeightFormat::Auto)?.model;
    let models = [
        ("q8_0", requantize_model(f32_model, GgmlDType::Q8_0)?),
        ("q4_1", shipped),
        ("q4_0", requantize_model(f32_model, GgmlDType::Q4_0)?),
    ];
    let mut summary = Vec::new();
    for (name, m) in &models {
        let logits = all_logits(m, &tokens)?;
        let e = compare(&ref_logits, &logits, vocab);
        let ms = decode_ms(m, &tokens)?;
        summary.push(format!(
            "{} {:.1}x smaller, {:.1}x faster, top-1 {:.0}%",
            name.to_uppercase(),
            mb(f32_model) / mb(m),
            f32_ms / ms,
            100.0 * e.top1_agreement
        ));
        report = report
            .optimal(&format!("weights_mb_{name}"), mb(m))
            .optimal(&format!("ms_per_token_{name}"), ms)
            .optimal(
                &format!("perplexity_{name}"),
                perplexity(&logits, &tokens, vocab),
            )
            .optimal(&format!("top1_agreement_{name}"), e.top1_agreement)
            .optimal(&format!("mean_kl_{name}"), e.mean_kl)
            .optimal(
                &format!("max_abs_logit_error_{name}"),
                e.max_abs_logit_error,
            );
    }
    Ok(report.notes(format!(
        "SmolLM2-135M on a {}-token paragraph: every format's logits at every position against \
         the f32 model's, and {DECODE_STEPS} timed greedy decode steps each. {}. weights_mb counts \
         the linear layers and the LM head (what a decode step reads), not the embedding table. \
         The f32 reference is the shipped Q4_1 file dequantized (no f32 checkpoint is shipped), \
         so Q8_0 and Q4_0 re-round it while the Q4_1 row is the file itself, its error only from \
         the kernel's 8-bit activations. Q4_0 runs on candle's QMatMul, the others on sdlab's \
         kernels, so its speed says as much about the kernel as about the bytes: \
         fewer bytes pay off only on a kernel built for the format. Sized down: one paragraph, {DECODE_STEPS} decode \
         steps per format.",
        tokens.len(),
        summary.join("; "),
    )))
}

#[cfg(test)]
mod tests {
    use super::super::decode_loop::synth_model;
    use super::*;

    #[test]
    fn a_model_compared_with_itself_has_no_error() {
        let r: Vec<f32> = (0..30).map(|i| (i % 7) as f32 * 0.3).collect();
        let e = compare(&r, &r, 10);
        assert_eq!(e.max_abs_logit_error, 0.0);
        assert!(e.mean_kl.abs() < 1e-12);
        assert_eq!(e.top1_agreement, 1.0);
    }

    #[test]
    fn a_flipped_argmax_shows_in_agreement_and_kl() {
        let r = [2.0, 0.0, 0.0, 0.0];
        let q = [0.0, 2.0, 0.0, 0.0];
        let e = compare(&r, &q, 4);
        assert_eq!(e.top1_agreement, 0.0);
        assert_eq!(e.max_abs_logit_error, 2.0);
        assert!(e.mean_kl > 0.5);
    }

    /// Requantizing shrinks the weights and keeps the logits close (the
    /// `small` synthetic model: every row a whole number of 32-blocks).
    #[test]
    fn requantized_models_are_smaller_and_close() {
        let m = synth_model("small", 4);
        let tokens = [1, 2, 3, 40, 50, 60];
        let r = all_logits(&m, &tokens).unwrap();
        let q8 = requantize_model(&m, GgmlDType::Q8_0).unwrap();
        let q4 = requantize_model(&m, GgmlDType::Q4_0).unwrap();
        assert!(q4.weight_bytes() < q8.weight_bytes());
        assert!(q8.weight_bytes() < m.weight_bytes());
        let e8 = compare(&r, &all_logits(&q8, &tokens).unwrap(), m.cfg.vocab_size);
        let e4 = compare(&r, &all_logits(&q4, &tokens).unwrap(), m.cfg.vocab_size);
        assert!(e8.mean_kl < e4.mean_kl, "{e8:?} {e4:?}");
        assert!(e8.max_abs_logit_error < 0.1, "{e8:?}");
    }

    #[test]
    fn perplexity_of_a_uniform_model_is_the_vocabulary() {
        let logits = vec![0.0f32; 3 * 5];
        assert!((perplexity(&logits, &[0, 1, 2, 3], 5) - 5.0).abs() < 1e-9);
    }
}
