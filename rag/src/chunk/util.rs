//! Helpers shared by the chunkers: character counting over byte ranges,
//! whitespace trimming by offsets, and the hard character split that every
//! strategy falls back to when nothing better is left.
//!
//! All chunkers measure size in characters (Unicode scalar values), never in
//! bytes, and every offset they hand out is a UTF-8 char boundary.

use super::Chunk;

/// Counts characters between two byte offsets in O(log n).
///
/// ASCII text (the common case) needs no table: bytes are characters.
pub(crate) struct CharIndex {
    /// Byte offset of every char start, plus `text.len()` at the end;
    /// `None` for pure ASCII text.
    starts: Option<Vec<usize>>,
    len: usize,
}

impl CharIndex {
    pub(crate) fn new(text: &str) -> Self {
        let starts = if text.is_ascii() {
            None
        } else {
            let mut v: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            v.push(text.len());
            Some(v)
        };
        CharIndex {
            starts,
            len: text.len(),
        }
    }

    /// The char position of byte offset `b` (a char boundary).
    fn pos(&self, b: usize) -> usize {
        match &self.starts {
            None => b.min(self.len),
            // A boundary is in the table; partition_point also copes with a
            // non-boundary by rounding up.
            Some(v) => v.partition_point(|&s| s < b),
        }
    }

    /// Number of characters in `text[a..b]`.
    pub(crate) fn count(&self, a: usize, b: usize) -> usize {
        self.pos(b).saturating_sub(self.pos(a))
    }

    /// The byte offset `n` characters after byte offset `a` (clamped to the end).
    pub(crate) fn advance(&self, a: usize, n: usize) -> usize {
        match &self.starts {
            None => (a + n).min(self.len),
            Some(v) => {
                let p = self.pos(a) + n;
                v.get(p).copied().unwrap_or(self.len)
            }
        }
    }
}

/// `text[start..end]` without surrounding whitespace, as a chunk; `None` when
/// nothing but whitespace is left.
pub(crate) fn trimmed(text: &str, start: usize, end: usize) -> Option<Chunk> {
    let s = &text[start..end];
    let lead = s.len() - s.trim_start().len();
    let body = s.trim();
    if body.is_empty() {
        return None;
    }
    let start = start + lead;
    Some(Chunk {
        start,
        end: start + body.len(),
    })
}

/// Character length of `text[start..end]` once trimmed (0 if blank).
pub(crate) fn trimmed_len(text: &str, ci: &CharIndex, start: usize, end: usize) -> usize {
    trimmed(text, start, end).map_or(0, |c| ci.count(c.start, c.end))
}

/// Cuts `text[start..end]` into windows of at most `max` characters, trimmed;
/// the last resort for a run with no separator left (a very long word).
pub(crate) fn hard_split(
    text: &str,
    ci: &CharIndex,
    start: usize,
    end: usize,
    max: usize,
    out: &mut Vec<Chunk>,
) {
    let max = max.max(1);
    let mut a = start;
    while a < end {
        let b = ci.advance(a, max).min(end);
        out.extend(trimmed(text, a, b));
        a = b;
    }
}

/// Largest char boundary `<= i` (clamped to the text).
pub(crate) fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Smallest char boundary `>= i` (clamped to the text).
pub(crate) fn ceil_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Positive size check shared by the constructors and `from_spec`.
pub(crate) fn check_size(what: &str, size: usize) -> crate::Result<()> {
    if size == 0 {
        return Err(crate::RagError::Input(format!("{what} must be at least 1")));
    }
    Ok(())
}

/// `overlap < size` check shared by the windowed chunkers.
pub(crate) fn check_overlap(size: usize, overlap: usize) -> crate::Result<()> {
    check_size("chunk size", size)?;
    if overlap >= size {
        return Err(crate::RagError::Input(format!(
            "overlap ({overlap}) must be smaller than the chunk size ({size})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_index_counts_and_advances() {
        let t = "aé😀b";
        let ci = CharIndex::new(t);
        assert_eq!(ci.count(0, t.len()), 4);
        assert_eq!(ci.advance(0, 2), 3);
        assert_eq!(ci.advance(3, 1), 7);
        assert_eq!(ci.advance(3, 10), t.len());
        let ascii = CharIndex::new("hello");
        assert_eq!(ascii.count(1, 4), 3);
        assert_eq!(ascii.advance(4, 3), 5);
    }

    #[test]
    fn trimming_adjusts_offsets() {
        let t = "  ab c \n";
        assert_eq!(trimmed(t, 0, t.len()), Some(Chunk { start: 2, end: 6 }));
        assert_eq!(trimmed(t, 6, t.len()), None);
    }

    #[test]
    fn hard_split_keeps_char_boundaries() {
        let t = "😀😀😀😀😀";
        let ci = CharIndex::new(t);
        let mut out = Vec::new();
        hard_split(t, &ci, 0, t.len(), 2, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|c| c.text(t).chars().count() <= 2));
    }
}
