//! Training data: JSONL examples, rendered with the model's chat template
//! and tokenized with the completion marked for the loss.

use crate::chat::{ChatMessage, ChatTemplate};
use crate::tokenizer::TokenizerInfo;
use crate::{io_err, ModelError, Result};
use std::path::Path;

/// One training example: the user's message and the answer to learn.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Example {
    pub prompt: String,
    pub completion: String,
}

/// Reads `{"prompt": ..., "completion": ...}` lines (blank lines skipped).
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>> {
    if !path.is_file() {
        return Err(ModelError::NotFound(format!(
            "training data {} does not exist",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_jsonl(&text, &path.display().to_string())
}

/// [`read_jsonl`] on text already read; `source` names it in errors.
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ex: Example = serde_json::from_str(line).map_err(|e| {
            ModelError::Input(format!(
                "{source} line {}: {e} (want {{\"prompt\": \"...\", \"completion\": \"...\"}})",
                i + 1
            ))
        })?;
        if ex.completion.trim().is_empty() {
            return Err(ModelError::Input(format!(
                "{source} line {}: the completion is empty",
                i + 1
            )));
        }
        out.push(ex);
    }
    if out.is_empty() {
        return Err(ModelError::Input(format!("{source} holds no example")));
    }
    Ok(out)
}

/// An example as tokens: the prompt (chat-templated) then the completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainSeq {
    pub tokens: Vec<u32>,
    /// Tokens before the completion; only later tokens count in the loss.
    pub prompt_len: usize,
}

/// The prompt as a chat request would be rendered (user message, generation
/// prompt) and the completion up to and including the template's
/// end-of-turn; without a chat template, `prompt` then `completion`.
pub fn render_example(tok: &TokenizerInfo, ex: &Example) -> Result<(String, String)> {
    render_with(chat_template(tok)?.as_ref(), ex)
}

fn chat_template(tok: &TokenizerInfo) -> Result<Option<ChatTemplate>> {
    tok.chat_template
        .as_deref()
        .map(|src| ChatTemplate::new(src, tok.bos_token(), tok.eos_token()))
        .transpose()
}

fn render_with(template: Option<&ChatTemplate>, ex: &Example) -> Result<(String, String)> {
    let Some(template) = template else {
        return Ok((ex.prompt.clone(), ex.completion.clone()));
    };
    let user = ChatMessage::new("user", ex.prompt.as_str());
    let prompt = template.render(std::slice::from_ref(&user), true)?;
    let full = template.render(
        &[user, ChatMessage::new("assistant", ex.completion.as_str())],
        false,
    )?;
    match full.strip_prefix(&prompt) {
        // The template's own closing of the turn (`<|im_end|>` for ChatML).
        Some(rest) => Ok((prompt, rest.trim_end().to_string())),
        None => Ok((prompt, ex.completion.clone())),
    }
}

/// Tokenizes examples, ending each completion with an end-of-sequence token
/// and cutting at `max_len`. Examples with no completion token left after
/// the cut are dropped; it is an error if none remains.
pub fn tokenize_examples(
    tok: &TokenizerInfo,
    examples: &[Example],
    max_len: usize,
) -> Result<Vec<TrainSeq>> {
    let template = chat_template(tok)?;
    let mut out = Vec::with_capacity(examples.len());
    for ex in examples {
        let (prompt, completion) = render_with(template.as_ref(), ex)?;
        let mut tokens = tok.encode(&prompt)?;
        let prompt_len = tokens.len();
        let enc = tok
            .tokenizer
            .encode(completion, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        tokens.extend_from_slice(enc.get_ids());
        if let Some(&eos) = tok.eos_token_ids.first() {
            if tokens.last().is_none_or(|t| !tok.eos_token_ids.contains(t)) {
                tokens.push(eos);
            }
        }
        tokens.truncate(max_len);
        if tokens.len() > prompt_len.max(1) {
            out.push(TrainSeq { tokens, prompt_len });
        }
    }
    if out.is_empty() {
        return Err(ModelError::Input(format!(
            "no example has a completion token within max_len {max_len}"
        )));
    }
    Ok(out)
}
