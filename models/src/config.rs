//! Architecture hyper-parameters of a Llama-family decoder.

use crate::{ModelError, Result};
use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};

/// How rotary embeddings pair up the dimensions of a head.
///
/// GGUF conversion permutes the rows of `q`/`k` so that llama.cpp can rotate
/// adjacent pairs `(2i, 2i+1)`; Hugging Face checkpoints rotate the two halves
/// `(i, i + d/2)`. Same model, different layout: the loader picks the style
/// that matches its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeStyle {
    Interleaved,
    Halves,
}

/// The kernels' own copy of the style (`kernels` has no serde).
impl From<RopeStyle> for kernels::RopeStyle {
    fn from(style: RopeStyle) -> Self {
        match style {
            RopeStyle::Interleaved => Self::Interleaved,
            RopeStyle::Halves => Self::Halves,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub rope_style: RopeStyle,
}

impl LlamaConfig {
    /// Bytes of KV cache one token takes across all layers (f32 K and V).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * std::mem::size_of::<f32>()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(ModelError::Format {
                path: "config".into(),
                message: m,
            })
        };
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return bad(format!(
                "{} heads is not a multiple of {} KV heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(format!("head_dim {} must be even", self.head_dim));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            return bad("vocab, hidden size and layers must be positive".into());
        }
        Ok(())
    }

    /// Reads `llama.*` metadata of a GGUF file.
    pub fn from_gguf(content: &gguf_file::Content, vocab_size: usize) -> Result<Self> {
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| "llama".into());
        let get = |key: &str| -> Result<&gguf_file::Value> {
            md.get(&format!("{arch}.{key}"))
                .ok_or_else(|| ModelError::Format {
                    path: "gguf".into(),
                    message: format!("missing metadata {arch}.{key}"),
                })
        };
        let as_usize = |key: &str| -> Result<usize> { Ok(get(key)?.to_u32()? as usize) };
        let hidden_size = as_usize("embedding_length")?;
        let num_heads = as_usize("attention.head_count")?;
        let num_kv_heads = as_usize("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = as_usize("rope.dimension_count").unwrap_or(hidden_size / num_heads);
        let cfg = Self {
            vocab_size,
            hidden_size,
            intermediate_size: as_usize("feed_forward_length")?,
            num_layers: as_usize("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: get("attention.layer_norm_rms_epsilon")?.to_f32()?,
            rope_theta: get("rope.freq_base")
                .and_then(|v| Ok(v.to_f32()?))
                .unwrap_or(10_000.0),
            max_position_embeddings: as_usize("context_length").unwrap_or(4096),
            tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
            rope_style: RopeStyle::Interleaved,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(text)?;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let cfg = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            rope_style: RopeStyle::Halves,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The subset of a Hugging Face Llama `config.json` sdlab reads.
#[derive(Debug, Deserialize, Serialize)]
pub struct HfConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f32,
    pub rope_theta: Option<f32>,
    pub max_position_embeddings: Option<usize>,
    pub tie_word_embeddings: Option<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
}
