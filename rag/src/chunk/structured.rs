//! Structure-aware chunking for Markdown and reStructuredText.
//!
//! Plain recursive splitting only sees separators; documentation has
//! structure that matters for retrieval: a heading means nothing without
//! the paragraph under it, and half a code example is worse than none. This
//! chunker parses the document into blocks first, then cuts:
//!
//! - headings: Markdown ATX (`# Title`) and underlined titles, which cover
//!   Markdown setext and reST (a title line followed, optionally also
//!   preceded, by a line of one repeated punctuation character at least as
//!   long as the title; `=`/`-` underlines of 3+ characters are accepted
//!   whatever the title length, as Markdown does). reST levels follow the
//!   order in which adornment styles first appear;
//! - atomic blocks, never cut: fenced code (```` ``` ```` or `~~~`, an
//!   unclosed fence runs to the end as in CommonMark), reST literal blocks
//!   (a paragraph ending in `::` followed by an indented block, which stays
//!   glued to the last sentence or line of that paragraph), code directives
//!   (`.. code-block::`, `.. code::`, `.. doctest::`, ...) with their
//!   indented body, and doctest paragraphs starting with `>>>`;
//! - paragraphs, cut if needed at lines, then sentence ends, then words,
//!   then characters.
//!
//! The cut itself is the recursive splitter's method over a list of pieces,
//! each marked with the strength of the boundary before it (section of level
//! 1 > level 2 > ... > block > line > sentence > word): take the strongest
//! boundary inside a too-long run, cut there, merge neighbours greedily up
//! to `max_chars`, recurse into parts still too long. Two boundaries are
//! glued: right after a heading (so it stays with its first paragraph, or
//! the first words of it) and between a `::` paragraph's last sentence and
//! its literal block. A glued run that holds an atomic block is emitted
//! whole, even over `max_chars`; that is the one way a chunk gets oversized.
//! A glued run without one that still exceeds `max_chars` (a heading plus
//! the first word after it longer than the limit) is cut at the glue: the
//! size limit wins over keeping a heading with its text.
//!
//! Not handled: Markdown indented (4-space) code blocks, HTML blocks, reST
//! tables and non-code directives are treated as ordinary paragraphs.

use super::util::{check_size, hard_split, trimmed, trimmed_len, CharIndex};
use super::{Chunk, Chunker};

/// Boundary strengths, weakest first. `NEVER` marks a forbidden cut.
const NEVER: u8 = 0;
const WORD: u8 = 10;
const SENTENCE: u8 = 20;
const LINE: u8 = 30;
const BLOCK: u8 = 40;

/// The boundary before a heading of `level` (1 = top) is stronger than any
/// block boundary and than the boundary before a deeper heading.
fn section(level: usize) -> u8 {
    100u8.saturating_sub(level.min(50) as u8)
}

/// Markdown/reST-aware chunks of at most `max_chars` characters (atomic
/// blocks excepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructuredChunker {
    pub max_chars: usize,
}

impl StructuredChunker {
    pub fn new(max_chars: usize) -> crate::Result<Self> {
        check_size("max_chars", max_chars)?;
        Ok(StructuredChunker { max_chars })
    }
}

impl Chunker for StructuredChunker {
    fn name(&self) -> String {
        format!("structured-{}", self.max_chars)
    }

    fn chunk(&self, text: &str) -> crate::Result<Vec<Chunk>> {
        check_size("max_chars", self.max_chars)?;
        let pieces = parse(text);
        let ci = CharIndex::new(text);
        let mut out = Vec::new();
        if !pieces.is_empty() {
            split_run(text, &ci, self.max_chars, &pieces, &mut out);
        }
        Ok(out)
    }
}

/// A contiguous byte range of the source; the pieces of a document tile it.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    /// Strength of the boundary at `start`.
    before: u8,
    atomic: bool,
}

/// The recursive method over pieces (see the module doc).
fn split_run(text: &str, ci: &CharIndex, max: usize, pieces: &[Piece], out: &mut Vec<Chunk>) {
    let (s, e) = (pieces[0].start, pieces[pieces.len() - 1].end);
    if trimmed_len(text, ci, s, e) <= max {
        out.extend(trimmed(text, s, e));
        return;
    }
    let best = pieces[1..].iter().map(|p| p.before).max().unwrap_or(NEVER);
    if best == NEVER {
        if pieces.iter().any(|p| p.atomic) {
            out.extend(trimmed(text, s, e));
            return;
        }
        if pieces.len() == 1 {
            hard_split(text, ci, s, e, max, out);
            return;
        }
        // A glued run without code that cannot fit (a heading plus the
        // first word after it over `max_chars`): the limit wins, and a cut
        // at the glue is still better than one in the middle of a word.
    }
    let mut run: Option<(usize, usize)> = None;
    let mut g0 = 0;
    for k in 1..=pieces.len() {
        if k < pieces.len() && pieces[k].before != best {
            continue;
        }
        let group = &pieces[g0..k];
        g0 = k;
        let (gs, ge) = (group[0].start, group[group.len() - 1].end);
        if trimmed_len(text, ci, gs, ge) <= max {
            run = match run {
                Some((rs, _)) if trimmed_len(text, ci, rs, ge) <= max => Some((rs, ge)),
                Some((rs, re)) => {
                    out.extend(trimmed(text, rs, re));
                    Some((gs, ge))
                }
                None => Some((gs, ge)),
            };
        } else {
            if let Some((rs, re)) = run.take() {
                out.extend(trimmed(text, rs, re));
            }
            split_run(text, ci, max, group, out);
        }
    }
    if let Some((rs, re)) = run {
        out.extend(trimmed(text, rs, re));
    }
}

/// One source line: `start..end` includes the line break, `body` does not.
struct Line<'a> {
    start: usize,
    end: usize,
    body: &'a str,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for l in text.split_inclusive('\n') {
        let end = start + l.len();
        out.push(Line {
            start,
            end,
            body: l.trim_end_matches(['\n', '\r']),
        });
        start = end;
    }
    out
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Leading indentation width (a tab counts as 4).
fn indent(s: &str) -> usize {
    s.chars()
        .take_while(|c| c.is_whitespace())
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

/// An opening code fence: (fence char, fence length).
fn fence_open(s: &str) -> Option<(char, usize)> {
    let t = s.trim_start();
    let c = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = t.chars().take_while(|x| *x == c).count();
    // A backtick fence's info string cannot contain backticks (that would
    // be inline code such as ```x```).
    (n >= 3 && !(c == '`' && t[n..].contains('`'))).then_some((c, n))
}

fn fence_close(s: &str, c: char, n: usize) -> bool {
    let t = s.trim();
    t.chars().count() >= n && t.chars().all(|x| x == c)
}

/// Markdown ATX heading level (`# ` to `###### `).
fn atx(s: &str) -> Option<usize> {
    if indent(s) > 3 {
        return None;
    }
    let t = s.trim_start();
    let n = t.chars().take_while(|c| *c == '#').count();
    let rest = &t[n..];
    ((1..=6).contains(&n) && (rest.is_empty() || rest.starts_with([' ', '\t']))).then_some(n)
}

/// A reST adornment line: (char, length) of one repeated ASCII punctuation.
fn adornment(s: &str) -> Option<(char, usize)> {
    let t = s.trim_end();
    // Backticks are left to code fences.
    let c = t
        .chars()
        .next()
        .filter(|c| c.is_ascii_punctuation() && *c != '`')?;
    let n = t.chars().count();
    (n >= 2 && t.chars().all(|x| x == c)).then_some((c, n))
}

/// Whether an adornment (c, n) may underline a title of `title_chars`.
fn underlines(c: char, n: usize, title_chars: usize) -> bool {
    n >= title_chars || ((c == '=' || c == '-') && n >= 3)
}

/// `.. code-block:: python` and friends: directives whose body is code.
fn code_directive(s: &str) -> bool {
    let Some(rest) = s.trim_start().strip_prefix(".. ") else {
        return false;
    };
    let Some((name, _)) = rest.split_once("::") else {
        return false;
    };
    matches!(
        name.trim(),
        "code-block" | "code" | "sourcecode" | "doctest" | "testcode" | "testoutput"
    )
}

/// Builds the tiling of pieces while scanning blocks.
struct Builder<'a> {
    text: &'a str,
    pieces: Vec<Piece>,
    /// The next piece must not be cut from the previous one (after a heading).
    glue: bool,
}

impl Builder<'_> {
    fn push(&mut self, start: usize, end: usize, before: u8, atomic: bool) {
        let before = if self.glue { NEVER } else { before };
        self.glue = false;
        // The gap since the previous piece (blank lines) goes to that piece;
        // the first piece starts at 0.
        let start = match self.pieces.last_mut() {
            Some(p) => {
                p.end = start;
                start
            }
            None => 0,
        };
        self.pieces.push(Piece {
            start,
            end,
            before,
            atomic,
        });
    }

    /// A paragraph, with cut points after every whitespace run (line,
    /// sentence or word strength) and after CJK full stops.
    fn paragraph(&mut self, start: usize, end: usize) {
        let mut piece_start = start;
        let mut before = BLOCK;
        let mut ws_from: Option<usize> = None;
        let mut prev: Option<char> = None;
        let mut sentence_end = false;
        for (i, c) in self.text[start..end].char_indices() {
            let i = start + i;
            if c.is_whitespace() {
                if ws_from.is_none() {
                    ws_from = Some(i);
                    sentence_end = matches!(prev, Some('.' | '?' | '!'));
                }
            } else {
                let cut = match ws_from.take() {
                    Some(w) if self.text[w..i].contains('\n') => Some(LINE),
                    Some(_) if sentence_end => Some(SENTENCE),
                    Some(_) => Some(WORD),
                    None if matches!(prev, Some('。' | '！' | '？')) => Some(SENTENCE),
                    None => None,
                };
                if let Some(strength) = cut.filter(|_| i > piece_start) {
                    self.push(piece_start, i, before, false);
                    piece_start = i;
                    before = strength;
                }
            }
            prev = Some(c);
        }
        self.push(piece_start, end, before, false);
    }
}

/// The document as a tiling of pieces; empty for blank text.
fn parse(text: &str) -> Vec<Piece> {
    let ls = lines(text);
    let n = ls.len();
    let mut b = Builder {
        text,
        pieces: Vec::new(),
        glue: false,
    };
    // reST heading styles (char, has overline) in order of appearance.
    let mut styles: Vec<(char, bool)> = Vec::new();
    let mut level_of = |style: (char, bool)| match styles.iter().position(|s| *s == style) {
        Some(p) => p + 1,
        None => {
            styles.push(style);
            styles.len()
        }
    };
    // End (exclusive line index) of an indented block starting at `from`
    // whose lines are indented more than `base`; trailing blanks excluded.
    let indented_end = |from: usize, base: usize| {
        let mut last = None;
        for (j, l) in ls.iter().enumerate().skip(from) {
            if blank(l.body) {
                continue;
            }
            if indent(l.body) <= base {
                break;
            }
            last = Some(j);
        }
        last.map_or(from, |j| j + 1)
    };
    let mut i = 0;
    while i < n {
        let l = ls[i].body;
        if blank(l) {
            i += 1;
            continue;
        }
        // Overlined reST title: adornment, title, same adornment (checked
        // before fences: `~~~` is both).
        if let (Some((c, len)), Some(t), Some(under)) = (
            adornment(l),
            ls.get(i + 1).map(|x| x.body),
            ls.get(i + 2).and_then(|x| adornment(x.body)),
        ) {
            let tc = t.trim().chars().count();
            if !blank(t) && adornment(t).is_none() && under.0 == c && len >= tc && under.1 >= tc {
                b.push(
                    ls[i].start,
                    ls[i + 2].end,
                    section(level_of((c, true))),
                    false,
                );
                b.glue = true;
                i += 3;
                continue;
            }
        }
        if let Some((c, len)) = fence_open(l) {
            let close = (i + 1..n).find(|&j| fence_close(ls[j].body, c, len));
            let last = close.unwrap_or(n - 1);
            b.push(ls[i].start, ls[last].end, BLOCK, true);
            i = last + 1;
            continue;
        }
        if let Some(level) = atx(l) {
            b.push(ls[i].start, ls[i].end, section(level), false);
            b.glue = true;
            i += 1;
            continue;
        }
        // Underlined title (reST, Markdown setext).
        if let Some((c, len)) = ls.get(i + 1).and_then(|x| adornment(x.body)) {
            if indent(l) <= 3
                && adornment(l).is_none()
                && underlines(c, len, l.trim().chars().count())
            {
                b.push(
                    ls[i].start,
                    ls[i + 1].end,
                    section(level_of((c, false))),
                    false,
                );
                b.glue = true;
                i += 2;
                continue;
            }
        }
        if code_directive(l) {
            let end = indented_end(i + 1, indent(l)).max(i + 1);
            b.push(ls[i].start, ls[end - 1].end, BLOCK, true);
            i = end;
            continue;
        }
        // A paragraph: up to a blank line or a line that opens a block.
        let j = (i + 1..n)
            .find(|&j| {
                let x = ls[j].body;
                blank(x) || fence_open(x).is_some() || atx(x).is_some()
            })
            .unwrap_or(n);
        let para_first = b.pieces.len();
        if l.trim_start().starts_with(">>>") {
            b.push(ls[i].start, ls[j - 1].end, BLOCK, true);
        } else {
            b.paragraph(ls[i].start, ls[j - 1].end);
        }
        i = j;
        if ls[j - 1].body.trim_end().ends_with("::") {
            let end = indented_end(j, indent(l));
            if end > j {
                // Glue the literal block to the whole last sentence (or
                // line) that introduces it, not just to its last word.
                for p in b.pieces[para_first + 1..].iter_mut().rev() {
                    if p.before > WORD {
                        break;
                    }
                    p.before = NEVER;
                }
                let first = (j..end).find(|&k| !blank(ls[k].body)).unwrap_or(j);
                b.push(ls[first].start, ls[end - 1].end, NEVER, true);
                i = end;
            }
        }
    }
    if let Some(p) = b.pieces.last_mut() {
        p.end = text.len();
    }
    b.pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(max: usize, t: &str) -> Vec<&str> {
        let c = StructuredChunker::new(max).unwrap().chunk(t).unwrap();
        c.iter().map(|c| c.text(t)).collect()
    }

    #[test]
    fn heading_stays_with_its_paragraph() {
        let t = "# A\n\nalpha beta gamma.\n\n# B\n\ndelta epsilon.\n";
        assert_eq!(
            texts(25, t),
            ["# A\n\nalpha beta gamma.", "# B\n\ndelta epsilon."]
        );
    }

    #[test]
    fn rest_headings_and_literal_blocks() {
        let t = "Title\n=====\n\nIntro text::\n\n    code line one\n    code line two\n\nAfter.\n";
        let c = texts(20, t);
        assert!(c
            .iter()
            .any(|c| c.contains("Intro text::") && c.contains("code line two")));
        assert!(c[0].starts_with("Title\n=====\n\nIntro"));
    }

    #[test]
    fn detects_block_kinds() {
        assert_eq!(fence_open("```rust"), Some(('`', 3)));
        assert_eq!(fence_open("```x```"), None);
        assert_eq!(atx("## Sub"), Some(2));
        assert_eq!(atx("#hashtag"), None);
        assert_eq!(adornment("~~~~~"), Some(('~', 5)));
        assert!(code_directive(".. code-block:: python"));
        assert!(!code_directive(".. note::"));
    }
}
