//! Training the two-tower model: next-item examples, in-batch sampled
//! softmax with the logQ correction, AdamW.
//!
//! Examples: for every training interaction of every user, the target is
//! that item and the history is the items the user had before it, so the
//! model learns what the test asks, the item after a history.
//!
//! Loss: a batch of B (user, history, item) rows gives B user vectors and B
//! item vectors; row r's positive is its own item and the other B - 1 items
//! are its negatives. Logits are cosines over a temperature. In-batch
//! negatives are sampled in proportion to popularity, which would teach the
//! model to push popular items down; the logQ correction (Yi et al. 2019)
//! subtracts log(sampling probability) from each item's logit to undo that
//! bias. The same item appearing twice in a batch is not its own negative.

use crate::split::Split;
use crate::two_tower::{err, ItemFeatures, TowerConfig, TwoTower, UserBatch};
use crate::Result;
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    pub dim: usize,
    pub hidden: usize,
    pub history: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub temperature: f32,
    /// Subtract log(popularity share) from in-batch logits.
    pub logq: bool,
    /// Share of examples whose user id is replaced by the "unknown user"
    /// row, so that the model can serve a bare history.
    pub unknown_user_rate: f64,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            dim: 64,
            hidden: 128,
            history: 30,
            epochs: 10,
            batch_size: 512,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            temperature: 0.07,
            logq: true,
            unknown_user_rate: 0.1,
            seed: 42,
        }
    }
}

/// Per-epoch mean loss.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrainLog {
    pub epoch_loss: Vec<f32>,
    pub step_loss: Vec<f32>,
}

/// (user, position of the target in the user's training list).
fn examples(split: &Split) -> Vec<(u32, u32)> {
    split
        .train
        .iter()
        .enumerate()
        .flat_map(|(u, items)| (0..items.len()).map(move |t| (u as u32, t as u32)))
        .collect()
}

/// Trains a fresh model; `progress(step, steps, loss)` after every step.
pub fn train(
    split: &Split,
    features: ItemFeatures,
    opts: &TrainOptions,
    mut progress: impl FnMut(usize, usize, f32),
) -> Result<(TwoTower, TrainLog)> {
    if opts.batch_size < 2
        || opts.dim == 0
        || opts.history == 0
        || opts.temperature <= 0.0
        || !(0.0..1.0).contains(&opts.unknown_user_rate)
    {
        return Err(crate::RecsysError::Input(
            "batch size must be at least 2; dim, history and temperature positive; the unknown-user rate in [0, 1)".into(),
        ));
    }
    let config = TowerConfig {
        // The last row is the unknown user.
        num_users: split.train.len() + 1,
        num_items: split.item_ids.len(),
        num_genres: features.num_genres(),
        dim: opts.dim,
        hidden: opts.hidden,
        history: opts.history,
    };
    let model = TwoTower::new(config, features, opts.seed)?;
    let mut opt = AdamW::new(
        model.vars(),
        ParamsAdamW {
            lr: opts.learning_rate,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )
    .map_err(err)?;
    let popularity = split.item_popularity();
    let total: f64 = popularity.iter().map(|&c| c as f64).sum::<f64>().max(1.0);
    let log_q: Vec<f32> = popularity
        .iter()
        .map(|&c| ((c.max(1) as f64) / total).ln() as f32)
        .collect();
    let mut rows = examples(split);
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x9e37_79b9_7f4a_7c15);
    let steps_per_epoch = rows.len().div_ceil(opts.batch_size);
    let steps = steps_per_epoch * opts.epochs;
    let mut log = TrainLog::default();
    let mut step = 0;
    for _ in 0..opts.epochs {
        for k in (1..rows.len()).rev() {
            rows.swap(k, rng.random_range(0..=k));
        }
        let mut sum = 0.0;
        let mut batches = 0;
        for batch in rows.chunks(opts.batch_size) {
            if batch.len() < 2 {
                continue;
            }
            let unknown = split.train.len() as u32;
            let users: Vec<u32> = batch
                .iter()
                .map(|&(u, _)| {
                    if rng.random_bool(opts.unknown_user_rate) {
                        unknown
                    } else {
                        u
                    }
                })
                .collect();
            let loss = batch_loss(&model, split, batch, &users, &log_q, opts).map_err(err)?;
            opt.backward_step(&loss).map_err(err)?;
            let l = loss.to_scalar::<f32>().map_err(err)?;
            log.step_loss.push(l);
            sum += l;
            batches += 1;
            step += 1;
            progress(step, steps, l);
        }
        log.epoch_loss.push(sum / batches.max(1) as f32);
    }
    Ok((model, log))
}

fn batch_loss(
    model: &TwoTower,
    split: &Split,
    batch: &[(u32, u32)],
    users: &[u32],
    log_q: &[f32],
    opts: &TrainOptions,
) -> candle_core::Result<Tensor> {
    let b = batch.len();
    let items: Vec<u32> = batch
        .iter()
        .map(|&(u, t)| split.train[u as usize][t as usize])
        .collect();
    let histories: Vec<&[u32]> = batch
        .iter()
        .map(|&(u, t)| &split.train[u as usize][..t as usize])
        .collect();
    let ub = UserBatch::new(users, &histories, opts.history)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let dev = &Device::Cpu;
    let u = model.user_tower(&ub)?;
    let v = model.item_tower(&Tensor::from_vec(items.clone(), b, dev)?)?;
    let logits = (u.matmul(&v.t()?)? / opts.temperature as f64)?;
    // Column j: minus log q_j (logQ), and -inf-like where item j is row r's
    // own item appearing again.
    let mut bias = vec![0f32; b * b];
    for r in 0..b {
        for j in 0..b {
            bias[r * b + j] = if j != r && items[j] == items[r] {
                -1e4
            } else if opts.logq {
                -log_q[items[j] as usize]
            } else {
                0.0
            };
        }
    }
    let logits = logits.add(&Tensor::from_vec(bias, (b, b), dev)?)?;
    let targets = Tensor::arange(0u32, b as u32, dev)?;
    candle_nn::loss::cross_entropy(&logits, &targets)
}
