//! The lesson catalogue: every lesson sdlab teaches, the system-design ones
//! of the `hld` crate and the AI-serving ones of [`crate::ai_lessons`] that
//! drive sdlab's own engine, index and models, grouped into the modules the
//! `sdlab learn` menu shows. `sdlab lesson` and `sdlab learn` both read it.
//!
//! A lesson's explanation is its module doc comment and its code is its
//! module's source, both embedded at build time (`build.rs`), so there is one
//! place to write each.

use anyhow::{anyhow, Result};
use hld::LessonReport;

include!(concat!(env!("OUT_DIR"), "/lesson_sources.rs"));

/// How a lesson runs: hld's cannot fail; the AI lessons load real models and
/// data, which may be missing.
#[derive(Clone, Copy)]
enum Runner {
    Hld(fn(u64) -> LessonReport),
    Ai(fn(u64) -> Result<LessonReport>),
}

/// One lesson of the catalogue.
#[derive(Clone)]
pub struct Entry {
    pub name: &'static str,
    pub title: &'static str,
    /// `hld::<module>` or `ai::<module>`: where its source lives.
    pub source_key: String,
    runner: Runner,
}

impl Entry {
    /// Runs the experiment with the given seed.
    pub fn run(&self, seed: u64) -> Result<LessonReport> {
        match self.runner {
            Runner::Hld(f) => Ok(f(seed)),
            Runner::Ai(f) => f(seed),
        }
    }

    /// The lesson's source files: `(path in the workspace, contents)`, the
    /// module's root file first.
    pub fn sources(&self) -> &'static [(&'static str, &'static str)] {
        SOURCES
            .iter()
            .find(|(k, _)| *k == self.source_key)
            .map(|(_, files)| *files)
            .unwrap_or(&[])
    }

    /// What the lesson shows: its module doc comment as plain text, with
    /// rustdoc's link brackets removed.
    pub fn explain(&self) -> String {
        self.sources()
            .first()
            .map(|(_, src)| module_doc(src))
            .unwrap_or_default()
    }
}

/// A menu module: a title, one line on what it covers, its lessons.
pub struct Module {
    pub title: &'static str,
    pub about: &'static str,
    pub lessons: Vec<Entry>,
}

/// The menu's modules (after the seed's) and the lessons of each, in order.
const MODULES: &[(&str, &str, &[&str])] = &[
    (
        "Concurrency and thread safety",
        "threads, tasks and the races, deadlocks and stalls between them",
        &[
            "race-condition",
            "dining-philosophers",
            "semaphore-backpressure",
            "blocking-in-async",
            "threads-vs-tasks",
            "event-loop",
            "task-groups",
            "async-race",
        ],
    ),
    (
        "Scalability",
        "more machines, spread the load, smaller messages",
        &["scaling", "load-balancing", "serialization"],
    ),
    (
        "Caching and ids",
        "what to keep, where keys live, how to name things",
        &["lru-cache", "consistent-hashing", "id-generation"],
    ),
    (
        "Data structures and storage",
        "probabilistic sketches, spatial and text indexes, transactions",
        &[
            "bloom-filter",
            "hyperloglog",
            "geo-quadtree",
            "autocomplete",
            "isolation",
        ],
    ),
    (
        "Distributed data",
        "replicas, shards, partitions, locks and sagas",
        &[
            "replication-lag",
            "sharding",
            "cap",
            "distributed-lock",
            "saga",
        ],
    ),
    (
        "Resiliency",
        "staying up when dependencies fail and load spikes",
        &[
            "circuit-breaker",
            "retry-jitter",
            "chaos",
            "load-shedding",
            "rate-limiting",
        ],
    ),
    (
        "Common components",
        "the building blocks behind most services",
        &["pubsub", "leader-lease"],
    ),
    (
        "AI serving",
        "sdlab's own engine, caches, index and models, small enough to watch",
        &[
            "kv-cache",
            "continuous-batching",
            "paged-attention",
            "lora",
            "sampling",
            "quantization",
            "speculative-decoding",
            "semantic-cache",
            "rag-chunking",
            "rag-hyde-rerank",
            "hnsw",
            "two-tower",
            "mixture-of-experts",
            "tree-of-thoughts",
            "agent-graph",
        ],
    ),
    (
        "Interview questions",
        "the classic design questions, built and measured",
        &[
            "url-shortener",
            "web-crawler",
            "whatsapp",
            "metrics-pipeline",
            "news-feed",
            "dedup",
            "youtube-abr",
            "leaderboard",
            "ticketmaster",
            "analytics",
            "count-min-sketch",
            "append-only-log",
            "inverted-index",
            "payments",
        ],
    ),
];

/// Every lesson that exists, in no particular order.
fn every_entry() -> Vec<Entry> {
    let hld = hld::lessons().into_iter().map(|l| Entry {
        name: l.name,
        title: l.title,
        source_key: format!("hld::{}", l.module),
        runner: Runner::Hld(l.run),
    });
    let ai = crate::ai_lessons::lessons().into_iter().map(|l| Entry {
        name: l.name,
        title: l.title,
        source_key: format!("ai::{}", l.module),
        runner: Runner::Ai(l.run),
    });
    hld.chain(ai).collect()
}

/// The menu's modules with their lessons. A lesson the table does not place
/// goes under "More" (the catalogue test keeps that module empty).
pub fn modules() -> Vec<Module> {
    let mut left = every_entry();
    let mut modules: Vec<Module> = MODULES
        .iter()
        .map(|(title, about, names)| Module {
            title,
            about,
            lessons: names
                .iter()
                .filter_map(|n| {
                    let i = left.iter().position(|e| e.name == *n)?;
                    Some(left.remove(i))
                })
                .collect(),
        })
        .collect();
    if !left.is_empty() {
        modules.push(Module {
            title: "More",
            about: "lessons not yet placed in a module",
            lessons: left,
        });
    }
    modules.retain(|m| !m.lessons.is_empty());
    modules
}

/// Every lesson, in menu order.
pub fn all() -> Vec<Entry> {
    modules().into_iter().flat_map(|m| m.lessons).collect()
}

/// The lesson called `name`, or an error listing the names.
pub fn find(name: &str) -> Result<Entry> {
    let all = all();
    match all.iter().find(|e| e.name == name) {
        Some(e) => Ok(e.clone()),
        None => {
            let names: Vec<&str> = all.iter().map(|e| e.name).collect();
            Err(anyhow!(
                "no lesson named `{name}`; the lessons are: {}",
                names.join(", ")
            ))
        }
    }
}

/// The `//!` comment at the top of a Rust source file, as plain text:
/// paragraphs kept, `[`x`](path)` and `[`x`]` links shown as `x`.
pub fn module_doc(src: &str) -> String {
    let doc: Vec<&str> = src
        .lines()
        .take_while(|l| l.trim_start().starts_with("//!") || l.trim().is_empty())
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    strip_doc_links(doc.join("\n").trim())
}

/// `[text](target)` -> `text`, `[text]` -> `text` (rustdoc intra-doc links).
fn strip_doc_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            out.push_str(&rest[open..]);
            return out;
        };
        out.push_str(&after[..close]);
        rest = &after[close + 1..];
        if rest.starts_with('(') {
            if let Some(end) = rest.find(')') {
                rest = &rest[end + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lesson_has_exactly_one_module_and_a_source() {
        let modules = modules();
        assert!(
            modules.iter().all(|m| m.title != "More"),
            "lessons missing from the MODULES table: {:?}",
            modules
                .iter()
                .filter(|m| m.title == "More")
                .flat_map(|m| m.lessons.iter().map(|e| e.name))
                .collect::<Vec<_>>()
        );
        let placed: Vec<&str> = MODULES.iter().flat_map(|m| m.2.iter().copied()).collect();
        let all = all();
        assert_eq!(all.len(), every_entry().len());
        for e in &all {
            assert_eq!(
                placed.iter().filter(|n| **n == e.name).count(),
                1,
                "{}",
                e.name
            );
            assert!(!e.sources().is_empty(), "{} has no source", e.name);
            assert!(e.explain().len() > 200, "{} has a thin module doc", e.name);
        }
        for n in placed {
            assert!(
                find(n).is_ok(),
                "the table names `{n}`, which does not exist"
            );
        }
    }

    #[test]
    fn module_doc_reads_the_top_comment_and_strips_links() {
        let src =
            "//! A [`Thing`](crate::x) and [`Other`].\n//!\n//! Second.\nuse x;\n//! not this\n";
        assert_eq!(module_doc(src), "A `Thing` and `Other`.\n\nSecond.");
        assert_eq!(strip_doc_links("a [b] c [d](e) [f"), "a b c d [f");
    }
}
