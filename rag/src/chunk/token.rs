//! Token windows: chunks measured the way the embedding model measures text.
//!
//! An embedder truncates at a fixed number of tokens, so sizing chunks in
//! tokens (rather than characters) is the only way to be sure nothing is cut
//! off silently. Offsets come from the tokenizer: `Tokenizer::encode` in
//! `tokenizers` 0.23 reports *byte* offsets into the original input
//! (`encode_char_offsets` would give char offsets), so they are used as they
//! are, only snapped outwards to char boundaries in case a byte-level token
//! ends inside a multi-byte character.

use std::borrow::Cow;

use tokenizers::Tokenizer;

use super::util::{ceil_boundary, check_overlap, floor_boundary, trimmed};
use super::{Chunk, Chunker};
use crate::RagError;

/// Windows of `size` tokens, consecutive windows sharing `overlap` tokens.
///
/// Tokens that map to no source text (added special tokens, empty offsets)
/// are skipped. Text the tokenizer drops entirely (whitespace, and whatever
/// its normalizer removes) falls between tokens and may be left out of a
/// chunk when it sits exactly at a window edge.
#[derive(Clone)]
pub struct TokenChunker {
    pub tokenizer: Tokenizer,
    pub size: usize,
    pub overlap: usize,
}

impl std::fmt::Debug for TokenChunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenChunker")
            .field("size", &self.size)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl TokenChunker {
    /// Checks `size >= 1` and `overlap < size`, and turns off the tokenizer's
    /// truncation and padding (a truncating tokenizer would lose the tail of
    /// every document).
    pub fn new(mut tokenizer: Tokenizer, size: usize, overlap: usize) -> crate::Result<Self> {
        check_overlap(size, overlap)?;
        plain(&mut tokenizer)?;
        Ok(TokenChunker {
            tokenizer,
            size,
            overlap,
        })
    }

    /// Byte ranges of every token of `text` that covers some source text.
    pub fn token_spans(&self, text: &str) -> crate::Result<Vec<(usize, usize)>> {
        let tok: Cow<'_, Tokenizer> = if self.tokenizer.get_truncation().is_some()
            || self.tokenizer.get_padding().is_some()
        {
            let mut t = self.tokenizer.clone();
            plain(&mut t)?;
            Cow::Owned(t)
        } else {
            Cow::Borrowed(&self.tokenizer)
        };
        let enc = tok
            .encode(text, false)
            .map_err(|e| RagError::Input(format!("tokenizing: {e}")))?;
        Ok(enc
            .get_offsets()
            .iter()
            .filter(|(s, e)| s < e && *e <= text.len())
            .map(|&(s, e)| (floor_boundary(text, s), ceil_boundary(text, e)))
            .collect())
    }
}

fn plain(t: &mut Tokenizer) -> crate::Result<()> {
    t.with_truncation(None)
        .map_err(|e| RagError::Input(format!("tokenizer truncation: {e}")))?;
    t.with_padding(None);
    Ok(())
}

impl Chunker for TokenChunker {
    fn name(&self) -> String {
        format!("tokens-{}/{}", self.size, self.overlap)
    }

    fn chunk(&self, text: &str) -> crate::Result<Vec<Chunk>> {
        check_overlap(self.size, self.overlap)?;
        let spans = self.token_spans(text)?;
        let step = self.size - self.overlap;
        let mut out: Vec<Chunk> = Vec::new();
        let mut first = 0;
        while first < spans.len() {
            let last = (first + self.size).min(spans.len());
            let window = &spans[first..last];
            // Offsets are monotonic for every tokenizer we know, but take
            // min/max so an odd one cannot produce start > end.
            let s = window.iter().map(|w| w.0).min().unwrap_or(0);
            let e = window.iter().map(|w| w.1).max().unwrap_or(s);
            if let Some(c) = trimmed(text, s, e) {
                if out.last().is_none_or(|p| c.end > p.end) {
                    out.push(c);
                }
            }
            if last == spans.len() {
                break;
            }
            first += step;
        }
        Ok(out)
    }
}
