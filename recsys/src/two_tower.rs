//! The two-tower model (Yi et al., RecSys 2019): a user tower and an item
//! tower whose outputs' dot product ranks items for a user.
//!
//! - Item tower: the movie's id embedding, its genres (the mean of their
//!   embeddings, through a multi-hot row), and its release year (a 5-year
//!   bucket embedding), concatenated, then a two-layer MLP, then L2
//!   normalization. Features other than the id let a rarely seen movie sit
//!   near similar ones.
//! - User tower: the user's id embedding and the mean of the id embeddings
//!   of the user's last `history` items (the item tower's own table, so what
//!   is learned about an item serves both sides), then an MLP and L2
//!   normalization. The history is what makes it a next-item model: at
//!   evaluation it is the user's latest training items.
//!
//! Both towers end on the unit sphere, so scores are cosines and the item
//! vectors can go into an inner-product ANN index as they are. The weights
//! are plain candle `Var`s created from a seeded generator (candle's own CPU
//! initializers cannot be seeded), saved and loaded as safetensors with the
//! item features beside them, so a checkpoint alone gives the item vectors.

use crate::movielens::MovieLens;
use crate::split::Split;
use crate::{RecsysError, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// Release years in 5-year buckets from 1900; bucket 0 is "unknown".
pub const YEAR_BUCKETS: usize = 26;

pub fn year_bucket(year: Option<u16>) -> u32 {
    match year {
        None => 0,
        Some(y) => (1 + (y.saturating_sub(1900) as usize / 5)).min(YEAR_BUCKETS - 1) as u32,
    }
}

pub(crate) fn err(e: candle_core::Error) -> RecsysError {
    RecsysError::Model(e.to_string())
}

/// Sizes of the model, saved with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TowerConfig {
    pub num_users: usize,
    pub num_items: usize,
    pub num_genres: usize,
    /// Output (and embedding) dimension.
    pub dim: usize,
    pub hidden: usize,
    /// Items of history the user tower pools.
    pub history: usize,
}

/// What the item tower knows about each item besides its id.
#[derive(Debug, Clone)]
pub struct ItemFeatures {
    /// `[items, genres]`, each row summing to 1 (or all 0 without genres).
    pub genres: Tensor,
    /// `[items]` year buckets (u32).
    pub years: Tensor,
    pub genre_names: Vec<String>,
}

impl ItemFeatures {
    /// Features of the split's items from the MovieLens records.
    pub fn new(ml: &MovieLens, split: &Split) -> Result<Self> {
        let (genres, years): (Vec<Vec<String>>, Vec<Option<u16>>) = split
            .item_ids
            .iter()
            .map(|&id| match ml.movie(id) {
                Some(m) => (m.genres.clone(), m.year),
                None => (vec![], None),
            })
            .unzip();
        Self::from_parts(&genres, &years)
    }

    /// Features from each item's genres and year (item index order).
    pub fn from_parts(genres: &[Vec<String>], years: &[Option<u16>]) -> Result<Self> {
        let mut names: Vec<String> = genres.iter().flatten().cloned().collect();
        names.sort();
        names.dedup();
        let (n, g) = (genres.len(), names.len().max(1));
        let mut rows = vec![0f32; n * g];
        for (i, mine) in genres.iter().enumerate() {
            for x in mine {
                if let Ok(k) = names.binary_search(x) {
                    rows[i * g + k] = 1.0 / mine.len() as f32;
                }
            }
        }
        let buckets: Vec<u32> = years.iter().map(|&y| year_bucket(y)).collect();
        Ok(Self {
            genres: Tensor::from_vec(rows, (n, g), &Device::Cpu).map_err(err)?,
            years: Tensor::from_vec(buckets, n, &Device::Cpu).map_err(err)?,
            genre_names: names,
        })
    }

    /// Columns of the genre matrix (at least 1).
    pub fn num_genres(&self) -> usize {
        self.genres.dims().get(1).copied().unwrap_or(1)
    }
}

/// A user-tower input: the user's index and recent item indices.
pub struct UserBatch {
    pub users: Tensor,
    /// `[batch, history]` item indices, padded with 0 where `mask` is 0.
    pub history: Tensor,
    pub mask: Tensor,
}

impl UserBatch {
    /// Pads each history (most recent last; only the last `h` kept).
    pub fn new(users: &[u32], histories: &[&[u32]], h: usize) -> Result<Self> {
        let b = users.len();
        let mut ids = vec![0u32; b * h];
        let mut mask = vec![0f32; b * h];
        for (r, hist) in histories.iter().enumerate() {
            let recent = &hist[hist.len().saturating_sub(h)..];
            for (c, &i) in recent.iter().enumerate() {
                ids[r * h + c] = i;
                mask[r * h + c] = 1.0;
            }
        }
        let dev = &Device::Cpu;
        Ok(Self {
            users: Tensor::from_vec(users.to_vec(), b, dev).map_err(err)?,
            history: Tensor::from_vec(ids, (b, h), dev).map_err(err)?,
            mask: Tensor::from_vec(mask, (b, h), dev).map_err(err)?,
        })
    }
}

pub struct TwoTower {
    pub config: TowerConfig,
    pub features: ItemFeatures,
    vars: Vec<(&'static str, Var)>,
}

const NAMES: [&str; 13] = [
    "user_emb",
    "item_emb",
    "genre_emb",
    "year_emb",
    "user_w1",
    "user_b1",
    "user_w2",
    "user_b2",
    "item_w1",
    "item_b1",
    "item_w2",
    "item_b2",
    "_end",
];

fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// `relu(x W1ᵀ + b1) W2ᵀ + b2`.
fn mlp(
    x: &Tensor,
    w1: &Tensor,
    b1: &Tensor,
    w2: &Tensor,
    b2: &Tensor,
) -> candle_core::Result<Tensor> {
    let h = x.matmul(&w1.t()?)?.broadcast_add(b1)?.relu()?;
    h.matmul(&w2.t()?)?.broadcast_add(b2)
}

impl TwoTower {
    /// Fresh weights from `seed`: embeddings N(0, 0.1²)-like uniform, layers
    /// Kaiming-uniform.
    pub fn new(config: TowerConfig, features: ItemFeatures, seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (d, h) = (config.dim, config.hidden);
        let shapes: [(usize, usize, f32); 12] = [
            (config.num_users, d, 0.17),
            (config.num_items, d, 0.17),
            (config.num_genres, d, 0.17),
            (YEAR_BUCKETS, d, 0.17),
            (h, 2 * d, 1.0 / (2.0 * d as f32).sqrt()),
            (1, h, 0.0),
            (d, h, 1.0 / (h as f32).sqrt()),
            (1, d, 0.0),
            (h, 3 * d, 1.0 / (3.0 * d as f32).sqrt()),
            (1, h, 0.0),
            (d, h, 1.0 / (h as f32).sqrt()),
            (1, d, 0.0),
        ];
        let mut vars = Vec::with_capacity(shapes.len());
        for (name, (r, c, scale)) in NAMES.iter().zip(shapes) {
            let data: Vec<f32> = (0..r * c)
                .map(|_| {
                    if scale == 0.0 {
                        0.0
                    } else {
                        rng.random_range(-scale..scale)
                    }
                })
                .collect();
            let shape = if r == 1 { vec![c] } else { vec![r, c] };
            vars.push((
                *name,
                Var::from_vec(data, shape, &Device::Cpu).map_err(err)?,
            ));
        }
        Ok(Self {
            config,
            features,
            vars,
        })
    }

    fn var(&self, name: &str) -> &Tensor {
        self.vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_tensor())
            .expect("every name in NAMES has a var")
    }

    /// The trainable variables (for the optimizer).
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Unit vectors of items (indices, u32 tensor `[n]`).
    pub fn item_tower(&self, items: &Tensor) -> candle_core::Result<Tensor> {
        let id = self.var("item_emb").embedding(items)?;
        let genres = self
            .features
            .genres
            .index_select(items, 0)?
            .matmul(self.var("genre_emb"))?;
        let years = self.features.years.index_select(items, 0)?;
        let year = self.var("year_emb").embedding(&years)?;
        let x = Tensor::cat(&[&id, &genres, &year], 1)?;
        let out = mlp(
            &x,
            self.var("item_w1"),
            self.var("item_b1"),
            self.var("item_w2"),
            self.var("item_b2"),
        )?;
        l2_normalize(&out)
    }

    /// Unit vectors of users with their recent histories.
    pub fn user_tower(&self, b: &UserBatch) -> candle_core::Result<Tensor> {
        let user = self.var("user_emb").embedding(&b.users)?;
        let (rows, h) = b.history.dims2()?;
        let hist = self
            .var("item_emb")
            .embedding(&b.history.flatten_all()?)?
            .reshape((rows, h, self.config.dim))?;
        let mask = b.mask.unsqueeze(2)?;
        let count = (b.mask.sum_keepdim(1)? + 1e-6)?;
        let pooled = hist.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&count)?;
        let x = Tensor::cat(&[&user, &pooled], 1)?;
        let out = mlp(
            &x,
            self.var("user_w1"),
            self.var("user_b1"),
            self.var("user_w2"),
            self.var("user_b2"),
        )?;
        l2_normalize(&out)
    }

    /// Every item's vector, `[items, dim]`, as rows.
    pub fn item_vectors(&self) -> Result<Vec<Vec<f32>>> {
        let n = self.config.num_items as u32;
        let ids = Tensor::arange(0u32, n, &Device::Cpu).map_err(err)?;
        self.item_tower(&ids).and_then(|t| t.to_vec2()).map_err(err)
    }

    /// Vectors of users (indices) given their histories (item indices,
    /// oldest first).
    pub fn user_vectors(&self, users: &[u32], histories: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let b = UserBatch::new(users, histories, self.config.history)?;
        self.user_tower(&b).and_then(|t| t.to_vec2()).map_err(err)
    }

    /// `dir/model.safetensors` (weights and item features) and
    /// `dir/config.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(crate::io_err(dir))?;
        let mut tensors: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect();
        tensors.insert("feature_genres".into(), self.features.genres.clone());
        tensors.insert("feature_years".into(), self.features.years.clone());
        let weights = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights).map_err(err)?;
        let cfg = serde_json::json!({ "config": self.config, "genres": self.features.genre_names });
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&cfg).unwrap_or_default(),
        )
        .map_err(crate::io_err(&path))
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(crate::io_err(&path))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| RecsysError::Data(format!("{}: {e}", path.display())))?;
        let config: TowerConfig = serde_json::from_value(v["config"].clone())
            .map_err(|e| RecsysError::Data(format!("{}: {e}", path.display())))?;
        let genre_names: Vec<String> =
            serde_json::from_value(v["genres"].clone()).unwrap_or_default();
        let weights = dir.join("model.safetensors");
        let mut t = candle_core::safetensors::load(&weights, &Device::Cpu)
            .map_err(|e| RecsysError::Data(format!("{}: {e}", weights.display())))?;
        let mut take = |name: &str| {
            t.remove(name)
                .ok_or_else(|| RecsysError::Data(format!("{} lacks `{name}`", weights.display())))
        };
        let features = ItemFeatures {
            genres: take("feature_genres")?,
            years: take("feature_years")?,
            genre_names,
        };
        let mut vars = Vec::new();
        for name in &NAMES[..12] {
            let tensor = take(name)?.to_dtype(DType::F32).map_err(err)?;
            vars.push((*name, Var::from_tensor(&tensor).map_err(err)?));
        }
        let model = Self {
            config,
            features,
            vars,
        };
        let want = [model.config.num_users, model.config.num_items];
        let got = [
            model.var("user_emb").dim(0).map_err(err)?,
            model.var("item_emb").dim(0).map_err(err)?,
        ];
        if want != got {
            return Err(RecsysError::Data(format!(
                "{}: config says {want:?} users/items, weights hold {got:?}",
                dir.display()
            )));
        }
        Ok(model)
    }
}
