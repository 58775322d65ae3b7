//! `sdlab recsys train | eval | recommend`: the two-tower recommender on
//! MovieLens, its comparison with the baselines, and recommendations through
//! the ANN index.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use recsys::baselines::MfOptions;
use recsys::movielens::MovieLens;
use recsys::serve::Recommender;
use recsys::split::Split;
use recsys::train::TrainOptions;
use recsys::two_tower::{ItemFeatures, TwoTower};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum RecsysCommand {
    /// Train the two-tower model on MovieLens (leave-last-out split).
    Train(TrainArgs),
    /// HR@10, NDCG@10, HR@100 of the two-tower model, popularity and MF; ANN against exact.
    Eval(EvalArgs),
    /// Top movies for a user (or for a list of watched movies) through the ANN index.
    Recommend(RecommendArgs),
}

#[derive(Args)]
pub struct DataArgs {
    /// The dslabs data folder (Rdata.rdb/.rdx) [default: .cache/data/dslabs]
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl DataArgs {
    pub(crate) fn load(&self) -> Result<(MovieLens, Split)> {
        let ml = match &self.data {
            Some(d) => MovieLens::load(d)?,
            None => MovieLens::load_default()?,
        };
        let split = Split::leave_last_out(&ml, 5);
        Ok((ml, split))
    }
}

/// Where `train` writes and `eval`/`recommend` read the model.
pub fn default_model_dir() -> PathBuf {
    models::loader::cache_dir().join("recsys/two-tower")
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    pub epochs: usize,
    /// Output dimension of both towers.
    #[arg(long, default_value_t = TrainOptions::default().dim)]
    pub dim: usize,
    #[arg(long, default_value_t = TrainOptions::default().hidden)]
    pub hidden: usize,
    /// Latest items the user tower pools.
    #[arg(long, default_value_t = TrainOptions::default().history)]
    pub history: usize,
    #[arg(long, default_value_t = TrainOptions::default().batch_size)]
    pub batch_size: usize,
    #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
    pub lr: f64,
    /// Softmax temperature over cosines.
    #[arg(long, default_value_t = TrainOptions::default().temperature)]
    pub temperature: f32,
    /// Train without the logQ popularity correction.
    #[arg(long)]
    pub no_logq: bool,
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
    /// Checkpoint folder [default: .cache/recsys/two-tower]
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// A checkpoint of `sdlab recsys train` [default: .cache/recsys/two-tower]
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Epochs of the matrix-factorization baseline.
    #[arg(long, default_value_t = MfOptions::default().epochs)]
    pub mf_epochs: usize,
    /// ef of the ANN comparison (exact against HNSW top-100).
    #[arg(long, default_value_t = 200)]
    pub ef: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// A MovieLens userId.
    #[arg(long, conflicts_with = "history", required_unless_present = "history")]
    pub user: Option<u32>,
    /// Watched movieIds, oldest first (comma-separated), for an unknown user.
    #[arg(long, value_delimiter = ',')]
    pub history: Option<Vec<u32>>,
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: RecsysCommand) -> Result<()> {
    match cmd {
        RecsysCommand::Train(a) => train(a),
        RecsysCommand::Eval(a) => eval(a),
        RecsysCommand::Recommend(a) => recommend(a),
    }
}

fn load_model(dir: &Option<PathBuf>) -> Result<TwoTower> {
    let dir = dir.clone().unwrap_or_else(default_model_dir);
    if !dir.join("config.json").is_file() {
        anyhow::bail!(
            "no two-tower model in {}: run `sdlab recsys train` first",
            dir.display()
        );
    }
    Ok(TwoTower::load(&dir)?)
}

fn train(a: TrainArgs) -> Result<()> {
    let opts = TrainOptions {
        dim: a.dim,
        hidden: a.hidden,
        history: a.history,
        epochs: a.epochs,
        batch_size: a.batch_size,
        learning_rate: a.lr,
        temperature: a.temperature,
        logq: !a.no_logq,
        seed: a.seed,
        ..TrainOptions::default()
    };
    let (ml, split) = a.data.load()?;
    let features = ItemFeatures::new(&ml, &split)?;
    eprintln!(
        "training the two-tower model on {} users, {} items, {} training interactions: {} epochs of batch {}",
        split.train.len(),
        split.item_ids.len(),
        split.num_train(),
        opts.epochs,
        opts.batch_size
    );
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
        "{bar:40} step {pos}/{len}, loss {msg}, {elapsed_precise} (eta {eta})",
    )?);
    let started = std::time::Instant::now();
    let (model, log) = recsys::train::train(&split, features, &opts, |step, steps, loss| {
        bar.set_length(steps as u64);
        bar.set_position(step as u64);
        bar.set_message(format!("{loss:.4}"));
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let out = a.out.clone().unwrap_or_else(default_model_dir);
    model.save(&out)?;
    std::fs::write(out.join("train.json"), serde_json::to_string_pretty(&opts)?)
        .with_context(|| format!("writing {}", out.display()))?;
    crate::loss_plot::write_csv(&out.join("loss.csv"), &log.step_loss)?;
    crate::loss_plot::plot(
        &out.join("loss.svg"),
        &log.step_loss,
        "in-batch softmax cross-entropy",
        &format!(
            "sdlab recsys train: dim {}, history {}, batch {}, T {}, logQ {}",
            opts.dim, opts.history, opts.batch_size, opts.temperature, opts.logq
        ),
    )?;
    let epochs: Vec<String> = log.epoch_loss.iter().map(|l| format!("{l:.3}")).collect();
    println!("loss per epoch: {}", epochs.join(" "));
    let m = recsys::eval::two_tower_metrics(&model, &split)?;
    println!(
        "{} steps in {secs:.1} s; on the {} test users: HR@10 {:.3}, NDCG@10 {:.3}, HR@100 {:.3}",
        log.step_loss.len(),
        m.users,
        m.hr_at_10,
        m.ndcg_at_10,
        m.hr_at_100
    );
    println!(
        "wrote the model, train.json, loss.csv and loss.svg to {}",
        out.display()
    );
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let model = load_model(&a.model)?;
    let (ml, split) = a.data.load()?;
    let mf = MfOptions {
        epochs: a.mf_epochs,
        ..MfOptions::default()
    };
    let report = recsys::eval::compare(&split, Some(&model), &mf)?;
    let rec = Recommender::new(model, &ml, split, a.ef)?;
    let ann = rec.ann_report(100, a.ef)?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["ann"] = serde_json::to_value(&ann)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} test users, {} items; full ranking, training items excluded",
        report.users, report.items
    );
    println!(
        "{:<12} {:>7} {:>8} {:>8}",
        "model", "HR@10", "NDCG@10", "HR@100"
    );
    for m in &report.models {
        println!(
            "{:<12} {:>7.3} {:>8.3} {:>8.3}",
            m.name, m.hr_at_10, m.ndcg_at_10, m.hr_at_100
        );
    }
    println!(
        "ANN (HNSW, ef {}) against exact top-{}: recall {:.4}; per query p50 {:.3} ms vs exact {:.3} ms (p99 {:.3} vs {:.3})",
        ann.ef, ann.k, ann.recall, ann.ann_ms_p50, ann.exact_ms_p50, ann.ann_ms_p99, ann.exact_ms_p99
    );
    Ok(())
}

fn recommend(a: RecommendArgs) -> Result<()> {
    let model = load_model(&a.model)?;
    let (ml, split) = a.data.load()?;
    let rec = Recommender::new(model, &ml, split, 200)?;
    let recs = match (&a.user, &a.history) {
        (Some(u), _) => rec.for_user(*u, a.k)?,
        (None, Some(h)) => rec.for_history(h, a.k)?,
        (None, None) => anyhow::bail!("give --user or --history"),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
        return Ok(());
    }
    for (i, r) in recs.iter().enumerate() {
        let year = r.year.map(|y| format!(" ({y})")).unwrap_or_default();
        println!(
            "{:>3}. {:.3}  {}{year}  [{}]  movieId {}",
            i + 1,
            r.score,
            r.title,
            r.genres.join("|"),
            r.movie_id
        );
    }
    Ok(())
}

/// The server's recommender: a trained checkpoint over the MovieLens data.
pub struct RecsysService {
    name: String,
    rec: Recommender,
}

impl server::retrieval::Recommender for RecsysService {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn recommend(
        &self,
        who: &server::retrieval::RecommendFor,
        k: usize,
    ) -> Result<Vec<server::retrieval::RecommendedItem>, server::retrieval::RetrievalError> {
        use server::retrieval::{RecommendFor, RecommendedItem, RetrievalError};
        let out = match who {
            RecommendFor::User(u) => self.rec.for_user(*u, k),
            RecommendFor::History(h) => self.rec.for_history(h, k),
        };
        out.map(|recs| {
            recs.into_iter()
                .map(|r| RecommendedItem {
                    movie_id: r.movie_id,
                    title: r.title,
                    year: r.year,
                    genres: r.genres,
                    score: r.score,
                })
                .collect()
        })
        .map_err(|e| match e {
            recsys::RecsysError::NotFound(m) => RetrievalError::NotFound(m),
            recsys::RecsysError::Input(message) => RetrievalError::Invalid {
                message,
                param: None,
            },
            other => RetrievalError::Internal(other.to_string()),
        })
    }
}

/// `sdlab serve`'s recommender: `--recsys-model DIR` (or `none`); by
/// default the checkpoint `sdlab recsys train` writes, when there is one.
pub fn service_from_args(
    model: &Option<PathBuf>,
) -> Result<Option<std::sync::Arc<dyn server::retrieval::Recommender>>> {
    if model.as_deref() == Some(std::path::Path::new("none")) {
        return Ok(None);
    }
    let dir = model.clone().unwrap_or_else(default_model_dir);
    if model.is_none() && !dir.join("config.json").is_file() {
        tracing::info!(
            "no two-tower model in {}: /v1/recommend is off (`sdlab recsys train` makes one)",
            dir.display()
        );
        return Ok(None);
    }
    let tower = load_model(&Some(dir.clone()))?;
    let (ml, split) = DataArgs { data: None }.load()?;
    let rec = Recommender::new(tower, &ml, split, 200)?;
    tracing::info!("recommendations: two-tower model from {}", dir.display());
    Ok(Some(std::sync::Arc::new(RecsysService {
        name: "two-tower".into(),
        rec,
    })))
}
