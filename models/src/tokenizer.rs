//! Tokenizers: rebuilt from GGUF metadata, or loaded from `tokenizer.json`.
//!
//! A GGUF file carries its tokenizer as metadata (`tokenizer.ggml.*`): the
//! token strings, the BPE merges, token types and special ids. For a `gpt2`
//! (byte-level BPE) model sdlab rebuilds an ordinary `tokenizers::Tokenizer`
//! from them, with the pre-tokenizer the `tokenizer.ggml.pre` name implies, so
//! the rest of sdlab never needs to know where a tokenizer came from.

use crate::{ModelError, Result};
use candle_core::quantized::gguf_file;
use std::path::Path;
use std::sync::Arc;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// A tokenizer plus what generation needs to know about it.
#[derive(Clone)]
pub struct TokenizerInfo {
    pub tokenizer: Arc<Tokenizer>,
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation (eos, and e.g. `<|im_end|>` for chat models).
    pub eos_token_ids: Vec<u32>,
    /// Whether prompts start with BOS (llama.cpp's `add_bos_token`).
    pub add_bos: bool,
    /// Jinja chat template, if the model ships one.
    pub chat_template: Option<String>,
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl TokenizerInfo {
    /// Token ids of `text`, with BOS in front when the model wants it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos_token_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(tok_err)
    }

    pub fn token_str(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn bos_token(&self) -> Option<String> {
        self.bos_token_id.and_then(|id| self.token_str(id))
    }

    pub fn eos_token(&self) -> Option<String> {
        self.eos_token_ids
            .first()
            .and_then(|&id| self.token_str(id))
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let md = &content.metadata;
        let get = |k: &str| {
            md.get(k)
                .ok_or_else(|| tok_err(format!("GGUF metadata has no {k}")))
        };
        let model = get("tokenizer.ggml.model")?.to_string()?.clone();
        if model != "gpt2" {
            return Err(tok_err(format!(
                "GGUF tokenizer model `{model}` is not supported yet (only byte-level BPE, `gpt2`)"
            )));
        }
        let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<std::result::Result<_, _>>()?;
        let merges: Vec<(String, String)> = get("tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|v| {
                let m = v.to_string()?;
                let (a, b) = m
                    .split_once(' ')
                    .ok_or_else(|| candle_core::Error::Msg(format!("bad merge `{m}`")))?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<std::result::Result<_, candle_core::Error>>()?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|t| t.to_i32())
                .collect::<std::result::Result<_, _>>()?,
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let byte_level = ByteLevel::new(false, true, true);
        match pre.as_str() {
            // SmolLM and StarCoder split every digit on its own before the GPT-2 regex.
            "smollm" | "starcoder" | "refact" => {
                tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    byte_level.into(),
                ])));
            }
            _ => {
                tokenizer.with_pre_tokenizer(Some(byte_level));
            }
        }
        tokenizer.with_decoder(Some(ByteLevel::default()));
        // Control (3) and user-defined (4) tokens are matched whole in text.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(tok, &t)| AddedToken::from(tok.clone(), t == 3))
            .collect();
        tokenizer.add_special_tokens(added).map_err(tok_err)?;

        let id = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let mut eos_token_ids: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        // Chat models end a turn with <|im_end|> or <|eot_id|>; stop there too.
        for end in ["<|im_end|>", "<|eot_id|>", "<|end|>"] {
            if let Some(i) = tokens.iter().position(|t| t == end) {
                if !eos_token_ids.contains(&(i as u32)) {
                    eos_token_ids.push(i as u32);
                }
            }
        }
        Ok(Self {
            tokenizer: Arc::new(tokenizer),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids,
            add_bos: md
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(false),
            chat_template: md
                .get("tokenizer.chat_template")
                .and_then(|v| v.to_string().ok())
                .cloned(),
        })
    }

    /// Loads `tokenizer.json`, plus `tokenizer_config.json` (chat template,
    /// special tokens) and the ids in `config.json`, from a Hugging Face folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&path).map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
        let read_json = |name: &str| -> Result<serde_json::Value> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(serde_json::from_str(&s)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Value::Null),
                Err(e) => Err(crate::io_err(&p)(e)),
            }
        };
        let tc = read_json("tokenizer_config.json")?;
        let cfg = read_json("config.json")?;
        let token_of = |v: &serde_json::Value| -> Option<u32> {
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            tokenizer.token_to_id(s)
        };
        let bos_token_id =
            token_of(&tc["bos_token"]).or_else(|| cfg["bos_token_id"].as_u64().map(|v| v as u32));
        let mut eos_token_ids: Vec<u32> = match &cfg["eos_token_id"] {
            serde_json::Value::Number(n) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect(),
            _ => vec![],
        };
        if let Some(e) = token_of(&tc["eos_token"]) {
            if !eos_token_ids.contains(&e) {
                eos_token_ids.push(e);
            }
        }
        Ok(Self {
            tokenizer: Arc::new(tokenizer),
            bos_token_id,
            eos_token_ids,
            add_bos: tc["add_bos_token"].as_bool().unwrap_or(false),
            chat_template: tc["chat_template"].as_str().map(String::from),
        })
    }
}
