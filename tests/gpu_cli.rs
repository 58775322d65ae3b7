//! `sdlab generate --device gpu` against `--device cpu` on the synthetic
//! model: the same 16 greedy tokens.
//!
//! Without a Vulkan adapter the GPU run is skipped with a message, unless
//! `CI=true` or `SDLAB_REQUIRE_GPU=1`, where the test fails.

mod common;

use common::{sdlab, synth, tmp};
use kernels::gpu::GpuContext;

fn required() -> bool {
    let on = |k: &str| {
        std::env::var(k)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false)
    };
    on("CI") || on("SDLAB_REQUIRE_GPU")
}

fn generate(model: &str, device: &str) -> serde_json::Value {
    let out = sdlab(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "The engine keeps many sequences",
        "--max-tokens",
        "16",
        "--ignore-eos",
        "--json",
        "--device",
        device,
    ]);
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
    let adapter = match GpuContext::probe() {
        Ok(a) => a,
        Err(e) if required() => {
            panic!("no GPU adapter, and CI / SDLAB_REQUIRE_GPU requires one: {e}")
        }
        Err(e) => {
            eprintln!("skipping the GPU CLI test: {e} (set SDLAB_REQUIRE_GPU=1 to fail instead)");
            return;
        }
    };
    let dir = tmp("gpu-cli-model");
    synth(&dir, 21);
    let model = dir.to_str().unwrap();
    let cpu = generate(model, "cpu");
    let gpu = generate(model, "gpu");
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v["token_ids"]
            .as_array()
            .expect("token_ids")
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect()
    };
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

#[test]
fn an_unknown_device_is_refused() {
    let out = sdlab(&[
        "generate", "--model", "tiny", "--prompt", "x", "--device", "tpu",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown device `tpu`"), "{err}");
}
