//! One segment of the log: a `.log` file of records and a `.index` file of
//! sparse (relative offset, byte position) entries.
//!
//! Record format (all little-endian):
//!
//! ```text
//! [len: u32][crc32: u32 of the len bytes and the payload][payload: len bytes]
//! ```
//!
//! Offsets are implicit: the `i`-th record of the segment whose file is named
//! by base offset `B` has offset `B + i`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes before each payload: length and CRC32.
pub const HEADER_LEN: usize = 8;
/// The largest payload accepted (a length above it marks a torn record).
pub const MAX_RECORD_LEN: usize = 16 << 20;
const INDEX_ENTRY_LEN: usize = 8;

/// Appends the on-disk encoding of `payload` to `out`. Callers check
/// `payload.len() <= MAX_RECORD_LEN` first.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

fn crc_of(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    crc.finalize()
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

/// A read-ahead reader over `[pos, end)` of a file, by positional reads (so
/// `&File` is enough and concurrent readers do not share a cursor).
pub(crate) struct PosReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_start: u64,
    read_ahead: usize,
}

impl<'a> PosReader<'a> {
    pub(crate) fn new(file: &'a File, pos: u64, end: u64, read_ahead: usize) -> Self {
        Self {
            file,
            pos,
            end,
            buf: Vec::new(),
            buf_start: pos,
            read_ahead: read_ahead.max(HEADER_LEN),
        }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }

    /// Fills `out` from the current position; `UnexpectedEof` past `end`.
    pub(crate) fn read_exact(&mut self, out: &mut [u8]) -> io::Result<()> {
        let want = out.len() as u64;
        if self.remaining() < want {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos + want > buf_end {
            let size = (self.read_ahead as u64).max(want).min(self.end - self.pos) as usize;
            self.buf.resize(size, 0);
            let mut filled = 0;
            while filled < size {
                let n = read_at(self.file, &mut self.buf[filled..], self.pos + filled as u64)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                filled += n;
            }
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        out.copy_from_slice(&self.buf[at..at + out.len()]);
        self.pos += want;
        Ok(())
    }

    pub(crate) fn skip(&mut self, n: u64) {
        self.pos += n;
    }
}

/// What reading the next record found.
pub(crate) enum Next {
    Record(Vec<u8>),
    /// The record at this position is cut short or fails its CRC.
    Bad,
    End,
}

/// Reads (or, with `want_payload == false`, checks only the header of and
/// skips) the record at the reader's position.
pub(crate) fn next_record(
    r: &mut PosReader<'_>,
    want_payload: bool,
    verify: bool,
) -> io::Result<Next> {
    if r.remaining() == 0 {
        return Ok(Next::End);
    }
    let mut header = [0u8; HEADER_LEN];
    if r.read_exact(&mut header).is_err() {
        return Ok(Next::Bad);
    }
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_LEN || (len as u64) > r.remaining() {
        return Ok(Next::Bad);
    }
    if !want_payload && !verify {
        r.skip(len as u64);
        return Ok(Next::Record(Vec::new()));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    if verify && crc_of(len_bytes, &payload) != crc {
        return Ok(Next::Bad);
    }
    Ok(Next::Record(if want_payload {
        payload
    } else {
        Vec::new()
    }))
}

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// An open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) log: File,
    pub(crate) path: PathBuf,
    index_file: File,
    /// Bytes of records in the log file.
    pub(crate) size: u64,
    /// Records in the segment.
    pub(crate) records: u64,
    /// Sparse index: (offset - base, byte position), increasing; the first
    /// record (0, 0) is implicit.
    index: Vec<(u32, u32)>,
    bytes_since_index: u64,
    index_interval: u64,
}

impl Segment {
    /// A new, empty segment starting at offset `base`.
    pub(crate) fn create(dir: &Path, base: u64, index_interval: u64) -> io::Result<Self> {
        let path = log_path(dir, base);
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let index_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(index_path(dir, base))?;
        Ok(Self {
            base,
            log,
            path,
            index_file,
            size: 0,
            records: 0,
            index: Vec::new(),
            bytes_since_index: 0,
            index_interval,
        })
    }

    /// Opens a closed segment holding `records` records, trusting its index
    /// file if it is well-formed and rebuilding it by a scan otherwise.
    pub(crate) fn open_closed(
        dir: &Path,
        base: u64,
        records: u64,
        index_interval: u64,
    ) -> io::Result<Self> {
        let mut seg = Self::open_files(dir, base, index_interval)?;
        seg.records = records;
        let mut raw = Vec::new();
        {
            let len = seg.index_file.metadata()?.len();
            let mut r = PosReader::new(&seg.index_file, 0, len, 1 << 16);
            raw.resize(len as usize, 0);
            r.read_exact(&mut raw)?;
        }
        let entries: Vec<(u32, u32)> = raw
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| {
                (
                    u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect();
        let well_formed = raw.len() % INDEX_ENTRY_LEN == 0
            && entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && entries
                .iter()
                .all(|&(rel, pos)| u64::from(rel) < records && u64::from(pos) < seg.size);
        if well_formed {
            seg.index = entries;
        } else {
            seg.recover()?;
        }
        Ok(seg)
    }

    fn open_files(dir: &Path, base: u64, index_interval: u64) -> io::Result<Self> {
        let path = log_path(dir, base);
        let log = OpenOptions::new().read(true).append(true).open(&path)?;
        let index_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(index_path(dir, base))?;
        let size = log.metadata()?.len();
        Ok(Self {
            base,
            log,
            path,
            index_file,
            size,
            records: 0,
            index: Vec::new(),
            bytes_since_index: 0,
            index_interval,
        })
    }

    /// Opens the active (last) segment: scans every record, truncates at
    /// the first torn or corrupt one, rebuilds the index. Returns the
    /// segment and the number of bytes cut off.
    pub(crate) fn open_active(
        dir: &Path,
        base: u64,
        index_interval: u64,
    ) -> io::Result<(Self, u64)> {
        let mut seg = Self::open_files(dir, base, index_interval)?;
        let cut = seg.recover()?;
        Ok((seg, cut))
    }

    /// Scans the log file, keeps the valid prefix, rebuilds the index.
    fn recover(&mut self) -> io::Result<u64> {
        let file_len = self.log.metadata()?.len();
        self.index.clear();
        self.records = 0;
        self.bytes_since_index = 0;
        let mut valid = 0u64;
        let mut found = Vec::new();
        {
            let mut r = PosReader::new(&self.log, 0, file_len, 1 << 20);
            loop {
                let start = r.pos();
                match next_record(&mut r, false, true)? {
                    Next::Record(_) => {
                        found.push((start, r.pos() - start));
                        valid = r.pos();
                    }
                    Next::Bad | Next::End => break,
                }
            }
        }
        for (start, len) in found {
            self.note_record(start, len);
        }
        if valid < file_len {
            self.log.set_len(valid)?;
            self.log.sync_all()?;
        }
        self.size = valid;
        self.index_file.set_len(0)?;
        let mut bytes = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN);
        for &(rel, pos) in &self.index {
            bytes.extend_from_slice(&rel.to_le_bytes());
            bytes.extend_from_slice(&pos.to_le_bytes());
        }
        write_at_end(&mut self.index_file, &bytes)?;
        Ok(file_len - valid)
    }

    /// Accounts for a record of `len` bytes written at `pos`; returns the
    /// index entry it earned, if any.
    fn note_record(&mut self, pos: u64, len: u64) -> Option<(u32, u32)> {
        let mut entry = None;
        if self.records > 0 && self.bytes_since_index >= self.index_interval {
            let e = (self.records as u32, pos as u32);
            self.index.push(e);
            self.bytes_since_index = 0;
            entry = Some(e);
        }
        self.records += 1;
        self.bytes_since_index += len;
        entry
    }

    /// Appends already-encoded records (`lens` gives each one's encoded
    /// length) with one write. The caller fsyncs.
    pub(crate) fn append_encoded(&mut self, buf: &[u8], lens: &[u64]) -> io::Result<()> {
        self.log.write_all(buf)?;
        let mut pos = self.size;
        let mut new_entries = Vec::new();
        for &len in lens {
            if let Some((rel, p)) = self.note_record(pos, len) {
                new_entries.extend_from_slice(&rel.to_le_bytes());
                new_entries.extend_from_slice(&p.to_le_bytes());
            }
            pos += len;
        }
        self.size = pos;
        if !new_entries.is_empty() {
            write_at_end(&mut self.index_file, &new_entries)?;
        }
        Ok(())
    }

    /// Makes the records durable (fdatasync).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.log.sync_data()
    }

    /// Makes the records and the index durable (done when rolling, so a
    /// closed segment's index can be trusted on open).
    pub(crate) fn seal(&self) -> io::Result<()> {
        self.log.sync_data()?;
        self.index_file.sync_data()
    }

    /// The closest indexed (relative offset, position) at or before `rel`.
    pub(crate) fn lookup(&self, rel: u64) -> (u64, u64) {
        let i = self.index.partition_point(|&(r, _)| u64::from(r) <= rel);
        if i == 0 {
            (0, 0)
        } else {
            let (r, p) = self.index[i - 1];
            (u64::from(r), u64::from(p))
        }
    }

    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }
}

fn write_at_end(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::End(0))?;
    file.write_all(bytes)
}
