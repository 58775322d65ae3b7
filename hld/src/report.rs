//! What an experiment reports: named numbers for the naive and the optimal
//! side, and notes that say what they show.

use std::collections::BTreeMap;

/// Metric name -> value (sorted by name, so output is stable).
pub type Metrics = BTreeMap<String, f64>;

/// `{"lesson", "title", "naive": {metric: number}, "optimal": {metric:
/// number}, "notes"}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LessonReport {
    pub lesson: String,
    pub title: String,
    pub naive: Metrics,
    pub optimal: Metrics,
    pub notes: String,
}

impl LessonReport {
    pub fn new(lesson: &str, title: &str) -> Self {
        Self {
            lesson: lesson.into(),
            title: title.into(),
            naive: Metrics::new(),
            optimal: Metrics::new(),
            notes: String::new(),
        }
    }

    /// Sets a naive-side metric.
    pub fn naive(mut self, name: &str, value: f64) -> Self {
        self.naive.insert(name.into(), value);
        self
    }

    /// Sets an optimal-side metric.
    pub fn optimal(mut self, name: &str, value: f64) -> Self {
        self.optimal.insert(name.into(), value);
        self
    }

    /// Sets the same metric on both sides.
    pub fn both(self, name: &str, naive: f64, optimal: f64) -> Self {
        self.naive(name, naive).optimal(name, optimal)
    }

    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }

    /// A two-column table of every metric, then the notes.
    pub fn table(&self) -> String {
        let mut names: Vec<&String> = self.naive.keys().chain(self.optimal.keys()).collect();
        names.sort();
        names.dedup();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(6).max(6);
        let fmt = |v: Option<&f64>| match v {
            None => "-".to_string(),
            Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
            Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
            Some(v) => format!("{v:.4}"),
        };
        let mut out = format!("{}: {}\n", self.lesson, self.title);
        out.push_str(&format!(
            "{:<width$}  {:>14}  {:>14}\n",
            "metric", "naive", "optimal"
        ));
        for n in names {
            out.push_str(&format!(
                "{:<width$}  {:>14}  {:>14}\n",
                n,
                fmt(self.naive.get(n)),
                fmt(self.optimal.get(n))
            ));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            out.push_str(&self.notes);
            out.push('\n');
        }
        out
    }
}

/// Microseconds per call of `f`, the median of `runs` timed batches of
/// `per_batch` calls (after one untimed warm-up batch).
pub fn time_us(runs: usize, per_batch: usize, mut f: impl FnMut(usize)) -> f64 {
    let per_batch = per_batch.max(1);
    for i in 0..per_batch {
        f(i);
    }
    let mut samples: Vec<f64> = (0..runs.max(1))
        .map(|r| {
            let t = std::time::Instant::now();
            for i in 0..per_batch {
                f(r * per_batch + i);
            }
            t.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_serializes_in_the_lesson_shape() {
        let r = LessonReport::new("x", "An X")
            .both("bytes", 100.0, 10.0)
            .optimal("theoretical", 0.5)
            .notes("fewer bytes");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["lesson"], "x");
        assert_eq!(v["naive"]["bytes"], 100.0);
        assert_eq!(v["optimal"]["theoretical"], 0.5);
        assert!(v["naive"].get("theoretical").is_none());
        let t = r.table();
        assert!(
            t.contains("bytes")
                && t.contains("100")
                && t.contains("0.5000")
                && t.contains("fewer bytes"),
            "{t}"
        );
    }
}
