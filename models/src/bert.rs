//! Sentence embeddings from a sentence-transformers BERT folder
//! (all-MiniLM-L6-v2 by default) on candle.
//!
//! What: [`SentenceEmbedder`] loads `config.json`, `model.safetensors` and
//! `tokenizer.json`, runs a BERT encoder, mean-pools the last hidden states
//! over the real (unpadded) tokens and L2-normalizes, which is exactly what
//! sentence-transformers' `Transformer -> Pooling(mean) -> Normalize`
//! pipeline for this model computes. Two encoders compute the same network
//! ([`Backend`]): candle-transformers' `BertModel` over padded, masked batches
//! (the reference), and sdlab's packed encoder (`bert/packed.rs`, the
//! default), which skips padding altogether and is faster on CPU.
//!
//! Why these choices:
//! - **Truncation at 256 tokens**, not the shipped `tokenizer.json`'s 128:
//!   sentence-transformers runs all-MiniLM-L6-v2 with `max_seq_length = 256`,
//!   and the golden vectors (`shared/fixtures/minilm_golden.jsonl`) do too.
//!   The tokenizer's own fixed padding to 128 is switched off; we pad per batch.
//! - **Length-sorted batches**: texts are sorted by token count before they are
//!   cut into batches of `batch_size` (and put back in order afterwards), so a
//!   batch pads to the length of similar texts, not of the longest in the call.
//! - **Weights without a `bert.` prefix**: sentence-transformers saves the bare
//!   `BertModel` (`embeddings.*`, `encoder.layer.N.*`); candle-transformers'
//!   loader tries the bare names first and falls back to `bert.*`, so both
//!   layouts load.
//! - With the candle backend, padding is masked with a large negative
//!   attention bias and pooling uses the attention mask; the packed backend
//!   has no padding. Either way a text's vector does not depend on what it is
//!   batched with (up to float rounding).
//!
//! Empty (or whitespace-only) strings do not fail: they tokenize to
//! `[CLS] [SEP]` and get the (unit) embedding of that two-token sequence, as
//! sentence-transformers gives them.

use crate::loader::cache_dir;
use crate::{io_err, ModelError, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokenizers::{Tokenizer, TruncationParams};

mod packed;

/// Where `make models` puts all-MiniLM-L6-v2, under the cache directory.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
/// The sequence length sentence-transformers uses for all-MiniLM-L6-v2.
pub const DEFAULT_MAX_SEQ_LEN: usize = 256;
/// Texts per forward pass unless [`SentenceEmbedder::with_batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// The all-MiniLM-L6-v2 folder in the cache (`$SDLAB_CACHE_DIR`, else
/// `.cache/`): `.cache/models/all-MiniLM-L6-v2`.
pub fn default_path() -> PathBuf {
    cache_dir().join(DEFAULT_MODEL_DIR)
}

/// Which implementation of the BERT encoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// sdlab's encoder over packed (unpadded) sequences: fused QKV, fused
    /// bias + GELU, attention over real tokens only.
    #[default]
    Packed,
    /// candle-transformers' `BertModel` over a padded batch with an attention
    /// mask: the reference implementation.
    Candle,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "packed" => Ok(Self::Packed),
            "candle" => Ok(Self::Candle),
            other => Err(format!("unknown backend `{other}` (packed, candle)")),
        }
    }
}

enum Encoder {
    Packed(packed::PackedBert),
    Candle(Box<BertModel>),
}

/// A BERT sentence encoder with its tokenizer: text in, unit vector out.
pub struct SentenceEmbedder {
    encoder: Encoder,
    backend: Backend,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    max_seq_len: usize,
    max_positions: usize,
    vocab_size: usize,
    batch_size: usize,
    pad_id: u32,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("dim", &self.dim)
            .field("max_seq_len", &self.max_seq_len)
            .field("batch_size", &self.batch_size)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl SentenceEmbedder {
    /// Loads all-MiniLM-L6-v2 from [`default_path`].
    pub fn load_default() -> Result<Self> {
        Self::load(&default_path())
    }

    /// Loads a sentence-transformers BERT folder: `config.json`,
    /// `model.safetensors` and `tokenizer.json`, on the default (packed)
    /// backend. A missing folder or file is [`ModelError::NotFound`] with a
    /// hint to run `make models`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, Backend::default())
    }

    /// [`Self::load`] on a chosen [`Backend`].
    pub fn load_with(dir: &Path, backend: Backend) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::NotFound(format!(
                "embedding model folder {} does not exist: run `make models` to fetch \
                 all-MiniLM-L6-v2, or pass a sentence-transformers BERT folder",
                dir.display()
            )));
        }
        let file = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ModelError::NotFound(format!(
                    "{} is missing (want config.json, model.safetensors and tokenizer.json; \
                     `make models` fetches all-MiniLM-L6-v2)",
                    p.display()
                )))
            }
        };
        let (config_path, weights_path, tok_path) = (
            file("config.json")?,
            file("model.safetensors")?,
            file("tokenizer.json")?,
        );

        let text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
        let config: Config = serde_json::from_str(&text).map_err(|e| ModelError::Format {
            path: config_path.display().to_string(),
            message: e.to_string(),
        })?;
        validate(&config).map_err(|message| ModelError::Format {
            path: config_path.display().to_string(),
            message,
        })?;

        let device = Device::Cpu;
        let fmt_err = |e: candle_core::Error| ModelError::Format {
            path: weights_path.display().to_string(),
            message: e.to_string(),
        };
        let tensors = candle_core::safetensors::load(&weights_path, &device).map_err(fmt_err)?;
        let encoder = match backend {
            Backend::Packed => {
                Encoder::Packed(packed::PackedBert::load(&tensors, &config).map_err(|e| {
                    ModelError::Format {
                        path: weights_path.display().to_string(),
                        message: e.to_string(),
                    }
                })?)
            }
            Backend::Candle => {
                let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
                Encoder::Candle(Box::new(BertModel::load(vb, &config).map_err(fmt_err)?))
            }
        };

        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| ModelError::Format {
            path: tok_path.display().to_string(),
            message: e.to_string(),
        })?;
        // We pad per batch ourselves; the shipped file pads every text to 128.
        tokenizer.with_padding(None);
        // Padded positions are masked out, so any in-vocabulary id will do.
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(config.pad_token_id as u32);
        let pad_id = if (pad_id as usize) < config.vocab_size {
            pad_id
        } else {
            0
        };

        let mut me = Self {
            encoder,
            backend,
            tokenizer,
            device,
            dim: config.hidden_size,
            max_seq_len: 0,
            max_positions: config.max_position_embeddings,
            vocab_size: config.vocab_size,
            batch_size: DEFAULT_BATCH_SIZE,
            pad_id,
        };
        me.set_max_seq_len(DEFAULT_MAX_SEQ_LEN.min(config.max_position_embeddings))?;
        Ok(me)
    }

    /// Texts per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(ModelError::Input("batch size must be at least 1".into()));
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// Truncate texts to this many tokens, `[CLS]` and `[SEP]` included
    /// (2 ..= the model's position embeddings; 256 by default).
    pub fn with_max_seq_len(mut self, max_seq_len: usize) -> Result<Self> {
        self.set_max_seq_len(max_seq_len)?;
        Ok(self)
    }

    fn set_max_seq_len(&mut self, max_seq_len: usize) -> Result<()> {
        if !(2..=self.max_positions).contains(&max_seq_len) {
            return Err(ModelError::Input(format!(
                "max sequence length {max_seq_len} is outside 2..={}",
                self.max_positions
            )));
        }
        self.tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        self.max_seq_len = max_seq_len;
        Ok(())
    }

    /// The embedding dimension (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens per text after truncation, `[CLS]` and `[SEP]` included.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The input ids the model sees for each text: WordPiece with `[CLS]` and
    /// `[SEP]`, truncated to [`Self::max_seq_len`], unpadded.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))
            })
            .collect()
    }

    /// One L2-normalized vector of [`Self::dim`] floats per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts)?;
        self.embed_ids(&ids)
    }

    /// [`Self::embed`] from token ids (as [`Self::tokenize`] gives them).
    /// Sequences longer than [`Self::max_seq_len`] or with ids outside the
    /// vocabulary are an [`ModelError::Input`] error.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        for (i, seq) in ids.iter().enumerate() {
            if seq.is_empty() || seq.len() > self.max_seq_len {
                return Err(ModelError::Input(format!(
                    "sequence {i} has {} tokens (want 1..={})",
                    seq.len(),
                    self.max_seq_len
                )));
            }
            if let Some(bad) = seq.iter().find(|&&t| t as usize >= self.vocab_size) {
                return Err(ModelError::Input(format!(
                    "sequence {i} has token id {bad}, outside the vocabulary of {}",
                    self.vocab_size
                )));
            }
        }
        // Longest first, so the first batch fails fast if memory is short and
        // each batch pads only to its own longest text.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let vectors = self.forward_batch(&batch)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Encodes one batch, mean-pools and normalizes each text.
    fn forward_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let mut pooled = match &self.encoder {
            Encoder::Packed(m) => m.pooled(batch)?,
            Encoder::Candle(m) => self.candle_pooled(m, batch)?,
        };
        // sentence-transformers clamps the norm at 1e-12.
        pooled.iter_mut().for_each(|v| normalize(v));
        Ok(pooled)
    }

    /// Mean pooling over a padded, masked batch through candle's BertModel.
    fn candle_pooled(&self, model: &BertModel, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let b = batch.len();
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || len == 0 {
            return Ok(Vec::new());
        }
        let mut ids = vec![self.pad_id; b * len];
        let mut mask = vec![0u32; b * len];
        for (r, seq) in batch.iter().enumerate() {
            ids[r * len..r * len + seq.len()].copy_from_slice(seq);
            mask[r * len..r * len + seq.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (b, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, len), &self.device)?;
        let type_ids = ids.zeros_like()?;
        // (b, len, dim)
        let hidden = model.forward(&ids, &type_ids, Some(&mask))?;
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?.to_vec2::<f32>()?;
        Ok(summed
            .into_iter()
            .zip(batch)
            .map(|(mut v, seq)| {
                // sentence-transformers clamps the token count at 1e-9.
                let count = (seq.len() as f32).max(1e-9);
                v.iter_mut().for_each(|x| *x /= count);
                v
            })
            .collect())
    }
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    let norm = norm.max(1e-12) as f32;
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

fn validate(c: &Config) -> std::result::Result<(), String> {
    if c.hidden_size == 0 || c.num_attention_heads == 0 {
        return Err("hidden_size and num_attention_heads must be positive".into());
    }
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            c.hidden_size, c.num_attention_heads
        ));
    }
    if c.max_position_embeddings < 2 {
        return Err("max_position_embeddings must be at least 2".into());
    }
    if c.vocab_size == 0 || c.type_vocab_size == 0 {
        return Err("vocab_size and type_vocab_size must be positive".into());
    }
    Ok(())
}
