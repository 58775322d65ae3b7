//! Chunk text and metadata in SQLite, keyed by the vector ids.
//!
//! The vector index holds only ids and vectors; what a hit *is* (its text,
//! its document, where in the document it sits) lives here, in a real
//! embedded database with transactions. Every ingest batch is one
//! transaction stamped with its batch number, so a collection can roll back
//! to the last batch whose vectors reached the index (see
//! [`crate::collection`]).

use crate::{RagError, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// A stored chunk.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChunkRecord {
    /// The vector id.
    pub id: u64,
    pub doc_id: u64,
    /// The document's source (a path or a caller's name).
    pub source: String,
    /// Byte offsets into the document.
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// A document and its chunks, ready to store.
pub struct NewDocument<'a> {
    pub source: &'a str,
    pub text: &'a str,
    /// Byte ranges of `text`.
    pub chunks: &'a [crate::chunk::Chunk],
}

pub struct Store {
    conn: Connection,
}

fn db_err(e: rusqlite::Error) -> RagError {
    RagError::Corrupt {
        what: "chunk store".into(),
        detail: e.to_string(),
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS documents (
                 id INTEGER PRIMARY KEY, source TEXT NOT NULL, text TEXT NOT NULL, batch INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS chunks (
                 id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id),
                 start INTEGER NOT NULL, end_ INTEGER NOT NULL, batch INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS chunks_batch ON chunks(batch);
             CREATE INDEX IF NOT EXISTS documents_source ON documents(source);",
        )
        .map_err(db_err)?;
        Ok(Self { conn })
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(db_err)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Stores documents and their chunks in one transaction as batch
    /// `batch`; returns the new chunk (vector) ids, in order.
    pub fn insert_batch(&mut self, batch: u64, docs: &[NewDocument<'_>]) -> Result<Vec<u64>> {
        let tx = self.conn.transaction().map_err(db_err)?;
        let mut ids = Vec::new();
        {
            let mut doc_stmt = tx
                .prepare("INSERT INTO documents (source, text, batch) VALUES (?1, ?2, ?3)")
                .map_err(db_err)?;
            let mut chunk_stmt = tx
                .prepare("INSERT INTO chunks (doc_id, start, end_, batch) VALUES (?1, ?2, ?3, ?4)")
                .map_err(db_err)?;
            for d in docs {
                doc_stmt
                    .execute(params![d.source, d.text, batch as i64])
                    .map_err(db_err)?;
                let doc_id = tx.last_insert_rowid();
                for c in d.chunks {
                    if c.start >= c.end || c.end > d.text.len() {
                        return Err(RagError::Input(format!(
                            "chunk {}..{} is outside {} ({} bytes)",
                            c.start,
                            c.end,
                            d.source,
                            d.text.len()
                        )));
                    }
                    chunk_stmt
                        .execute(params![doc_id, c.start as i64, c.end as i64, batch as i64])
                        .map_err(db_err)?;
                    ids.push(tx.last_insert_rowid() as u64);
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(ids)
    }

    /// Drops every document and chunk of batches after `batch` (their
    /// vectors never reached the index); returns the chunks dropped.
    pub fn rollback_after(&mut self, batch: u64) -> Result<usize> {
        let tx = self.conn.transaction().map_err(db_err)?;
        let n = tx
            .execute("DELETE FROM chunks WHERE batch > ?1", [batch as i64])
            .map_err(db_err)?;
        tx.execute("DELETE FROM documents WHERE batch > ?1", [batch as i64])
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(n)
    }

    /// The chunks with these ids, in the order asked (missing ids skipped).
    pub fn chunks(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.doc_id, d.source, c.start, c.end_, d.text
                 FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id = ?1",
            )
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let row = stmt
                .query_row([id as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .optional()
                .map_err(db_err)?;
            if let Some((id, doc_id, source, start, end, text)) = row {
                let (start, end) = (start as usize, end as usize);
                let text = text.get(start..end).ok_or_else(|| RagError::Corrupt {
                    what: "chunk store".into(),
                    detail: format!("chunk {id} has offsets {start}..{end} outside its document"),
                })?;
                out.push(ChunkRecord {
                    id: id as u64,
                    doc_id: doc_id as u64,
                    source,
                    start,
                    end,
                    text: text.to_string(),
                });
            }
        }
        Ok(out)
    }

    /// Chunk ids of every document whose source is `source`.
    pub fn chunk_ids_of_source(&self, source: &str) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.source = ?1 ORDER BY c.id")
            .map_err(db_err)?;
        let ids = stmt
            .query_map([source], |r| r.get::<_, i64>(0))
            .map_err(db_err)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(ids.into_iter().map(|i| i as u64).collect())
    }

    /// Removes the documents named `source` and their chunks; returns the
    /// chunk ids removed (to tombstone in the index).
    pub fn delete_source(&mut self, source: &str) -> Result<Vec<u64>> {
        let ids = self.chunk_ids_of_source(source)?;
        let tx = self.conn.transaction().map_err(db_err)?;
        tx.execute(
            "DELETE FROM chunks WHERE doc_id IN (SELECT id FROM documents WHERE source = ?1)",
            [source],
        )
        .map_err(db_err)?;
        tx.execute("DELETE FROM documents WHERE source = ?1", [source])
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(ids)
    }

    pub fn count_chunks(&self) -> Result<usize> {
        self.conn
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(db_err)
    }

    pub fn count_documents(&self) -> Result<usize> {
        self.conn
            .query_row("SELECT COUNT(*) FROM documents", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Chunk;

    #[test]
    fn batches_store_read_and_roll_back() {
        let dir = std::env::temp_dir().join(format!("sdlab-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Store::open(&dir.join("store.sqlite")).unwrap();
        let text = "alpha beta. gamma delta.";
        let chunks = [Chunk { start: 0, end: 11 }, Chunk { start: 12, end: 24 }];
        let ids = s
            .insert_batch(
                1,
                &[NewDocument {
                    source: "a.txt",
                    text,
                    chunks: &chunks,
                }],
            )
            .unwrap();
        let got = s.chunks(&[ids[1], 999, ids[0]]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].text.as_str(), got[1].text.as_str()),
            ("gamma delta.", "alpha beta.")
        );
        s.insert_batch(
            2,
            &[NewDocument {
                source: "b.txt",
                text,
                chunks: &chunks[..1],
            }],
        )
        .unwrap();
        assert_eq!(s.count_chunks().unwrap(), 3);
        assert_eq!(s.rollback_after(1).unwrap(), 1);
        assert_eq!(
            (s.count_documents().unwrap(), s.count_chunks().unwrap()),
            (1, 2)
        );
        // Bad offsets are refused and the whole batch with them.
        let bad = [Chunk { start: 5, end: 99 }];
        assert!(s
            .insert_batch(
                3,
                &[NewDocument {
                    source: "c.txt",
                    text,
                    chunks: &bad
                }]
            )
            .is_err());
        assert_eq!(s.count_documents().unwrap(), 1);
        assert_eq!(s.delete_source("a.txt").unwrap(), ids);
        assert_eq!(s.count_chunks().unwrap(), 0);
        s.set_meta("k", "v1").unwrap();
        s.set_meta("k", "v2").unwrap();
        assert_eq!(s.get_meta("k").unwrap().as_deref(), Some("v2"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
