//! `sdlab embed` end to end: JSON output of unit vectors, `--stdin`, and
//! clear errors. Needs all-MiniLM-L6-v2 (`make models`): skips with a message
//! without it, fails when `SDLAB_REQUIRE_REAL_MODELS=1`.

mod common;
use common::{minilm_present, sdlab};
use std::io::Write;
use std::process::{Command, Stdio};

/// Parses `--json` output into (text, vector) pairs, checking 384-d unit vectors.
fn unit_vectors(stdout: &[u8]) -> Vec<(String, Vec<f32>)> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(stdout).unwrap();
    items
        .iter()
        .map(|it| {
            let text = it["text"].as_str().unwrap().to_string();
            let v: Vec<f32> = it["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(v.len(), 384, "{text}");
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "norm {norm} of {text}");
            (text, v)
        })
        .collect()
}

#[test]
fn embed_json_gives_unit_vectors_in_order() {
    if !minilm_present() {
        return;
    }
    let out = sdlab(&["embed", "hello", "world", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items = unit_vectors(&out.stdout);
    let texts: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["hello", "world"]);
    let dot: f32 = items[0].1.iter().zip(&items[1].1).map(|(a, b)| a * b).sum();
    assert!(dot < 0.99, "different words, different vectors ({dot})");
}

#[test]
fn embed_reads_stdin_and_prints_text_lines() {
    if !minilm_present() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdlab"))
        .args(["embed", "--stdin", "--json", "--batch-size", "2"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"A man is eating food.\n\nThe girl is carrying a baby.\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items = unit_vectors(&out.stdout);
    let texts: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "A man is eating food.",
            "The girl is carrying a baby.",
            "hello"
        ],
        "blank lines skipped, order kept"
    );

    let plain = sdlab(&["embed", "hello"]);
    assert!(plain.status.success());
    let line = String::from_utf8_lossy(&plain.stdout);
    assert!(
        line.contains("dim 384") && line.contains("norm 1.0000"),
        "{line}"
    );
}

#[test]
fn embed_without_texts_or_model_is_an_error() {
    let out = sdlab(&["embed"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: no texts to embed"), "{err}");

    let out = sdlab(&["embed", "hi", "--model", "/nonexistent/minilm"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("make models"), "{err}");
}

#[test]
fn both_backends_give_the_same_vectors_and_stats() {
    if !minilm_present() {
        return;
    }
    let texts = ["How do I read a file?", "short", "Tides follow the moon."];
    let run = |backend: &str| {
        let mut args = vec!["embed", "--json", "--stats", "--backend", backend];
        args.extend(texts);
        let out = sdlab(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("embedded 3 texts") && err.contains("texts/s"),
            "{err}"
        );
        unit_vectors(&out.stdout)
    };
    let (packed, candle) = (run("packed"), run("candle"));
    for ((t, a), (_, b)) in packed.iter().zip(&candle) {
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.9999, "{t}: cosine {cos}");
    }
    let out = sdlab(&["embed", "x", "--backend", "torch"]);
    assert!(!out.status.success());
}
