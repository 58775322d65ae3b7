//! `sdlab lora`: make and train LoRA adapters in the PEFT format.

use anyhow::Result;
use clap::{Args, Subcommand};
use models::lora::{parse_targets, LoraAdapter, Target};
use models::LlamaConfig;
use std::path::{Path, PathBuf};

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
    let adapter = write_synth(
        &loaded.model.cfg,
        &loaded.name,
        a.rank,
        a.alpha,
        &targets,
        a.seed,
        &a.out,
    )?;
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

/// Writes a random adapter of `rank` on `targets` for a model of `cfg` to
/// the PEFT folder `out` (what `sdlab lora synth` does once the model is
/// loaded) and returns it.
pub(crate) fn write_synth(
    cfg: &LlamaConfig,
    base_name: &str,
    rank: usize,
    alpha: Option<f32>,
    targets: &[Target],
    seed: u64,
    out: &Path,
) -> Result<LoraAdapter> {
    let mut adapter = LoraAdapter::synth(cfg, rank, targets, seed)?;
    if let Some(alpha) = alpha {
        adapter.set_alpha(alpha);
    }
    adapter.save(out, cfg, base_name)?;
    Ok(adapter)
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
    crate::loss_plot::write_csv(&a.out.join("loss.csv"), &out.losses)?;
    crate::loss_plot::plot(
        &a.out.join("loss.svg"),
        &out.losses,
        "cross-entropy on completion tokens",
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
