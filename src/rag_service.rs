//! The server's [`Retrieval`] over the `rag` crate: one embedding model and
//! the collections under one folder (the same ones `sdlab rag ingest` and
//! `query` use).
//!
//! Collections are opened on first use and kept open; each is behind its
//! own mutex (a query and an ingest on one collection take turns, different
//! collections run side by side). A collection changed on disk by another
//! process while the server has it open is not reloaded.

use rag::collection::{check_name, Collection, CollectionOptions};
use rag::embed::Embedder;
use rag::RagError;
use server::retrieval::{
    AddOutcome, CollectionInfo, Embeddings, NewDocument, Passage, Retrieval, RetrievalError,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// The service `sdlab serve` runs: `--embedding-model` (a folder, `hashing`
/// or `none`; by default MiniLM when it is in the cache, else none, with a
/// warning) over the collections in `--rag-dir`.
pub fn from_args(
    model: &Option<PathBuf>,
    rag_dir: &Option<PathBuf>,
    chunker: &str,
) -> anyhow::Result<Option<Arc<dyn Retrieval>>> {
    if model.as_deref() == Some(std::path::Path::new("none")) {
        return Ok(None);
    }
    if model.is_none() && !models::bert::default_path().join("config.json").is_file() {
        tracing::warn!(
            "no embedding model in the cache ({}): /v1/embeddings and /v1/rag are off; `make models` fetches all-MiniLM-L6-v2",
            models::bert::default_path().display()
        );
        return Ok(None);
    }
    let embedder = crate::rag_collection_cmd::embedder(model)?;
    let name = match model {
        Some(p) if p.as_os_str() == "hashing" => format!("hashing-{}", embedder.dim()),
        Some(p) => p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string()),
        None => "all-MiniLM-L6-v2".to_string(),
    };
    rag::chunk::from_spec(chunker, Some(embedder.clone()), None)
        .map_err(|e| anyhow::anyhow!("--rag-chunker: {e}"))?;
    let root = crate::rag_collection_cmd::root(rag_dir);
    tracing::info!(
        "embeddings: {name} ({}-d); RAG collections in {}",
        embedder.dim(),
        root.display()
    );
    Ok(Some(Arc::new(RagService::new(
        root,
        name,
        embedder,
        CollectionOptions {
            chunker: chunker.to_string(),
            ..CollectionOptions::default()
        },
    ))))
}

pub struct RagService {
    root: PathBuf,
    model_name: String,
    embedder: Arc<dyn Embedder>,
    /// Chunker and index of collections created over HTTP.
    defaults: CollectionOptions,
    open: Mutex<HashMap<String, Arc<Mutex<Collection>>>>,
}

fn to_retrieval(e: RagError) -> RetrievalError {
    match e {
        RagError::Input(message) => RetrievalError::Invalid {
            message,
            param: None,
        },
        RagError::NotFound(m) => RetrievalError::NotFound(m),
        other => RetrievalError::Internal(other.to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RagService {
    pub fn new(
        root: PathBuf,
        model_name: String,
        embedder: Arc<dyn Embedder>,
        defaults: CollectionOptions,
    ) -> Self {
        Self {
            root,
            model_name,
            embedder,
            defaults,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.root.join(name).join("store.sqlite").is_file()
    }

    /// The open collection `name`; `create` with `chunker` when missing.
    fn collection(
        &self,
        name: &str,
        create: Option<Option<&str>>,
    ) -> Result<(Arc<Mutex<Collection>>, bool), RetrievalError> {
        check_name(name).map_err(to_retrieval)?;
        let mut open = lock(&self.open);
        if let Some(c) = open.get(name) {
            return Ok((c.clone(), false));
        }
        let created = !self.exists(name);
        let opts = match create {
            _ if !created => self.defaults.clone(),
            None => {
                return Err(RetrievalError::NotFound(format!(
                    "no collection named `{name}`; add documents to create it"
                )))
            }
            Some(chunker) => CollectionOptions {
                chunker: chunker.unwrap_or(&self.defaults.chunker).to_string(),
                ..self.defaults.clone()
            },
        };
        if created {
            // Check the spec before anything is written to disk.
            rag::chunk::from_spec(&opts.chunker, Some(self.embedder.clone()), None).map_err(
                |e| RetrievalError::Invalid {
                    message: e.to_string(),
                    param: Some("chunker"),
                },
            )?;
        }
        let c = Collection::open(&self.root, name, self.embedder.clone(), &opts)
            .map_err(to_retrieval)?;
        let c = Arc::new(Mutex::new(c));
        open.insert(name.to_string(), c.clone());
        Ok((c, created))
    }
}

impl Retrieval for RagService {
    fn embedding_model(&self) -> &str {
        &self.model_name
    }

    fn dimension(&self) -> usize {
        self.embedder.dim()
    }

    fn embed(&self, texts: &[String]) -> Result<Embeddings, RetrievalError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (vectors, tokens) = self.embedder.embed_counted(&refs).map_err(to_retrieval)?;
        Ok(Embeddings { vectors, tokens })
    }

    fn add_documents(
        &self,
        collection: &str,
        docs: &[NewDocument],
        chunker: Option<&str>,
    ) -> Result<AddOutcome, RetrievalError> {
        let (c, created) = self.collection(collection, Some(chunker))?;
        let mut c = lock(&c);
        if let Some(want) = chunker {
            if want != c.chunker_spec() {
                return Err(RetrievalError::Invalid {
                    message: format!(
                        "collection `{collection}` chunks with `{}`; a collection's chunker cannot change",
                        c.chunker_spec()
                    ),
                    param: Some("chunker"),
                });
            }
        }
        let pairs: Vec<(String, String)> = docs
            .iter()
            .map(|d| (d.source.clone(), d.text.clone()))
            .collect();
        let stats = c.ingest(&pairs, |_| {}).map_err(to_retrieval)?;
        Ok(AddOutcome {
            created,
            documents: stats.documents,
            chunks: stats.chunks,
            chunker: c.chunker_spec().to_string(),
            total_documents: c.count_documents().map_err(to_retrieval)?,
            total_chunks: c.count_chunks(),
        })
    }

    fn query(
        &self,
        collection: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<Passage>, RetrievalError> {
        let (c, _) = self.collection(collection, None)?;
        let hits = lock(&c).query(query, k).map_err(to_retrieval)?;
        Ok(hits
            .into_iter()
            .map(|h| Passage {
                id: h.chunk.id,
                score: h.score,
                source: h.chunk.source,
                start: h.chunk.start,
                end: h.chunk.end,
                text: h.chunk.text,
            })
            .collect())
    }

    fn collections(&self) -> Result<Vec<CollectionInfo>, RetrievalError> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| check_name(n).is_ok() && self.exists(n))
                .collect(),
            Err(_) => vec![],
        };
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let (c, _) = self.collection(&name, None)?;
                let c = lock(&c);
                Ok(CollectionInfo {
                    documents: c.count_documents().map_err(to_retrieval)?,
                    chunks: c.count_chunks(),
                    chunker: c.chunker_spec().to_string(),
                    name,
                })
            })
            .collect()
    }
}
