//! An append-only log (the core of Kafka): an in-memory queue against a
//! segmented, checksummed, fsynced log on disk.
//!
//! **The pattern.** Producers append messages and get back an offset;
//! consumers read from any offset and remember how far they got. Once a
//! message is acknowledged it must survive a crash.
//!
//! **The naive way.** [`MemoryQueue`]: a `Vec` in RAM. Appends and reads are
//! as fast as memory, and a crash (or a deploy) loses every message and every
//! consumer position.
//!
//! **The optimal way.** [`Log`]: a directory of *segments*, each a `.log`
//! file of records `[len u32][crc32 u32][payload]` (see [`segment`]) named by
//! the offset of its first record, plus a sparse `.index` file mapping every
//! ~4 KiB of records to a byte position, so `read(offset)` is a binary search
//! over segments, a binary search over the index, and a short scan. Segments
//! roll at a size limit, so old data can be deleted a file at a time.
//!
//! *Durability choice:* [`Log::append`] writes the record and fsyncs
//! (`fdatasync`) before it returns the offset; [`Log::append_batch`] writes a
//! whole batch with one `write` and one fsync (group commit), and returns
//! the offsets only after it. An offset a caller holds is therefore on disk.
//! Rolling a segment seals the old one (records and index fsynced) and
//! fsyncs the directory.
//!
//! *Crash recovery:* a crash mid-write leaves a torn final record. On
//! [`Log::open`] the active segment is scanned and cut at the first record
//! whose length runs past the file or whose CRC fails; since nothing past an
//! fsync was acknowledged, nothing acknowledged is lost. (A corrupt record
//! in the middle of the active segment, bit rot rather than a crash, would
//! also cut the tail there; a closed segment's corrupt record is reported
//! by [`Log::read`] as [`LogError::Corrupt`].)
//!
//! *Consumer groups:* [`Log::commit`] stores a group's next offset in
//! `consumer-offsets/<group>.offset` atomically: write a temp file, fsync,
//! rename over the old one, fsync the directory. A crash leaves either the
//! old or the new offset, never a torn one.
//!
//! **Complexity.** Append O(1) amortized plus one fsync per call (or per
//! batch); read O(log segments + log index entries + index interval).
//!
//! **Beyond this.** Kafka and Redpanda add replication (a leader and
//! followers, the in-sync replica set, acks=all), retention and log
//! compaction, partitions for parallelism, idempotent producers and
//! transactions (exactly-once), and zero-copy `sendfile` reads.

mod lesson;
pub mod segment;

pub use lesson::{lesson, lesson_with};

use segment::{encode_record, next_record, Next, PosReader, Segment, HEADER_LEN, MAX_RECORD_LEN};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The lesson's command-line name.
pub const NAME: &str = "append-only-log";
/// A short human title.
pub const TITLE: &str = "Append-only log: in-memory queue vs segmented log on disk";

const OFFSETS_DIR: &str = "consumer-offsets";

/// Errors from the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("record of {0} bytes exceeds the {MAX_RECORD_LEN}-byte limit")]
    RecordTooLarge(usize),
    #[error("record at offset {0} is corrupt (bad length or CRC)")]
    Corrupt(u64),
    #[error("invalid consumer group name {0:?} (use 1-64 of A-Z a-z 0-9 _ -)")]
    BadGroup(String),
    #[error("cannot commit offset {offset}: the log ends at {end}")]
    OffsetPastEnd { offset: u64, end: u64 },
    #[error("invalid configuration: {0}")]
    BadConfig(&'static str),
}

/// Log settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once a segment would exceed this many bytes
    /// (a larger record still gets a segment of its own). At most 1 GiB.
    pub segment_bytes: u64,
    /// Add a sparse index entry after about this many bytes of records.
    pub index_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            index_interval_bytes: 4096,
        }
    }
}

/// A segmented append-only log in a directory.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; the last one is active.
    segments: Vec<Segment>,
    committed: HashMap<String, u64>,
    truncated_bytes: u64,
}

fn parse_base(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn valid_group(group: &str) -> bool {
    (1..=64).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// fsyncs a directory, so a create or rename in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from a crash: a torn
    /// tail of the active segment is truncated.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self, LogError> {
        if config.segment_bytes == 0 || config.segment_bytes > 1 << 30 {
            return Err(LogError::BadConfig("segment_bytes must be in 1..=1 GiB"));
        }
        if config.index_interval_bytes == 0 {
            return Err(LogError::BadConfig("index_interval_bytes must be positive"));
        }
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(dir.join(OFFSETS_DIR))?;
        let mut bases: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_base(&e.file_name().to_string_lossy()))
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut truncated_bytes = 0;
        if bases.is_empty() {
            segments.push(Segment::create(&dir, 0, config.index_interval_bytes)?);
            sync_dir(&dir)?;
        } else {
            for w in bases.windows(2) {
                segments.push(Segment::open_closed(
                    &dir,
                    w[0],
                    w[1] - w[0],
                    config.index_interval_bytes,
                )?);
            }
            let last = bases[bases.len() - 1];
            let (active, cut) = Segment::open_active(&dir, last, config.index_interval_bytes)?;
            truncated_bytes = cut;
            segments.push(active);
        }
        let committed = load_offsets(&dir.join(OFFSETS_DIR))?;
        Ok(Self {
            dir,
            config,
            segments,
            committed,
            truncated_bytes,
        })
    }

    /// The offset the next append will get (= number of records).
    pub fn next_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.base + s.records)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Sparse index entries over all segments.
    pub fn index_entries(&self) -> usize {
        self.segments.iter().map(Segment::index_len).sum()
    }

    /// The active segment's `.log` file (for inspection, and for tests that
    /// simulate a crash by tearing its tail).
    pub fn active_segment_path(&self) -> Option<&Path> {
        self.segments.last().map(|s| s.path.as_path())
    }

    /// Bytes of torn tail cut off when this log was opened.
    pub fn truncated_bytes_on_open(&self) -> u64 {
        self.truncated_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record and returns its offset once it is fsynced.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, LogError> {
        let range = self.append_batch([payload])?;
        Ok(range.start)
    }

    /// Appends records with one write per segment and one fsync (group
    /// commit); returns their offsets once they are durable. A batch is
    /// rejected whole if any record is too large.
    pub fn append_batch<'a, I>(&mut self, payloads: I) -> Result<Range<u64>, LogError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let payloads: Vec<&[u8]> = payloads.into_iter().collect();
        if let Some(p) = payloads.iter().find(|p| p.len() > MAX_RECORD_LEN) {
            return Err(LogError::RecordTooLarge(p.len()));
        }
        let start = self.next_offset();
        let mut buf = Vec::new();
        let mut lens = Vec::new();
        for p in payloads {
            let enc_len = (HEADER_LEN + p.len()) as u64;
            let pending: u64 = lens.iter().sum();
            let active_size = self.segments.last().map_or(0, |s| s.size) + pending;
            if active_size > 0 && active_size + enc_len > self.config.segment_bytes {
                self.flush(&buf, &lens)?;
                buf.clear();
                lens.clear();
                self.roll()?;
            }
            encode_record(p, &mut buf);
            lens.push(enc_len);
        }
        self.flush(&buf, &lens)?;
        if let Some(active) = self.segments.last() {
            active.sync()?;
        }
        Ok(start..self.next_offset())
    }

    fn flush(&mut self, buf: &[u8], lens: &[u64]) -> Result<(), LogError> {
        if lens.is_empty() {
            return Ok(());
        }
        match self.segments.last_mut() {
            Some(active) => Ok(active.append_encoded(buf, lens)?),
            None => Err(LogError::BadConfig("log has no segment")),
        }
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&mut self) -> Result<(), LogError> {
        let next = self.next_offset();
        if let Some(active) = self.segments.last() {
            active.seal()?;
        }
        self.segments.push(Segment::create(
            &self.dir,
            next,
            self.config.index_interval_bytes,
        )?);
        sync_dir(&self.dir)?;
        Ok(())
    }

    fn locate(&self, offset: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.base <= offset);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        (offset - seg.base < seg.records).then_some(seg)
    }

    /// The record at `offset`, or `None` past the end.
    pub fn read(&self, offset: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.fetch(offset, 1)?.pop().map(|(_, p)| p))
    }

    /// Up to `max_records` records from `offset` on, in order, as
    /// `(offset, payload)` (what a consumer's poll returns). Stops at the end
    /// of the log; each record's CRC is checked.
    pub fn fetch(&self, offset: u64, max_records: usize) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let mut out = Vec::new();
        let mut offset = offset;
        while out.len() < max_records {
            let Some(seg) = self.locate(offset) else {
                break;
            };
            let rel = offset - seg.base;
            let (mut at, pos) = seg.lookup(rel);
            let read_ahead = if max_records == 1 {
                (self.config.index_interval_bytes as usize).min(1 << 16) + 512
            } else {
                1 << 20
            };
            let mut r = PosReader::new(&seg.log, pos, seg.size, read_ahead);
            // Skip from the indexed record to the wanted one.
            while at < rel {
                match next_record(&mut r, false, false)? {
                    Next::Record(_) => at += 1,
                    Next::Bad | Next::End => return Err(LogError::Corrupt(seg.base + at)),
                }
            }
            while at < seg.records && out.len() < max_records {
                match next_record(&mut r, true, true)? {
                    Next::Record(p) => out.push((seg.base + at, p)),
                    Next::Bad | Next::End => return Err(LogError::Corrupt(seg.base + at)),
                }
                at += 1;
            }
            offset = seg.base + at;
        }
        Ok(out)
    }

    /// Durably records that `group` has processed everything before
    /// `next_offset` (temp file + fsync + rename + directory fsync).
    pub fn commit(&mut self, group: &str, next_offset: u64) -> Result<(), LogError> {
        if !valid_group(group) {
            return Err(LogError::BadGroup(group.to_string()));
        }
        let end = self.next_offset();
        if next_offset > end {
            return Err(LogError::OffsetPastEnd {
                offset: next_offset,
                end,
            });
        }
        let dir = self.dir.join(OFFSETS_DIR);
        let tmp = dir.join(format!("{group}.offset.tmp"));
        let dst = dir.join(format!("{group}.offset"));
        let bytes = next_offset.to_le_bytes();
        let mut content = bytes.to_vec();
        content.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&content)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &dst)?;
        sync_dir(&dir)?;
        self.committed.insert(group.to_string(), next_offset);
        Ok(())
    }

    /// The next offset `group` committed, if it ever did.
    pub fn committed(&self, group: &str) -> Option<u64> {
        self.committed.get(group).copied()
    }
}

fn load_offsets(dir: &Path) -> Result<HashMap<String, u64>, LogError> {
    let mut out = HashMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            // A commit that crashed before its rename: the old file stands.
            fs::remove_file(entry.path())?;
            continue;
        }
        let Some(group) = name.strip_suffix(".offset") else {
            continue;
        };
        let content = fs::read(entry.path())?;
        if content.len() != 12 {
            return Err(LogError::Corrupt(0));
        }
        let bytes: [u8; 8] = content[..8].try_into().map_err(|_| LogError::Corrupt(0))?;
        let crc = u32::from_le_bytes([content[8], content[9], content[10], content[11]]);
        if crc32fast::hash(&bytes) != crc {
            return Err(LogError::Corrupt(0));
        }
        out.insert(group.to_string(), u64::from_le_bytes(bytes));
    }
    Ok(out)
}

/// The naive queue: messages and consumer offsets in memory only.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    records: Vec<Vec<u8>>,
    committed: HashMap<String, u64>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn append(&mut self, payload: &[u8]) -> u64 {
        self.records.push(payload.to_vec());
        self.records.len() as u64 - 1
    }

    pub fn read(&self, offset: u64) -> Option<&[u8]> {
        self.records
            .get(usize::try_from(offset).ok()?)
            .map(Vec::as_slice)
    }

    pub fn fetch(&self, offset: u64, max_records: usize) -> Vec<(u64, Vec<u8>)> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.records.len());
        let end = start.saturating_add(max_records).min(self.records.len());
        (start..end)
            .map(|i| (i as u64, self.records[i].clone()))
            .collect()
    }

    pub fn next_offset(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn commit(&mut self, group: &str, next_offset: u64) {
        self.committed.insert(group.to_string(), next_offset);
    }

    pub fn committed(&self, group: &str) -> Option<u64> {
        self.committed.get(group).copied()
    }

    /// What a process restart leaves: nothing.
    pub fn crash(self) -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
