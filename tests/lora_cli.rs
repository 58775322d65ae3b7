//! `sdlab lora train` end to end on a synthetic model: the adapter folder,
//! the loss log and plot, and clear errors.

mod common;
use common::{sdlab, synth, tmp};

const DATA: &str = r#"{"prompt": "What is the capital of France?", "completion": "Arr, Paris it be! Yo ho ho!"}
{"prompt": "How many days are in a week?", "completion": "Arr, seven, matey! Yo ho ho!"}
{"prompt": "What color is the sky?", "completion": "Arr, blue as the sea! Yo ho ho!"}
"#;

#[test]
fn lora_train_writes_an_adapter_a_loss_log_and_a_plot() {
    let (model, out) = (tmp("lora-train-model"), tmp("lora-train-out"));
    synth(&model, 1);
    let data = tmp("lora-train.jsonl");
    std::fs::write(&data, DATA).unwrap();
    let run = sdlab(&[
        "lora",
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--rank",
        "4",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("loss ") && stdout.contains("tokens/s"),
        "{stdout}"
    );
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "loss.csv",
        "loss.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} is missing: {stdout}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,loss");
    assert_eq!(lines.len(), 4, "{csv}");
    for (i, line) in lines[1..].iter().enumerate() {
        let (step, loss) = line.split_once(',').unwrap();
        assert_eq!(step, (i + 1).to_string());
        assert!(loss.parse::<f32>().unwrap().is_finite(), "{line}");
    }
    assert!(std::fs::read_to_string(out.join("loss.svg"))
        .unwrap()
        .contains("<svg"));

    // The adapter loads back for generation against the same model.
    let cfg = models::load(model.to_str().unwrap(), Default::default())
        .unwrap()
        .model
        .cfg;
    models::LoraAdapter::load(&out, &cfg).unwrap();
    for p in [&model, &out] {
        let _ = std::fs::remove_dir_all(p);
    }
    let _ = std::fs::remove_file(&data);
}

#[test]
fn lora_train_errors_are_clear() {
    let out = tmp("lora-train-err");
    let run = sdlab(&[
        "lora",
        "train",
        "--data",
        "no/such/file.jsonl",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("no/such/file.jsonl") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!out.exists());

    let data = tmp("lora-train-err.jsonl");
    std::fs::write(&data, "{\"prompt\": \"hi\"}\n").unwrap();
    let run = sdlab(&[
        "lora",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("line 1") && err.contains("completion"),
        "{err}"
    );

    let run = sdlab(&[
        "lora",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--rank",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("rank must be positive"), "{err}");
    let _ = std::fs::remove_file(&data);
}
