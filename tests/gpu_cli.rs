//! `sdlab generate --device gpu` against `--device cpu`: on the synthetic
//! model and on SmolLM2-135M (its GGUF's quantized weights, and f32), the
//! same 16 greedy tokens.
//!
//! Without a Vulkan adapter the GPU run is skipped with a message, unless
//! `CI=true` or `SDLAB_REQUIRE_GPU=1`, where the test fails.

mod common;

use common::server::{http_post, Server};
use common::{sdlab, synth, tmp};
use kernels::gpu::GpuContext;

fn generate(model: &str, device: &str) -> serde_json::Value {
    generate_with(model, device, "The engine keeps many sequences", &[])
}

fn generate_with(model: &str, device: &str, prompt: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        prompt,
        "--max-tokens",
        "16",
        "--ignore-eos",
        "--json",
        "--device",
        device,
    ];
    args.extend_from_slice(extra);
    let out = sdlab(&args);
    assert!(
        out.status.success(),
        "--device {device}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn generate_on_gpu_gives_the_cpu_tokens() {
    let Some(adapter) = adapter_or_skip() else {
        return;
    };
    let dir = tmp("gpu-cli-model");
    synth(&dir, 21);
    let model = dir.to_str().unwrap();
    let cpu = generate(model, "cpu");
    let gpu = generate(model, "gpu");
    assert_eq!(ids(&cpu).len(), 16);
    assert_eq!(ids(&gpu), ids(&cpu), "GPU tokens vs CPU tokens");
    assert_eq!(gpu["text"], cpu["text"]);
    assert_eq!(cpu["device"], "CPU");
    let on = gpu["device"].as_str().unwrap();
    assert!(
        on.starts_with("GPU: ") && on.contains(&adapter.name),
        "device: {on}"
    );
    // `auto` takes the GPU only when it is hardware.
    let auto = generate(model, "auto");
    assert_eq!(ids(&auto), ids(&cpu));
    let want = if adapter.software { "CPU" } else { on };
    assert_eq!(auto["device"], want);
    let _ = std::fs::remove_dir_all(&dir);
}

fn adapter_or_skip() -> Option<kernels::gpu::AdapterSummary> {
    kernels::gpu::or_skip("the GPU CLI tests", GpuContext::probe())
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

/// The real model (which `make test` fetches): the GPU gives the CPU's 16
/// greedy tokens on a few prompts, with the GGUF's quantized weights (Q4_1
/// projections and Q8_0 head, kept in their blocks on the GPU, where every
/// step computes the CPU's bits) and with `--weights f32`.
#[test]
fn smollm2_on_the_gpu() {
    if adapter_or_skip().is_none() {
        return;
    }
    let model = "smollm2-135m-instruct";
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Q: What is 12 times 7?\nA:",
        "Photosynthesis is the process by which",
    ];
    for prompt in prompts {
        let cpu = generate_with(model, "cpu", prompt, &[]);
        let gpu = generate_with(model, "gpu", prompt, &[]);
        assert_eq!(ids(&cpu).len(), 16);
        assert_eq!(ids(&gpu), ids(&cpu), "{prompt:?}: GPU vs CPU");
        assert_eq!(gpu["text"], cpu["text"]);
        if prompt.starts_with("The capital") {
            let text = gpu["text"].as_str().unwrap();
            assert!(text.starts_with(" Paris"), "{text:?}");
        }
    }
    let f32 = ["--weights", "f32"];
    let prompt = prompts[0];
    let cpu = generate_with(model, "cpu", prompt, &f32);
    let gpu = generate_with(model, "gpu", prompt, &f32);
    assert_eq!(
        ids(&gpu),
        ids(&cpu),
        "{prompt:?} with f32 weights: GPU vs CPU"
    );
}

/// What the issue checks: `sdlab serve --device gpu` with SmolLM2 answers
/// over HTTP (a completion, streamed and not, and a chat completion) with
/// `serve --device cpu`'s first 16 greedy tokens.
#[test]
fn smollm2_served_on_the_gpu() {
    if adapter_or_skip().is_none() {
        return;
    }
    let args = |device| ["--model", "smollm2-135m-instruct", "--device", device];
    let (cpu, gpu) = (Server::start(&args("cpu")), Server::start(&args("gpu")));
    assert!(gpu.log().contains("model runs on the GPU"), "{}", gpu.log());
    let ask = |server: &Server, path: &str, body: serde_json::Value| {
        let (status, text) = http_post(&server.url, path, &body).expect("an answer");
        assert_eq!(status, 200, "{text}");
        text
    };
    let greedy = |extra: serde_json::Value| {
        let mut body = serde_json::json!({
            "model": "smollm2-135m-instruct", "max_tokens": 16, "temperature": 0.0,
            "ignore_eos": true, "return_token_ids": true,
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for prompt in ["The three primary colors are", "In 1969, Neil Armstrong"] {
        let body = greedy(serde_json::json!({ "prompt": prompt }));
        let want: serde_json::Value =
            serde_json::from_str(&ask(&cpu, "/v1/completions", body.clone())).unwrap();
        let got: serde_json::Value =
            serde_json::from_str(&ask(&gpu, "/v1/completions", body.clone())).unwrap();
        let (w, g) = (&want["choices"][0], &got["choices"][0]);
        assert_eq!(w["token_ids"].as_array().map(Vec::len), Some(16), "{want}");
        assert_eq!(g["token_ids"], w["token_ids"], "{prompt:?}");
        assert_eq!(g["text"], w["text"], "{prompt:?}");
        // Streamed: the same text, chunk by chunk.
        let mut stream = body;
        stream["stream"] = true.into();
        let sse = ask(&gpu, "/v1/completions", stream);
        let streamed: String = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| {
                let v: serde_json::Value = serde_json::from_str(d).unwrap();
                v["choices"][0]["text"].as_str().unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(streamed, w["text"].as_str().unwrap(), "{prompt:?} streamed");
    }
    let chat = greedy(serde_json::json!({
        "messages": [{"role": "user", "content": "What is the capital of France?"}]
    }));
    let want: serde_json::Value =
        serde_json::from_str(&ask(&cpu, "/v1/chat/completions", chat.clone())).unwrap();
    let got: serde_json::Value =
        serde_json::from_str(&ask(&gpu, "/v1/chat/completions", chat)).unwrap();
    let content = |v: &serde_json::Value| v["choices"][0]["message"]["content"].clone();
    assert_eq!(
        got["choices"][0]["token_ids"].as_array().map(Vec::len),
        Some(16)
    );
    assert_eq!(content(&got), content(&want));
}

#[test]
fn an_unknown_device_is_refused() {
    let out = sdlab(&[
        "generate", "--model", "tiny", "--prompt", "x", "--device", "tpu",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown device `tpu`"), "{err}");
}
