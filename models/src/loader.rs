//! Resolving `--model` and loading weights and tokenizer.
//!
//! `--model` is a path to a GGUF file, a path to a Hugging Face folder
//! (`config.json`, `*.safetensors`, `tokenizer.json`), or a known name that
//! `make models` fetches into the cache directory (`$SDLAB_CACHE_DIR`, else
//! `.cache/` in the working directory).

use crate::config::LlamaConfig;
use crate::llama::{Layer, Llama};
use crate::tokenizer::TokenizerInfo;
use crate::weights::{Linear, WeightFormat};
use crate::{io_err, ModelError, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The model `make run` serves when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Known model names and the file `make models` puts under the cache dir.
pub const KNOWN_MODELS: &[(&str, &str)] =
    &[(DEFAULT_MODEL, "models/SmolLM2-135M-Instruct.Q4_1.gguf")];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub weights: WeightFormat,
}

pub struct LoadedModel {
    /// The name the user gave (a known name, or the file/folder name).
    pub name: String,
    pub source: ModelSource,
    pub model: Llama,
    pub tokenizer: TokenizerInfo,
    /// The weight format actually used (`Auto` resolved).
    pub weights: WeightFormat,
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("SDLAB_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

/// Turns a `--model` argument into a file or folder that exists.
pub fn resolve(spec: &str) -> Result<ModelSource> {
    if let Some((name, rel)) = KNOWN_MODELS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(spec))
    {
        let path = cache_dir().join(rel);
        if !path.is_file() {
            return Err(ModelError::NotFound(format!(
                "`{name}` is not in {} yet: run `make models` to fetch it",
                path.display()
            )));
        }
        return Ok(ModelSource::Gguf(path));
    }
    let path = PathBuf::from(spec);
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(ModelError::NotFound(format!(
                "{spec} is a folder without config.json (want a Hugging Face model folder)"
            )));
        }
        return Ok(ModelSource::HfDir(path));
    }
    if path.is_file() {
        return Ok(ModelSource::Gguf(path));
    }
    let known: Vec<&str> = KNOWN_MODELS.iter().map(|(n, _)| *n).collect();
    Err(ModelError::NotFound(format!(
        "`{spec}` is neither a file, a folder, nor a known model ({}); `make models` fetches the known ones",
        known.join(", ")
    )))
}

/// Resolves and loads a model with its tokenizer.
pub fn load(spec: &str, opts: LoadOptions) -> Result<LoadedModel> {
    let source = resolve(spec)?;
    let name = match &source {
        _ if KNOWN_MODELS
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(spec)) =>
        {
            spec.to_ascii_lowercase()
        }
        ModelSource::Gguf(p) | ModelSource::HfDir(p) => p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string()),
    };
    let (model, tokenizer, weights) = match &source {
        ModelSource::Gguf(p) => load_gguf(p, opts)?,
        ModelSource::HfDir(p) => load_hf(p)?,
    };
    Ok(LoadedModel {
        name,
        source,
        model,
        tokenizer,
        weights,
    })
}

fn load_gguf(path: &Path, opts: LoadOptions) -> Result<(Llama, TokenizerInfo, WeightFormat)> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let fmt_err = |e: candle_core::Error| ModelError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let content = gguf_file::Content::read(&mut file).map_err(fmt_err)?;
    let tokenizer = TokenizerInfo::from_gguf(&content)?;
    let embd_info = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
    let vocab_size = embd_info.shape.dims()[0];
    let cfg = LlamaConfig::from_gguf(&content, vocab_size)?;
    let quantized = opts.weights != WeightFormat::F32;
    let mut tensor = |name: &str| -> Result<candle_core::quantized::QTensor> {
        if !content.tensor_infos.contains_key(name) {
            return Err(ModelError::MissingTensor(name.to_string()));
        }
        content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(fmt_err)
    };
    let vector = |t: candle_core::quantized::QTensor| -> Result<Vec<f32>> {
        Ok(t.dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let embd_q = tensor("token_embd.weight")?;
    let embed = Arc::new(vector(tensor("token_embd.weight")?)?);
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let mut lin = |n: &str| -> Result<Linear> {
            Linear::from_qtensor(tensor(&format!("blk.{i}.{n}.weight"))?, quantized)
        };
        layers.push(Layer {
            wq: lin("attn_q")?,
            wk: lin("attn_k")?,
            wv: lin("attn_v")?,
            wo: lin("attn_output")?,
            w_gate: lin("ffn_gate")?,
            w_up: lin("ffn_up")?,
            w_down: lin("ffn_down")?,
            attn_norm: vector(tensor(&format!("blk.{i}.attn_norm.weight"))?)?,
            ffn_norm: vector(tensor(&format!("blk.{i}.ffn_norm.weight"))?)?,
        });
    }
    let norm = vector(tensor("output_norm.weight")?)?;
    let lm_head = if cfg.tie_word_embeddings {
        if quantized {
            Linear::from_qtensor(embd_q, true)?
        } else {
            Linear::dense_shared(embed.clone(), cfg.vocab_size, cfg.hidden_size)?
        }
    } else {
        Linear::from_qtensor(tensor("output.weight")?, quantized)?
    };
    let format = if quantized {
        WeightFormat::Quantized
    } else {
        WeightFormat::F32
    };
    Ok((
        Llama::new(cfg, embed, layers, norm, lm_head)?,
        tokenizer,
        format,
    ))
}

fn load_hf(dir: &Path) -> Result<(Llama, TokenizerInfo, WeightFormat)> {
    let cfg_path = dir.join("config.json");
    let cfg =
        LlamaConfig::from_hf_json(&std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?)?;
    let tokenizer = TokenizerInfo::from_hf_dir(dir)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::NotFound(format!(
            "no *.safetensors in {}",
            dir.display()
        )));
    }
    for f in &files {
        let loaded =
            candle_core::safetensors::load(f, &Device::Cpu).map_err(|e| ModelError::Format {
                path: f.display().to_string(),
                message: e.to_string(),
            })?;
        tensors.extend(loaded);
    }
    let mut take = |name: &str| -> Result<Vec<f32>> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (h, ffn) = (cfg.hidden_size, cfg.intermediate_size);
    let (q_out, kv_out) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let embed = Arc::new(take("model.embed_tokens.weight")?);
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        let mut lin = |n: &str, out: usize, inp: usize| -> Result<Linear> {
            Linear::dense(take(&format!("{p}.{n}.weight"))?, out, inp)
        };
        layers.push(Layer {
            wq: lin("self_attn.q_proj", q_out, h)?,
            wk: lin("self_attn.k_proj", kv_out, h)?,
            wv: lin("self_attn.v_proj", kv_out, h)?,
            wo: lin("self_attn.o_proj", h, q_out)?,
            w_gate: lin("mlp.gate_proj", ffn, h)?,
            w_up: lin("mlp.up_proj", ffn, h)?,
            w_down: lin("mlp.down_proj", h, ffn)?,
            attn_norm: take(&format!("{p}.input_layernorm.weight"))?,
            ffn_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
        });
    }
    let norm = take("model.norm.weight")?;
    let lm_head = if cfg.tie_word_embeddings {
        Linear::dense_shared(embed.clone(), cfg.vocab_size, h)?
    } else {
        Linear::dense(take("lm_head.weight")?, cfg.vocab_size, h)?
    };
    Ok((
        Llama::new(cfg, embed, layers, norm, lm_head)?,
        tokenizer,
        WeightFormat::F32,
    ))
}
