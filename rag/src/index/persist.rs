//! The on-disk form of an index: a directory with checksummed data files and
//! a `manifest.json` that describes them.
//!
//! Why this shape: a reader must be able to tell a whole index from a
//! damaged one without trusting any data file, so the manifest records the
//! kind, dimension, counts and parameters, and the name, size and CRC-32 of
//! every data file; [`read_file`] refuses a file that is missing, truncated,
//! grown or altered with [`RagError::Corrupt`].
//!
//! Saving is crash-safe even over an earlier save. Data files carry a
//! generation number in their name (`vectors-7.bin`); each is written to a
//! temporary file, fsynced and renamed into place, then the manifest is
//! written the same way and the directory fsynced. Until the manifest's
//! rename the old manifest still names the old, untouched files; after it the
//! new ones. Only then are the old generation's files deleted. One writer at
//! a time per directory.

use crate::{io_err, RagError, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The `format` field of every manifest.
pub const FORMAT: &str = "sdlab-vector-index";
/// The layout version this code writes and reads.
pub const VERSION: u32 = 1;

/// What `manifest.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// `"flat"` or `"hnsw"`.
    pub kind: String,
    pub dim: usize,
    /// Stored vectors, removed ones included.
    pub slots: usize,
    /// Vectors not removed.
    pub live: usize,
    /// Removed vectors still stored (`slots - live`).
    pub tombstones: usize,
    /// Save counter; it names this save's data files.
    pub generation: u64,
    /// Kind-specific settings (HNSW: `m`, `ef_construction`, `ef_search`, ...).
    #[serde(default)]
    pub params: serde_json::Value,
    pub files: Vec<FileEntry>,
}

/// One data file of an index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// What it holds: `ids`, `vectors`, `tombstones`, `graph`.
    pub role: String,
    pub name: String,
    pub bytes: u64,
    /// CRC-32 (IEEE, as zlib and PNG use) of the whole file.
    pub crc32: u32,
}

fn corrupt(dir: &Path, detail: impl Into<String>) -> RagError {
    RagError::Corrupt {
        what: format!("index in {}", dir.display()),
        detail: detail.into(),
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, reflected, init and final xor `0xFFFFFFFF`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync, rename.
/// The caller fsyncs the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let dest = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    fs::rename(&tmp, &dest).map_err(io_err(&dest))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// `role-<generation>.bin` → generation, for names this module writes.
fn generation_of(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_suffix(".bin")?;
    let (role, gen) = stem.rsplit_once('-')?;
    let known = ["ids", "vectors", "tombstones", "graph"];
    known
        .contains(&role)
        .then(|| gen.parse().ok().map(|g| (role, g)))
        .flatten()
}

/// Saves an index: `manifest` (its `files` and `generation` are filled in
/// here) and one data file per `(role, bytes)`.
pub(crate) fn write_index(
    dir: &Path,
    mut manifest: Manifest,
    files: Vec<(&str, Vec<u8>)>,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    // A generation no file in the directory uses yet.
    let mut gen = 0u64;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some((_, g)) = entry.file_name().to_str().and_then(generation_of) {
            gen = gen.max(g);
        }
    }
    if let Ok(old) = read_manifest(dir) {
        gen = gen.max(old.generation);
    }
    let gen = gen + 1;
    manifest.generation = gen;
    manifest.files.clear();
    for (role, bytes) in &files {
        let name = format!("{role}-{gen}.bin");
        write_atomic(dir, &name, bytes)?;
        manifest.files.push(FileEntry {
            role: (*role).to_string(),
            name,
            bytes: bytes.len() as u64,
            crc32: crc32(bytes),
        });
    }
    sync_dir(dir)?;
    let json = serde_json::to_vec_pretty(&manifest)?;
    write_atomic(dir, MANIFEST, &json)?;
    sync_dir(dir)?;
    // The new save is durable: the old generation's files are garbage now.
    for entry in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let name = entry.file_name();
        if let Some((_, g)) = name.to_str().and_then(generation_of) {
            if g != gen {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Reads and checks `dir/manifest.json` (not the data files).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RagError::NotFound(format!(
                "no saved index in {} (no {MANIFEST})",
                dir.display()
            )))
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(dir, format!("{MANIFEST} is not a valid manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(corrupt(
            dir,
            format!("{MANIFEST} has format {:?}, expected {FORMAT:?}", m.format),
        ));
    }
    if m.version != VERSION {
        return Err(corrupt(
            dir,
            format!(
                "{MANIFEST} has layout version {}, this build reads {VERSION}",
                m.version
            ),
        ));
    }
    if m.live.checked_add(m.tombstones) != Some(m.slots) {
        return Err(corrupt(
            dir,
            format!(
                "{MANIFEST} counts do not add up: {} live + {} removed != {} stored",
                m.live, m.tombstones, m.slots
            ),
        ));
    }
    Ok(m)
}

/// Reads the data file with this role, checking that it is listed, named
/// as this module names files, present, of the listed size and checksum.
pub(crate) fn read_file(dir: &Path, m: &Manifest, role: &str) -> Result<Vec<u8>> {
    let entry = m
        .files
        .iter()
        .find(|f| f.role == role)
        .ok_or_else(|| corrupt(dir, format!("{MANIFEST} lists no {role} file")))?;
    if generation_of(&entry.name) != Some((role, m.generation)) {
        return Err(corrupt(
            dir,
            format!(
                "{MANIFEST} names an unexpected {role} file {:?}",
                entry.name
            ),
        ));
    }
    let path = dir.join(&entry.name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(corrupt(dir, format!("data file {} is missing", entry.name)))
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    if bytes.len() as u64 != entry.bytes {
        return Err(corrupt(
            dir,
            format!(
                "data file {} has {} bytes, the manifest says {} (truncated or overwritten)",
                entry.name,
                bytes.len(),
                entry.bytes
            ),
        ));
    }
    let crc = crc32(&bytes);
    if crc != entry.crc32 {
        return Err(corrupt(
            dir,
            format!(
                "data file {} fails its checksum (CRC-32 {crc:08x}, the manifest says {:08x})",
                entry.name, entry.crc32
            ),
        ));
    }
    Ok(bytes)
}

/// Checks that a data file holds exactly `count` items of `width` bytes.
pub(crate) fn expect_len(
    dir: &Path,
    role: &str,
    bytes: &[u8],
    count: usize,
    width: usize,
) -> Result<()> {
    match count.checked_mul(width) {
        Some(n) if n == bytes.len() => Ok(()),
        _ => Err(corrupt(
            dir,
            format!(
                "the {role} file has {} bytes, but the manifest's counts call for {count} x {width}",
                bytes.len()
            ),
        )),
    }
}

pub(crate) fn f32s_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn bytes_to_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) fn u64s_to_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn bytes_to_u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect()
}

pub(crate) fn u32s_to_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn bytes_to_u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn generation_names() {
        assert_eq!(generation_of("vectors-12.bin"), Some(("vectors", 12)));
        assert_eq!(generation_of("graph-1.bin"), Some(("graph", 1)));
        assert_eq!(generation_of("notes-1.bin"), None);
        assert_eq!(generation_of("../ids-1.bin"), None);
        assert_eq!(generation_of("ids-x.bin"), None);
        assert_eq!(generation_of("ids-1.txt"), None);
    }

    #[test]
    fn byte_round_trips() {
        let f = [1.5f32, -0.0, f32::MIN_POSITIVE];
        assert_eq!(bytes_to_f32s(&f32s_to_bytes(&f)), f);
        let u = [0u64, u64::MAX, 42];
        assert_eq!(bytes_to_u64s(&u64s_to_bytes(&u)), u);
        let w = [7u32, u32::MAX];
        assert_eq!(bytes_to_u32s(&u32s_to_bytes(&w)), w);
    }
}
