//! The narrow traits between the HTTP API and retrieval: embeddings and
//! document collections ([`Retrieval`]), and recommendations
//! ([`Recommender`]).
//!
//! What: [`Retrieval`] is everything `/v1/embeddings` and the `/v1/rag/...`
//! routes need: embed texts, add documents to a named collection, find the
//! passages nearest a query. Why a trait: the server must not depend on the
//! `rag` crate (dependencies point one way, and the engine is useful without
//! retrieval), so the binary that ties the crates together implements it
//! over `rag` and hands it to [`crate::http::AppState::with_extensions`]; the
//! tests implement it with a few lines over plain vectors.
//!
//! Calls are blocking (they run models and touch disk); the handlers run
//! them on tokio's blocking pool.

use serde::Serialize;

/// Vectors for a list of texts, and the tokens the model read.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// A document to add: its text and the name it is cited by.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    pub source: String,
    pub text: String,
}

/// What adding documents did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddOutcome {
    /// Whether the collection was created by this call.
    pub created: bool,
    pub documents: usize,
    pub chunks: usize,
    /// The collection's chunker (a new collection takes the requested one).
    pub chunker: String,
    /// Totals after the call.
    pub total_documents: usize,
    pub total_chunks: usize,
}

/// A retrieved chunk: where it comes from and how close it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passage {
    /// The chunk's id in its collection.
    pub id: u64,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The document it was cut from, and its byte range there.
    pub source: String,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// A collection and its size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub documents: usize,
    pub chunks: usize,
    pub chunker: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetrievalError {
    /// No such collection.
    #[error("{0}")]
    NotFound(String),
    /// The caller's input is wrong (an empty text, a bad chunker spec, a
    /// bad collection name); `param` names the field.
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<&'static str>,
    },
    /// A fault on the server's side (a damaged collection, a model error).
    #[error("{0}")]
    Internal(String),
}

/// Embeddings and collections, as the HTTP API sees them.
pub trait Retrieval: Send + Sync + 'static {
    /// The embedding model's name, as `/v1/embeddings` reports it.
    fn embedding_model(&self) -> &str;
    /// Its vectors' dimension.
    fn dimension(&self) -> usize;
    /// One unit vector per text, in order.
    fn embed(&self, texts: &[String]) -> Result<Embeddings, RetrievalError>;
    /// Chunks, embeds and stores `docs` in `collection`, creating it (with
    /// `chunker`, or the default) if it does not exist.
    fn add_documents(
        &self,
        collection: &str,
        docs: &[NewDocument],
        chunker: Option<&str>,
    ) -> Result<AddOutcome, RetrievalError>;
    /// The `k` passages of `collection` nearest to `query`, best first.
    fn query(
        &self,
        collection: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<Passage>, RetrievalError>;
    /// Every collection, by name.
    fn collections(&self) -> Result<Vec<CollectionInfo>, RetrievalError>;
}

/// A recommended item, best first in a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendedItem {
    pub movie_id: u32,
    pub title: String,
    pub year: Option<u16>,
    pub genres: Vec<String>,
    /// The model's score (a cosine for the two-tower model).
    pub score: f32,
}

/// Whom to recommend for.
#[derive(Debug, Clone, PartialEq)]
pub enum RecommendFor {
    /// A user the model was trained with.
    User(u32),
    /// Anyone, from the movies they watched (oldest first).
    History(Vec<u32>),
}

/// A recommender, as `POST /v1/recommend` sees it (the binary implements
/// it over the `recsys` crate). `NotFound` is an unknown user or movie.
pub trait Recommender: Send + Sync + 'static {
    fn model_name(&self) -> &str;
    fn recommend(
        &self,
        who: &RecommendFor,
        k: usize,
    ) -> Result<Vec<RecommendedItem>, RetrievalError>;
}
