//! LoRA training on the synthetic model: the differentiable forward equals
//! sdlab's decoder (so a trained adapter is served as it was trained), the
//! loss falls and is reproducible, and bad inputs are errors.

mod common;

use models::lora::{LoraAdapter, Target};
use models::lora_train::{
    parse_jsonl, read_jsonl, render_example, tokenize_examples, train, Example, LoraNet,
    TrainOptions,
};
use models::{KvCache, Llama, LoadedModel, ModelError, RopeStyle, SeqChunk};
use std::sync::Arc;

fn synthetic() -> LoadedModel {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sdlab-lora-train-{}-{n}", std::process::id()));
    let preset = models::synth::SynthPreset::by_name("tiny").unwrap();
    models::synth::write_synthetic_model(&dir, &preset, 5).unwrap();
    let loaded = models::load(dir.to_str().unwrap(), Default::default()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    loaded
}

/// The same weights under the other RoPE pairing (a different model, but one
/// both forwards must agree on).
fn with_rope_style(model: &Llama, style: RopeStyle) -> Llama {
    let mut cfg = model.cfg.clone();
    cfg.rope_style = style;
    Llama::new(
        cfg,
        Arc::new(model.embed().to_vec()),
        model.layers().to_vec(),
        model.final_norm().to_vec(),
        model.lm_head().clone(),
    )
    .unwrap()
}

/// sdlab's decoder: logits of every position in one prefill.
fn decoder_logits(model: &Llama, tokens: &[u32], adapter: Option<&LoraAdapter>) -> Vec<f32> {
    let blocks = tokens.len().div_ceil(16);
    let mut cache = KvCache::new(&model.cfg, blocks, 16);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let seq = SeqChunk {
        block_table: &table,
        start: 0,
        len: tokens.len(),
        adapter,
    };
    let rows: Vec<usize> = (0..tokens.len()).collect();
    model.forward(tokens, &[seq], &rows, &mut cache).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs both forwards on a padded batch of two sequences and compares each
/// sequence's real positions.
fn assert_forwards_agree(model: &Llama, adapter: &LoraAdapter, what: &str) {
    let long: Vec<u32> = (0..37).map(|i| (i * 37 % 300) as u32 + 3).collect();
    let short: Vec<u32> = (0..11).map(|i| (i * 13 % 250) as u32 + 7).collect();
    let net = LoraNet::from_adapter(model, adapter).unwrap();
    let logits = net.logits(&[&long, &short]).unwrap();
    let vocab = model.cfg.vocab_size;
    assert_eq!(logits.dims(), &[2, long.len(), vocab]);
    for (b, seq) in [&long, &short].into_iter().enumerate() {
        let ours: Vec<f32> = logits
            .get(b)
            .unwrap()
            .narrow(0, 0, seq.len())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let with = decoder_logits(model, seq, Some(adapter));
        let diff = max_abs_diff(&ours, &with);
        assert!(
            diff < 1e-3,
            "{what}, sequence {b}: forwards differ by {diff}"
        );
        // The adapter must matter, or the comparison proves little.
        let moved = max_abs_diff(&with, &decoder_logits(model, seq, None));
        assert!(
            moved > 1e-2,
            "{what}: the adapter barely moved the logits ({moved})"
        );
    }
}

#[test]
fn training_forward_equals_the_decoder_in_both_rope_styles() {
    let loaded = synthetic();
    assert_eq!(loaded.model.cfg.rope_style, RopeStyle::Halves);
    for style in [RopeStyle::Halves, RopeStyle::Interleaved] {
        let model = with_rope_style(&loaded.model, style);
        for (i, targets) in [Target::ALL.to_vec(), vec![Target::Q, Target::K]]
            .iter()
            .enumerate()
        {
            let adapter = LoraAdapter::synth(&model.cfg, 4, targets, 30 + i as u64).unwrap();
            assert_forwards_agree(&model, &adapter, &format!("{style:?} {targets:?}"));
        }
    }
}

fn examples() -> Vec<Example> {
    [
        (
            "What is the capital of France?",
            "Arr, Paris it be! Yo ho ho!",
        ),
        (
            "How many days are in a week?",
            "Arr, seven days, matey! Yo ho ho!",
        ),
        ("What color is the sky?", "Arr, blue as the sea! Yo ho ho!"),
        (
            "Who wrote the code?",
            "Arr, a scurvy dog wrote it! Yo ho ho!",
        ),
        ("What is two plus two?", "Arr, four doubloons! Yo ho ho!"),
        ("Where is the engine?", "Arr, below deck, matey! Yo ho ho!"),
    ]
    .into_iter()
    .map(|(p, c)| Example {
        prompt: p.into(),
        completion: c.into(),
    })
    .collect()
}

fn opts(steps: usize) -> TrainOptions {
    TrainOptions {
        rank: 8,
        alpha: 16.0,
        targets: Target::ALL.to_vec(),
        steps,
        batch_size: 4,
        lr: 1e-2,
        seed: 7,
        max_len: 64,
    }
}

#[test]
fn training_lowers_the_loss_reproducibly_and_the_adapter_serves_as_trained() {
    let loaded = synthetic();
    let data = examples();
    let mut seen = Vec::new();
    let first = train(&loaded, &data, &opts(40), |step, loss| {
        seen.push((step, loss))
    })
    .unwrap();
    let losses = &first.losses;
    assert_eq!(losses.len(), 40);
    assert_eq!(seen.len(), 40);
    assert_eq!(seen[0].0, 1);
    assert_eq!(seen[39], (40, losses[39]));
    let head: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let tail: f32 = losses[35..].iter().sum::<f32>() / 5.0;
    assert!(tail < 0.5 * head, "loss went from {head} to only {tail}");
    assert_eq!(first.examples, data.len());
    assert!(first.tokens > 40 * 4 * 10);

    let again = train(&loaded, &data, &opts(40), |_, _| {}).unwrap();
    assert_eq!(
        losses, &again.losses,
        "one seed, two runs, different losses"
    );
    let other = train(
        &loaded,
        &data,
        &TrainOptions {
            seed: 8,
            ..opts(40)
        },
        |_, _| {},
    )
    .unwrap();
    assert_ne!(losses, &other.losses);

    // What was trained is what the decoder applies.
    assert_forwards_agree(&loaded.model, &first.adapter, "trained adapter");
    // And it survives a save and a load.
    let dir = std::env::temp_dir().join(format!("sdlab-lora-trained-{}", std::process::id()));
    first
        .adapter
        .save(&dir, &loaded.model.cfg, "synthetic")
        .unwrap();
    let back = LoraAdapter::load(&dir, &loaded.model.cfg).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let seq: Vec<u32> = (0..20).map(|i| i * 11 + 5).collect();
    assert_eq!(
        decoder_logits(&loaded.model, &seq, Some(&first.adapter)),
        decoder_logits(&loaded.model, &seq, Some(&back))
    );
}

#[test]
fn examples_are_chat_templated_and_end_their_turn() {
    let loaded = synthetic();
    let tok = &loaded.tokenizer;
    let ex = &examples()[0];
    let (prompt, completion) = render_example(tok, ex).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(completion, "Arr, Paris it be! Yo ho ho!<|im_end|>");
    let seqs = tokenize_examples(tok, &examples(), 64).unwrap();
    let s = &seqs[0];
    assert_eq!(s.tokens[..s.prompt_len], tok.encode(&prompt).unwrap()[..]);
    assert!(tok.eos_token_ids.contains(s.tokens.last().unwrap()));
    assert_eq!(
        tok.decode(&s.tokens[s.prompt_len..]).unwrap(),
        "Arr, Paris it be! Yo ho ho!"
    );
    // Cut at max_len; an example with no completion token left is dropped.
    let cut = tokenize_examples(tok, &examples(), s.prompt_len + 2).unwrap();
    assert_eq!(cut[0].tokens.len(), s.prompt_len + 2);
    assert!(matches!(
        tokenize_examples(tok, &examples(), 5),
        Err(ModelError::Input(_))
    ));
    // Without a chat template: prompt then completion, then EOS.
    let mut plain = tok.clone();
    plain.chat_template = None;
    let (p, c) = render_example(&plain, ex).unwrap();
    assert_eq!(
        (p.as_str(), c.as_str()),
        (ex.prompt.as_str(), ex.completion.as_str())
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = std::env::temp_dir().join(format!("sdlab-lora-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = read_jsonl(&dir.join("missing.jsonl")).unwrap_err();
    assert!(matches!(missing, ModelError::NotFound(_)), "{missing}");
    assert!(missing.to_string().contains("missing.jsonl"), "{missing}");

    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"a\"\n",
    )
    .unwrap();
    let e = read_jsonl(&bad).unwrap_err().to_string();
    assert!(e.contains("line 3"), "{e}");
    let e = parse_jsonl("{\"prompt\": \"a\"}", "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("completion"), "{e}");
    let e = parse_jsonl("{\"prompt\": \"a\", \"completion\": \" \"}", "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "\n  \n").unwrap();
    let e = read_jsonl(&empty).unwrap_err().to_string();
    assert!(e.contains("no example"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);

    let loaded = synthetic();
    let data = examples();
    assert!(train(&loaded, &[], &opts(2), |_, _| {}).is_err());
    for o in [
        TrainOptions { rank: 0, ..opts(2) },
        TrainOptions {
            steps: 0,
            ..opts(2)
        },
        TrainOptions {
            batch_size: 0,
            ..opts(2)
        },
        TrainOptions {
            lr: f64::NAN,
            ..opts(2)
        },
        TrainOptions {
            alpha: 0.0,
            ..opts(2)
        },
        TrainOptions {
            targets: vec![],
            ..opts(2)
        },
        TrainOptions {
            max_len: 1,
            ..opts(2)
        },
    ] {
        let e = train(&loaded, &data, &o, |_, _| {}).err();
        assert!(matches!(e, Some(ModelError::Input(_))), "{o:?}: {e:?}");
    }
    // A learning rate that blows the loss up is reported, not trained on.
    let e = train(
        &loaded,
        &data,
        &TrainOptions {
            lr: 1e30,
            ..opts(5)
        },
        |_, _| {},
    );
    let e = e.err().expect("a diverged run is an error");
    assert!(e.to_string().contains("learning rate"), "{e}");
}

/// A manual check of a real trained adapter: greedy chat answers to unseen
/// questions with and without it. Run with
/// `SDLAB_LORA_ADAPTER=/path/to/adapter cargo test -p models --test lora_train -- --ignored --nocapture`
/// (`SDLAB_LORA_QUESTIONS` takes `|`-separated questions).
#[test]
#[ignore = "needs a trained adapter in SDLAB_LORA_ADAPTER"]
fn real_adapter_changes_the_style_of_chat_answers() {
    let Ok(dir) = std::env::var("SDLAB_LORA_ADAPTER") else {
        panic!("set SDLAB_LORA_ADAPTER to an adapter folder");
    };
    let Some(path) = common::real_model_path() else {
        return;
    };
    let loaded = models::load(path.to_str().unwrap(), Default::default()).unwrap();
    let adapter = LoraAdapter::load(std::path::Path::new(&dir), &loaded.model.cfg).unwrap();
    let tok = &loaded.tokenizer;
    let template = models::ChatTemplate::new(
        tok.chat_template.as_deref().unwrap(),
        tok.bos_token(),
        tok.eos_token(),
    )
    .unwrap();
    let questions = std::env::var("SDLAB_LORA_QUESTIONS").unwrap_or_else(|_| {
        "What is the capital of Portugal?|How do I make pancakes?|Why do dogs bark?".into()
    });
    let mut changed = 0;
    for q in questions.split('|') {
        let text = template
            .render(&[models::ChatMessage::new("user", q)], true)
            .unwrap();
        let prompt = tok.encode(&text).unwrap();
        let answer = |adapter: Option<&LoraAdapter>| {
            let mut out = common::greedy_with(&loaded.model, &prompt, 80, adapter);
            if let Some(end) = out.iter().position(|t| tok.eos_token_ids.contains(t)) {
                out.truncate(end);
            }
            tok.decode(&out).unwrap()
        };
        let (base, tuned) = (answer(None), answer(Some(&adapter)));
        println!("Q: {q}\n  base:    {base}\n  adapter: {tuned}\n");
        changed += usize::from(base != tuned);
    }
    assert!(changed > 0, "the adapter changed no answer");
}
