//! LoRA adapters in the PEFT format, held unmerged beside the base model.
//!
//! A PEFT adapter folder has `adapter_config.json` (`r`, `lora_alpha`,
//! `target_modules`, optional `rank_pattern` / `alpha_pattern`,
//! `use_rslora`) and `adapter_model.safetensors` with, per adapted
//! projection, `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`
//! (`[r, in]`) and `...lora_B.weight` (`[out, r]`). The delta of a projection
//! is `scale · B · A` with `scale = alpha / r` (`alpha / sqrt(r)` for rsLoRA).
//!
//! The decoder applies the delta per row with [`kernels::bgmv`], so one
//! batch mixes adapters; [`crate::Llama::merge_lora`] folds it into the
//! weights instead (the naive way, and the check the batched path is
//! tested against).
//!
//! GGUF files store `q_proj` / `k_proj` rows permuted for interleaved RoPE;
//! an adapter's `B` for those projections is permuted the same way at load
//! (and back at save), so one adapter file serves both layouts.

use crate::config::{LlamaConfig, RopeStyle};
use crate::{io_err, ModelError, Result};
use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The projections an adapter can target, in the order the decoder runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// The PEFT module name (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The module path inside the Hugging Face model, as PEFT names it.
    pub fn module_path(self, layer: usize) -> String {
        let block = match self {
            Self::Q | Self::K | Self::V | Self::O => "self_attn",
            _ => "mlp",
        };
        format!("model.layers.{layer}.{block}.{}", self.name())
    }

    /// `(out_features, in_features)` of the projection.
    pub fn shape(self, cfg: &LlamaConfig) -> (usize, usize) {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (q, kv) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        match self {
            Self::Q => (q, h),
            Self::K | Self::V => (kv, h),
            Self::O => (h, q),
            Self::Gate | Self::Up => (i, h),
            Self::Down => (h, i),
        }
    }

    /// Heads whose rows GGUF permutes for interleaved RoPE, if any.
    fn rope_heads(self, cfg: &LlamaConfig) -> Option<usize> {
        match self {
            Self::Q => Some(cfg.num_heads),
            Self::K => Some(cfg.num_kv_heads),
            _ => None,
        }
    }
}

/// Parses `q_proj,v_proj` (or `all`) into targets.
pub fn parse_targets(list: &str) -> Result<Vec<Target>> {
    if list == "all" || list == "all-linear" {
        return Ok(Target::ALL.to_vec());
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let t = Target::from_name(name).ok_or_else(|| {
            ModelError::Input(format!(
                "unknown LoRA target `{name}` (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all)"
            ))
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        return Err(ModelError::Input("no LoRA target given".into()));
    }
    Ok(out)
}

/// One projection's factors, in the model's row layout.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// `[rank, in_features]`.
    pub a: Vec<f32>,
    /// `[out_features, rank]`, as PEFT stores it.
    pub b: Vec<f32>,
    /// `B` transposed, `[rank, out_features]`, as the kernel reads it.
    b_t: Vec<f32>,
    pub rank: usize,
    pub alpha: f32,
    pub scale: f32,
}

impl LoraModule {
    fn new(a: Vec<f32>, b: Vec<f32>, rank: usize, alpha: f32, scale: f32) -> Self {
        let n = b.len() / rank;
        let mut b_t = vec![0f32; b.len()];
        for (c, row) in b.chunks_exact(rank).enumerate() {
            for (i, v) in row.iter().enumerate() {
                b_t[i * n + c] = *v;
            }
        }
        Self {
            a,
            b,
            b_t,
            rank,
            alpha,
            scale,
        }
    }

    pub fn factors(&self) -> kernels::LoraFactors<'_> {
        kernels::LoraFactors {
            a: &self.a,
            b_t: &self.b_t,
            rank: self.rank,
            scale: self.scale,
        }
    }

    /// `scale · B · A`, `[out_features, in_features]`.
    pub fn delta(&self) -> Vec<f32> {
        let k = self.a.len() / self.rank;
        let n = self.b.len() / self.rank;
        let mut d = vec![0f32; n * k];
        for (row, b) in d.chunks_exact_mut(k).zip(self.b.chunks_exact(self.rank)) {
            for (bi, a) in b.iter().zip(self.a.chunks_exact(k)) {
                let s = self.scale * bi;
                for (o, av) in row.iter_mut().zip(a) {
                    *o += s * av;
                }
            }
        }
        d
    }
}

/// An adapter: per layer, factors for the projections it targets.
#[derive(Debug)]
pub struct LoraAdapter {
    layers: Vec<[Option<LoraModule>; 7]>,
    use_rslora: bool,
    /// Which adapter this is, for caches of its factors elsewhere (the
    /// GPU's copies): unique in the process, and new on every change of
    /// the factors and on every clone.
    uid: u64,
}

/// A fresh [`LoraAdapter::uid`].
fn next_uid() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Clone for LoraAdapter {
    fn clone(&self) -> Self {
        Self {
            layers: self.layers.clone(),
            use_rslora: self.use_rslora,
            uid: next_uid(),
        }
    }
}

/// `adapter_config.json`, the fields sdlab reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftConfig {
    #[serde(default)]
    pub peft_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f32,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f32>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub bias: Option<String>,
}

/// PEFT accepts a list of names or one string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    One(String),
}

/// Does a `rank_pattern` / `alpha_pattern` key name this module? PEFT
/// matches keys as a suffix of the module path at a `.` boundary.
fn pattern_matches(key: &str, module: &str) -> bool {
    module == key || module.ends_with(&format!(".{key}"))
}

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

impl LoraAdapter {
    /// Reads a PEFT adapter folder and checks it against the model: every
    /// tensor names a known layer and projection, ranks and shapes match
    /// the config and the model. Nothing is partly loaded on error.
    pub fn load(dir: &Path, cfg: &LlamaConfig) -> Result<Self> {
        let fmt = |message: String| ModelError::Format {
            path: dir.display().to_string(),
            message,
        };
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(ModelError::NotFound(format!(
                "no {CONFIG_FILE} in {}",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let peft: PeftConfig =
            serde_json::from_str(&text).map_err(|e| fmt(format!("{CONFIG_FILE}: {e}")))?;
        if let Some(t) = &peft.peft_type {
            if t != "LORA" {
                return Err(fmt(format!("peft_type {t} is not LORA")));
            }
        }
        if peft.fan_in_fan_out {
            return Err(fmt(
                "fan_in_fan_out adapters (GPT-2 Conv1D) are not supported".into(),
            ));
        }
        if peft.r == 0 {
            return Err(fmt("r must be positive".into()));
        }
        let targets = match &peft.target_modules {
            TargetModules::One(s) => parse_targets(s),
            TargetModules::List(v) => parse_targets(&v.join(",")),
        }
        .map_err(|e| fmt(e.to_string()))?;

        let weights_path = dir.join(WEIGHTS_FILE);
        if !weights_path.is_file() {
            return Err(ModelError::NotFound(format!(
                "no {WEIGHTS_FILE} in {}",
                dir.display()
            )));
        }
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| fmt(format!("{WEIGHTS_FILE}: {e}")))?;

        // (layer, target) -> (A, B)
        let mut pairs: HashMap<(usize, Target), (Option<Tensor>, Option<Tensor>)> = HashMap::new();
        for (key, t) in tensors {
            let (layer, target, is_a) =
                parse_key(&key).ok_or_else(|| fmt(format!("unexpected tensor `{key}`")))?;
            if layer >= cfg.num_layers {
                return Err(fmt(format!(
                    "`{key}`: layer {layer} but the model has {}",
                    cfg.num_layers
                )));
            }
            if !targets.contains(&target) {
                return Err(fmt(format!(
                    "`{key}`: {} is not in target_modules",
                    target.name()
                )));
            }
            let slot = pairs.entry((layer, target)).or_default();
            if is_a {
                slot.0 = Some(t);
            } else {
                slot.1 = Some(t);
            }
        }
        if pairs.is_empty() {
            return Err(fmt(format!("{WEIGHTS_FILE} holds no LoRA tensor")));
        }

        let mut layers: Vec<[Option<LoraModule>; 7]> =
            (0..cfg.num_layers).map(|_| Default::default()).collect();
        for ((layer, target), (a, b)) in pairs {
            let path = target.module_path(layer);
            let (Some(a), Some(b)) = (a, b) else {
                return Err(fmt(format!(
                    "{path}: lora_A and lora_B must both be present"
                )));
            };
            let rank = pick_pattern(&peft.rank_pattern, &path).unwrap_or(peft.r);
            let alpha = pick_pattern(&peft.alpha_pattern, &path).unwrap_or(peft.lora_alpha);
            let (n, k) = target.shape(cfg);
            let (ad, bd) = (a.dims().to_vec(), b.dims().to_vec());
            if ad != [rank, k] || bd != [n, rank] {
                return Err(fmt(format!(
                    "{path}: lora_A is {ad:?} and lora_B {bd:?}, want [{rank}, {k}] and [{n}, {rank}] (rank {rank})"
                )));
            }
            let to_vec = |t: Tensor| -> Result<Vec<f32>> {
                Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
            };
            let (a, mut b) = (to_vec(a)?, to_vec(b)?);
            if a.iter().chain(&b).any(|v| !v.is_finite()) {
                return Err(fmt(format!("{path}: weights are not finite")));
            }
            if let (RopeStyle::Interleaved, Some(heads)) = (cfg.rope_style, target.rope_heads(cfg))
            {
                b = permute_rows(&b, rank, heads, cfg.head_dim, true);
            }
            let scale = scale_for(alpha, rank, peft.use_rslora);
            layers[layer][target as usize] = Some(LoraModule::new(a, b, rank, alpha, scale));
        }
        Ok(Self {
            layers,
            use_rslora: peft.use_rslora,
            uid: next_uid(),
        })
    }

    /// Writes the adapter as a PEFT folder (HF row layout).
    pub fn save(&self, dir: &Path, cfg: &LlamaConfig, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let modules: Vec<(usize, Target, &LoraModule)> = self.modules().collect();
        let Some(&(_, _, first)) = modules.first() else {
            return Err(ModelError::Input("an adapter with no module".into()));
        };
        let (r, alpha) = (first.rank, first.alpha);
        let mut rank_pattern = BTreeMap::new();
        let mut alpha_pattern = BTreeMap::new();
        let mut targets: Vec<Target> = Vec::new();
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (layer, target, m) in modules {
            let path = target.module_path(layer);
            if m.rank != r {
                rank_pattern.insert(path.clone(), m.rank);
            }
            if m.alpha != alpha {
                alpha_pattern.insert(path.clone(), m.alpha);
            }
            if !targets.contains(&target) {
                targets.push(target);
            }
            let (n, k) = target.shape(cfg);
            let mut b = m.b.clone();
            if let (RopeStyle::Interleaved, Some(heads)) = (cfg.rope_style, target.rope_heads(cfg))
            {
                b = permute_rows(&b, m.rank, heads, cfg.head_dim, false);
            }
            let key = format!("base_model.model.{path}");
            tensors.insert(
                format!("{key}.lora_A.weight"),
                Tensor::from_vec(m.a.clone(), (m.rank, k), &Device::Cpu)?,
            );
            tensors.insert(
                format!("{key}.lora_B.weight"),
                Tensor::from_vec(b, (n, m.rank), &Device::Cpu)?,
            );
        }
        targets.sort();
        let config = PeftConfig {
            peft_type: Some("LORA".into()),
            r,
            lora_alpha: alpha,
            target_modules: TargetModules::List(targets.iter().map(|t| t.name().into()).collect()),
            rank_pattern,
            alpha_pattern,
            use_rslora: self.use_rslora,
            fan_in_fan_out: false,
            base_model_name_or_path: Some(base_model.into()),
            task_type: Some("CAUSAL_LM".into()),
            bias: Some("none".into()),
        };
        let cfg_path = dir.join(CONFIG_FILE);
        std::fs::write(&cfg_path, serde_json::to_string_pretty(&config)?)
            .map_err(io_err(&cfg_path))?;
        candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))?;
        Ok(())
    }

    /// From factors already in the model's layout, `alpha` shared.
    pub fn from_modules(
        cfg: &LlamaConfig,
        modules: Vec<(usize, Target, Vec<f32>, Vec<f32>)>,
        rank: usize,
        alpha: f32,
    ) -> Result<Self> {
        let mut layers: Vec<[Option<LoraModule>; 7]> =
            (0..cfg.num_layers).map(|_| Default::default()).collect();
        for (layer, target, a, b) in modules {
            let (n, k) = target.shape(cfg);
            if layer >= cfg.num_layers || a.len() != rank * k || b.len() != n * rank || rank == 0 {
                return Err(ModelError::Input(format!(
                    "LoRA factors for {} do not fit the model",
                    target.module_path(layer)
                )));
            }
            layers[layer][target as usize] = Some(LoraModule::new(
                a,
                b,
                rank,
                alpha,
                scale_for(alpha, rank, false),
            ));
        }
        Ok(Self {
            layers,
            use_rslora: false,
            uid: next_uid(),
        })
    }

    /// A random adapter (for tests and benchmarks): `A` and `B` uniform,
    /// scaled so the delta is about as large as the base projection.
    pub fn synth(cfg: &LlamaConfig, rank: usize, targets: &[Target], seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut modules = Vec::new();
        for layer in 0..cfg.num_layers {
            for &t in targets {
                let (n, k) = t.shape(cfg);
                let (sa, sb) = (1.0 / (k as f32).sqrt(), 1.0 / (rank as f32).sqrt());
                let a = (0..rank * k).map(|_| rng.random_range(-sa..sa)).collect();
                let b = (0..n * rank).map(|_| rng.random_range(-sb..sb)).collect();
                modules.push((layer, t, a, b));
            }
        }
        Self::from_modules(cfg, modules, rank, rank as f32)
    }

    /// Sets `lora_alpha` (and so the scale) of every module.
    pub fn set_alpha(&mut self, alpha: f32) {
        let rslora = self.use_rslora;
        self.uid = next_uid();
        for m in self.layers.iter_mut().flatten().flatten() {
            m.alpha = alpha;
            m.scale = scale_for(alpha, m.rank, rslora);
        }
    }

    pub fn module(&self, layer: usize, target: Target) -> Option<&LoraModule> {
        self.layers.get(layer)?[target as usize].as_ref()
    }

    /// Every `(layer, target, module)` present.
    pub fn modules(&self) -> impl Iterator<Item = (usize, Target, &LoraModule)> {
        self.layers.iter().enumerate().flat_map(|(l, ms)| {
            Target::ALL
                .into_iter()
                .filter_map(move |t| ms[t as usize].as_ref().map(|m| (l, t, m)))
        })
    }

    pub fn max_rank(&self) -> usize {
        self.modules().map(|(_, _, m)| m.rank).max().unwrap_or(0)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// This adapter's identity: two adapters with the same uid hold the
    /// same factors (see the field's doc).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Bytes of factor weights held.
    pub fn bytes(&self) -> usize {
        self.modules()
            .map(|(_, _, m)| (m.a.len() + m.b.len()) * 4)
            .sum()
    }
}

fn scale_for(alpha: f32, rank: usize, rslora: bool) -> f32 {
    if rslora {
        alpha / (rank as f32).sqrt()
    } else {
        alpha / rank as f32
    }
}

/// The most specific (longest) pattern key naming `module`.
fn pick_pattern<T: Copy>(patterns: &BTreeMap<String, T>, module: &str) -> Option<T> {
    patterns
        .iter()
        .filter(|(k, _)| pattern_matches(k, module))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, v)| *v)
}

/// `base_model.model.model.layers.N.{self_attn|mlp}.X_proj.lora_{A|B}[.default].weight`.
fn parse_key(key: &str) -> Option<(usize, Target, bool)> {
    let rest = key.strip_prefix("base_model.model.")?;
    let rest = rest.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let rest = rest
        .strip_prefix("self_attn.")
        .or_else(|| rest.strip_prefix("mlp."))?;
    let (module, rest) = rest.split_once('.')?;
    let target = Target::from_name(module)?;
    let is_a = match rest {
        "lora_A.weight" | "lora_A.default.weight" => true,
        "lora_B.weight" | "lora_B.default.weight" => false,
        _ => return None,
    };
    Some((layer, target, is_a))
}

/// Permutes the rows of `b: [heads * d, rank]` between HF's half-split RoPE
/// layout and GGUF's interleaved one (`to_interleaved`), or back.
fn permute_rows(b: &[f32], rank: usize, heads: usize, d: usize, to_interleaved: bool) -> Vec<f32> {
    let mut out = vec![0f32; b.len()];
    let half = d / 2;
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let inter = h * d + 2 * i + j;
                let halves = h * d + j * half + i;
                let (dst, src) = if to_interleaved {
                    (inter, halves)
                } else {
                    (halves, inter)
                };
                out[dst * rank..(dst + 1) * rank].copy_from_slice(&b[src * rank..(src + 1) * rank]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(style: RopeStyle) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 32,
            hidden_size: 16,
            intermediate_size: 24,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 4,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: false,
            rope_style: style,
        }
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sdlab-lora-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_then_load_round_trips_in_both_rope_layouts() {
        for style in [RopeStyle::Halves, RopeStyle::Interleaved] {
            let c = cfg(style);
            let a = LoraAdapter::synth(&c, 3, &Target::ALL, 7).unwrap();
            let dir = tmp(&format!("{style:?}"));
            a.save(&dir, &c, "synthetic").unwrap();
            let b = LoraAdapter::load(&dir, &c).unwrap();
            assert_eq!(a.modules().count(), 14);
            for ((l1, t1, m1), (l2, t2, m2)) in a.modules().zip(b.modules()) {
                assert_eq!((l1, t1), (l2, t2));
                assert_eq!(
                    (&m1.a, &m1.b, m1.rank, m1.scale),
                    (&m2.a, &m2.b, m2.rank, m2.scale)
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn gguf_layout_permutes_q_and_k_rows_only() {
        let c = cfg(RopeStyle::Halves);
        let a = LoraAdapter::synth(&c, 2, &[Target::Q, Target::V], 1).unwrap();
        let dir = tmp("perm");
        a.save(&dir, &c, "synthetic").unwrap();
        let inter = LoraAdapter::load(&dir, &cfg(RopeStyle::Interleaved)).unwrap();
        let (q0, q1) = (
            a.module(0, Target::Q).unwrap(),
            inter.module(0, Target::Q).unwrap(),
        );
        // Row 1 of the interleaved layout is row d/2 = 2 of head 0 in HF's.
        assert_eq!(q1.b[2..4], q0.b[2 * 2..3 * 2]);
        assert_ne!(q1.b, q0.b);
        assert_eq!(
            a.module(1, Target::V).unwrap().b,
            inter.module(1, Target::V).unwrap().b
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rank_and_alpha_patterns_pick_the_longest_matching_key() {
        let mut p = BTreeMap::new();
        p.insert("q_proj".to_string(), 4);
        p.insert("layers.1.self_attn.q_proj".to_string(), 8);
        assert_eq!(pick_pattern(&p, "model.layers.0.self_attn.q_proj"), Some(4));
        assert_eq!(pick_pattern(&p, "model.layers.1.self_attn.q_proj"), Some(8));
        assert_eq!(pick_pattern(&p, "model.layers.1.self_attn.k_proj"), None);
        // `1.self_attn.q_proj` must not match layer 11.
        assert!(!pattern_matches(
            "1.self_attn.q_proj",
            "model.layers.11.self_attn.q_proj"
        ));
    }

    #[test]
    fn bad_adapters_are_clear_errors() {
        let c = cfg(RopeStyle::Halves);
        let dir = tmp("bad");
        assert!(matches!(
            LoraAdapter::load(&dir, &c),
            Err(ModelError::NotFound(_))
        ));
        let a = LoraAdapter::synth(&c, 2, &[Target::Q], 1).unwrap();
        a.save(&dir, &c, "synthetic").unwrap();
        // Wrong model shape.
        let mut other = c.clone();
        other.hidden_size = 32;
        other.head_dim = 8;
        let e = LoraAdapter::load(&dir, &other).unwrap_err().to_string();
        assert!(e.contains("want ["), "{e}");
        // Rank in the config disagrees with the tensors.
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).unwrap();
        std::fs::write(&cfg_path, text.replace("\"r\": 2", "\"r\": 3")).unwrap();
        assert!(LoraAdapter::load(&dir, &c).is_err());
        std::fs::write(&cfg_path, text.replace("q_proj\"", "lm_head\"")).unwrap();
        let e = LoraAdapter::load(&dir, &c).unwrap_err().to_string();
        assert!(e.contains("unknown LoRA target `lm_head`"), "{e}");
        std::fs::write(&cfg_path, &text).unwrap();
        // A corrupt weights file.
        std::fs::write(dir.join(WEIGHTS_FILE), b"not safetensors").unwrap();
        let e = LoraAdapter::load(&dir, &c).unwrap_err().to_string();
        assert!(e.contains(WEIGHTS_FILE), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn delta_is_scale_b_a() {
        let c = cfg(RopeStyle::Halves);
        let a = LoraAdapter::synth(&c, 2, &[Target::V], 3).unwrap();
        let m = a.module(0, Target::V).unwrap();
        let d = m.delta();
        let (n, k) = Target::V.shape(&c);
        for r in 0..n {
            for col in 0..k {
                let want: f32 = (0..2)
                    .map(|i| m.b[r * 2 + i] * m.a[i * k + col])
                    .sum::<f32>()
                    * m.scale;
                assert!((d[r * k + col] - want).abs() < 1e-6);
            }
        }
    }
}
