//! OpenAI's request shapes, and their translation into engine requests.
//!
//! Parameters carry OpenAI's names (plus vLLM's and llama.cpp's extensions
//! `top_k`, `min_p`, `ignore_eos`, `repetition_penalty`). Parsing goes
//! through `serde_path_to_error`, so a wrong type is reported with the name of
//! the parameter it was found in.

use super::error::ApiError;
use crate::sampler::{SamplingParams, MAX_LOGPROBS};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Most choices one request may ask for.
pub const MAX_N: u32 = 16;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<StopInput>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logprobs: Option<u32>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub ignore_eos: Option<bool>,
    /// vLLM's extension: each choice also carries its `token_ids` (every
    /// stream chunk the ids it adds) and its `prompt_token_ids`.
    pub return_token_ids: Option<bool>,
    /// sdlab's extension: the prompt's last N tokens are output being
    /// resumed (detokenized and counted silently).
    pub resume_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    pub r#type: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    pub content: Option<MessageContent>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessageIn>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<StopInput>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub ignore_eos: Option<bool>,
    /// As [`CompletionRequest::return_token_ids`].
    pub return_token_ids: Option<bool>,
}

/// Parses a JSON body, naming the parameter at fault when it does not fit.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad(format!("malformed JSON body: {inner}"), None);
        }
        let missing = inner.to_string().strip_prefix("missing field `").and_then(|r| r.split('`').next()).map(str::to_string);
        // The top-level parameter at fault: the first segment of the path,
        // or the missing field when the body lacks a required one.
        let param = path.split(['.', '[']).next().filter(|p| !p.is_empty() && *p != "?").map(str::to_string).or(missing);
        let message = match param.as_deref() {
            Some("prompt") if inner.to_string().contains("untagged") => {
                "`prompt` must be a string, a list of strings, a list of token ids or a list of lists of token ids".to_string()
            }
            Some("stop") if inner.to_string().contains("untagged") => "`stop` must be a string or a list of strings".to_string(),
            Some("messages") if inner.to_string().contains("untagged") => {
                "each message's `content` must be a string or a list of text parts".to_string()
            }
            Some(_) => format!("invalid `{path}`: {inner}"),
            None => format!("invalid request: {inner}"),
        };
        ApiError::BadRequest { message, param }
    })
}

/// The sampling knobs both endpoints share.
pub struct Knobs {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<StopInput>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logprobs: Option<u32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub ignore_eos: Option<bool>,
}

impl Knobs {
    /// Engine sampling parameters, with OpenAI's defaults (temperature 1).
    /// `max_tokens` is filled in by the caller once the prompt length is known.
    pub fn sampling(&self) -> Result<(SamplingParams, u32), ApiError> {
        let n = self.n.unwrap_or(1);
        if n == 0 || n > MAX_N {
            return Err(ApiError::bad(
                format!("`n` must be between 1 and {MAX_N}, got {n}"),
                "n",
            ));
        }
        if let Some(lp) = self.logprobs {
            if lp as usize > MAX_LOGPROBS {
                return Err(ApiError::bad(
                    format!("`logprobs` must be at most {MAX_LOGPROBS}, got {lp}"),
                    "logprobs",
                ));
            }
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => {
                return Err(ApiError::bad(
                    format!("`top_k` must be -1 (off) or positive, got {k}"),
                    "top_k",
                ))
            }
        };
        let stop = match &self.stop {
            None => vec![],
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) => v.clone(),
        };
        if stop.len() > 16 {
            return Err(ApiError::bad("at most 16 `stop` strings", "stop"));
        }
        let d = SamplingParams::default();
        let params = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k,
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            seed: self.seed.map(|s| s as u64),
            max_tokens: 1,
            stop,
            stop_token_ids: vec![],
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs: self.logprobs.map(|l| l as usize),
        };
        params.validate()?;
        Ok((params, n))
    }
}

impl CompletionRequest {
    pub fn knobs(&self) -> Knobs {
        Knobs {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            n: self.n,
            stop: self.stop.as_ref().map(clone_stop),
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            logprobs: self.logprobs,
            top_k: self.top_k,
            min_p: self.min_p,
            ignore_eos: self.ignore_eos,
        }
    }
}

impl ChatRequest {
    pub fn knobs(&self) -> Result<Knobs, ApiError> {
        if let Some(t) = self.top_logprobs {
            if t as usize > MAX_LOGPROBS {
                return Err(ApiError::bad(
                    format!("`top_logprobs` must be at most {MAX_LOGPROBS}, got {t}"),
                    "top_logprobs",
                ));
            }
        }
        let logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (true, top) => Some(top.unwrap_or(0)),
            (false, Some(_)) => {
                return Err(ApiError::bad(
                    "`top_logprobs` needs `logprobs: true`",
                    "top_logprobs",
                ))
            }
            (false, None) => None,
        };
        Ok(Knobs {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            n: self.n,
            stop: self.stop.as_ref().map(clone_stop),
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            logprobs,
            top_k: self.top_k,
            min_p: self.min_p,
            ignore_eos: self.ignore_eos,
        })
    }

    /// Messages as the chat template takes them.
    pub fn messages(&self) -> Result<Vec<models::ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad("`messages` must not be empty", "messages"));
        }
        self.messages
            .iter()
            .map(|m| {
                if !matches!(
                    m.role.as_str(),
                    "system" | "user" | "assistant" | "developer" | "tool"
                ) {
                    return Err(ApiError::bad(
                        format!("unknown message role `{}`", m.role),
                        "messages",
                    ));
                }
                let content = match &m.content {
                    None => String::new(),
                    Some(MessageContent::Text(t)) => t.clone(),
                    Some(MessageContent::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            if p.r#type != "text" {
                                return Err(ApiError::bad(
                                    format!(
                                        "content parts of type `{}` are not supported (text only)",
                                        p.r#type
                                    ),
                                    "messages",
                                ));
                            }
                            text.push_str(p.text.as_deref().unwrap_or_default());
                        }
                        text
                    }
                };
                let role = if m.role == "developer" {
                    "system"
                } else {
                    m.role.as_str()
                };
                Ok(models::ChatMessage::new(role, content))
            })
            .collect()
    }
}

fn clone_stop(s: &StopInput) -> StopInput {
    match s {
        StopInput::One(x) => StopInput::One(x.clone()),
        StopInput::Many(v) => StopInput::Many(v.clone()),
    }
}
