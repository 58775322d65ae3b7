//! The two-tower model and the baselines on a small synthetic dataset with
//! planted structure: items fall in clusters, each user watches one cluster
//! in order. A model that learns anything ranks the held-out item (the next
//! one of the user's cluster) in the top 10; popularity cannot.

use recsys::baselines::{MatrixFactorization, MfOptions, Popularity};
use recsys::metrics::evaluate;
use recsys::serve::Recommender;
use recsys::split::Split;
use recsys::train::{train, TrainOptions};
use recsys::two_tower::{ItemFeatures, TwoTower};

const CLUSTERS: usize = 12;
const PER_CLUSTER: usize = 10;
const USERS: usize = 96;
const WATCHED: usize = 8;

/// Users watch `WATCHED` consecutive items (cyclically) of their cluster;
/// the last one is held out.
fn planted() -> (Split, ItemFeatures) {
    let items = CLUSTERS * PER_CLUSTER;
    let mut train = Vec::new();
    let mut test = Vec::new();
    for u in 0..USERS {
        let c = u % CLUSTERS;
        let start = (u * 7) % PER_CLUSTER;
        let seq: Vec<u32> = (0..WATCHED)
            .map(|t| (c * PER_CLUSTER + (start + t) % PER_CLUSTER) as u32)
            .collect();
        test.push(Some(seq[WATCHED - 1]));
        train.push(seq[..WATCHED - 1].to_vec());
    }
    let split = Split {
        user_ids: (1..=USERS as u32).collect(),
        item_ids: (1..=items as u32).collect(),
        train,
        test,
    };
    // Genres carry the cluster for half of the clusters, nothing for the rest.
    let genres: Vec<Vec<String>> = (0..items)
        .map(|i| {
            let c = i / PER_CLUSTER;
            if c.is_multiple_of(2) {
                vec![format!("g{c}")]
            } else {
                vec![]
            }
        })
        .collect();
    let years = vec![Some(1999); items];
    (split, ItemFeatures::from_parts(&genres, &years).unwrap())
}

fn options() -> TrainOptions {
    TrainOptions {
        dim: 16,
        hidden: 32,
        history: 8,
        epochs: 40,
        batch_size: 64,
        learning_rate: 1e-2,
        temperature: 0.1,
        seed: 3,
        ..TrainOptions::default()
    }
}

#[test]
fn the_planted_structure_is_learned() {
    let (split, features) = planted();
    let (model, log) = train(&split, features, &options(), |_, _, _| {}).unwrap();
    let first = log.epoch_loss[0];
    let last = *log.epoch_loss.last().unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let m = recsys::eval::two_tower_metrics(&model, &split).unwrap();
    assert!(m.hr_at_10 >= 0.9, "two-tower HR@10 {}", m.hr_at_10);
    let pop = Popularity::fit(&split).scores();
    let p = evaluate(&split, |_| pop.clone());
    assert!(p.hr_at_10 < 0.5, "popularity HR@10 {}", p.hr_at_10);
    let mf = MatrixFactorization::fit(
        &split,
        &MfOptions {
            epochs: 60,
            ..MfOptions::default()
        },
    );
    let f = evaluate(&split, |u| mf.scores(u));
    assert!(
        f.hr_at_10 >= 0.6,
        "MF finds the clusters too: HR@10 {}",
        f.hr_at_10
    );
}

#[test]
fn training_is_reproducible_and_a_checkpoint_reloads() {
    let (split, features) = planted();
    let opts = TrainOptions {
        epochs: 3,
        ..options()
    };
    let (a, la) = train(&split, features.clone(), &opts, |_, _, _| {}).unwrap();
    let (_, lb) = train(&split, features, &opts, |_, _, _| {}).unwrap();
    assert_eq!(la.step_loss, lb.step_loss, "same seed, same losses");
    let dir = std::env::temp_dir().join(format!("sdlab-recsys-ckpt-{}", std::process::id()));
    a.save(&dir).unwrap();
    let b = TwoTower::load(&dir).unwrap();
    assert_eq!(a.item_vectors().unwrap(), b.item_vectors().unwrap());
    let h: &[u32] = &[1, 2, 3];
    assert_eq!(
        a.user_vectors(&[0], &[h]).unwrap(),
        b.user_vectors(&[0], &[h]).unwrap()
    );
    // A damaged checkpoint is refused with a message.
    std::fs::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
    let e = TwoTower::load(&dir).err().expect("refused");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ann_recommendations_skip_seen_items_and_match_exact() {
    let (split, features) = planted();
    let (model, _) = train(&split, features, &options(), |_, _, _| {}).unwrap();
    let ml = recsys::movielens::MovieLens {
        movies: vec![],
        ratings: vec![],
    };
    let rec = Recommender::new(model, &ml, split.clone(), 64).unwrap();
    let items = rec.model.item_vectors().unwrap();
    let exact_unseen = |v: &[f32], seen: &[u32], k: usize| -> Vec<u32> {
        let mut s: Vec<(f32, usize)> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| !seen.contains(&(*i as u32)))
            .map(|(i, x)| (x.iter().zip(v).map(|(a, b)| a * b).sum(), i))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        s.iter().take(k).map(|&(_, i)| split.item_ids[i]).collect()
    };
    let mut held_in_top10 = 0;
    for u in 0..USERS {
        let got = rec.for_user(split.user_ids[u], 10).unwrap();
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
        let v = rec
            .model
            .user_vectors(&[u as u32], &[&split.train[u]])
            .unwrap();
        let ids: Vec<u32> = got.iter().map(|r| r.movie_id).collect();
        assert_eq!(
            ids,
            exact_unseen(&v[0], &split.train[u], 10),
            "user {u}: ANN = exact, seen items skipped"
        );
        let held = split.item_ids[split.test[u].unwrap() as usize];
        held_in_top10 += ids.contains(&held) as usize;
    }
    assert!(
        held_in_top10 as f64 >= 0.9 * USERS as f64,
        "{held_in_top10} of {USERS}"
    );
    // An anonymous history: the unknown-user row, the same exclusions.
    let seen: Vec<u32> = split.train[5]
        .iter()
        .map(|&i| split.item_ids[i as usize])
        .collect();
    let anon = rec.for_history(&seen, 10).unwrap();
    let unknown = rec.model.config.num_users as u32 - 1;
    let v = rec
        .model
        .user_vectors(&[unknown], &[&split.train[5]])
        .unwrap();
    let ids: Vec<u32> = anon.iter().map(|r| r.movie_id).collect();
    assert_eq!(ids, exact_unseen(&v[0], &split.train[5], 10));
    let user_id = split.user_ids[5];
    assert!(rec.for_user(9999, 5).is_err());
    assert!(rec.for_history(&[9999], 5).is_err());
    assert!(rec.for_user(user_id, 0).is_err());
    let report = rec.ann_report(20, 64).unwrap();
    assert_eq!(report.queries, USERS);
    assert!(report.recall >= 0.98, "{report:?}");
}
