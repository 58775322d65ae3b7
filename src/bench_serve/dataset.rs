//! Prompts for `sdlab bench serve`.
//!
//! The benchmark talks to servers whose tokenizers it does not have, so a
//! prompt of exactly `--input-len` tokens cannot be built on the client. Both
//! datasets instead aim at the length in words, at [`WORDS_PER_TOKEN`] words
//! per token (the usual rule of thumb for English prose under a BPE
//! tokenizer), and the report counts the prompt tokens the server says it saw
//! (`usage.prompt_tokens`), falling back to the word-based estimate only when
//! the server sends no usage.
//!
//! - `random`: words drawn uniformly from a fixed list of common English words,
//!   with the seeded RNG (what `vllm bench serve --dataset-name random` does
//!   with token ids, done with words).
//! - `shared-prefix`: a few random-word prefixes shared by many prompts,
//!   each prompt one prefix plus words of its own.
//! - `austen`: runs of consecutive paragraphs of *Pride and Prejudice*, from a
//!   paragraph chosen with the seeded RNG, the last one cut at a word boundary.

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::Rng;
use std::path::{Path, PathBuf};

/// Words per token assumed when sizing prompts (1 token is about 0.75 words).
pub const WORDS_PER_TOKEN: f64 = 0.75;

/// One prompt, with its length in tokens as estimated from its words.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub text: String,
    pub approx_tokens: u64,
}

/// How many words aim at `input_len` tokens (at least one).
pub fn target_words(input_len: usize) -> usize {
    ((input_len as f64 * WORDS_PER_TOKEN).round() as usize).max(1)
}

fn approx_tokens(words: usize) -> u64 {
    (words as f64 / WORDS_PER_TOKEN).round() as u64
}

/// `n` prompts of random common words, about `input_len` tokens each.
pub fn random(n: usize, input_len: usize, rng: &mut StdRng) -> Vec<Prompt> {
    let words = target_words(input_len);
    (0..n)
        .map(|_| {
            let text = (0..words)
                .map(|_| COMMON_WORDS[rng.random_range(0..COMMON_WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ");
            Prompt {
                text,
                approx_tokens: approx_tokens(words),
            }
        })
        .collect()
}

/// `n` prompts, each one of `groups` random-word prefixes of about
/// `prefix_len` tokens (chosen at random) followed by about `input_len`
/// tokens of its own.
pub fn shared_prefix(
    n: usize,
    groups: usize,
    prefix_len: usize,
    input_len: usize,
    rng: &mut StdRng,
) -> Vec<Prompt> {
    let prefixes = random(groups, prefix_len, rng);
    random(n, input_len, rng)
        .into_iter()
        .map(|own| {
            let p = &prefixes[rng.random_range(0..prefixes.len())];
            Prompt {
                text: format!("{}\n\n{}", p.text, own.text),
                approx_tokens: p.approx_tokens + own.approx_tokens,
            }
        })
        .collect()
}

/// The Austen text: `--dataset-path`, else `$SDLAB_SHARED_DIR/fixtures/austen-pp.txt`,
/// else `../shared/fixtures/austen-pp.txt` from the working directory.
pub fn austen_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("SDLAB_SHARED_DIR") {
        Some(dir) => Path::new(&dir).join("fixtures/austen-pp.txt"),
        None => PathBuf::from("../shared/fixtures/austen-pp.txt"),
    }
}

/// Reads the text at `path` and cuts `n` prompts of about `input_len` tokens.
pub fn austen_file(
    path: &Path,
    n: usize,
    input_len: usize,
    rng: &mut StdRng,
) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the austen dataset {} (set --dataset-path or SDLAB_SHARED_DIR)",
            path.display()
        )
    })?;
    let prompts = austen(&text, n, input_len, rng);
    if prompts.is_empty() && n > 0 {
        bail!("{} holds no words", path.display());
    }
    Ok(prompts)
}

/// Paragraphs are separated by blank lines; lines inside one are joined.
fn paragraphs(text: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.extend(line.split_whitespace());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `n` prompts from `text`; empty when the text has no words.
pub fn austen(text: &str, n: usize, input_len: usize, rng: &mut StdRng) -> Vec<Prompt> {
    let paras = paragraphs(text);
    if paras.is_empty() {
        return Vec::new();
    }
    let want = target_words(input_len);
    (0..n)
        .map(|_| {
            let mut i = rng.random_range(0..paras.len());
            let mut parts: Vec<String> = Vec::new();
            let mut words = 0;
            while words < want {
                let p = &paras[i];
                let take = p.len().min(want - words);
                parts.push(p[..take].join(" "));
                words += take;
                i = (i + 1) % paras.len();
            }
            Prompt {
                text: parts.join("\n\n"),
                approx_tokens: approx_tokens(words),
            }
        })
        .collect()
}

/// Common English words, most of them one token in the usual BPE vocabularies.
#[rustfmt::skip]
const COMMON_WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like",
    "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no",
    "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its",
    "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "over",
    "new", "sound", "take", "only", "little", "work", "know", "place", "year", "live", "me",
    "back", "give", "most", "very", "after", "thing", "our", "just", "name", "good", "sentence",
    "man", "think", "say", "great", "where", "help", "through", "much", "before", "line", "right",
    "too", "mean", "old", "any", "same", "tell", "boy", "follow", "came", "want", "show", "also",
    "around", "form", "three", "small", "set", "put", "end", "does", "another", "well", "large",
    "must", "big", "even", "such", "because", "turn", "here", "why", "ask", "went", "men", "read",
    "need", "land", "different", "home", "us", "move", "try", "kind", "hand", "picture", "again",
    "change", "off", "play", "spell", "air", "away", "animal", "house", "point", "page", "letter",
    "mother", "answer", "found", "study", "still", "learn", "should", "world", "high", "every",
    "near", "add", "food", "between", "own", "below", "country", "plant",
];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_prompts_are_seeded_and_sized() {
        let a = random(3, 100, &mut StdRng::seed_from_u64(7));
        let b = random(3, 100, &mut StdRng::seed_from_u64(7));
        assert_eq!(a.len(), 3);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.text, y.text);
            assert_eq!(x.text.split_whitespace().count(), 75);
            assert_eq!(x.approx_tokens, 100);
        }
        assert_ne!(a[0].text, a[1].text);
    }

    #[test]
    fn austen_prompts_take_consecutive_paragraphs_and_wrap() {
        let text = "one two\nthree\n\nfour five six\n\n\nseven\n";
        let ps = austen(text, 20, 8, &mut StdRng::seed_from_u64(1));
        for p in &ps {
            assert_eq!(p.text.split_whitespace().count(), 6);
        }
        assert!(austen("  \n\n", 2, 8, &mut StdRng::seed_from_u64(1)).is_empty());
        let p = &austen(text, 1, 4, &mut StdRng::seed_from_u64(3))[0];
        assert_eq!(p.text.split_whitespace().count(), 3);
    }
}

#[cfg(test)]
mod shared_prefix_tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn prompts_share_few_prefixes_and_differ_after_them() {
        let mut rng = StdRng::seed_from_u64(1);
        let ps = shared_prefix(40, 4, 64, 8, &mut rng);
        assert_eq!(ps.len(), 40);
        let heads: std::collections::HashSet<&str> = ps
            .iter()
            .map(|p| p.text.split("\n\n").next().unwrap())
            .collect();
        assert!(heads.len() <= 4 && heads.len() > 1, "{}", heads.len());
        let whole: std::collections::HashSet<&str> = ps.iter().map(|p| p.text.as_str()).collect();
        assert!(whole.len() > 30);
        assert!(ps.iter().all(|p| p.approx_tokens >= 64));
    }
}
