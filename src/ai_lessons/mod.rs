//! The AI-serving lessons: experiments that drive sdlab's own engine, KV
//! cache, sampler, adapters, embeddings, vector index and recommender, small
//! enough to run in seconds and watch. Each module has `NAME`, `TITLE` and
//! `lesson(seed) -> Result<LessonReport>` (the same report shape as the
//! `hld` lessons: `naive` and `optimal` metric objects and notes), and its
//! module doc is the explanation `sdlab learn` shows.
//!
//! They use the real default model and data that `make models` fetches
//! (`.cache/`); a missing file is an error that says so.

mod continuous_batching;
mod decode_loop;
mod hnsw;
mod kv_cache;
mod lora;
mod paged_attention;
mod quantization;
mod rag_chunking;
mod rag_hyde_rerank;
mod sampling;
mod semantic_cache;
mod speculative_decoding;
mod two_tower;

use anyhow::Result;
use hld::LessonReport;

/// One AI lesson: its command-line name, a title, the experiment and the
/// module holding its source.
pub struct AiLesson {
    pub name: &'static str,
    pub title: &'static str,
    pub run: fn(u64) -> Result<LessonReport>,
    pub module: &'static str,
}

#[allow(unused_macros)]
macro_rules! ai_lesson {
    ($m:ident) => {
        AiLesson {
            name: $m::NAME,
            title: $m::TITLE,
            run: $m::lesson,
            module: stringify!($m),
        }
    };
}

/// Every AI lesson.
pub fn lessons() -> Vec<AiLesson> {
    vec![
        ai_lesson!(paged_attention),
        ai_lesson!(continuous_batching),
        ai_lesson!(lora),
        ai_lesson!(kv_cache),
        ai_lesson!(sampling),
        ai_lesson!(quantization),
        ai_lesson!(speculative_decoding),
        ai_lesson!(hnsw),
        ai_lesson!(semantic_cache),
        ai_lesson!(rag_chunking),
        ai_lesson!(rag_hyde_rerank),
        ai_lesson!(two_tower),
    ]
}
