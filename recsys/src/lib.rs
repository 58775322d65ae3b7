//! A two-tower retrieval recommender on MovieLens.
//!
//! - [`rdata`], [`movielens`]: the data, read straight from R's lazy-load
//!   database in the Debian package (no R needed); [`split`]: leave-last-out.
//! - [`two_tower`], [`train`]: the model on candle and its training (in-batch
//!   softmax with the logQ correction).
//! - [`baselines`]: popularity and matrix factorization; [`metrics`],
//!   [`eval`]: full-ranking HR@10, NDCG@10, HR@100 for all of them.
//! - [`serve`]: item vectors in `rag`'s HNSW index, recommendations for a
//!   known user or a bare history, and ANN against exact retrieval.

pub mod baselines;
pub mod eval;
pub mod metrics;
pub mod movielens;
pub mod rdata;
pub mod serve;
pub mod split;
pub mod train;
pub mod two_tower;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum RecsysError {
    /// Data that is missing, malformed or not what we expected.
    #[error("data: {0}")]
    Data(String),
    /// A file that could not be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// An argument out of range or inconsistent with the data.
    #[error("invalid input: {0}")]
    Input(String),
    /// An unknown user or movie.
    #[error("{0}")]
    NotFound(String),
    /// A failure inside the model or the index.
    #[error("model: {0}")]
    Model(String),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RecsysError + '_ {
    move |source| RecsysError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub type Result<T> = std::result::Result<T, RecsysError>;
