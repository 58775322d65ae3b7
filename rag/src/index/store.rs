//! The storage both indexes share: normalized vectors in one contiguous
//! array (slot-major), the caller's id per slot, and a tombstone per slot.
//!
//! A slot is an internal, dense position (`u32`, so graphs stay compact);
//! ids are the caller's. Removing an id tombstones its slot and frees the id:
//! it may be added again, under a new slot.

use super::normalize_in_place;
use super::persist::{self, Manifest};
use crate::{RagError, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone)]
pub(crate) struct Store {
    dim: usize,
    ids: Vec<u64>,
    data: Vec<f32>,
    deleted: Vec<bool>,
    /// Live ids only.
    slot_of: HashMap<u64, u32>,
}

impl Store {
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(RagError::Input(
                "an index needs a dimension of at least 1".into(),
            ));
        }
        Ok(Store {
            dim,
            ids: Vec::new(),
            data: Vec::new(),
            deleted: Vec::new(),
            slot_of: HashMap::new(),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Stored vectors, removed ones included.
    pub fn slots(&self) -> usize {
        self.ids.len()
    }

    pub fn live(&self) -> usize {
        self.slot_of.len()
    }

    pub fn tombstones(&self) -> usize {
        self.slots() - self.live()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    #[inline]
    pub fn vector(&self, slot: usize) -> &[f32] {
        &self.data[slot * self.dim..(slot + 1) * self.dim]
    }

    #[inline]
    pub fn id(&self, slot: usize) -> u64 {
        self.ids[slot]
    }

    #[inline]
    pub fn is_live(&self, slot: usize) -> bool {
        !self.deleted[slot]
    }

    pub fn deleted(&self) -> &[bool] {
        &self.deleted
    }

    pub fn contains(&self, id: u64) -> bool {
        self.slot_of.contains_key(&id)
    }

    /// Checks a batch (ids new and distinct, vectors valid) and returns the
    /// vectors normalized, concatenated. Nothing is changed.
    pub fn prepare(&self, items: &[(u64, Vec<f32>)]) -> Result<Vec<f32>> {
        let room = u32::MAX as usize - self.slots();
        if items.len() > room {
            return Err(RagError::Input(format!(
                "an index holds at most {} vectors (removed ones count until compaction)",
                u32::MAX
            )));
        }
        let mut seen = HashSet::with_capacity(items.len());
        let mut out = Vec::with_capacity(items.len() * self.dim);
        for (id, v) in items {
            if self.slot_of.contains_key(id) || !seen.insert(*id) {
                return Err(RagError::Input(format!(
                    "id {id} is already in the index (remove it first to replace it)"
                )));
            }
            let start = out.len();
            out.extend_from_slice(v);
            normalize_in_place(&mut out[start..], self.dim)
                .map_err(|e| RagError::Input(format!("vector for id {id}: {e}")))?;
        }
        Ok(out)
    }

    /// Appends a batch checked by [`Store::prepare`]; returns the first new slot.
    pub fn append(&mut self, items: &[(u64, Vec<f32>)], normalized: Vec<f32>) -> usize {
        let first = self.slots();
        for (i, (id, _)) in items.iter().enumerate() {
            self.slot_of.insert(*id, (first + i) as u32);
            self.ids.push(*id);
            self.deleted.push(false);
        }
        self.data.extend_from_slice(&normalized);
        first
    }

    /// Tombstones `id`; returns whether it was live.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.slot_of.remove(&id) {
            Some(slot) => {
                self.deleted[slot as usize] = true;
                true
            }
            None => false,
        }
    }

    /// The live vectors only, in slot order.
    pub fn compacted(&self) -> Store {
        let mut out = Store {
            dim: self.dim,
            ids: Vec::with_capacity(self.live()),
            data: Vec::with_capacity(self.live() * self.dim),
            deleted: Vec::with_capacity(self.live()),
            slot_of: HashMap::with_capacity(self.live()),
        };
        for slot in (0..self.slots()).filter(|&s| self.is_live(s)) {
            out.slot_of.insert(self.ids[slot], out.ids.len() as u32);
            out.ids.push(self.ids[slot]);
            out.deleted.push(false);
            out.data.extend_from_slice(self.vector(slot));
        }
        out
    }

    /// A manifest for this store (files filled in when saved).
    pub fn manifest(&self, kind: &str, params: serde_json::Value) -> Manifest {
        Manifest {
            format: persist::FORMAT.into(),
            version: persist::VERSION,
            kind: kind.into(),
            dim: self.dim,
            slots: self.slots(),
            live: self.live(),
            tombstones: self.tombstones(),
            generation: 0,
            params,
            files: Vec::new(),
        }
    }

    /// The data files: ids, vectors, tombstones.
    pub fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("ids", persist::u64s_to_bytes(&self.ids)),
            ("vectors", persist::f32s_to_bytes(&self.data)),
            (
                "tombstones",
                self.deleted.iter().map(|&d| u8::from(d)).collect(),
            ),
        ]
    }

    /// Reads and cross-checks the files [`Store::files`] wrote.
    pub fn read(dir: &Path, m: &Manifest) -> Result<Store> {
        let corrupt = |detail: String| RagError::Corrupt {
            what: format!("index in {}", dir.display()),
            detail,
        };
        if m.dim == 0 || m.slots > u32::MAX as usize {
            return Err(corrupt(format!(
                "manifest has dimension {} and {} slots",
                m.dim, m.slots
            )));
        }
        let ids = persist::read_file(dir, m, "ids")?;
        persist::expect_len(dir, "ids", &ids, m.slots, 8)?;
        let data = persist::read_file(dir, m, "vectors")?;
        persist::expect_len(dir, "vectors", &data, m.slots, m.dim * 4)?;
        let tomb = persist::read_file(dir, m, "tombstones")?;
        persist::expect_len(dir, "tombstones", &tomb, m.slots, 1)?;
        let ids = persist::bytes_to_u64s(&ids);
        let data = persist::bytes_to_f32s(&data);
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(corrupt(format!(
                "vector of slot {} has a non-finite value",
                i / m.dim
            )));
        }
        let mut deleted = Vec::with_capacity(m.slots);
        for (slot, &b) in tomb.iter().enumerate() {
            match b {
                0 => deleted.push(false),
                1 => deleted.push(true),
                _ => {
                    return Err(corrupt(format!(
                        "tombstone of slot {slot} is {b}, not 0 or 1"
                    )))
                }
            }
        }
        let mut slot_of = HashMap::with_capacity(m.live);
        for (slot, &id) in ids.iter().enumerate() {
            if !deleted[slot] && slot_of.insert(id, slot as u32).is_some() {
                return Err(corrupt(format!("id {id} is live in two slots")));
            }
        }
        if slot_of.len() != m.live {
            return Err(corrupt(format!(
                "the manifest counts {} live vectors, the tombstones file leaves {}",
                m.live,
                slot_of.len()
            )));
        }
        Ok(Store {
            dim: m.dim,
            ids,
            data,
            deleted,
            slot_of,
        })
    }
}

/// Checks the manifest's kind before a typed `load`.
pub(crate) fn expect_kind(dir: &Path, m: &Manifest, kind: &str) -> Result<()> {
    if m.kind == kind {
        Ok(())
    } else {
        Err(RagError::Input(format!(
            "the index in {} is a {:?} index, not {kind:?} (rag::index::load opens either)",
            dir.display(),
            m.kind
        )))
    }
}
