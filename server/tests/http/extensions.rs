//! vLLM's extensions over HTTP: speculative decoding (the same completions
//! with and without `--num-speculative-tokens`, and the draft counters),
//! `return_token_ids`, and `--metrics-compat vllm`.

use super::common::*;
use serde_json::json;
use server::spec_decode::NgramConfig;

fn spec_options() -> server::runner::EngineOptions {
    server::runner::EngineOptions {
        speculative: Some(NgramConfig {
            num_speculative_tokens: 4,
            prompt_lookup_max: 3,
            prompt_lookup_min: 1,
        }),
        ..engine_options()
    }
}

#[tokio::test]
async fn speculative_server_answers_as_the_plain_one_and_counts_drafts() {
    let plain = TestServer::default_server();
    let spec = TestServer::start(server_config(), spec_options());
    let c = client();
    // A prompt that repeats itself, so the lookup has something to copy.
    let prompt = TEXTS[4].repeat(3);
    let mut body = greedy_completion(prompt.as_str(), 32);
    body["ignore_eos"] = json!(true);
    let want = post_ok(&c, &plain.url("/v1/completions"), &body).await;
    let got = post_ok(&c, &spec.url("/v1/completions"), &body).await;
    assert_eq!(got["choices"][0]["text"], want["choices"][0]["text"]);
    assert_eq!(got["usage"], want["usage"]);
    body["stream"] = json!(true);
    let streamed = post_sse(&c, &spec.url("/v1/completions"), &body).await;
    let text: String = streamed
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, want["choices"][0]["text"].as_str().unwrap());

    let s = scrape(&c, &spec.base).await;
    let drafted = metric(&s, "sdlab_spec_decode_draft_tokens_total").unwrap();
    let accepted = metric(&s, "sdlab_spec_decode_accepted_tokens_total").unwrap();
    assert!(drafted > 0.0 && accepted <= drafted, "{drafted} {accepted}");
    let p = scrape(&c, &plain.base).await;
    assert_eq!(
        metric(&p, "sdlab_spec_decode_draft_tokens_total"),
        Some(0.0)
    );
}

/// `return_token_ids`: the ids in the response are the prompt's encoding and
/// the generated tokens, streamed one id per chunk (none skipped), and
/// feeding them back as a prompt continues the text exactly.
#[tokio::test]
async fn token_ids_are_returned_and_continue_exactly() {
    let srv = TestServer::default_server();
    let c = client();
    let url = srv.url("/v1/completions");
    let mut body = greedy_completion(TEXTS[2], 12);
    body["ignore_eos"] = json!(true);
    body["return_token_ids"] = json!(true);
    let whole = post_ok(&c, &url, &body).await;
    let choice = &whole["choices"][0];
    let prompt: Vec<u64> = serde_json::from_value(choice["prompt_token_ids"].clone()).unwrap();
    let ids: Vec<u64> = serde_json::from_value(choice["token_ids"].clone()).unwrap();
    assert_eq!(
        prompt.len() as u64,
        whole["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(ids.len(), 12);
    body["stream"] = json!(true);
    let chunks: Vec<serde_json::Value> = post_sse(&c, &url, &body)
        .await
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let streamed: Vec<u64> = chunks
        .iter()
        .flat_map(|v| {
            v["choices"][0]["token_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(streamed, ids);
    assert_eq!(
        chunks[0]["choices"][0]["prompt_token_ids"],
        choice["prompt_token_ids"]
    );
    // Continue from the first 5 generated ids: the rest comes out the same.
    let mut cont = greedy_completion(json!([prompt.clone(), ids[..5].to_vec()].concat()), 7);
    cont["ignore_eos"] = json!(true);
    cont["return_token_ids"] = json!(true);
    let rest = post_ok(&c, &url, &cont).await;
    let rest_ids: Vec<u64> =
        serde_json::from_value(rest["choices"][0]["token_ids"].clone()).unwrap();
    assert_eq!(rest_ids, ids[5..].to_vec());
    // Without the flag, no ids.
    let plain = post_ok(&c, &url, &greedy_completion(TEXTS[2], 3)).await;
    assert!(plain["choices"][0].get("token_ids").is_none());
}

/// `--metrics-compat vllm` (on in the test config): the gateway-facing
/// names are in the same exposition, parseable, with the engine's values.
#[tokio::test]
async fn vllm_metric_names_are_exported() {
    let srv = TestServer::default_server();
    let c = client();
    post_ok(
        &c,
        &srv.url("/v1/completions"),
        &greedy_completion(TEXTS[1], 4),
    )
    .await;
    let s = scrape(&c, &srv.base).await;
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:lora_requests_info",
    ] {
        assert!(metric(&s, name).is_some(), "{name} missing");
    }
    assert_eq!(metric(&s, "vllm:num_requests_running"), Some(0.0));
    assert!(metric(&s, "vllm:generation_tokens_total").unwrap() >= 4.0);
}
