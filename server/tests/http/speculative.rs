//! Speculative decoding over HTTP: the same completions with and without
//! `--num-speculative-tokens`, streamed and not, and the draft counters on
//! `/metrics`.

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
