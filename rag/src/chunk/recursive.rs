//! The recursive character splitter (LangChain's
//! `RecursiveCharacterTextSplitter`), written out by hand because it is the
//! lesson: most production RAG pipelines chunk this way.
//!
//! The method, for a piece of text and a list of separators from coarsest to
//! finest:
//!
//! 1. take the first separator that actually splits the piece (paragraph
//!    `"\n\n"`, then line `"\n"`, sentence ends `". "`, `"? "`, `"! "`,
//!    then word `" "`);
//! 2. cut the piece after every occurrence of it (the separator stays at the
//!    end of the part before, so `"Done. "` keeps its full stop);
//! 3. merge neighbouring parts greedily while the merged text still fits in
//!    `max_chars`;
//! 4. a part that is too long on its own is split again, recursively, with
//!    the remaining (finer) separators; with none left it is cut every
//!    `max_chars` characters.
//!
//! As in LangChain, the sentence separators are separate levels tried in
//! order, not one level: a paragraph with both `". "` and `"? "` is first cut
//! at full stops only. Unlike LangChain there is no chunk overlap, and sizes
//! are measured on the trimmed chunk.

use super::util::{check_size, hard_split, trimmed, trimmed_len, CharIndex};
use super::{Chunk, Chunker};

/// Separators from coarsest to finest: paragraph, line, sentence ends, word.
pub const DEFAULT_SEPARATORS: [&str; 6] = ["\n\n", "\n", ". ", "? ", "! ", " "];

/// Recursive splitting over `separators` (tried in order; empty strings are
/// ignored, the character split is always the implicit last level), merging
/// neighbours up to `max_chars` characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecursiveChunker {
    pub max_chars: usize,
    pub separators: Vec<String>,
}

impl RecursiveChunker {
    /// With [`DEFAULT_SEPARATORS`].
    pub fn new(max_chars: usize) -> crate::Result<Self> {
        check_size("max_chars", max_chars)?;
        Ok(RecursiveChunker {
            max_chars,
            separators: DEFAULT_SEPARATORS.iter().map(|s| s.to_string()).collect(),
        })
    }
}

impl Chunker for RecursiveChunker {
    fn name(&self) -> String {
        format!("recursive-{}", self.max_chars)
    }

    fn chunk(&self, text: &str) -> crate::Result<Vec<Chunk>> {
        check_size("max_chars", self.max_chars)?;
        let seps: Vec<&str> = self
            .separators
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let ci = CharIndex::new(text);
        let mut out = Vec::new();
        let mut ctx = Ctx {
            text,
            ci: &ci,
            max: self.max_chars,
            out: &mut out,
        };
        ctx.split(0, text.len(), &seps);
        Ok(out)
    }
}

struct Ctx<'a> {
    text: &'a str,
    ci: &'a CharIndex,
    max: usize,
    out: &'a mut Vec<Chunk>,
}

impl Ctx<'_> {
    fn len(&self, start: usize, end: usize) -> usize {
        trimmed_len(self.text, self.ci, start, end)
    }

    /// Steps 1-4 above for `text[start..end]`.
    fn split(&mut self, start: usize, end: usize, seps: &[&str]) {
        if self.len(start, end) <= self.max {
            self.out.extend(trimmed(self.text, start, end));
            return;
        }
        // 1. The first separator that cuts this piece in two or more parts.
        let mut level = None;
        for (i, sep) in seps.iter().enumerate() {
            let parts = split_keep_end(self.text, start, end, sep);
            if parts.len() > 1 {
                level = Some((parts, &seps[i + 1..]));
                break;
            }
        }
        let Some((parts, finer)) = level else {
            hard_split(self.text, self.ci, start, end, self.max, self.out);
            return;
        };
        // 3 and 4: merge runs of small parts, recurse into big ones.
        let mut run: Option<(usize, usize)> = None;
        for (s, e) in parts {
            if self.len(s, e) <= self.max {
                run = match run {
                    Some((rs, _)) if self.len(rs, e) <= self.max => Some((rs, e)),
                    Some((rs, re)) => {
                        self.out.extend(trimmed(self.text, rs, re));
                        Some((s, e))
                    }
                    None => Some((s, e)),
                };
            } else {
                if let Some((rs, re)) = run.take() {
                    self.out.extend(trimmed(self.text, rs, re));
                }
                self.split(s, e, finer);
            }
        }
        if let Some((rs, re)) = run {
            self.out.extend(trimmed(self.text, rs, re));
        }
    }
}

/// Step 2: `text[start..end]` cut after each occurrence of `sep`, as
/// contiguous byte ranges covering the whole piece.
fn split_keep_end(text: &str, start: usize, end: usize, sep: &str) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut a = start;
    for (i, m) in text[start..end].match_indices(sep) {
        let b = start + i + m.len();
        if b > a && b < end {
            parts.push((a, b));
            a = b;
        }
    }
    parts.push((a, end));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(max: usize, t: &str) -> Vec<&str> {
        let c = RecursiveChunker::new(max).unwrap().chunk(t).unwrap();
        c.iter().map(|c| c.text(t)).collect()
    }

    #[test]
    fn merges_paragraphs_then_splits_sentences() {
        let t = "One two.\n\nThree four.\n\nA much longer paragraph. It has two sentences.";
        assert_eq!(
            texts(25, t),
            [
                "One two.\n\nThree four.",
                "A much longer paragraph.",
                "It has two sentences."
            ]
        );
    }

    #[test]
    fn falls_back_to_characters() {
        assert_eq!(texts(3, "abcdefgh"), ["abc", "def", "gh"]);
    }

    #[test]
    fn separator_stays_with_the_part_before() {
        assert_eq!(
            split_keep_end("a. b. c", 0, 7, ". "),
            [(0, 3), (3, 6), (6, 7)]
        );
    }
}
