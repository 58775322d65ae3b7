//! all-MiniLM-L6-v2 on candle against sentence-transformers: token ids and
//! vectors from `shared/fixtures/minilm_golden.jsonl`, batch invariance,
//! truncation at 256 tokens, and clear errors.
//!
//! Tests that need the real model skip with a message when `make models` has
//! not fetched it, and fail when `SDLAB_REQUIRE_REAL_MODELS=1`.

use models::bert::{Backend, SentenceEmbedder};
use models::ModelError;
use std::path::PathBuf;

/// The all-MiniLM-L6-v2 folder, if fetched (see the module doc for the rule).
fn minilm_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2");
    if ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| p.join(f).is_file())
    {
        return Some(p);
    }
    if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is missing: run `make models`", p.display());
    }
    eprintln!("skipping: {} is missing (run `make models`)", p.display());
    None
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/minilm_golden.jsonl")
}

#[derive(serde::Deserialize)]
struct Golden {
    text: String,
    input_ids: Vec<u32>,
    vector: Vec<f32>,
}

fn goldens() -> Option<Vec<Golden>> {
    let p = golden_path();
    let Ok(text) = std::fs::read_to_string(&p) else {
        if std::env::var("SDLAB_REQUIRE_REAL_MODELS").is_ok_and(|v| v == "1") {
            panic!("{} is missing", p.display());
        }
        eprintln!("skipping: {} is missing", p.display());
        return None;
    };
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

/// Cosine similarity in f64, so `1 - cos` below 1e-7 still shows.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    dot / (na.sqrt() * nb.sqrt()).max(1e-300)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn matches_sentence_transformers_ids_and_vectors() {
    let (Some(dir), Some(cases)) = (minilm_path(), goldens()) else {
        return;
    };
    for backend in [Backend::Packed, Backend::Candle] {
        parity(&dir, &cases, backend);
    }
}

fn parity(dir: &std::path::Path, cases: &[Golden], backend: Backend) {
    let m = SentenceEmbedder::load_with(dir, backend).unwrap();
    assert_eq!(m.dim(), 384);
    assert_eq!(m.max_seq_len(), 256);
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let ids = m.tokenize(&texts).unwrap();
    for (c, got) in cases.iter().zip(&ids) {
        assert_eq!(got, &c.input_ids, "input ids of {:?}", c.text);
    }
    // All at once (one padded batch of mixed lengths) and one at a time.
    let batched = m.embed(&texts).unwrap();
    let mut min = (f64::INFINITY, "");
    let mut max_diff = 0f32;
    for (c, v) in cases.iter().zip(&batched) {
        assert_eq!(v.len(), 384);
        assert!((norm(v) - 1.0).abs() < 1e-4, "norm of {:?}", c.text);
        let alone = m.embed(&[c.text.as_str()]).unwrap();
        for got in [v, &alone[0]] {
            let cos = cosine(got, &c.vector);
            if cos < min.0 {
                min = (cos, c.text.as_str());
            }
            let diff = got.iter().zip(&c.vector).map(|(a, b)| (a - b).abs());
            max_diff = diff.fold(max_diff, f32::max);
        }
    }
    // The fixture has 6 decimals, so max |diff| cannot show less than 5e-7.
    eprintln!(
        "{backend:?}: min cosine to sentence-transformers over {} goldens: {:.7} \
         (1 - min = {:.1e}, {:?}); max |component diff| {max_diff:.1e}",
        cases.len(),
        min.0,
        1.0 - min.0,
        min.1
    );
    assert!(
        min.0 >= 0.999,
        "{backend:?}: min cosine {} on {:?}",
        min.0,
        min.1
    );
}

#[test]
fn a_text_alone_and_in_a_padded_batch_agree() {
    let Some(dir) = minilm_path() else {
        return;
    };
    for backend in [Backend::Packed, Backend::Candle] {
        batch_invariance(&dir, backend);
    }
}

fn batch_invariance(dir: &std::path::Path, backend: Backend) {
    let m = SentenceEmbedder::load_with(dir, backend)
        .unwrap()
        .with_batch_size(8)
        .unwrap();
    let long = "Python is an interpreted, interactive, object-oriented programming \
                language that incorporates modules, exceptions, dynamic typing, very \
                high level dynamic data types, and classes. ";
    let texts = [
        "short",
        "A man is eating food.",
        long,
        "",
        "The quick brown fox jumps over the lazy dog, twice, while the cat watches.",
    ];
    let batched = m.embed(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    let mut min = f64::INFINITY;
    for (t, v) in texts.iter().zip(&batched) {
        let alone = m.embed(&[t]).unwrap();
        min = min.min(cosine(&alone[0], v));
    }
    eprintln!(
        "{backend:?}: min cosine alone vs padded batch: {min:.8} (1 - min = {:.1e})",
        1.0 - min
    );
    assert!(min >= 0.9999, "{backend:?}: min cosine {min}");
    // Order is kept even though batches are sorted by length.
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let back = m.embed(&reversed).unwrap();
    for (v, w) in batched.iter().zip(back.iter().rev()) {
        assert!(cosine(v, w) >= 0.9999);
    }
}

#[test]
fn long_texts_truncate_to_256_tokens() {
    let Some(dir) = minilm_path() else {
        return;
    };
    let m = SentenceEmbedder::load(&dir).unwrap();
    let text = (0..1000)
        .map(|i| format!("word{}", i % 37))
        .collect::<Vec<_>>()
        .join(" ");
    let ids = m.tokenize(&[&text]).unwrap();
    assert_eq!(ids[0].len(), 256);
    assert_eq!(ids[0][0], 101, "[CLS] first");
    assert_eq!(ids[0][255], 102, "[SEP] kept last");
    let v = m.embed(&[&text, "short"]).unwrap();
    assert_eq!(v[0].len(), 384);
    assert!((norm(&v[0]) - 1.0).abs() < 1e-4);
}

#[test]
fn empty_inputs_do_not_fail() {
    let Some(dir) = minilm_path() else {
        return;
    };
    let m = SentenceEmbedder::load(&dir).unwrap();
    assert!(m.embed(&[]).unwrap().is_empty());
    let v = m.embed(&["", "   "]).unwrap();
    assert_eq!(m.tokenize(&[""]).unwrap()[0], vec![101, 102]);
    assert!((norm(&v[0]) - 1.0).abs() < 1e-4);
    assert!(cosine(&v[0], &v[1]) > 0.9999, "both are [CLS] [SEP]");
    assert!(matches!(
        m.embed_ids(&[vec![101, 99_999, 102]]),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(
        m.embed_ids(&[vec![101; 300]]),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(
        SentenceEmbedder::load(&dir).unwrap().with_batch_size(0),
        Err(ModelError::Input(_))
    ));
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let dir = std::env::temp_dir().join("sdlab-no-such-minilm-folder");
    let err = SentenceEmbedder::load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::NotFound(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("make models"), "{msg}");
    assert!(msg.contains("sdlab-no-such-minilm-folder"), "{msg}");

    // A folder without the weights names the missing file.
    let partial = std::env::temp_dir().join(format!("sdlab-partial-minilm-{}", std::process::id()));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("config.json"), "{}").unwrap();
    let err = SentenceEmbedder::load(&partial).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(&partial);
}

#[test]
fn packed_and_candle_backends_agree() {
    let Some(dir) = minilm_path() else {
        return;
    };
    let packed = SentenceEmbedder::load_with(&dir, Backend::Packed).unwrap();
    let candle = SentenceEmbedder::load_with(&dir, Backend::Candle).unwrap();
    assert_eq!(packed.backend(), Backend::Packed);
    // More rows than the small-batch kernel takes, so both GEMM paths run.
    let texts: Vec<String> = (0..24)
        .map(|i| {
            format!(
                "Sentence {i} says that {} is {} words long.",
                "spam ".repeat(i % 7),
                i * 3
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    let (a, b) = (packed.embed(&refs).unwrap(), candle.embed(&refs).unwrap());
    let min = a
        .iter()
        .zip(&b)
        .map(|(x, y)| cosine(x, y))
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "packed vs candle: min cosine {min:.9} (1 - min = {:.1e})",
        1.0 - min
    );
    assert!(min >= 0.99999, "min cosine {min}");
}
