//! `sdlab lesson` end to end: the list names every lesson, and each lesson
//! runs at full size, prints the JSON shape, and shows the effect its
//! lesson is about (the thresholds of the hld issue).

mod common;
use common::{check_lesson_report, metric, sdlab};
use serde_json::Value;
use std::time::{Duration, Instant};

const LESSONS: [&str; 48] = [
    "consistent-hashing",
    "bloom-filter",
    "hyperloglog",
    "count-min-sketch",
    "geo-quadtree",
    "leaderboard",
    "lru-cache",
    "id-generation",
    "url-shortener",
    "dedup",
    "append-only-log",
    "inverted-index",
    "serialization",
    "autocomplete",
    "scaling",
    "race-condition",
    "dining-philosophers",
    "semaphore-backpressure",
    "blocking-in-async",
    "threads-vs-tasks",
    "circuit-breaker",
    "retry-jitter",
    "rate-limiting",
    "load-shedding",
    "load-balancing",
    "chaos",
    "ticketmaster",
    "payments",
    "isolation",
    "distributed-lock",
    "leader-lease",
    "saga",
    "sharding",
    "replication-lag",
    "cap",
    "pubsub",
    "metrics-pipeline",
    "web-crawler",
    "whatsapp",
    "news-feed",
    "youtube-abr",
    "analytics",
    "event-loop",
    "task-groups",
    "async-race",
    "mixture-of-experts",
    "tree-of-thoughts",
    "agent-graph",
];

fn json(args: &[&str]) -> Value {
    let out = sdlab(args);
    assert!(
        out.status.success(),
        "sdlab {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn the_list_names_every_lesson() {
    let list = json(&["lesson", "list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for l in LESSONS {
        assert!(names.contains(&l), "{l} missing from {names:?}");
    }
    let out = sdlab(&["lesson", "no-such-lesson"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bloom-filter"),
        "the error lists the lessons: {err}"
    );
}

#[test]
fn every_lesson_runs_and_shows_its_effect() {
    for name in LESSONS {
        let t = Instant::now();
        let r = json(&["lesson", name, "--json", "--seed", "7"]);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(60), "{name} took {took:?}");
        check_lesson_report(name, &r);
        match name {
            "consistent-hashing" => {
                assert!(metric(&r, "naive", "moved_fraction") > 0.8, "{r}");
                assert!(metric(&r, "optimal", "moved_fraction") < 0.15, "{r}");
            }
            "hyperloglog" => {
                let (e, se) = (
                    metric(&r, "optimal", "relative_error"),
                    metric(&r, "optimal", "standard_error"),
                );
                assert!(e < 3.0 * se, "{r}");
                assert!(
                    metric(&r, "optimal", "bytes") < metric(&r, "naive", "bytes") / 10.0,
                    "{r}"
                );
            }
            "dedup" => {
                let naive = metric(&r, "naive", "bytes_reuploaded_fraction");
                assert!(
                    metric(&r, "optimal", "bytes_reuploaded_fraction") < naive / 10.0,
                    "{r}"
                );
            }
            "bloom-filter" => {
                let fpr = metric(&r, "optimal", "false_positive_rate");
                assert!(
                    fpr < 2.0 * metric(&r, "optimal", "theoretical_fpr") + 0.002,
                    "{r}"
                );
                assert!(
                    metric(&r, "optimal", "bytes") < metric(&r, "naive", "bytes"),
                    "{r}"
                );
            }
            "count-min-sketch" => {
                assert!(
                    metric(&r, "optimal", "max_overestimate")
                        <= metric(&r, "optimal", "error_bound"),
                    "{r}"
                );
            }
            "geo-quadtree" | "inverted-index" | "autocomplete" => {
                assert_eq!(metric(&r, "optimal", "results_match"), 1.0, "{r}");
                assert!(
                    metric(&r, "optimal", "query_us") < metric(&r, "naive", "query_us"),
                    "{r}"
                );
            }
            "id-generation" => {
                assert!(metric(&r, "naive", "collisions") > 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", "collisions"), 0.0, "{r}");
            }
            "url-shortener" => {
                assert!(metric(&r, "naive", "collisions") > 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", "collisions"), 0.0, "{r}");
            }
            "append-only-log" => {
                assert!(
                    metric(&r, "naive", "messages_lost_after_crash") > 0.0,
                    "{r}"
                );
                assert_eq!(
                    metric(&r, "optimal", "messages_lost_after_crash"),
                    0.0,
                    "{r}"
                );
            }
            "leaderboard" => {
                assert!(
                    metric(&r, "optimal", "rank_query_us") < metric(&r, "naive", "rank_query_us"),
                    "{r}"
                );
            }
            "lru-cache" => {
                assert!(
                    metric(&r, "optimal", "bytes") < metric(&r, "naive", "bytes"),
                    "{r}"
                );
            }
            "serialization" => {
                assert!(
                    metric(&r, "optimal", "bytes") < metric(&r, "naive", "bytes"),
                    "{r}"
                );
            }
            // Naive above 0 in every run, optimal exactly 0.
            "race-condition"
            | "dining-philosophers"
            | "ticketmaster"
            | "payments"
            | "isolation"
            | "distributed-lock"
            | "leader-lease"
            | "saga" => {
                let m = match name {
                    "race-condition" => "lost_updates",
                    "dining-philosophers" => "deadlocks",
                    "ticketmaster" => "oversold",
                    "payments" => "double_charges",
                    "isolation" => "invariant_violations",
                    "distributed-lock" => "stale_writes",
                    "leader-lease" => "duplicate_runs",
                    _ => "inconsistent_orders",
                };
                assert!(metric(&r, "naive", m) > 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", m), 0.0, "{r}");
            }
            "retry-jitter" => {
                assert!(
                    metric(&r, "optimal", "total_calls") < metric(&r, "naive", "total_calls"),
                    "{r}"
                );
            }
            "circuit-breaker" => {
                let m = "calls_to_failing_dependency";
                assert!(metric(&r, "optimal", m) < metric(&r, "naive", m), "{r}");
            }
            "rate-limiting" => {
                let m = "max_burst_allowed";
                assert!(
                    metric(&r, "optimal", m) <= metric(&r, "optimal", "limit"),
                    "{r}"
                );
                assert!(metric(&r, "naive", m) > metric(&r, "naive", "limit"), "{r}");
            }
            "load-shedding" | "load-balancing" => {
                assert!(
                    metric(&r, "optimal", "p99_ms") < metric(&r, "naive", "p99_ms"),
                    "{r}"
                );
            }
            "chaos" => {
                assert!(
                    metric(&r, "optimal", "success_rate") > metric(&r, "naive", "success_rate"),
                    "{r}"
                );
            }
            "semaphore-backpressure" => {
                let m = "max_queue_len";
                assert!(
                    metric(&r, "optimal", m) <= metric(&r, "optimal", "capacity"),
                    "{r}"
                );
                assert!(
                    metric(&r, "naive", m) > metric(&r, "optimal", "capacity"),
                    "{r}"
                );
            }
            "replication-lag" | "pubsub" | "web-crawler" => {
                let m = match name {
                    "replication-lag" => "stale_reads",
                    "pubsub" => "messages_lost",
                    _ => "duplicate_fetches",
                };
                assert!(metric(&r, "naive", m) > 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", m), 0.0, "{r}");
            }
            "whatsapp" => {
                assert!(metric(&r, "naive", "messages_lost") > 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", "messages_lost"), 0.0, "{r}");
                assert!(
                    metric(&r, "optimal", "db_queries") < metric(&r, "naive", "db_queries"),
                    "{r}"
                );
            }
            "sharding" => {
                let m = "max_shard_load_ratio";
                assert!(
                    metric(&r, "naive", m) > 4.0 * metric(&r, "optimal", m),
                    "{r}"
                );
            }
            "cap" => {
                // naive = CP, optimal = AP: a choice, not a winner.
                assert_eq!(metric(&r, "naive", "consistency_violations"), 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", "availability"), 1.0, "{r}");
                assert!(metric(&r, "naive", "availability") < 1.0, "{r}");
                assert!(metric(&r, "optimal", "consistency_violations") > 0.0, "{r}");
            }
            "news-feed" => {
                assert!(
                    metric(&r, "optimal", "read_ms_p99") < metric(&r, "naive", "read_ms_p99"),
                    "{r}"
                );
                assert_eq!(metric(&r, "naive", "writes_per_post"), 1.0, "{r}");
                assert!(metric(&r, "optimal", "writes_per_post") > 1.0, "{r}");
                assert_eq!(metric(&r, "optimal", "feeds_match"), 1.0, "{r}");
            }
            "youtube-abr" => {
                let m = "rebuffer_ratio";
                assert!(metric(&r, "naive", m) > 0.0, "{r}");
                assert!(metric(&r, "optimal", m) < metric(&r, "naive", m), "{r}");
                assert!(
                    metric(&r, "optimal", "avg_bitrate_kbps")
                        < metric(&r, "naive", "avg_bitrate_kbps"),
                    "{r}"
                );
            }
            "analytics" => {
                assert!(
                    metric(&r, "optimal", "writes") < metric(&r, "naive", "writes"),
                    "{r}"
                );
                assert_eq!(metric(&r, "naive", "results_match"), 1.0, "{r}");
                assert_eq!(metric(&r, "optimal", "results_match"), 1.0, "{r}");
                assert!(metric(&r, "optimal", "late_events_dropped") > 0.0, "{r}");
            }
            "metrics-pipeline" => {
                assert_eq!(metric(&r, "optimal", "results_match"), 1.0, "{r}");
                assert!(
                    metric(&r, "optimal", "writes") < metric(&r, "naive", "writes"),
                    "{r}"
                );
            }
            "event-loop" => {
                assert_eq!(metric(&r, "optimal", "results_match"), 1.0, "{r}");
                assert!(
                    metric(&r, "optimal", "wasted_polls") < metric(&r, "naive", "wasted_polls"),
                    "{r}"
                );
            }
            "task-groups" => {
                assert_eq!(metric(&r, "optimal", "leaked_tasks"), 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", "errors_lost"), 0.0, "{r}");
                assert!(
                    metric(&r, "naive", "leaked_tasks") + metric(&r, "naive", "errors_lost") > 0.0,
                    "{r}"
                );
            }
            "async-race" => {
                assert!(metric(&r, "naive", "lost_updates") > 0.0, "{r}");
                assert_eq!(metric(&r, "optimal", "lost_updates"), 0.0, "{r}");
            }
            "mixture-of-experts" => {
                // Same total parameters, a fraction of the FLOPs per token.
                assert!(
                    metric(&r, "optimal", "flops_per_token")
                        < metric(&r, "naive", "flops_per_token"),
                    "{r}"
                );
            }
            "tree-of-thoughts" => {
                assert!(
                    metric(&r, "optimal", "solved") > metric(&r, "naive", "solved"),
                    "{r}"
                );
            }
            "agent-graph" => {
                assert_eq!(metric(&r, "optimal", "runaway_loops"), 0.0, "{r}");
                assert!(
                    metric(&r, "optimal", "completed_tasks")
                        > metric(&r, "naive", "completed_tasks"),
                    "{r}"
                );
            }
            _ => {}
        }
    }
}
