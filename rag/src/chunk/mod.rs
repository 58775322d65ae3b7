//! Chunking strategies behind one trait.
//!
//! A [`Chunk`] is a byte range of its source text, so a retrieved passage can
//! always be traced back (and highlighted) in the original document. Every
//! chunker returns chunks in order, trimmed of surrounding whitespace (by
//! moving the offsets, never by copying), with offsets on UTF-8 char
//! boundaries, and together covering every non-whitespace character of the
//! source ([`TokenChunker`]: every character inside some token). Sizes are
//! in characters, or tokens for [`TokenChunker`].
//!
//! The strategies, from naive to clever:
//!
//! - [`FixedChunker`]: fixed windows of characters with overlap;
//! - [`TokenChunker`]: fixed windows of tokens, as the embedder counts;
//! - [`RecursiveChunker`]: LangChain's recursive splitter over paragraph,
//!   line, sentence and word separators;
//! - [`StructuredChunker`]: Markdown / reStructuredText aware, keeps headings
//!   with their text and code blocks whole;
//! - [`SemanticChunker`]: breaks where neighbouring sentences' embeddings
//!   drift apart.
//!
//! [`from_spec`] builds one from a short spec string (`recursive:800`) for
//! the command line.

use std::sync::Arc;

use crate::embed::Embedder;
use crate::RagError;

mod fixed;
mod recursive;
mod semantic;
mod structured;
mod token;
mod util;

pub use fixed::FixedChunker;
pub use recursive::{RecursiveChunker, DEFAULT_SEPARATORS};
pub use semantic::{percentile, sentences, SemanticChunker};
pub use structured::StructuredChunker;
pub use token::TokenChunker;

/// A passage: `source[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    pub start: usize,
    pub end: usize,
}

impl Chunk {
    pub fn text<'a>(&self, source: &'a str) -> &'a str {
        &source[self.start..self.end]
    }
}

/// Cuts a document into passages.
pub trait Chunker: Send + Sync {
    /// A short name for reports (`fixed-500/50`, `recursive-800`, ...).
    fn name(&self) -> String;
    fn chunk(&self, text: &str) -> crate::Result<Vec<Chunk>>;
}

/// `max_chars` of a semantic chunker when the spec gives none.
pub const DEFAULT_SEMANTIC_MAX_CHARS: usize = 1000;

/// The spec grammar, for error messages and `--help` texts.
pub const SPEC_HELP: &str = "fixed:SIZE[:OVERLAP] (characters), tokens:SIZE[:OVERLAP], \
recursive:MAX_CHARS, structured:MAX_CHARS, semantic:PERCENTILE[:MAX_CHARS]";

/// Builds a chunker from a spec such as `fixed:500:50`, `tokens:128:16`,
/// `recursive:800`, `structured:800` or `semantic:95` (see [`SPEC_HELP`]).
///
/// `tokens` needs `tokenizer` (cloned; its truncation and padding are turned
/// off) and `semantic` needs `embedder`; either is ignored by the other
/// strategies. Bad specs (unknown name, missing or non-numeric fields, size
/// 0, overlap not below size, percentile outside 0..=100) are
/// [`RagError::Input`].
pub fn from_spec(
    spec: &str,
    embedder: Option<Arc<dyn Embedder>>,
    tokenizer: Option<&tokenizers::Tokenizer>,
) -> crate::Result<Box<dyn Chunker>> {
    let bad = |why: &str| {
        RagError::Input(format!(
            "chunker spec {spec:?}: {why} (expected {SPEC_HELP})"
        ))
    };
    let mut parts = spec.trim().split(':');
    let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let args: Vec<&str> = parts.map(str::trim).collect();
    let arity = |min: usize, max: usize| {
        if args.len() < min || args.len() > max {
            Err(bad(&format!("{name} takes {min} to {max} numbers")))
        } else {
            Ok(())
        }
    };
    let num = |i: usize, what: &str| -> crate::Result<usize> {
        args[i]
            .parse::<usize>()
            .map_err(|_| bad(&format!("{what} {:?} is not a whole number", args[i])))
    };
    let positive = |i: usize, what: &str| -> crate::Result<usize> {
        match num(i, what)? {
            0 => Err(bad(&format!("{what} must be at least 1"))),
            n => Ok(n),
        }
    };
    let overlap = |size: usize| -> crate::Result<usize> {
        let o = if args.len() > 1 {
            num(1, "overlap")?
        } else {
            0
        };
        if o >= size {
            return Err(bad(&format!(
                "overlap {o} must be smaller than size {size}"
            )));
        }
        Ok(o)
    };
    Ok(match name.as_str() {
        "fixed" => {
            arity(1, 2)?;
            let size = positive(0, "size")?;
            Box::new(FixedChunker::new(size, overlap(size)?)?)
        }
        "tokens" | "token" => {
            arity(1, 2)?;
            let size = positive(0, "size")?;
            let o = overlap(size)?;
            let Some(t) = tokenizer else {
                return Err(bad("token chunking needs a tokenizer and none was given"));
            };
            Box::new(TokenChunker::new(t.clone(), size, o)?)
        }
        "recursive" => {
            arity(1, 1)?;
            Box::new(RecursiveChunker::new(positive(0, "max_chars")?)?)
        }
        "structured" | "markdown" | "rst" => {
            arity(1, 1)?;
            Box::new(StructuredChunker::new(positive(0, "max_chars")?)?)
        }
        "semantic" => {
            arity(1, 2)?;
            let p: f64 = args[0]
                .parse()
                .map_err(|_| bad(&format!("percentile {:?} is not a number", args[0])))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad("percentile must be between 0 and 100"));
            }
            let max = if args.len() > 1 {
                positive(1, "max_chars")?
            } else {
                DEFAULT_SEMANTIC_MAX_CHARS
            };
            let Some(e) = embedder else {
                return Err(bad(
                    "semantic chunking needs an embedder and none was given",
                ));
            };
            Box::new(SemanticChunker::new(e, p, max)?)
        }
        "" => return Err(bad("empty spec")),
        other => return Err(bad(&format!("unknown chunker {other:?}"))),
    })
}
