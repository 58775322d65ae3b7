//! A collection: documents chunked, embedded, indexed and stored, on disk.
//!
//! ```text
//! <root>/<name>/store.sqlite     chunk text and metadata (SQLite)
//!              /index/           the vector index (checksummed, atomic saves)
//!              /committed.json   the last batch whose vectors were saved
//! ```
//!
//! Ingestion goes in batches of documents. Each batch is stored in one
//! SQLite transaction stamped with its number, its vectors are added to the
//! index, the index is saved, and only then `committed.json` moves to that
//! batch (written to a temporary file, fsynced, renamed). A crash anywhere
//! in between (even `kill -9`) leaves the previous batch committed: on open,
//! rows of later batches are rolled back, and the index on disk is the one
//! saved with the committed batch.

use crate::chunk::{self, Chunker};
use crate::embed::Embedder;
use crate::index::{self, flat::FlatIndex, hnsw::HnswIndex, hnsw::HnswParams, VectorIndex};
use crate::store::{ChunkRecord, NewDocument, Store};
use crate::{io_err, RagError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a new collection is built (an existing one keeps its own).
#[derive(Debug, Clone)]
pub struct CollectionOptions {
    /// A chunker spec (see [`chunk::from_spec`]).
    pub chunker: String,
    /// `hnsw` or `flat`.
    pub index: String,
    /// Documents per committed batch.
    pub batch_docs: usize,
}

impl Default for CollectionOptions {
    fn default() -> Self {
        Self {
            chunker: "recursive:800".into(),
            index: "hnsw".into(),
            batch_docs: 32,
        }
    }
}

/// A retrieved chunk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retrieved {
    pub score: f32,
    #[serde(flatten)]
    pub chunk: ChunkRecord,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestStats {
    pub documents: usize,
    pub chunks: usize,
    pub batches: usize,
}

pub struct Collection {
    dir: PathBuf,
    store: Store,
    index: Box<dyn VectorIndex>,
    embedder: Arc<dyn Embedder>,
    chunker: Box<dyn Chunker>,
    chunker_spec: String,
    committed: u64,
    batch_docs: usize,
}

/// Collection names: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RagError::Input(format!(
            "collection name {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, `_`, `-`, `.`, not starting with `.`"
        )))
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl Collection {
    /// Opens `root/name`, creating it with `opts` if it does not exist, and
    /// rolls back any batch a crash left half-done.
    pub fn open(
        root: &Path,
        name: &str,
        embedder: Arc<dyn Embedder>,
        opts: &CollectionOptions,
    ) -> Result<Self> {
        check_name(name)?;
        if opts.batch_docs == 0 {
            return Err(RagError::Input("batch size must be positive".into()));
        }
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut store = Store::open(&dir.join("store.sqlite"))?;
        let chunker_spec = match store.get_meta("chunker")? {
            Some(c) => c,
            None => {
                // Fail on a bad spec before anything is written.
                chunk::from_spec(&opts.chunker, Some(embedder.clone()), None)?;
                store.set_meta("chunker", &opts.chunker)?;
                store.set_meta("index", &opts.index)?;
                store.set_meta("dim", &embedder.dim().to_string())?;
                opts.chunker.clone()
            }
        };
        let dim: usize = store
            .get_meta("dim")?
            .and_then(|d| d.parse().ok())
            .unwrap_or(embedder.dim());
        if dim != embedder.dim() {
            return Err(RagError::Input(format!(
                "collection {name} holds {dim}-d vectors; the embedder makes {}-d ones",
                embedder.dim()
            )));
        }
        let chunker = chunk::from_spec(&chunker_spec, Some(embedder.clone()), None)?;
        let committed_path = dir.join("committed.json");
        let committed: u64 = if committed_path.is_file() {
            let text = std::fs::read_to_string(&committed_path).map_err(io_err(&committed_path))?;
            serde_json::from_str::<serde_json::Value>(&text)?["batch"]
                .as_u64()
                .ok_or_else(|| RagError::Corrupt {
                    what: committed_path.display().to_string(),
                    detail: "no batch number".into(),
                })?
        } else {
            0
        };
        let index_dir = dir.join("index");
        let index: Box<dyn VectorIndex> = if committed > 0 {
            index::load(&index_dir)?
        } else {
            match store.get_meta("index")?.as_deref().unwrap_or("hnsw") {
                "flat" => Box::new(FlatIndex::new(dim)?),
                "hnsw" => Box::new(HnswIndex::new(dim, HnswParams::default())?),
                other => {
                    return Err(RagError::Input(format!(
                        "unknown index kind {other:?} (hnsw, flat)"
                    )))
                }
            }
        };
        let dropped = store.rollback_after(committed)?;
        if dropped > 0 {
            tracing_note(&format!(
                "collection {name}: rolled back {dropped} chunks of an interrupted ingest"
            ));
        }
        Ok(Self {
            dir,
            store,
            index,
            embedder,
            chunker,
            chunker_spec,
            committed,
            batch_docs: opts.batch_docs,
        })
    }

    pub fn chunker_spec(&self) -> &str {
        &self.chunker_spec
    }

    pub fn count_documents(&self) -> Result<usize> {
        self.store.count_documents()
    }

    pub fn count_chunks(&self) -> usize {
        self.index.len()
    }

    /// Chunks, embeds and stores `(source, text)` documents, committing
    /// every `batch_docs` documents; `progress(documents done)`.
    pub fn ingest(
        &mut self,
        docs: &[(String, String)],
        mut progress: impl FnMut(usize),
    ) -> Result<IngestStats> {
        let mut stats = IngestStats::default();
        for batch in docs.chunks(self.batch_docs) {
            let chunked: Vec<Vec<chunk::Chunk>> = batch
                .iter()
                .map(|(_, text)| self.chunker.chunk(text))
                .collect::<Result<_>>()?;
            let texts: Vec<&str> = batch
                .iter()
                .zip(&chunked)
                .flat_map(|((_, text), cs)| cs.iter().map(move |c| c.text(text)))
                .collect();
            let vectors = self.embedder.embed(&texts)?;
            let new_docs: Vec<NewDocument<'_>> = batch
                .iter()
                .zip(&chunked)
                .map(|((source, text), chunks)| NewDocument {
                    source,
                    text,
                    chunks,
                })
                .collect();
            let number = self.committed + 1;
            let ids = self.store.insert_batch(number, &new_docs)?;
            let items: Vec<(u64, Vec<f32>)> = ids.iter().copied().zip(vectors).collect();
            self.index.add(&items)?;
            self.index.save(&self.dir.join("index"))?;
            write_atomic(
                &self.dir.join("committed.json"),
                serde_json::json!({ "batch": number })
                    .to_string()
                    .as_bytes(),
            )?;
            self.committed = number;
            stats.documents += batch.len();
            stats.chunks += ids.len();
            stats.batches += 1;
            progress(stats.documents);
        }
        Ok(stats)
    }

    /// The `k` chunks most similar to `query`, best first.
    pub fn query(&self, query: &str, k: usize) -> Result<Vec<Retrieved>> {
        if query.trim().is_empty() {
            return Err(RagError::Input("the query is empty".into()));
        }
        if k == 0 || self.index.is_empty() {
            return Ok(vec![]);
        }
        let q = self
            .embedder
            .embed(&[query])?
            .pop()
            .ok_or_else(|| RagError::Input("the embedder returned nothing".into()))?;
        let hits = self.index.search(&q, k)?;
        let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
        let records = self.store.chunks(&ids)?;
        Ok(hits
            .iter()
            .filter_map(|h| {
                records.iter().find(|r| r.id == h.id).map(|r| Retrieved {
                    score: h.score,
                    chunk: r.clone(),
                })
            })
            .collect())
    }

    /// Removes every document stored under `source`; returns the chunks
    /// removed. The index keeps tombstones until it is rebuilt.
    pub fn delete_source(&mut self, source: &str) -> Result<usize> {
        let ids = self.store.delete_source(source)?;
        for &id in &ids {
            self.index.remove(id)?;
        }
        if !ids.is_empty() {
            self.index.save(&self.dir.join("index"))?;
        }
        Ok(ids.len())
    }
}

fn tracing_note(msg: &str) {
    eprintln!("{msg}");
}
