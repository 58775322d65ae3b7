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

fn train(_a: LoraTrainArgs) -> Result<()> {
    anyhow::bail!("`sdlab lora train` is being written")
}
