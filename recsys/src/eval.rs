//! The comparison `sdlab recsys eval` prints: the two-tower model against
//! popularity and matrix factorization, on the same split, by the same
//! full-ranking metrics ([`crate::metrics`]).

use crate::baselines::{MatrixFactorization, MfOptions, Popularity};
use crate::metrics::{evaluate, Metrics};
use crate::split::Split;
use crate::two_tower::TwoTower;
use crate::Result;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelScores {
    pub name: String,
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub hr_at_100: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub users: usize,
    pub items: usize,
    pub models: Vec<ModelScores>,
}

fn named(name: &str, m: Metrics) -> ModelScores {
    ModelScores {
        name: name.into(),
        hr_at_10: m.hr_at_10,
        ndcg_at_10: m.ndcg_at_10,
        hr_at_100: m.hr_at_100,
    }
}

/// Every user's scores from the two-tower model: user vectors from the
/// latest training items, dotted with every item vector.
pub fn two_tower_metrics(model: &TwoTower, split: &Split) -> Result<Metrics> {
    let items = model.item_vectors()?;
    let users: Vec<(usize, u32)> = split.test_users().collect();
    let ids: Vec<u32> = users.iter().map(|&(u, _)| u as u32).collect();
    let histories: Vec<&[u32]> = users
        .iter()
        .map(|&(u, _)| split.train[u].as_slice())
        .collect();
    let vectors = model.user_vectors(&ids, &histories)?;
    let mut by_user = vec![None; split.train.len()];
    for (&(u, _), v) in users.iter().zip(vectors) {
        by_user[u] = Some(v);
    }
    Ok(evaluate(split, |u| {
        let v = by_user[u].as_deref().unwrap_or(&[]);
        items
            .iter()
            .map(|x| x.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    }))
}

/// The two-tower model (when given), popularity and MF, in that order.
pub fn compare(split: &Split, model: Option<&TwoTower>, mf: &MfOptions) -> Result<EvalReport> {
    let mut models = Vec::new();
    if let Some(m) = model {
        models.push(named("two-tower", two_tower_metrics(m, split)?));
    }
    let pop = Popularity::fit(split).scores();
    models.push(named("popularity", evaluate(split, |_| pop.clone())));
    let mf = MatrixFactorization::fit(split, mf);
    models.push(named("mf", evaluate(split, |u| mf.scores(u))));
    Ok(EvalReport {
        users: split.test_users().count(),
        items: split.item_ids.len(),
        models,
    })
}
