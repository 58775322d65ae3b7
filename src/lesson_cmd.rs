//! `sdlab lesson list | NAME`: every lesson of the catalogue
//! ([`crate::lessons`]), each an experiment that runs a naive and an optimal
//! version side by side.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct LessonArgs {
    /// A lesson's name, or `list` to see them all.
    pub name: String,
    /// Seed of the experiment's input.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print JSON: {"lesson", "title", "naive", "optimal", "notes"} (for
    /// `list`: each lesson's name, title and module).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: LessonArgs) -> Result<()> {
    if a.name == "list" {
        let modules = crate::lessons::modules();
        if a.json {
            let list: Vec<serde_json::Value> = modules
                .iter()
                .flat_map(|m| {
                    m.lessons.iter().map(|l| {
                        serde_json::json!({ "name": l.name, "title": l.title, "module": m.title })
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            for m in &modules {
                println!("{}:", m.title);
                for l in &m.lessons {
                    println!("  {:<22} {}", l.name, l.title);
                }
            }
        }
        return Ok(());
    }
    let lesson = crate::lessons::find(&a.name)?;
    let started = std::time::Instant::now();
    let report = lesson.run(a.seed)?;
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
