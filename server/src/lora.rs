//! The adapter registry: which LoRA adapters the server knows, which are
//! resident in memory, and hot swapping them while requests run.
//!
//! - A *registered* adapter has a name and a folder (`--lora-modules`, the
//!   folders under `--lora-dir` at start-up, or `POST /v1/load_lora_adapter`).
//! - At most `--max-loras` are *resident* (weights in memory). A request for
//!   a registered adapter that is not resident reads it from disk, evicting
//!   the least recently used resident adapter that no request is using; if
//!   every resident adapter is in use, the request is refused (503), never
//!   an adapter pulled from under a running request.
//! - A request holds an `Arc` of its adapter until it finishes, so unloading
//!   or reloading a name never changes a request already running; an
//!   [`AdapterLease`] per HTTP request counts the requests using it, and
//!   only an adapter with none is evicted.
//! - Every read from disk gets a fresh `key`, unique per (name, generation);
//!   the prefix cache hashes it into every block, so blocks computed under
//!   another adapter, or another generation of the same one, never match.
//! - Runtime loads are confined to `--lora-dir`: no `..`, and the resolved
//!   path (symlinks followed) must stay inside it. An adapter is read and
//!   checked completely before the registry changes, so a bad one changes
//!   nothing.

use models::{LlamaConfig, LoraAdapter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// An adapter as requests hold it.
#[derive(Debug)]
pub struct ActiveAdapter {
    pub name: String,
    /// Unique per load from disk: the prefix-cache key of (name, generation).
    pub key: u32,
    pub generation: u32,
    pub weights: LoraAdapter,
    /// Requests holding a lease.
    requests: AtomicUsize,
}

impl ActiveAdapter {
    /// An adapter outside any registry (benchmarks, embedders); `key` must
    /// be unique among the adapters that share an engine.
    pub fn new(name: &str, key: u32, weights: LoraAdapter) -> Self {
        Self {
            name: name.to_string(),
            key,
            generation: 1,
            weights,
            requests: AtomicUsize::new(0),
        }
    }
}

/// One request's claim on an adapter: while any lease is alive the adapter
/// is never evicted.
#[derive(Debug)]
pub struct AdapterLease(Arc<ActiveAdapter>);

impl AdapterLease {
    /// The adapter, to hand to the engine (which keeps it to the end).
    pub fn adapter(&self) -> Arc<ActiveAdapter> {
        self.0.clone()
    }
}

impl std::ops::Deref for AdapterLease {
    type Target = ActiveAdapter;
    fn deref(&self) -> &ActiveAdapter {
        &self.0
    }
}

impl Drop for AdapterLease {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lease(a: &Arc<ActiveAdapter>) -> AdapterLease {
    a.requests.fetch_add(1, Ordering::AcqRel);
    AdapterLease(a.clone())
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoraError {
    /// 404: no such adapter name or path.
    #[error("{0}")]
    NotFound(String),
    /// 400: a bad name, path or adapter file.
    #[error("{0}")]
    Invalid(String),
    /// 503: every resident adapter is in use.
    #[error("{0}")]
    Busy(String),
}

/// Registry limits, as the CLI takes them.
#[derive(Debug, Clone)]
pub struct LoraOptions {
    /// `NAME=PATH` adapters loaded at start-up (trusted: not confined).
    pub modules: Vec<(String, PathBuf)>,
    /// The folder runtime loads must come from; its sub-folders holding an
    /// `adapter_config.json` are registered at start-up under their names.
    pub lora_dir: Option<PathBuf>,
    pub max_loras: usize,
    pub max_lora_rank: usize,
}

impl Default for LoraOptions {
    fn default() -> Self {
        Self {
            modules: vec![],
            lora_dir: None,
            max_loras: 4,
            max_lora_rank: 64,
        }
    }
}

/// What `GET /v1/models` and the load endpoint report of an adapter.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub path: String,
    pub generation: u32,
    pub resident: bool,
    pub rank: Option<usize>,
    /// Requests holding this adapter now.
    pub in_flight: usize,
}

struct Entry {
    path: PathBuf,
    generation: u32,
    resident: Option<Arc<ActiveAdapter>>,
    last_used: u64,
}

impl Entry {
    fn in_flight(&self) -> usize {
        self.resident
            .as_ref()
            .map_or(0, |a| a.requests.load(Ordering::Acquire))
    }
}

struct Inner {
    entries: BTreeMap<String, Entry>,
    next_key: u32,
    tick: u64,
}

pub struct AdapterRegistry {
    cfg: LlamaConfig,
    base_name: String,
    opts: LoraOptions,
    /// `--lora-dir`, canonical.
    root: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl AdapterRegistry {
    /// Registers `--lora-dir`'s adapters and loads every `--lora-modules`
    /// one (failing on the first bad one, as a start-up error should).
    pub fn new(cfg: LlamaConfig, base_name: &str, opts: LoraOptions) -> Result<Self, LoraError> {
        if opts.max_loras == 0 || opts.max_lora_rank == 0 {
            return Err(LoraError::Invalid(
                "--max-loras and --max-lora-rank must be positive".into(),
            ));
        }
        let root = match &opts.lora_dir {
            Some(d) => Some(
                d.canonicalize()
                    .map_err(|e| LoraError::NotFound(format!("--lora-dir {}: {e}", d.display())))?,
            ),
            None => None,
        };
        let reg = Self {
            cfg,
            base_name: base_name.to_string(),
            opts: opts.clone(),
            root,
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                next_key: 1,
                tick: 0,
            }),
        };
        if let Some(root) = &reg.root {
            let dirs = std::fs::read_dir(root)
                .map_err(|e| LoraError::Invalid(format!("--lora-dir {}: {e}", root.display())))?;
            let mut inner = reg.lock();
            for d in dirs.flatten() {
                let path = d.path();
                let name = d.file_name().to_string_lossy().to_string();
                if path.join(models::lora::CONFIG_FILE).is_file() && reg.check_name(&name).is_ok() {
                    inner.entries.insert(
                        name,
                        Entry {
                            path,
                            generation: 0,
                            resident: None,
                            last_used: 0,
                        },
                    );
                }
            }
        }
        for (name, path) in &opts.modules {
            reg.load_trusted(name, path)?;
        }
        Ok(reg)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is `name` an adapter (rather than the base model or unknown)?
    pub fn is_registered(&self, name: &str) -> bool {
        self.lock().entries.contains_key(name)
    }

    /// The adapter a request names, made resident if it is not.
    pub fn acquire(&self, name: &str) -> Result<AdapterLease, LoraError> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let Some(entry) = inner.entries.get_mut(name) else {
            return Err(LoraError::NotFound(format!(
                "the model `{name}` does not exist; this server serves `{}` and its adapters (GET /v1/models)",
                self.base_name
            )));
        };
        entry.last_used = tick;
        if let Some(a) = &entry.resident {
            return Ok(lease(a));
        }
        let path = entry.path.clone();
        let weights = self.read(&path)?;
        self.make_room(&mut inner, name)?;
        tracing::info!(adapter = name, "LoRA adapter read into memory on demand");
        Ok(lease(&self.install(&mut inner, name, path, weights)))
    }

    /// `POST /v1/load_lora_adapter`: `path` relative to `--lora-dir` (or
    /// absolute inside it). Loading a registered name again reloads it as a
    /// new generation.
    pub fn load(&self, name: &str, path: &str) -> Result<AdapterInfo, LoraError> {
        self.check_name(name)?;
        let path = self.confine(path)?;
        self.load_trusted(name, &path)?;
        self.info(name)
    }

    fn load_trusted(&self, name: &str, path: &Path) -> Result<(), LoraError> {
        self.check_name(name)?;
        let weights = self.read(path)?;
        let mut inner = self.lock();
        inner.tick += 1;
        self.make_room(&mut inner, name)?;
        self.install(&mut inner, name, path.to_path_buf(), weights);
        tracing::info!(adapter = name, path = %path.display(), "LoRA adapter loaded");
        Ok(())
    }

    /// `POST /v1/unload_lora_adapter`: forgets the name. Requests already
    /// running keep their copy until they finish.
    pub fn unload(&self, name: &str) -> Result<(), LoraError> {
        let removed = self.lock().entries.remove(name);
        match removed {
            Some(e) => {
                tracing::info!(
                    adapter = name,
                    in_flight = e.in_flight(),
                    "LoRA adapter unloaded"
                );
                Ok(())
            }
            None => Err(LoraError::NotFound(format!(
                "no adapter named `{name}` is loaded"
            ))),
        }
    }

    pub fn list(&self) -> Vec<AdapterInfo> {
        let inner = self.lock();
        inner.entries.iter().map(|(n, e)| info(n, e)).collect()
    }

    pub fn info(&self, name: &str) -> Result<AdapterInfo, LoraError> {
        let inner = self.lock();
        inner
            .entries
            .get(name)
            .map(|e| info(name, e))
            .ok_or_else(|| LoraError::NotFound(format!("no adapter named `{name}`")))
    }

    /// Adapters whose weights are in memory.
    /// `--max-loras`: adapters resident at once.
    pub fn max_loras(&self) -> usize {
        self.opts.max_loras
    }

    pub fn resident_count(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.resident.is_some())
            .count()
    }

    fn check_name(&self, name: &str) -> Result<(), LoraError> {
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(LoraError::Invalid(
                "`lora_name` must be 1 to 256 printable characters".into(),
            ));
        }
        if name == self.base_name {
            return Err(LoraError::Invalid(format!(
                "`{name}` is the base model's name"
            )));
        }
        Ok(())
    }

    /// Reads and checks an adapter; nothing is registered here.
    fn read(&self, path: &Path) -> Result<LoraAdapter, LoraError> {
        let a = LoraAdapter::load(path, &self.cfg).map_err(|e| match e {
            models::ModelError::NotFound(m) => LoraError::NotFound(m),
            models::ModelError::Format { path, message } => {
                LoraError::Invalid(format!("invalid LoRA adapter {path}: {message}"))
            }
            other => LoraError::Invalid(format!("LoRA adapter {}: {other}", path.display())),
        })?;
        if a.max_rank() > self.opts.max_lora_rank {
            return Err(LoraError::Invalid(format!(
                "{}: rank {} is over --max-lora-rank {}",
                path.display(),
                a.max_rank(),
                self.opts.max_lora_rank
            )));
        }
        Ok(a)
    }

    /// Evicts least recently used idle adapters until one more than `name`
    /// fits in `--max-loras` (`name`'s own slot is reused on a reload).
    fn make_room(&self, inner: &mut Inner, name: &str) -> Result<(), LoraError> {
        loop {
            let resident = inner
                .entries
                .iter()
                .filter(|(n, e)| e.resident.is_some() && n.as_str() != name);
            if resident.clone().count() < self.opts.max_loras {
                return Ok(());
            }
            let victim = resident
                .filter(|(_, e)| e.in_flight() == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(n, _)| n.clone());
            let Some(victim) = victim else {
                return Err(LoraError::Busy(format!(
                    "all {} resident adapters (--max-loras) have requests in flight; retry when one finishes",
                    self.opts.max_loras
                )));
            };
            tracing::info!(adapter = %victim, "LoRA adapter evicted from memory (least recently used)");
            if let Some(e) = inner.entries.get_mut(&victim) {
                e.resident = None;
            }
        }
    }

    /// Makes a checked adapter resident under `name` (a new generation);
    /// [`Self::make_room`] ran first.
    fn install(
        &self,
        inner: &mut Inner,
        name: &str,
        path: PathBuf,
        weights: LoraAdapter,
    ) -> Arc<ActiveAdapter> {
        let key = inner.next_key;
        inner.next_key = inner.next_key.wrapping_add(1).max(1);
        let tick = inner.tick;
        let entry = inner.entries.entry(name.to_string()).or_insert(Entry {
            path: path.clone(),
            generation: 0,
            resident: None,
            last_used: tick,
        });
        entry.path = path;
        entry.generation += 1;
        entry.last_used = tick;
        let active = Arc::new(ActiveAdapter {
            name: name.to_string(),
            key,
            generation: entry.generation,
            weights,
            requests: AtomicUsize::new(0),
        });
        entry.resident = Some(active.clone());
        active
    }

    /// Resolves a runtime `lora_path` inside `--lora-dir`.
    fn confine(&self, given: &str) -> Result<PathBuf, LoraError> {
        let Some(root) = &self.root else {
            return Err(LoraError::Invalid(
                "runtime loading is off: start the server with --lora-dir DIR to load adapters from DIR".into(),
            ));
        };
        let p = Path::new(given);
        if given.is_empty() || p.components().any(|c| c == Component::ParentDir) {
            return Err(LoraError::Invalid(format!(
                "`lora_path` {given:?} must name a folder inside --lora-dir, without `..`"
            )));
        }
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        };
        let canon = joined.canonicalize().map_err(|_| {
            LoraError::NotFound(format!(
                "`lora_path` {given:?} does not exist in --lora-dir"
            ))
        })?;
        let inside = |q: &Path| q.canonicalize().map_or(true, |c| c.starts_with(root));
        if !canon.starts_with(root)
            || !inside(&canon.join(models::lora::CONFIG_FILE))
            || !inside(&canon.join(models::lora::WEIGHTS_FILE))
        {
            return Err(LoraError::Invalid(format!(
                "`lora_path` {given:?} leads outside --lora-dir"
            )));
        }
        Ok(canon)
    }
}

fn info(name: &str, e: &Entry) -> AdapterInfo {
    AdapterInfo {
        name: name.to_string(),
        path: e.path.display().to_string(),
        generation: e.generation,
        resident: e.resident.is_some(),
        rank: e.resident.as_ref().map(|a| a.weights.max_rank()),
        in_flight: e.in_flight(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::lora::Target;
    use models::RopeStyle;

    fn cfg() -> LlamaConfig {
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
            rope_style: RopeStyle::Halves,
        }
    }

    /// A `--lora-dir` holding adapters `a`, `b`, `c` (rank 2) and `big` (rank 8).
    fn lora_dir(tag: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("sdlab-registry-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            LoraAdapter::synth(&cfg(), 2, &[Target::Q], i as u64)
                .unwrap()
                .save(&root.join(name), &cfg(), "base")
                .unwrap();
        }
        LoraAdapter::synth(&cfg(), 8, &[Target::V], 9)
            .unwrap()
            .save(&root.join("big"), &cfg(), "base")
            .unwrap();
        root
    }

    fn registry(root: &Path, max_loras: usize) -> AdapterRegistry {
        AdapterRegistry::new(
            cfg(),
            "base",
            LoraOptions {
                modules: vec![],
                lora_dir: Some(root.to_path_buf()),
                max_loras,
                max_lora_rank: 4,
            },
        )
        .unwrap()
    }

    #[test]
    fn lru_evicts_an_idle_adapter_never_one_in_flight() {
        let root = lora_dir("lru");
        let reg = registry(&root, 2);
        assert_eq!(
            reg.resident_count(),
            0,
            "--lora-dir adapters load on first use"
        );
        let a = reg.acquire("a").unwrap();
        let b = reg.acquire("b").unwrap();
        assert_eq!(reg.info("a").unwrap().in_flight, 1);
        // Both slots hold adapters with requests in flight: refuse, change nothing.
        assert!(matches!(reg.acquire("c"), Err(LoraError::Busy(_))));
        assert!(reg.info("a").unwrap().resident && reg.info("b").unwrap().resident);
        // `a` finishes; `b` is still running: `a` is the one evicted.
        drop(a);
        let c = reg.acquire("c").unwrap();
        assert!(!reg.info("a").unwrap().resident);
        assert!(reg.info("b").unwrap().resident);
        assert_eq!(reg.resident_count(), 2);
        drop((b, c));
        // `a` comes back from disk as a new generation with a new key.
        let a2 = reg.acquire("a").unwrap();
        assert_eq!(a2.generation, 2);
        // LRU: `b` was used before `c`, so `b` went.
        assert!(!reg.info("b").unwrap().resident && reg.info("c").unwrap().resident);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn reload_bumps_generation_and_unload_keeps_running_requests_whole() {
        let root = lora_dir("swap");
        let reg = registry(&root, 4);
        let first = reg.acquire("a").unwrap();
        reg.load("a", "b").unwrap();
        let second = reg.acquire("a").unwrap();
        assert_eq!((first.generation, second.generation), (1, 2));
        assert_ne!(first.key, second.key, "a new generation hashes differently");
        reg.unload("a").unwrap();
        assert!(matches!(reg.acquire("a"), Err(LoraError::NotFound(_))));
        assert!(matches!(reg.unload("a"), Err(LoraError::NotFound(_))));
        // The running requests still hold their weights.
        assert_eq!(first.weights.max_rank(), 2);
        assert_eq!(second.weights.max_rank(), 2);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn bad_loads_are_refused_and_change_nothing() {
        let root = lora_dir("bad");
        let reg = registry(&root, 4);
        let before = reg.list().len();
        let invalid = |r: Result<AdapterInfo, LoraError>| matches!(r, Err(LoraError::Invalid(_)));
        assert!(invalid(reg.load("x", "../a")), "`..`");
        assert!(invalid(reg.load("x", "a/../b")), "`..` inside");
        assert!(invalid(reg.load("x", "/etc")), "absolute outside");
        assert!(invalid(reg.load("x", "big")), "over --max-lora-rank");
        assert!(invalid(reg.load("base", "a")), "the base model's name");
        assert!(invalid(reg.load("", "a")), "empty name");
        assert!(matches!(reg.load("x", "nope"), Err(LoraError::NotFound(_))));
        // A symlink out of the folder.
        let outside =
            std::env::temp_dir().join(format!("sdlab-registry-outside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&outside);
        LoraAdapter::synth(&cfg(), 2, &[Target::Q], 5)
            .unwrap()
            .save(&outside, &cfg(), "base")
            .unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        assert!(
            invalid(reg.load("x", "escape")),
            "symlink out of --lora-dir"
        );
        // A corrupt weights file.
        std::fs::create_dir_all(root.join("corrupt")).unwrap();
        std::fs::copy(
            root.join("a").join(models::lora::CONFIG_FILE),
            root.join("corrupt").join(models::lora::CONFIG_FILE),
        )
        .unwrap();
        std::fs::write(
            root.join("corrupt").join(models::lora::WEIGHTS_FILE),
            b"garbage",
        )
        .unwrap();
        assert!(invalid(reg.load("x", "corrupt")));
        assert_eq!(reg.list().len(), before);
        assert!(reg.info("x").is_err());
        // An absolute path inside the folder is fine.
        let abs = root.canonicalize().unwrap().join("a");
        assert_eq!(reg.load("x", abs.to_str().unwrap()).unwrap().generation, 1);
        // Without --lora-dir, runtime loading is off.
        let closed = AdapterRegistry::new(cfg(), "base", LoraOptions::default()).unwrap();
        assert!(invalid(closed.load("x", abs.to_str().unwrap())));
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }
}
