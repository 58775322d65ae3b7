//! `sdlab lora`: make and train LoRA adapters in the PEFT format.

use anyhow::Result;
use clap::{Args, Subcommand};
use models::lora::{parse_targets, LoraAdapter};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum LoraCommand {
    /// Write a random adapter for a model (for tests and benchmarks).
    Synth(LoraSynthArgs),
    /// Train an adapter on a JSONL file with candle's autograd.
    Train(LoraTrainArgs),
}

#[derive(Args)]
pub struct LoraSynthArgs {
    /// The base model: a GGUF file, a Hugging Face folder, or a known name.
    #[arg(long, default_value = models::loader::DEFAULT_MODEL)]
    pub model: String,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// `lora_alpha` (default: the rank, so the scale is 1).
    #[arg(long)]
    pub alpha: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Projections to adapt: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all.
    #[arg(long, default_value = "q_proj,v_proj")]
    pub targets: String,
    /// The adapter folder to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct LoraTrainArgs {
    /// The base model: a GGUF file, a Hugging Face folder, or a known name.
    #[arg(long, default_value = models::loader::DEFAULT_MODEL)]
    pub model: String,
    /// Training examples, one JSON object per line: {"prompt": ..., "completion": ...}.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// `lora_alpha` (default: twice the rank).
    #[arg(long)]
    pub alpha: Option<f32>,
    #[arg(long, default_value = "q_proj,k_proj,v_proj,o_proj")]
    pub targets: String,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Longest training sequence in tokens (longer examples are cut).
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// The adapter folder to write (also gets loss.csv and loss.svg).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: LoraCommand) -> Result<()> {
    match cmd {
        LoraCommand::Synth(a) => synth(a),
        LoraCommand::Train(a) => train(a),
    }
}

fn synth(a: LoraSynthArgs) -> Result<()> {
    if a.rank == 0 {
        anyhow::bail!("--rank must be positive");
    }
    let targets = parse_targets(&a.targets)?;
    let loaded = models::load(&a.model, Default::default())?;
    let mut adapter = LoraAdapter::synth(&loaded.model.cfg, a.rank, &targets, a.seed)?;
    if let Some(alpha) = a.alpha {
        adapter.set_alpha(alpha);
    }
    adapter.save(&a.out, &loaded.model.cfg, &loaded.name)?;
    println!(
        "wrote a rank-{} adapter for {} ({}; {:.1} KiB) to {}",
        a.rank,
        loaded.name,
        a.targets,
        adapter.bytes() as f64 / 1024.0,
        a.out.display()
    );
    Ok(())
}

fn train(a: LoraTrainArgs) -> Result<()> {
    use models::lora_train::{read_jsonl, TrainOptions};
    let opts = TrainOptions {
        rank: a.rank,
        alpha: a.alpha.unwrap_or(2.0 * a.rank as f32),
        targets: parse_targets(&a.targets)?,
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
        max_len: a.max_len,
    };
    // Cheap checks before the model loads.
    opts.validate()?;
    let examples = read_jsonl(&a.data)?;
    let loaded = models::load(&a.model, Default::default())?;
    eprintln!(
        "training a rank-{} adapter ({}, alpha {}) for {} on {} examples: {} steps of {}",
        opts.rank,
        a.targets,
        opts.alpha,
        loaded.name,
        examples.len(),
        opts.steps,
        opts.batch_size
    );
    let bar = indicatif::ProgressBar::new(opts.steps as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} step {pos}/{len}, loss {msg}, {elapsed_precise} (eta {eta})",
        )?,
    );
    let started = std::time::Instant::now();
    let out = models::lora_train::train(&loaded, &examples, &opts, |step, loss| {
        bar.set_position(step as u64);
        bar.set_message(format!("{loss:.4}"));
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();

    out.adapter.save(&a.out, &loaded.model.cfg, &loaded.name)?;
    write_loss_csv(&a.out.join("loss.csv"), &out.losses)?;
    plot_loss(
        &a.out.join("loss.svg"),
        &out.losses,
        &format!(
            "sdlab lora train: {}, rank {}, {} examples, batch {}, lr {}",
            loaded.name, opts.rank, out.examples, opts.batch_size, opts.lr
        ),
    )?;
    let k = (out.losses.len() / 10).clamp(1, 10);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    println!(
        "loss {:.3} -> {:.3} (mean of the first and last {k} steps)",
        mean(&out.losses[..k]),
        mean(&out.losses[out.losses.len() - k..])
    );
    println!(
        "{} steps in {secs:.1} s ({:.2} s/step, {:.0} tokens/s)",
        out.losses.len(),
        secs / out.losses.len() as f64,
        out.tokens as f64 / secs
    );
    if out.examples < examples.len() {
        println!(
            "{} of {} examples did not fit --max-len {} and were skipped",
            examples.len() - out.examples,
            examples.len(),
            opts.max_len
        );
    }
    println!(
        "wrote the adapter ({:.1} KiB), loss.csv and loss.svg to {}",
        out.adapter.bytes() as f64 / 1024.0,
        a.out.display()
    );
    Ok(())
}

fn write_loss_csv(path: &std::path::Path, losses: &[f32]) -> Result<()> {
    let mut text = String::from("step,loss\n");
    for (i, l) in losses.iter().enumerate() {
        text.push_str(&format!("{},{l}\n", i + 1));
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The loss of each step, and its moving average over ~5% of the run.
fn plot_loss(path: &std::path::Path, losses: &[f32], title: &str) -> Result<()> {
    use anyhow::anyhow;
    use plotters::prelude::*;
    let raw: Vec<(f64, f64)> = losses
        .iter()
        .enumerate()
        .map(|(i, &l)| ((i + 1) as f64, l as f64))
        .collect();
    let w = (losses.len() / 20).max(1);
    let smooth: Vec<(f64, f64)> = (0..losses.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let win = &losses[lo..=i];
            (
                (i + 1) as f64,
                win.iter().map(|&l| l as f64).sum::<f64>() / win.len() as f64,
            )
        })
        .collect();
    let ymax = raw.iter().map(|p| p.1).fold(1e-9, f64::max) * 1.05;
    let xmax = losses.len().max(2) as f64;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1.0..xmax, 0.0..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("cross-entropy on completion tokens")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let light = RGBColor(31, 119, 180).mix(0.35);
    let dark = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(raw, light.stroke_width(1)))
        .map_err(|e| anyhow!("{e}"))?
        .label("loss per step")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], light.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(smooth, dark.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?
        .label(format!("moving average of {w}"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], dark.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
