//! `sdlab lesson list | NAME`: the system-design lessons of the `hld` crate,
//! each an experiment that runs a naive and an optimal version side by side.

use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct LessonArgs {
    /// A lesson's name, or `list` to see them all.
    pub name: String,
    /// Seed of the experiment's input.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print JSON: {"lesson", "title", "naive", "optimal", "notes"} (for
    /// `list`: the lessons' names and titles).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: LessonArgs) -> Result<()> {
    let lessons = hld::lessons();
    if a.name == "list" {
        if a.json {
            let list: Vec<serde_json::Value> = lessons
                .iter()
                .map(|l| serde_json::json!({ "name": l.name, "title": l.title }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            for l in &lessons {
                println!("{:<20} {}", l.name, l.title);
            }
        }
        return Ok(());
    }
    let Some(lesson) = hld::find(&a.name) else {
        let names: Vec<&str> = lessons.iter().map(|l| l.name).collect();
        bail!(
            "no lesson named `{}`; the lessons are: {}",
            a.name,
            names.join(", ")
        );
    };
    let started = std::time::Instant::now();
    let report = (lesson.run)(a.seed);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        println!(
            "({:.1} s, seed {})",
            started.elapsed().as_secs_f64(),
            a.seed
        );
    }
    Ok(())
}
