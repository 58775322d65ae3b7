//! `sdlab recsys` end to end on the real MovieLens data with a short
//! training run: the checkpoint, the evaluation report (the baselines'
//! numbers are those of `../shared/BASELINES.md`), recommendations from the
//! CLI and over HTTP. Needs the data (`make models`): skips without it,
//! fails when `SDLAB_REQUIRE_REAL_MODELS=1`.

mod common;
use common::server::{http_post, Server};
use common::{sdlab, synth, tmp};
use serde_json::{json, Value};

fn movielens_present() -> bool {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/data/dslabs/Rdata.rdb");
    if p.is_file() {
        return true;
    }
    if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run `make models`", p.display());
    }
    eprintln!("skipping: {} is missing (run `make models`)", p.display());
    false
}

fn ok(args: &[&str]) -> String {
    let out = sdlab(args);
    assert!(
        out.status.success(),
        "sdlab {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn train_eval_recommend_and_serve() {
    if !movielens_present() {
        return;
    }
    let dir = tmp("two-tower");
    let d = dir.to_str().unwrap();
    let out = ok(&[
        "recsys",
        "train",
        "--epochs",
        "1",
        "--dim",
        "16",
        "--hidden",
        "32",
        "--history",
        "10",
        "--batch-size",
        "1024",
        "--out",
        d,
    ]);
    assert!(out.contains("HR@10"), "{out}");
    for f in [
        "model.safetensors",
        "config.json",
        "train.json",
        "loss.csv",
        "loss.svg",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }

    let report: Value = serde_json::from_str(&ok(&[
        "recsys",
        "eval",
        "--model",
        d,
        "--mf-epochs",
        "2",
        "--json",
    ]))
    .unwrap();
    assert_eq!(report["users"], 671);
    assert_eq!(report["items"], 9066);
    let names: Vec<&str> = report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["two-tower", "popularity", "mf"]);
    let pop = &report["models"][1];
    // Popularity is deterministic: BASELINES.md's 0.043 / 0.020 / 0.173.
    assert!(
        (pop["hr_at_10"].as_f64().unwrap() - 0.043).abs() < 0.0016,
        "{pop}"
    );
    assert!(
        (pop["ndcg_at_10"].as_f64().unwrap() - 0.020).abs() < 0.0016,
        "{pop}"
    );
    assert!(
        (pop["hr_at_100"].as_f64().unwrap() - 0.173).abs() < 0.0016,
        "{pop}"
    );
    for m in report["models"].as_array().unwrap() {
        let (h10, n10, h100) = (
            m["hr_at_10"].as_f64().unwrap(),
            m["ndcg_at_10"].as_f64().unwrap(),
            m["hr_at_100"].as_f64().unwrap(),
        );
        assert!(n10 <= h10 && h10 <= h100 && h100 <= 1.0, "{m}");
    }
    assert!(
        report["ann"]["recall"].as_f64().unwrap() >= 0.98,
        "{}",
        report["ann"]
    );

    let recs: Value = serde_json::from_str(&ok(&[
        "recsys",
        "recommend",
        "--model",
        d,
        "--user",
        "1",
        "-k",
        "5",
        "--json",
    ]))
    .unwrap();
    assert_eq!(recs.as_array().unwrap().len(), 5);
    assert!(
        recs[0]["title"].is_string() && recs[0]["score"].is_number(),
        "{recs}"
    );
    let text = ok(&[
        "recsys",
        "recommend",
        "--model",
        d,
        "--history",
        "1,2571",
        "-k",
        "3",
    ]);
    assert_eq!(text.lines().count(), 3, "{text}");
    let out = sdlab(&["recsys", "recommend", "--model", d, "--user", "100000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user 100000"));

    // The same checkpoint behind POST /v1/recommend.
    let model = tmp("synth-recsys");
    synth(&model, 6);
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--embedding-model",
        "none",
        "--recsys-model",
        d,
    ]);
    let (status, body) = http_post(
        &server.url,
        "/v1/recommend",
        &json!({ "user_id": 1, "k": 5 }),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids = |a: &Value| -> Vec<(u64, f64)> {
        a.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["movie_id"].as_u64().unwrap(),
                    r["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    for ((m1, s1), (m2, s2)) in ids(&v["data"]).into_iter().zip(ids(&recs)) {
        assert!(
            m1 == m2 && (s1 - s2).abs() < 1e-6,
            "the server and the CLI agree: {v} vs {recs}"
        );
    }
    assert_eq!(v["data"][0]["title"], recs[0]["title"]);
    let (status, body) = http_post(
        &server.url,
        "/v1/recommend",
        &json!({ "history": [1, 999999] }),
    )
    .unwrap();
    assert_eq!(status, 404, "{body}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn recsys_without_a_model_says_how_to_get_one() {
    let out = sdlab(&["recsys", "eval", "--model", "/no/such/model"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sdlab recsys train"), "{err}");
    let out = sdlab(&["recsys", "recommend", "--model", "/no/such/model"]);
    assert!(!out.status.success(), "neither --user nor --history");
}
