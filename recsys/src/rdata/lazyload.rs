//! Lazy-load databases: the gzip-compressed index `Rdata.rdx` names each
//! object's (offset, length) in `Rdata.rdb`, where it is stored as a 4-byte
//! big-endian uncompressed length and a zlib stream of its serialization.

use super::{parse, RObject, RValue};
use crate::{RecsysError, Result};
use flate2::read::{GzDecoder, ZlibDecoder};
use std::io::Read;
use std::path::Path;

/// Where an object lives in a lazy-load database.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    offset: u64,
    len: usize,
}

/// Reads `Rdata.rdx`: the objects' (offset, length) in `Rdata.rdb` and the
/// compression type (1 = zlib, 2 = bzip2, 3 = xz, 0 = none).
fn read_index(dir: &Path) -> Result<(Vec<Entry>, i32)> {
    let path = dir.join("Rdata.rdx");
    let gz = std::fs::read(&path).map_err(|source| RecsysError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut raw = Vec::new();
    GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .map_err(|e| RecsysError::Data(format!("{}: not gzip data: {e}", path.display())))?;
    let index = parse(&raw).map_err(|e| RecsysError::Data(format!("{}: {e}", path.display())))?;
    let bad = |what: &str| RecsysError::Data(format!("{}: {what}", path.display()));
    let vars = index
        .get("variables")
        .ok_or_else(|| bad("no `variables` in the lazy-load index"))?;
    let (RValue::List(items), Some(names)) = (&vars.value, vars.names()) else {
        return Err(bad("`variables` is not a named list"));
    };
    let mut entries = Vec::with_capacity(items.len());
    for (item, name) in items.iter().zip(names) {
        let name = name.clone().unwrap_or_default();
        let pair: Vec<f64> = match &item.value {
            RValue::Int(v) => v.iter().map(|&x| x as f64).collect(),
            RValue::Real(v) => v.clone(),
            _ => Vec::new(),
        };
        let &[offset, len] = &pair[..] else {
            return Err(bad(&format!("`{name}` has no (offset, length) pair")));
        };
        if !(offset >= 0.0 && len >= 0.0 && offset.fract() == 0.0 && len.fract() == 0.0) {
            return Err(bad(&format!("`{name}` has a bad offset or length")));
        }
        entries.push(Entry {
            name,
            offset: offset as u64,
            len: len as usize,
        });
    }
    let compression = match index.get("compressed").map(|c| &c.value) {
        Some(RValue::Logical(v)) => match v.first() {
            Some(Some(true)) => 1,
            _ => 0,
        },
        Some(RValue::Int(v)) => v.first().copied().unwrap_or(0),
        Some(RValue::Real(v)) => v.first().map_or(0, |&x| x as i32),
        _ => 1,
    };
    Ok((entries, compression))
}

/// The names of the objects in the lazy-load database in `dir` (the folder
/// holding `Rdata.rdx` and `Rdata.rdb`), in index order.
pub fn lazy_load_names(dir: &Path) -> Result<Vec<String>> {
    Ok(read_index(dir)?.0.into_iter().map(|e| e.name).collect())
}

/// Reads the object `name` from the lazy-load database in `dir` (the folder
/// holding `Rdata.rdx` and `Rdata.rdb`, e.g. an R package's `data/`).
pub fn read_lazy_load(dir: &Path, name: &str) -> Result<RObject> {
    let (entries, compression) = read_index(dir)?;
    let entry = entries.iter().find(|e| e.name == name).ok_or_else(|| {
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        RecsysError::Data(format!(
            "no object `{name}` in {} (it has: {})",
            dir.join("Rdata.rdx").display(),
            names.join(", ")
        ))
    })?;
    let path = dir.join("Rdata.rdb");
    let io = |source| RecsysError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(&path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if entry.offset.saturating_add(entry.len as u64) > size {
        return Err(RecsysError::Data(format!(
            "{}: `{name}` at bytes {}..{} lies past the end of the file ({size} bytes)",
            path.display(),
            entry.offset,
            entry.offset + entry.len as u64
        )));
    }
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(entry.offset)).map_err(io)?;
    let mut blob = vec![0u8; entry.len];
    file.read_exact(&mut blob).map_err(io)?;
    let bytes = decompress(&blob, compression)
        .map_err(|e| RecsysError::Data(format!("{}: `{name}`: {e}", path.display())))?;
    parse(&bytes).map_err(|e| RecsysError::Data(format!("{}: `{name}`: {e}", path.display())))
}

/// Undoes lazy-load compression: type 1 is a 4-byte big-endian length and a
/// zlib stream; 2 (bzip2) and 3 (xz) add a type byte and are not supported;
/// 0 is the serialized bytes as they are.
fn decompress(blob: &[u8], compression: i32) -> std::result::Result<Vec<u8>, String> {
    match compression {
        0 => Ok(blob.to_vec()),
        1 => {
            let (head, body) = blob
                .split_first_chunk::<4>()
                .ok_or("truncated record: no length header")?;
            let want = u32::from_be_bytes(*head) as usize;
            let mut out = Vec::with_capacity(want.min(body.len().saturating_mul(16)));
            ZlibDecoder::new(body)
                .take(want as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("zlib: {e}"))?;
            if out.len() != want {
                return Err(format!(
                    "inflated to {} bytes, the header says {want}",
                    out.len()
                ));
            }
            Ok(out)
        }
        2 | 3 => Err(format!(
            "compression type {compression} ({}) is not supported (only zlib)",
            if compression == 2 { "bzip2" } else { "xz" }
        )),
        c => Err(format!("unknown compression type {c}")),
    }
}
