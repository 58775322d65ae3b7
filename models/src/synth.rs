//! A small, deterministic Llama model written as a Hugging Face folder.
//!
//! Unit and end-to-end tests need a real model folder (config, safetensors,
//! tokenizer, chat template) but no download: `sdlab model synth` writes one
//! from a seed. Weights are random (uniform, scaled by fan-in so activations
//! stay O(1)); the byte-level BPE tokenizer is trained in-process on a short
//! built-in text, so it splits words the way a real one does.

use crate::config::HfConfig;
use crate::{io_err, ModelError, Result};
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Shapes of a synthetic model.
#[derive(Debug, Clone)]
pub struct SynthPreset {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub max_position_embeddings: usize,
}

impl SynthPreset {
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self {
                vocab_size: 384,
                hidden_size: 64,
                intermediate_size: 176,
                num_layers: 2,
                num_heads: 4,
                num_kv_heads: 2,
                max_position_embeddings: 2048,
            }),
            "small" => Ok(Self {
                vocab_size: 1024,
                hidden_size: 256,
                intermediate_size: 704,
                num_layers: 4,
                num_heads: 8,
                num_kv_heads: 4,
                max_position_embeddings: 4096,
            }),
            other => Err(ModelError::Input(format!(
                "unknown preset `{other}` (tiny, small)"
            ))),
        }
    }
}

pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

const CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Training text for the tokenizer: plain prose, numbers, code and a little
/// non-ASCII, so multi-byte characters span several byte-level tokens.
const CORPUS: &str = "\
The engine keeps many sequences in flight at once, and each one owns a list of blocks.
A block holds sixteen tokens of keys and values; a sequence asks for a new block only when the last one is full.
When memory runs out the scheduler preempts the newest sequence and computes it again later.
Prefix caching finds blocks that another request already computed and shares them.
The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.
It is a truth universally acknowledged that a single model in possession of good weights must be in want of a tokenizer.
In 2024 there were 365 days, 12 months and 52 weeks; 3.14159 is close to pi, and 2.71828 to e.
fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }
def add(a, b):\n    return a + b\n
Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e, na\u{ef}ve r\u{e9}sum\u{e9}, \u{fc}ber, \u{4e2d}\u{6587}\u{6587}\u{672c}, \u{1f600} and \u{1f680}.
Questions and answers: what is the capital of France? Paris is the capital of France.
Continuous batching lets sequences join and leave the batch at every step of decoding.
Throughput rises with the batch until the machine runs out of compute or memory bandwidth.
Latency is measured from the moment a request arrives to the moment its last token leaves.
";

/// Writes `config.json`, `model.safetensors`, `tokenizer.json` and
/// `tokenizer_config.json` for `preset` into `out`.
pub fn write_synthetic_model(out: &Path, preset: &SynthPreset, seed: u64) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let tokenizer = train_tokenizer(preset.vocab_size)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let tok_path = out.join("tokenizer.json");
    tokenizer
        .save(&tok_path, false)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let id = |t: &str| tokenizer.token_to_id(t);

    let head_dim = preset.hidden_size / preset.num_heads;
    let config = HfConfig {
        vocab_size,
        hidden_size: preset.hidden_size,
        intermediate_size: preset.intermediate_size,
        num_hidden_layers: preset.num_layers,
        num_attention_heads: preset.num_heads,
        num_key_value_heads: Some(preset.num_kv_heads),
        head_dim: Some(head_dim),
        rms_norm_eps: 1e-5,
        rope_theta: Some(10_000.0),
        max_position_embeddings: Some(preset.max_position_embeddings),
        tie_word_embeddings: Some(false),
        bos_token_id: id("<|endoftext|>"),
        eos_token_id: id("<|im_end|>").map(serde_json::Value::from),
        architectures: vec!["LlamaForCausalLM".into()],
        model_type: Some("llama".into()),
    };
    write_json(&out.join("config.json"), &serde_json::to_value(&config)?)?;
    write_json(
        &out.join("tokenizer_config.json"),
        &serde_json::json!({
            "bos_token": "<|endoftext|>",
            "eos_token": "<|im_end|>",
            "add_bos_token": false,
            "chat_template": CHAT_TEMPLATE,
        }),
    )?;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, rows: usize, cols: usize, rng: &mut StdRng| -> Result<()> {
        let a = 3f32.sqrt() / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-a..a)).collect();
        tensors.insert(name, Tensor::from_vec(v, (rows, cols), &Device::Cpu)?);
        Ok(())
    };
    let (h, f) = (preset.hidden_size, preset.intermediate_size);
    let (q, kv) = (preset.num_heads * head_dim, preset.num_kv_heads * head_dim);
    put("model.embed_tokens.weight".into(), vocab_size, h, &mut rng)?;
    for i in 0..preset.num_layers {
        let p = format!("model.layers.{i}");
        put(format!("{p}.self_attn.q_proj.weight"), q, h, &mut rng)?;
        put(format!("{p}.self_attn.k_proj.weight"), kv, h, &mut rng)?;
        put(format!("{p}.self_attn.v_proj.weight"), kv, h, &mut rng)?;
        put(format!("{p}.self_attn.o_proj.weight"), h, q, &mut rng)?;
        put(format!("{p}.mlp.gate_proj.weight"), f, h, &mut rng)?;
        put(format!("{p}.mlp.up_proj.weight"), f, h, &mut rng)?;
        put(format!("{p}.mlp.down_proj.weight"), h, f, &mut rng)?;
    }
    put("lm_head.weight".into(), vocab_size, h, &mut rng)?;
    let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &Device::Cpu);
    tensors.insert("model.norm.weight".into(), ones(h)?);
    for i in 0..preset.num_layers {
        tensors.insert(format!("model.layers.{i}.input_layernorm.weight"), ones(h)?);
        tensors.insert(
            format!("model.layers.{i}.post_attention_layernorm.weight"),
            ones(h)?,
        );
    }
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)?).map_err(io_err(path))
}

/// A byte-level BPE tokenizer trained on [`CORPUS`].
pub fn train_tokenizer(vocab_size: usize) -> Result<Tokenizer> {
    let err = |e: tokenizers::Error| ModelError::Tokenizer(e.to_string());
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    // Several passes so frequent pairs clear min_frequency reliably.
    let lines: Vec<&str> = CORPUS
        .lines()
        .cycle()
        .take(CORPUS.lines().count() * 4)
        .collect();
    tokenizer
        .train(&mut trainer, lines.into_iter())
        .map_err(err)?;
    Ok(tokenizer)
}
