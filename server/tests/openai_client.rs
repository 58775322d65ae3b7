//! The HTTP API through the official `openai` Python client: the server runs
//! in-process on the synthetic model and `tests/openai_client.py` talks to it
//! (completion, chat, streamed chat equal to the non-streamed greedy text,
//! typed errors).
//!
//! The client lives in a virtual environment cached under the cargo target
//! directory, created with `python3 -m venv` and `pip install openai` on the
//! first run. Without Python or the package index the test prints why and
//! passes, unless `SDLAB_REQUIRE_NETWORK_TESTS=1`, where it fails.

mod common;

use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const API_KEY: &str = "sk-sdlab-openai-client-test";

/// Runs a command to the end; `Err` carries what it printed.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn has_openai(python: &Path) -> bool {
    python.is_file()
        && Command::new(python)
            .args(["-c", "import openai"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The cached venv's python, creating the venv (in a throwaway directory
/// renamed into place once `openai` is installed) when needed.
fn venv_python() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join("sdlab-openai-venv");
    let python = venv.join("bin").join("python");
    if has_openai(&python) {
        return Ok(python);
    }
    let tmp = root.join(format!("sdlab-openai-venv.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        run(Command::new("python3").args(["-m", "venv"]).arg(&tmp))?;
        run(Command::new(tmp.join("bin").join("python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",
            "30",
            "--retries",
            "2",
            "openai",
        ]))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&tmp, &venv).map_err(|e| format!("renaming the venv: {e}"))?;
    if has_openai(&python) {
        Ok(python)
    } else {
        Err(format!("{} cannot import openai", python.display()))
    }
}

#[test]
fn official_openai_python_client() {
    let python = match venv_python() {
        Ok(p) => p,
        Err(e) => {
            if std::env::var("SDLAB_REQUIRE_NETWORK_TESTS").is_ok_and(|v| v == "1") {
                panic!("could not set up the `openai` Python client: {e}");
            }
            eprintln!(
                "skipping: could not set up the `openai` Python client \
                 (set SDLAB_REQUIRE_NETWORK_TESTS=1 to make this a failure): {e}"
            );
            return;
        }
    };
    let config = server::http::ServerConfig {
        api_key: Some(API_KEY.into()),
        ..server_config()
    };
    let srv = TestServer::start(config, engine_options());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/openai_client.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(format!("{}/v1", srv.base))
        .arg(MODEL)
        .arg(API_KEY)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the Python client");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    eprintln!("{out}{err}");
    match status {
        Some(s) => assert!(s.success(), "the Python client failed ({s}):\n{out}{err}"),
        None => panic!("the Python client did not finish in 180 s:\n{out}{err}"),
    }
    assert!(out.contains("all checks passed"), "{out}");
    let stats = srv.state.engine.stats();
    assert_eq!(stats.num_blocks, stats.free_blocks, "{stats:?}");
}
