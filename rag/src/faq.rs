//! The Python 3.11 FAQ as a retrieval test set (`../shared/BASELINES.md`,
//! "RAG: the Python FAQ").
//!
//! The eight `faq/*.rst.txt` files of Debian's `python3.11-doc` hold real
//! questions: each is a section title ending in `?`, its answer the section
//! body. The corpus is those files with reST adornment lines dropped and the
//! question titles removed (left in, every question would stand verbatim in
//! the corpus and any retriever would find it). A passage is relevant to a
//! question when it contains the first 12 words of the answer, compared
//! whitespace-normalized.

use crate::{io_err, RagError, Result};
use std::path::Path;

pub const FILES: [&str; 8] = [
    "design",
    "extending",
    "general",
    "gui",
    "installed",
    "library",
    "programming",
    "windows",
];

/// One FAQ document of the corpus, questions removed.
#[derive(Debug, Clone)]
pub struct Document {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Question {
    pub question: String,
    pub answer: String,
    /// The first 12 words of the answer, space-joined: the relevance key.
    pub key: String,
}

impl Question {
    /// Does `passage` contain this question's answer key?
    pub fn is_relevant(&self, passage: &str) -> bool {
        normalize_ws(passage).contains(&self.key)
    }
}

pub fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_adornment(line: &str) -> bool {
    let t = line.trim_end();
    let mut chars = t.chars();
    match chars.next() {
        Some(c) if c.is_ascii_punctuation() && t.len() >= 3 => chars.all(|d| d == c),
        _ => false,
    }
}

/// Splits one FAQ file into its corpus text (adornments and question titles
/// dropped) and its questions.
pub fn parse(text: &str) -> (String, Vec<Question>) {
    let lines: Vec<&str> = text.lines().collect();
    // A title is a non-blank, non-adornment line followed by an adornment.
    let is_title = |i: usize| {
        i + 1 < lines.len()
            && !lines[i].trim().is_empty()
            && !is_adornment(lines[i])
            && is_adornment(lines[i + 1])
    };
    let mut corpus = Vec::new();
    let mut questions: Vec<(String, Vec<&str>)> = Vec::new();
    let mut in_answer = false;
    let mut i = 0;
    while i < lines.len() {
        if is_title(i) {
            let title = lines[i].trim();
            in_answer = title.ends_with('?');
            if in_answer {
                questions.push((title.to_string(), Vec::new()));
            } else {
                corpus.push(lines[i]);
            }
            i += 2;
            continue;
        }
        if !is_adornment(lines[i]) {
            corpus.push(lines[i]);
            if in_answer {
                if let Some(q) = questions.last_mut() {
                    q.1.push(lines[i]);
                }
            }
        }
        i += 1;
    }
    let questions = questions
        .into_iter()
        .filter_map(|(question, body)| {
            let answer = body.join("\n").trim().to_string();
            let key = answer
                .split_whitespace()
                .take(12)
                .collect::<Vec<_>>()
                .join(" ");
            (!key.is_empty()).then_some(Question {
                question,
                answer,
                key,
            })
        })
        .collect();
    (corpus.join("\n"), questions)
}

/// Reads the eight FAQ files under `doc_root/faq/`.
pub fn load(doc_root: &Path) -> Result<(Vec<Document>, Vec<Question>)> {
    let mut docs = Vec::new();
    let mut questions = Vec::new();
    for name in FILES {
        let path = doc_root.join("faq").join(format!("{name}.rst.txt"));
        if !path.is_file() {
            return Err(RagError::NotFound(format!(
                "{} is missing: run `make models` (it fetches Debian's python3.11-doc)",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let (corpus, qs) = parse(&text);
        docs.push(Document {
            name: name.to_string(),
            text: corpus,
        });
        questions.extend(qs);
    }
    Ok((docs, questions))
}

/// The documents named in `names` and the questions whose answers they
/// hold: a smaller test set, for experiments that cannot embed it all.
pub fn restrict(
    docs: Vec<Document>,
    questions: Vec<Question>,
    names: &[&str],
) -> (Vec<Document>, Vec<Question>) {
    let docs: Vec<Document> = docs
        .into_iter()
        .filter(|d| names.contains(&d.name.as_str()))
        .collect();
    let questions = questions
        .into_iter()
        .filter(|q| docs.iter().any(|d| q.is_relevant(&d.text)))
        .collect();
    (docs, questions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
==================
General Python FAQ
==================

General Information
===================

What is Python?
---------------

Python is an interpreted, interactive, object-oriented programming language.  It
incorporates modules.

Why is it called Python?
------------------------

When he began implementing Python, Guido van Rossum was also reading the
published scripts.
";

    #[test]
    fn questions_are_removed_and_answers_kept() {
        let (corpus, qs) = parse(SAMPLE);
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].question, "What is Python?");
        assert_eq!(
            qs[0].key,
            "Python is an interpreted, interactive, object-oriented programming language. It incorporates modules."
                .split_whitespace()
                .take(12)
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(!corpus.contains("What is Python?"));
        assert!(!corpus.contains("----") && !corpus.contains("===="));
        assert!(
            corpus.contains("General Information"),
            "category titles stay"
        );
        assert!(qs[1].is_relevant(&corpus));
        assert!(qs[0].is_relevant("x Python is an interpreted,\n interactive, object-oriented programming language.  It incorporates modules. y"));
        assert!(!qs[0].is_relevant("Python is an interpreted language"));
    }

    #[test]
    fn restrict_keeps_the_questions_the_documents_answer() {
        let doc = |name: &str, text: &str| Document {
            name: name.into(),
            text: text.into(),
        };
        let q = |key: &str| Question {
            question: "?".into(),
            answer: key.into(),
            key: key.into(),
        };
        let (docs, qs) = restrict(
            vec![doc("general", "alpha  beta"), doc("windows", "gamma")],
            vec![q("alpha beta"), q("gamma")],
            &["general"],
        );
        assert_eq!(docs.len(), 1);
        assert_eq!(qs.len(), 1);
        assert_eq!(qs[0].key, "alpha beta");
    }
}
