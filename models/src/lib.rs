//! Llama-family models for sdlab, written against sdlab's own paged KV cache.
//!
//! - [`config`]: the architecture hyper-parameters, read from GGUF metadata or
//!   a Hugging Face `config.json`.
//! - [`weights`]: linear layers that stay quantized (candle's `QMatMul`) or are
//!   dequantized to f32 at load and run on sdlab's batch-invariant kernel.
//! - [`llama`]: the decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU,
//!   tied or untied LM head) over a batch of sequence chunks.
//! - [`kv_cache`]: the block pool the decoder reads and writes.
//! - [`tokenizer`] and [`chat`]: tokenizers rebuilt from GGUF metadata or
//!   loaded from `tokenizer.json`, and chat templates rendered with minijinja.
//! - [`loader`]: resolves `--model` (a path or a known name) and loads it.
//! - [`lora`]: PEFT LoRA adapters, applied per row in the batch or merged.
//! - [`gpu`]: the same forward pass on the GPU kernels of `kernels::gpu`.
//! - [`synth`]: a small deterministic model for tests that need no download.

pub mod bert;
pub mod chat;
pub mod config;
pub mod eval;
pub mod gpu;
pub mod kv_cache;
pub mod llama;
pub mod loader;
pub mod lora;
pub mod lora_train;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use chat::{ChatMessage, ChatTemplate};
pub use config::{LlamaConfig, RopeStyle};
pub use kv_cache::KvCache;
pub use llama::{Llama, SeqChunk};
pub use loader::{load, resolve, LoadOptions, LoadedModel, ModelSource};
pub use lora::{LoraAdapter, Target as LoraTarget};
pub use tokenizer::TokenizerInfo;
pub use weights::WeightFormat;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model not found: {0}")]
    NotFound(String),
    #[error("invalid model file {path}: {message}")]
    Format { path: String, message: String },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("GPU: {0}")]
    Gpu(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Kernel(#[from] kernels::KernelError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}
