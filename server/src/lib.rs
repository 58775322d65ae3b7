//! The sdlab engine: a paged-KV block manager with prefix caching, an
//! iteration-level scheduler with chunked prefill and preemption, a sampler,
//! and the step loop that drives a model. HTTP lives on top of [`engine`];
//! embeddings and retrieval reach it through the [`retrieval::Retrieval`] trait.

pub mod block_manager;
pub mod detokenizer;
pub mod engine;
pub mod http;
pub mod lora;
pub mod retrieval;
pub mod runner;
pub mod sampler;
pub mod scheduler;
pub mod spec_decode;
