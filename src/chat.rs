//! `sdlab chat`: an interactive conversation on the engine, streamed token
//! by token. One line in, one answer out; `/reset` clears the history and an
//! empty line or end of input quits.

use anyhow::{bail, Result};
use models::{ChatMessage, ChatTemplate};
use server::engine::{Engine, EngineEvent, GenerateRequest};
use server::lora::ActiveAdapter;
use server::sampler::SamplingParams;
use std::io::{BufRead, Write};
use std::sync::Arc;

pub fn run(
    engine: &Engine,
    name: &str,
    params: SamplingParams,
    adapter: Option<Arc<ActiveAdapter>>,
) -> Result<()> {
    let tok = engine.tokenizer();
    let Some(source) = &tok.chat_template else {
        bail!("{name} has no chat template")
    };
    let template = ChatTemplate::new(source, tok.bos_token(), tok.eos_token())?;
    let mut history: Vec<ChatMessage> = Vec::new();
    eprintln!("chatting with {name}; an empty line quits, /reset clears the history");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        if line.trim() == "/reset" {
            history.clear();
            continue;
        }
        history.push(ChatMessage::new("user", line.trim()));
        let prompt_tokens = tok.encode(&template.render(&history, true)?)?;
        let (_, mut rx) = engine.add_request(GenerateRequest {
            prompt_tokens,
            params: params.clone(),
            adapter: adapter.clone(),
            resume_tokens: 0,
        })?;
        let mut answer = String::new();
        let mut out = std::io::stdout();
        while let Some(ev) = rx.blocking_recv() {
            let (text, done) = match ev {
                EngineEvent::Token { text, .. } => (text, false),
                EngineEvent::Finished { text, .. } => (text, true),
            };
            answer.push_str(&text);
            write!(out, "{text}")?;
            out.flush()?;
            if done {
                break;
            }
        }
        println!();
        history.push(ChatMessage::new("assistant", answer));
    }
}
