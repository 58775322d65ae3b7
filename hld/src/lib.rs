//! System-design patterns and data structures, each with an experiment that
//! runs a naive and an optimal version side by side on the same input and
//! measures the difference (`sdlab lesson NAME`).
//!
//! Every module holds a hand-written teaching implementation (the algorithm
//! is the lesson), tests that check it against a well-kept crate doing the
//! same job where one exists, and a `lesson(seed)` function returning a
//! [`LessonReport`]. [`lessons`] lists them all.

pub mod agent_graph;
pub mod analytics;
pub mod append_only_log;
pub mod async_race;
pub mod autocomplete;
pub mod blocking_in_async;
pub mod bloom_filter;
pub mod cap;
pub mod chaos;
pub mod circuit_breaker;
pub mod consistent_hashing;
pub mod count_min_sketch;
pub mod dedup;
pub mod dining_philosophers;
pub mod distributed_lock;
pub mod event_loop;
pub mod geo_quadtree;
pub mod hash;
pub mod hyperloglog;
pub mod id_generation;
pub mod inverted_index;
pub mod isolation;
pub mod layers;
pub mod leader_lease;
pub mod leaderboard;
pub mod load_balancing;
pub mod load_shedding;
pub mod lru_cache;
pub mod metrics_pipeline;
pub mod mixture_of_experts;
pub mod news_feed;
pub mod payments;
pub mod pubsub;
pub mod race_condition;
pub mod rate_limiting;
pub mod replication_lag;
pub mod report;
pub mod retry_jitter;
pub mod saga;
pub mod scaling;
pub mod semaphore_backpressure;
pub mod serialization;
pub mod sharding;
pub mod sync;
pub mod task_groups;
pub mod threads_vs_tasks;
pub mod ticketmaster;
pub mod tree_of_thoughts;
pub mod url_shortener;
pub mod web_crawler;
pub mod whatsapp;
pub mod workload;
pub mod youtube_abr;

pub use report::{LessonReport, Metrics};

/// One lesson: its command-line name, a title, the experiment, and the
/// module (`hld::<module>`) whose source and doc comment teach it.
pub struct Lesson {
    pub name: &'static str,
    pub title: &'static str,
    pub run: fn(u64) -> LessonReport,
    pub module: &'static str,
}

macro_rules! lesson {
    ($m:ident) => {
        Lesson {
            name: $m::NAME,
            title: $m::TITLE,
            run: $m::lesson,
            module: stringify!($m),
        }
    };
}

/// Every lesson, in the order `sdlab lesson list` shows them.
pub fn lessons() -> Vec<Lesson> {
    vec![
        lesson!(consistent_hashing),
        lesson!(bloom_filter),
        lesson!(hyperloglog),
        lesson!(count_min_sketch),
        lesson!(geo_quadtree),
        lesson!(leaderboard),
        lesson!(lru_cache),
        lesson!(id_generation),
        lesson!(url_shortener),
        lesson!(dedup),
        lesson!(append_only_log),
        lesson!(inverted_index),
        lesson!(serialization),
        lesson!(autocomplete),
        lesson!(scaling),
        lesson!(race_condition),
        lesson!(dining_philosophers),
        lesson!(semaphore_backpressure),
        lesson!(blocking_in_async),
        lesson!(threads_vs_tasks),
        lesson!(circuit_breaker),
        lesson!(retry_jitter),
        lesson!(rate_limiting),
        lesson!(load_shedding),
        lesson!(load_balancing),
        lesson!(chaos),
        lesson!(ticketmaster),
        lesson!(payments),
        lesson!(isolation),
        lesson!(distributed_lock),
        lesson!(leader_lease),
        lesson!(saga),
        lesson!(sharding),
        lesson!(replication_lag),
        lesson!(cap),
        lesson!(pubsub),
        lesson!(metrics_pipeline),
        lesson!(web_crawler),
        lesson!(whatsapp),
        lesson!(news_feed),
        lesson!(youtube_abr),
        lesson!(analytics),
        lesson!(event_loop),
        lesson!(task_groups),
        lesson!(async_race),
        lesson!(mixture_of_experts),
        lesson!(tree_of_thoughts),
        lesson!(agent_graph),
    ]
}

/// The lesson called `name`.
pub fn find(name: &str) -> Option<Lesson> {
    lessons().into_iter().find(|l| l.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_findable() {
        let all = super::lessons();
        assert_eq!(all.len(), 48);
        for l in &all {
            assert_eq!(super::find(l.name).map(|f| f.name), Some(l.name));
            assert!(!l.title.is_empty());
        }
        let mut names: Vec<&str> = all.iter().map(|l| l.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 48);
        assert!(super::find("nope").is_none());
    }
}
