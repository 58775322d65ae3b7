//! Retrieval-augmented generation: the three parts the seed teaches, each
//! behind a small trait so they can be compared and swapped.
//!
//! - [`chunk`]: how to cut documents into passages ([`chunk::Chunker`]):
//!   fixed-size, by tokens, recursive over separators, structure-aware
//!   (Markdown / reStructuredText) and semantic; every chunk carries byte
//!   offsets into its source.
//! - [`embed`]: how to turn text into vectors ([`embed::Embedder`]); the real
//!   one is all-MiniLM-L6-v2 on candle (`models::bert`).
//! - [`index`]: how to find the nearest vectors ([`index::VectorIndex`]):
//!   exact (flat) and HNSW, persisted to a directory.
//! - [`bm25`]: the lexical baseline, and reciprocal-rank fusion for hybrid
//!   retrieval; [`faq`]: the Python FAQ as a retrieval test set.
//! - [`rerank`]: two-stage retrieval (candidates, then a second-stage
//!   reorder) and HyDE's averaged query vectors.
//! - [`store`]: chunk text and metadata in SQLite, keyed by vector id;
//!   [`collection`]: the four together on disk, crash-safe ingestion.

pub mod bm25;
pub mod chunk;
pub mod collection;
pub mod embed;
pub mod faq;
pub mod faq_eval;
pub mod hashing;
pub mod index;
pub mod rerank;
pub mod store;

/// Everything that can go wrong in retrieval.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error("invalid input: {0}")]
    Input(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A damaged or inconsistent index or collection on disk.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] models::ModelError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, RagError>;

#[allow(dead_code)]
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RagError + '_ {
    let path = path.display().to_string();
    move |source| RagError::Io { path, source }
}
