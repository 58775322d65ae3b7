//! The engine over [`server::runner::GpuRunner`] (`EngineOptions.device =
//! Gpu`) against the engine on the CPU: concurrent requests, prompts split
//! into prefill chunks by a small token budget, the same greedy tokens.
//!
//! Without a Vulkan adapter the tests skip with a message, unless `CI=true`
//! or `SDLAB_REQUIRE_GPU=1`, where they fail.

mod common;

use models::gpu::GpuContext;
use server::engine::{collect, Engine, FinishReason, GenerateRequest};
use server::lora::ActiveAdapter;
use server::runner::{start_llama_engine, Device, EngineOptions};
use server::sampler::SamplingParams;
use std::sync::Arc;

fn gpu_present() -> bool {
    models::gpu::or_skip("the GPU runner tests", GpuContext::probe()).is_some()
}

fn engine(device: Device) -> Engine {
    let loaded = models::load(common::model_dir().to_str().unwrap(), Default::default()).unwrap();
    let opts = EngineOptions {
        // Prompts of 20-60 tokens in chunks of at most 24 tokens a step,
        // mixed with other sequences' decodes.
        max_num_batched_tokens: 24,
        max_num_seqs: 8,
        device,
        ..common::engine_options()
    };
    start_llama_engine(loaded, &opts).unwrap()
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens: n,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

/// All prompts submitted at once; each one's tokens.
/// All prompts submitted at once, each under its adapter (if any) for
/// `max_tokens` greedy tokens; each one's tokens.
fn run_all(
    engine: &Engine,
    prompts: &[Vec<u32>],
    adapters: &[Option<Arc<ActiveAdapter>>],
    max_tokens: usize,
) -> Vec<Vec<u32>> {
    let rxs: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            engine
                .add_request(GenerateRequest {
                    prompt_tokens: p.clone(),
                    params: greedy(max_tokens),
                    adapter: adapters.get(i).cloned().flatten(),
                    resume_tokens: 0,
                })
                .unwrap()
                .1
        })
        .collect();
    rxs.into_iter()
        .map(|mut rx| {
            let out = collect(&mut rx).unwrap();
            assert_eq!(out.error, None);
            assert_eq!(out.finish_reason, FinishReason::Length);
            out.token_ids
        })
        .collect()
}

#[test]
fn engine_on_the_gpu_gives_the_cpu_tokens() {
    if !gpu_present() {
        return;
    }
    let prompts: Vec<Vec<u32>> = [(20usize, 3usize), (61, 7), (33, 11), (5, 13), (47, 5)]
        .iter()
        .map(|&(len, mul)| {
            (0..len)
                .map(|i| ((i * mul + len) % 300 + 3) as u32)
                .collect()
        })
        .collect();
    let gpu = engine(Device::Gpu);
    assert!(gpu.device().starts_with("GPU: "), "{}", gpu.device());
    let cpu = engine(Device::Cpu);
    assert_eq!(cpu.device(), "CPU");
    let (g, c) = (
        run_all(&gpu, &prompts, &[], 16),
        run_all(&cpu, &prompts, &[], 16),
    );
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        assert_eq!(g.len(), 16);
        assert_eq!(g, c, "prompt {i}: GPU engine vs CPU engine");
    }
    // More than one step was batched, or the test proves little.
    assert!(gpu.stats().steps < 16 * prompts.len() as u64);
}

#[test]
fn lora_requests_on_the_gpu_give_the_cpu_tokens() {
    // Two adapters and the base model in one engine, all at once: the
    // GPU's BGMV path against the CPU's.
    if !gpu_present() {
        return;
    }
    let cfg = models::load(common::model_dir().to_str().unwrap(), Default::default())
        .unwrap()
        .model
        .cfg;
    let adapter = |key: u32, targets: &[models::LoraTarget], seed| {
        let w = models::LoraAdapter::synth(&cfg, 4, targets, seed).unwrap();
        Arc::new(ActiveAdapter::new(&format!("a{key}"), key, w))
    };
    let adapters = [
        Some(adapter(1, &models::LoraTarget::ALL, 3)),
        None,
        Some(adapter(
            2,
            &[models::LoraTarget::Q, models::LoraTarget::V],
            4,
        )),
        Some(adapter(1, &models::LoraTarget::ALL, 3)),
    ];
    // Requests 0 and 1 share a prompt: with and without the adapter.
    let prompts: Vec<Vec<u32>> = [0, 0, 1, 2]
        .iter()
        .map(|i| (0..12 + 5 * i).map(|t| t * 7 % 290 + 4).collect())
        .collect();
    let run = |engine: &Engine| run_all(engine, &prompts, &adapters, 12);
    let (g, c) = (run(&engine(Device::Gpu)), run(&engine(Device::Cpu)));
    assert_eq!(g, c, "GPU engine vs CPU engine under LoRA");
    assert_ne!(c[0], c[1], "the adapter changed nothing");
}

#[test]
fn device_names_parse() {
    for (s, d) in [
        ("cpu", Device::Cpu),
        ("GPU", Device::Gpu),
        ("auto", Device::Auto),
    ] {
        assert_eq!(s.parse::<Device>().unwrap(), d);
        assert_eq!(d.to_string(), s.to_ascii_lowercase());
    }
    assert!("tpu"
        .parse::<Device>()
        .unwrap_err()
        .contains("cpu, gpu, auto"));
    assert_eq!(Device::Cpu.pick(), Device::Cpu);
    assert_eq!(Device::Gpu.pick(), Device::Gpu);
    assert_ne!(Device::Auto.pick(), Device::Auto);
}
