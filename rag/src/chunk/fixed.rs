//! Fixed-size chunks: the baseline every other strategy is compared with.
//!
//! Windows of `size` characters (not bytes, so a multi-byte character is
//! never cut) that start every `size - overlap` characters. It ignores the
//! text's structure entirely, which is exactly what makes it a useful
//! baseline: cheap, predictable, and bad at keeping ideas together.

use super::util::{check_overlap, trimmed, CharIndex};
use super::{Chunk, Chunker};

/// Windows of `size` characters, consecutive windows sharing `overlap`
/// characters. Each window is then trimmed of surrounding whitespace, so a
/// chunk can be shorter than `size` and the shared part shorter than
/// `overlap`; a window that trims to nothing new (blank, or inside the
/// previous chunk) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedChunker {
    pub size: usize,
    pub overlap: usize,
}

impl FixedChunker {
    /// Checks `size >= 1` and `overlap < size`.
    pub fn new(size: usize, overlap: usize) -> crate::Result<Self> {
        check_overlap(size, overlap)?;
        Ok(FixedChunker { size, overlap })
    }
}

impl Chunker for FixedChunker {
    fn name(&self) -> String {
        format!("fixed-{}/{}", self.size, self.overlap)
    }

    fn chunk(&self, text: &str) -> crate::Result<Vec<Chunk>> {
        check_overlap(self.size, self.overlap)?;
        let ci = CharIndex::new(text);
        let step = self.size - self.overlap;
        let mut out: Vec<Chunk> = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = ci.advance(start, self.size);
            if let Some(c) = trimmed(text, start, end) {
                if out.last().is_none_or(|p| c.end > p.end) {
                    out.push(c);
                }
            }
            if end >= text.len() {
                break;
            }
            start = ci.advance(start, step);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_step_by_size_minus_overlap() {
        let t = "abcdefghij";
        let c = FixedChunker::new(4, 1).unwrap().chunk(t).unwrap();
        let texts: Vec<&str> = c.iter().map(|c| c.text(t)).collect();
        assert_eq!(texts, ["abcd", "defg", "ghij"]);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(FixedChunker::new(0, 0).is_err());
        assert!(FixedChunker::new(5, 5).is_err());
        let bad = FixedChunker {
            size: 3,
            overlap: 7,
        };
        assert!(bad.chunk("text").is_err());
    }
}
