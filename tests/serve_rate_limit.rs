//! `sdlab serve --rate-limit`: over the limit the /v1 routes answer 429 with
//! OpenAI's error body at once, /health stays open, and after the period the
//! limit lets requests through again.

mod common;
use common::server::{http_get, Server};
use common::{synth, tmp};

#[test]
fn over_the_limit_is_429_and_health_stays_open() {
    let model = tmp("synth-rl");
    synth(&model, 3);
    // One request per 2 s, bursts of 2.
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--rate-limit",
        "0.5",
        "--rate-limit-burst",
        "2",
    ]);
    let statuses: Vec<(u16, String)> = (0..5)
        .map(|_| http_get(&server.url, "/v1/models").expect("a response"))
        .collect();
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<&String> = statuses
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, b)| b)
        .collect();
    assert_eq!((ok, limited.len()), (2, 3), "{statuses:?}");
    let body: serde_json::Value = serde_json::from_str(limited[0]).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    for _ in 0..5 {
        assert_eq!(http_get(&server.url, "/health").unwrap().0, 200);
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(http_get(&server.url, "/v1/models").unwrap().0, 200);
    let _ = std::fs::remove_dir_all(model);
}

#[test]
fn a_bad_rate_is_a_clear_error() {
    let out = common::sdlab(&["serve", "--model", "none", "--rate-limit=-1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rate-limit"), "{err}");
}
