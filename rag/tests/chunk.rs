//! Chunking strategies: offsets, sizes, overlap, structure, UTF-8, and a
//! comparison with the `text-splitter` crate.

use std::sync::Arc;

use proptest::prelude::*;
use rag::chunk::{
    from_spec, Chunk, Chunker, FixedChunker, RecursiveChunker, SemanticChunker, StructuredChunker,
    TokenChunker,
};
use rag::embed::Embedder;
use text_splitter::{MarkdownSplitter, TextSplitter};

const README: &str = include_str!("../../README.md");
const BENCHMARKS: &str = include_str!("../../docs/BENCHMARKS.md");
const RUST_SRC: &str = include_str!("../src/chunk/structured.rs");
const UTF8: &str = "Ünïcödé ïs fün. 日本語のテキストです。絵文字も😀🎉入ります！\n\n\
Ελληνικά κείμενα εδώ. Русский текст тоже здесь? Да!\n\n👩‍👩‍👧‍👦 family emoji, \
zero-width joiners and combining marks: e\u{301}e\u{301}e\u{301}.";

const REST: &str = "\
=========
The Guide
=========

Intro paragraph of the guide. It has two sentences.

Installing
----------

Run the installer like this::

    $ pip install thing
    $ thing --version

    # a comment after a blank line, still in the block

Then carry on with the next paragraph, which is normal text.

Configuring
-----------

.. code-block:: python

    import thing
    thing.configure(level=3)

Options
~~~~~~~

The options are described below. Every one of them matters.
";

const MARKDOWN: &str = "\
# Title

First paragraph under the title. It explains things.

## Code

Some code follows:

```rust
fn main() {
    println!(\"hello\");

    println!(\"world\");
}
```

## Setext heading
-----------------

Text under the setext heading.

Another heading
===============

Last paragraph.
";

/// Offsets valid and trimmed, chunks in order, every non-whitespace char covered.
fn check_chunks(src: &str, chunks: &[Chunk], who: &str) {
    let mut covered = vec![false; src.len()];
    let mut prev: Option<Chunk> = None;
    for c in chunks {
        assert!(c.start < c.end, "{who}: empty chunk {c:?}");
        let t = src
            .get(c.start..c.end)
            .unwrap_or_else(|| panic!("{who}: {c:?} not on char boundaries"));
        assert_eq!(t, c.text(src));
        assert_eq!(t, t.trim(), "{who}: chunk {c:?} not trimmed");
        if let Some(p) = prev {
            assert!(
                p.start <= c.start && p.end <= c.end,
                "{who}: out of order {p:?} {c:?}"
            );
        }
        prev = Some(*c);
        covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
    }
    for (i, ch) in src.char_indices() {
        assert!(
            ch.is_whitespace() || covered[i],
            "{who}: char {ch:?} at {i} not in any chunk"
        );
    }
}

fn nchars(s: &str) -> usize {
    s.chars().count()
}

fn max_len(src: &str, chunks: &[Chunk]) -> usize {
    chunks
        .iter()
        .map(|c| nchars(c.text(src)))
        .max()
        .unwrap_or(0)
}

const SAMPLES: [(&str, &str); 8] = [
    ("readme", README),
    ("benchmarks", BENCHMARKS),
    ("rust", RUST_SRC),
    ("utf8", UTF8),
    ("rest", REST),
    ("markdown", MARKDOWN),
    ("empty", ""),
    ("blank", " \n\n \t "),
];

#[test]
fn fixed_windows_have_exact_size_and_overlap() {
    let src: String = ('a'..='z').cycle().take(1000).collect();
    let c = FixedChunker::new(100, 20).unwrap().chunk(&src).unwrap();
    check_chunks(&src, &c, "fixed");
    for w in c.windows(2) {
        assert_eq!(w[1].start - w[0].start, 80);
        assert_eq!(w[0].end - w[1].start, 20, "overlap is as asked");
    }
    assert!(c[..c.len() - 1].iter().all(|c| c.end - c.start == 100));
}

#[test]
fn fixed_counts_characters_not_bytes() {
    for (name, src) in SAMPLES {
        for (size, overlap) in [(1, 0), (7, 3), (100, 10), (500, 0)] {
            let c = FixedChunker::new(size, overlap)
                .unwrap()
                .chunk(src)
                .unwrap();
            check_chunks(src, &c, name);
            assert!(max_len(src, &c) <= size, "{name}: over {size}");
        }
    }
    let emoji = "😀".repeat(10);
    let c = FixedChunker::new(3, 1).unwrap().chunk(&emoji).unwrap();
    assert!(c
        .iter()
        .all(|c| nchars(c.text(&emoji)) == 3 || c.end == emoji.len()));
    assert_eq!(nchars(c[0].text(&emoji)), 3);
}

/// A word-level tokenizer: every word or punctuation run is one token
/// (unknown words become `[UNK]` but keep their offsets).
fn word_tokenizer() -> tokenizers::Tokenizer {
    let json = r#"{
      "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null, "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "the": 1, "a": 2}, "unk_token": "[UNK]"}
    }"#;
    json.parse().expect("tokenizer json")
}

#[test]
fn token_windows_have_exact_size_and_overlap() {
    let tok = word_tokenizer();
    let chunker = TokenChunker::new(tok.clone(), 16, 4).unwrap();
    for (name, src) in SAMPLES {
        let c = chunker.chunk(src).unwrap();
        check_chunks(src, &c, name);
        let spans = chunker.token_spans(src).unwrap();
        // Window k holds tokens 12k .. 12k+16: it starts at token 12k.
        for (k, ch) in c.iter().enumerate() {
            assert_eq!(ch.start, spans[12 * k].0, "{name}: window {k}");
            let n = tok.encode(ch.text(src), false).unwrap().len();
            assert!(n <= 16, "{name}: {n} tokens");
            if k + 1 < c.len() {
                assert_eq!(n, 16, "{name}: full window");
                let next = c[k + 1];
                let shared = tok.encode(&src[next.start..ch.end], false).unwrap().len();
                assert_eq!(shared, 4, "{name}: overlap");
            }
        }
    }
}

#[test]
fn token_chunker_ignores_tokenizer_truncation() {
    let mut tok = word_tokenizer();
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: 5,
        ..Default::default()
    }))
    .unwrap();
    // Even built directly (no `new`), the chunker must see the whole text.
    let chunker = TokenChunker {
        tokenizer: tok,
        size: 8,
        overlap: 0,
    };
    let c = chunker.chunk(README).unwrap();
    check_chunks(README, &c, "truncating tokenizer");
}

#[test]
fn token_chunker_byte_level_bpe_on_utf8() {
    // The synthetic model's byte-level BPE: tokens can end inside a char.
    let tok = models::synth::train_tokenizer(300).unwrap();
    let chunker = TokenChunker::new(tok, 5, 2).unwrap();
    for (name, src) in SAMPLES {
        let c = chunker.chunk(src).unwrap();
        check_chunks(src, &c, name);
    }
}

#[test]
fn recursive_respects_size_and_covers() {
    for (name, src) in SAMPLES {
        for max in [1, 10, 80, 300, 1000] {
            let c = RecursiveChunker::new(max).unwrap().chunk(src).unwrap();
            check_chunks(src, &c, name);
            assert!(max_len(src, &c) <= max, "{name}: over {max}");
        }
    }
}

/// Chunk texts of our recursive chunker and of `TextSplitter`, same size.
fn both_recursive(src: &str, max: usize) -> (Vec<&str>, Vec<&str>) {
    let ours = RecursiveChunker::new(max).unwrap().chunk(src).unwrap();
    let ours = ours.iter().map(|c| c.text(src)).collect();
    let theirs = TextSplitter::new(max).chunks(src).collect();
    (ours, theirs)
}

#[test]
fn recursive_agrees_with_text_splitter_on_plain_prose() {
    // Paragraphs that fit: both merge whole paragraphs greedily.
    let paras = "Alpha beta gamma delta.\n\nEpsilon zeta eta theta.\n\n\
Iota kappa lambda mu.\n\nNu xi omicron pi rho.";
    let (ours, theirs) = both_recursive(paras, 50);
    assert_eq!(ours, theirs);
    assert!(ours.iter().all(|c| !c.contains("\n\n") || c.len() <= 50));
    // A paragraph too long: both fall to sentences.
    let long = "The first sentence is here. The second one follows it. \
The third closes the paragraph.\n\nShort one.";
    let (ours, theirs) = both_recursive(long, 40);
    assert_eq!(ours, theirs);
    assert_eq!(ours[0], "The first sentence is here.");
    // Both respect the limit on real documents.
    for (name, src) in SAMPLES {
        let (ours, theirs) = both_recursive(src, 200);
        assert!(ours.iter().all(|c| nchars(c) <= 200), "{name}");
        assert!(theirs.iter().all(|c| nchars(c) <= 200), "{name}");
    }
}

#[test]
fn recursive_differs_from_text_splitter_where_documented() {
    // text-splitter ranks runs of newlines by length (3 newlines > 2 > 1)
    // and uses Unicode sentence and word boundaries; ours only knows the
    // fixed separator list. On a text with a sentence end not followed by a
    // space (a CJK full stop), text-splitter cuts at the sentence and ours
    // falls to the word level (here: characters, there are no spaces).
    let cjk = "これは最初の文です。これは二番目の文です。";
    let (ours, theirs) = both_recursive(cjk, 12);
    assert_eq!(theirs, ["これは最初の文です。", "これは二番目の文です。"]);
    assert_eq!(ours, ["これは最初の文です。これ", "は二番目の文です。"]);
}

fn structured(src: &str, max: usize) -> Vec<Chunk> {
    StructuredChunker::new(max).unwrap().chunk(src).unwrap()
}

/// Byte ranges of the fenced code blocks (```) of a Markdown text.
fn fences(src: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut open = None;
    let mut pos = 0;
    for line in src.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            match open.take() {
                None => open = Some(pos),
                Some(s) => out.push((s, pos + line.trim_end().len())),
            }
        }
        pos += line.len();
    }
    out
}

/// Whether some chunk holds `src[s..e]` whole and no chunk cuts it.
fn kept_whole(chunks: &[Chunk], s: usize, e: usize) -> bool {
    let whole = chunks.iter().any(|c| c.start <= s && e <= c.end);
    let cut = chunks
        .iter()
        .any(|c| (c.start > s && c.start < e) || (c.end > s && c.end < e));
    whole && !cut
}

/// (heading line start, start of the first text after it) for `#` headings.
fn atx_headings(src: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    let mut pos = 0;
    for line in src.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && line.starts_with('#') && line.trim_start_matches('#').starts_with(' ') {
            let after = pos + line.len();
            let rest = &src[after..];
            if let Some(k) = rest.find(|c: char| !c.is_whitespace()) {
                out.push((pos, after + k));
            }
        }
        pos += line.len();
    }
    out
}

#[test]
fn structured_keeps_code_blocks_and_headings() {
    for (name, src) in [
        ("readme", README),
        ("benchmarks", BENCHMARKS),
        ("md", MARKDOWN),
    ] {
        for max in [20, 100, 400, 1500] {
            let c = structured(src, max);
            check_chunks(src, &c, name);
            for (s, e) in fences(src) {
                assert!(kept_whole(&c, s, e), "{name}/{max}: fence at {s} cut");
            }
            for (h, body) in atx_headings(src) {
                // Heading plus first word over the limit: the limit wins.
                let word = src[body..]
                    .find(char::is_whitespace)
                    .map_or(src.len(), |k| body + k);
                if nchars(&src[h..word]) > max {
                    continue;
                }
                assert!(
                    c.iter().any(|c| c.start <= h && body < c.end),
                    "{name}/{max}: heading at {h} separated from its text"
                );
            }
            for ch in &c {
                let t = ch.text(src);
                assert!(nchars(t) <= max || t.contains("```"), "{name}/{max}: {t:?}");
            }
        }
    }
}

#[test]
fn structured_oversized_code_block_is_one_chunk() {
    let c = structured(MARKDOWN, 30);
    let (s, e) = fences(MARKDOWN)[0];
    let big: Vec<&Chunk> = c.iter().filter(|c| c.start <= s && e <= c.end).collect();
    assert_eq!(big.len(), 1);
    assert!(nchars(big[0].text(MARKDOWN)) > 30);
}

#[test]
fn structured_understands_rest() {
    let c = structured(REST, 60);
    check_chunks(REST, &c, "rest");
    let texts: Vec<&str> = c.iter().map(|c| c.text(REST)).collect();
    // The literal block stays whole and glued to its `::` paragraph.
    let lit_start = REST.find("Run the installer").unwrap();
    let lit_end = REST.find("still in the block").unwrap() + "still in the block".len();
    assert!(kept_whole(&c, lit_start, lit_end), "{texts:#?}");
    // The code directive with its body too.
    let d = REST.find(".. code-block").unwrap();
    let de = REST.find("level=3)").unwrap() + "level=3)".len();
    assert!(kept_whole(&c, d, de), "{texts:#?}");
    // Each title (with its adornments) starts a chunk with its first words.
    for title in ["=========\nThe Guide", "Installing\n---", "Options\n~~~"] {
        let t = texts.iter().find(|t| t.contains(title)).unwrap();
        assert!(
            t.starts_with(title),
            "{title:?} not at a chunk start: {texts:#?}"
        );
        assert!(t.lines().count() > 3, "{title:?} alone: {texts:#?}");
    }
    for t in &texts {
        assert!(nchars(t) <= 60 || t.contains("::"), "{t:?}");
    }
}

#[test]
fn structured_splits_at_sections_first() {
    let doc = "# A\n\nOne two three.\n\n# B\n\nFour five six.\n\n# C\n\nSeven eight nine.\n";
    let c = structured(doc, 40);
    let texts: Vec<&str> = c.iter().map(|c| c.text(doc)).collect();
    assert_eq!(
        texts,
        [
            "# A\n\nOne two three.\n\n# B\n\nFour five six.",
            "# C\n\nSeven eight nine."
        ]
    );
}

#[test]
fn structured_compared_with_markdown_splitter() {
    // Both respect the limit when no code block is larger than it, and on
    // a small document both cut at the headings. The differences:
    // MarkdownSplitter cuts inside a code block longer than the limit (it
    // never goes over) and may end a chunk with a bare heading; ours keeps
    // the block whole and the heading with its text.
    let max = 120;
    let ours: Vec<&str> = structured(MARKDOWN, max)
        .iter()
        .map(|c| c.text(MARKDOWN))
        .collect();
    let theirs: Vec<&str> = MarkdownSplitter::new(max).chunks(MARKDOWN).collect();
    assert!(theirs.iter().all(|t| nchars(t) <= max));
    assert!(ours.iter().all(|t| nchars(t) <= max || t.contains("```")));
    assert!(ours[0].starts_with("# Title\n\nFirst paragraph"));
    assert!(theirs[0].starts_with("# Title\n\nFirst paragraph"));
    let small = 30;
    let theirs: Vec<&str> = MarkdownSplitter::new(small).chunks(MARKDOWN).collect();
    let (s, e) = fences(MARKDOWN)[0];
    let code = &MARKDOWN[s..e];
    assert!(
        theirs.iter().all(|t| *t != code && !t.contains(code)),
        "{theirs:#?}"
    );
    assert!(theirs
        .iter()
        .any(|t| t.starts_with("#") && !t.contains('\n')));
    let ours = structured(MARKDOWN, small);
    assert!(kept_whole(&ours, s, e));
}

/// A deterministic fake embedder: the direction is set by the topic word of
/// the sentence.
struct TopicEmbedder;

const TOPICS: [&str; 3] = ["cat", "engine", "soup"];

impl Embedder for TopicEmbedder {
    fn dim(&self) -> usize {
        4
    }
    fn embed(&self, texts: &[&str]) -> rag::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                // One-hot on the topic, plus a constant so a sentence with
                // no topic is not the zero vector. Sentences of one topic
                // embed identically, so the only non-zero neighbour
                // distances are the topic changes.
                let mut v = [0f32; 4];
                for (i, topic) in TOPICS.iter().enumerate() {
                    if t.contains(topic) {
                        v[i] = 1.0;
                    }
                }
                v[3] = 0.2;
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

fn topic_text() -> (String, Vec<usize>) {
    let mut s = String::new();
    let mut changes = Vec::new();
    for (k, topic) in TOPICS.iter().enumerate() {
        if k > 0 {
            changes.push(s.len());
        }
        for i in 0..20 {
            s.push_str(&format!("Sentence {i} talks about the {topic} at length. "));
        }
    }
    (s, changes)
}

#[test]
fn semantic_breaks_between_topics() {
    let (src, changes) = topic_text();
    let c = SemanticChunker::new(Arc::new(TopicEmbedder), 95.0, 10_000)
        .unwrap()
        .chunk(&src)
        .unwrap();
    check_chunks(&src, &c, "semantic");
    let starts: Vec<usize> = c.iter().skip(1).map(|c| c.start).collect();
    assert_eq!(starts, changes);
}

#[test]
fn semantic_respects_max_chars() {
    let (src, changes) = topic_text();
    let c = SemanticChunker::new(Arc::new(TopicEmbedder), 95.0, 300)
        .unwrap()
        .chunk(&src)
        .unwrap();
    check_chunks(&src, &c, "semantic");
    assert!(max_len(&src, &c) <= 300);
    // The topic changes are still chunk starts.
    for ch in changes {
        assert!(c.iter().any(|c| c.start == ch));
    }
    let c = SemanticChunker::new(Arc::new(TopicEmbedder), 50.0, 5)
        .unwrap()
        .chunk(UTF8)
        .unwrap();
    check_chunks(UTF8, &c, "semantic utf8");
    assert!(max_len(UTF8, &c) <= 5);
}

#[test]
fn from_spec_builds_and_rejects() {
    let tok = word_tokenizer();
    let emb: Arc<dyn Embedder> = Arc::new(TopicEmbedder);
    for (spec, name) in [
        ("fixed:500:50", "fixed-500/50"),
        ("fixed:500", "fixed-500/0"),
        ("tokens:128:16", "tokens-128/16"),
        ("recursive:800", "recursive-800"),
        ("structured:800", "structured-800"),
        ("semantic:95", "semantic-p95-1000"),
        ("semantic:90:400", "semantic-p90-400"),
    ] {
        let c = from_spec(spec, Some(emb.clone()), Some(&tok)).unwrap();
        assert_eq!(c.name(), name);
    }
    for (spec, why) in [
        ("fixed:0", "at least 1"),
        ("fixed:10:10", "smaller than"),
        ("fixed:ten", "not a whole number"),
        ("recursive", "takes 1 to 1"),
        ("recursive:5:5", "takes 1 to 1"),
        ("bogus:5", "unknown chunker"),
        ("", "empty"),
        ("semantic:101", "between 0 and 100"),
        ("tokens:4:9", "smaller than"),
    ] {
        let err = from_spec(spec, Some(emb.clone()), Some(&tok))
            .err()
            .unwrap();
        assert!(matches!(err, rag::RagError::Input(_)));
        assert!(err.to_string().contains(why), "{spec}: {err}");
    }
    let err = from_spec("semantic:95", None, None).err().unwrap();
    assert!(err.to_string().contains("needs an embedder"), "{err}");
    let err = from_spec("tokens:64", None, None).err().unwrap();
    assert!(err.to_string().contains("needs a tokenizer"), "{err}");
}

/// Text mixing Markdown/reST structure, Unicode and plain words.
/// Markdown/reST fragments the structured chunker reacts to, `|`-separated.
const FRAGMENTS: &str = "```|~~~|\n\n|\n|# |Title\n=====\n|=====\n|Example::\n\n    code\n|\
.. code-block:: c\n\n   x\n|>>> 1\n|. | |😀|e\u{301}";

fn structured_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(FRAGMENTS.split('|').collect::<Vec<_>>()).prop_map(str::to_string),
        "[a-zé]{1,9}",
        "\\PC{1,5}",
    ];
    prop::collection::vec(piece, 0..80).prop_map(|v| v.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![structured_text(), "\\PC{0,300}", any::<String>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn prop_fixed(src in any_text(), size in 1usize..40, o in 0usize..40) {
        let overlap = o % size;
        let c = FixedChunker::new(size, overlap).unwrap().chunk(&src).unwrap();
        check_chunks(&src, &c, "fixed");
        prop_assert!(max_len(&src, &c) <= size);
    }

    #[test]
    fn prop_recursive(src in any_text(), max in 1usize..60) {
        let c = RecursiveChunker::new(max).unwrap().chunk(&src).unwrap();
        check_chunks(&src, &c, "recursive");
        prop_assert!(max_len(&src, &c) <= max);
    }

    #[test]
    fn prop_structured(src in any_text(), max in 1usize..60) {
        let c = structured(&src, max);
        check_chunks(&src, &c, "structured");
        for ch in &c {
            let t = ch.text(&src);
            let atomic = ["```", "~~~", "::", ">>>"].iter().any(|m| t.contains(m));
            prop_assert!(nchars(t) <= max || atomic, "{:?}", t);
        }
    }
}
