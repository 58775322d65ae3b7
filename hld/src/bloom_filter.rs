//! Bloom filter: "have I seen this key?" in about ten bits per key.
//!
//! **The naive way** is a `HashSet` of the keys: exact, but it stores every
//! key in full plus the table's overhead, tens of bytes per key.
//!
//! **The optimal way**, when a small rate of false positives is fine (a cache
//! that asks "is this URL worth a disk lookup?", a crawler's "seen before?",
//! an LSM tree skipping SSTables), is a Bloom filter: an array of `m` bits and
//! `k` hash functions. Inserting sets the `k` bits the key hashes to; a query
//! answers "maybe present" if all `k` are set and "certainly absent" if any is
//! clear. There are no false negatives. For `n` keys and a target
//! false-positive rate `p` the best size is `m = -n ln p / (ln 2)^2` bits and
//! `k = (m / n) ln 2` hashes, which gives about `1.44 log2(1/p)` bits per key
//! (9.6 bits at 1 %), whatever the size of the keys. The rate after `n`
//! insertions is about `(1 - e^(-k n / m))^k`.
//!
//! The `k` hashes come from two (Kirsch & Mitzenmacher, "Less Hashing, Same
//! Performance", 2006): `g_i(x) = h1(x) + i * h2(x) mod m`. Insert and query
//! are `O(k)`; memory is `m / 8` bytes, fixed at creation.

use crate::report::{self, LessonReport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

/// The lesson's command-line name.
pub const NAME: &str = "bloom-filter";
/// A short human title.
pub const TITLE: &str = "Bloom filter: a HashSet against a bit array with k hashes";

/// Errors when sizing a filter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BloomError {
    #[error("expected number of items must be positive")]
    NoItems,
    #[error("false-positive rate {0} must be strictly between 0 and 1")]
    BadRate(f64),
    #[error("a filter needs at least one bit and one hash function")]
    Empty,
}

pub use crate::hash::hash_bytes;
use crate::hash::{mix64, GOLDEN};

/// A Bloom filter over byte strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    bits: Vec<u64>,
    num_bits: u64,
    num_hashes: u32,
    seed: u64,
    inserted: u64,
}

impl BloomFilter {
    /// The best number of bits for `items` keys at false-positive rate
    /// `rate`: `m = -n ln p / (ln 2)^2`.
    pub fn optimal_bits(items: usize, rate: f64) -> Result<u64, BloomError> {
        if items == 0 {
            return Err(BloomError::NoItems);
        }
        if !(rate > 0.0 && rate < 1.0) {
            return Err(BloomError::BadRate(rate));
        }
        let ln2 = std::f64::consts::LN_2;
        Ok(((-(items as f64) * rate.ln()) / (ln2 * ln2))
            .ceil()
            .max(1.0) as u64)
    }

    /// The best number of hashes for `bits` bits and `items` keys:
    /// `k = (m / n) ln 2`, at least 1.
    pub fn optimal_hashes(bits: u64, items: usize) -> u32 {
        let k = (bits as f64 / items.max(1) as f64 * std::f64::consts::LN_2).round();
        k.clamp(1.0, 64.0) as u32
    }

    /// A filter sized for `items` keys at false-positive rate `rate`.
    pub fn with_rate(items: usize, rate: f64, seed: u64) -> Result<Self, BloomError> {
        let bits = Self::optimal_bits(items, rate)?;
        Self::with_size(bits, Self::optimal_hashes(bits, items), seed)
    }

    /// A filter of exactly `bits` bits and `hashes` hash functions.
    pub fn with_size(bits: u64, hashes: u32, seed: u64) -> Result<Self, BloomError> {
        if bits == 0 || hashes == 0 {
            return Err(BloomError::Empty);
        }
        Ok(Self {
            bits: vec![0; bits.div_ceil(64) as usize],
            num_bits: bits,
            num_hashes: hashes,
            seed,
            inserted: 0,
        })
    }

    /// `h1` and `h2` of the double-hashing scheme. `h2` is forced odd so it
    /// is never 0 (which would give `k` copies of one position).
    fn base_hashes(&self, item: &[u8]) -> (u64, u64) {
        let h1 = hash_bytes(item, self.seed);
        (h1, mix64(h1 ^ 0xA076_1D64_78BD_642F) | 1)
    }

    /// The `k` bit positions of `item`: `h1 + i * h2 mod m`.
    fn positions(&self, item: &[u8]) -> impl Iterator<Item = u64> {
        let (h1, h2) = self.base_hashes(item);
        let m = self.num_bits;
        (0..self.num_hashes as u64).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
    }

    /// Adds `item`. Returns true if it was (maybe) present already, that is
    /// if all its bits were set before.
    pub fn insert(&mut self, item: impl AsRef<[u8]>) -> bool {
        let mut was_present = true;
        let (h1, h2) = self.base_hashes(item.as_ref());
        for i in 0..self.num_hashes as u64 {
            let p = h1.wrapping_add(i.wrapping_mul(h2)) % self.num_bits;
            let (word, mask) = ((p / 64) as usize, 1u64 << (p % 64));
            was_present &= self.bits[word] & mask != 0;
            self.bits[word] |= mask;
        }
        self.inserted += 1;
        was_present
    }

    /// False: `item` was certainly never inserted. True: it probably was.
    pub fn contains(&self, item: impl AsRef<[u8]>) -> bool {
        self.positions(item.as_ref())
            .all(|p| self.bits[(p / 64) as usize] & (1u64 << (p % 64)) != 0)
    }

    /// `m`, the number of bits.
    pub fn num_bits(&self) -> u64 {
        self.num_bits
    }

    /// `k`, the number of hash functions.
    pub fn num_hashes(&self) -> u32 {
        self.num_hashes
    }

    /// How many times [`insert`](Self::insert) was called.
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Memory held by the bit array.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }

    /// Fraction of bits set.
    pub fn fill_ratio(&self) -> f64 {
        let ones: u64 = self.bits.iter().map(|w| w.count_ones() as u64).sum();
        ones as f64 / self.num_bits as f64
    }

    /// The expected false-positive rate after `items` insertions:
    /// `(1 - e^(-k n / m))^k`.
    pub fn theoretical_fpr(&self, items: u64) -> f64 {
        let k = self.num_hashes as f64;
        (1.0 - (-k * items as f64 / self.num_bits as f64).exp()).powf(k)
    }

    /// The false-positive rate the current bits give: `fill_ratio^k`.
    pub fn estimated_fpr(&self) -> f64 {
        self.fill_ratio().powi(self.num_hashes as i32)
    }

    /// Bitwise OR of two filters of the same shape and seed: a filter of the
    /// union of their keys. False if the shapes differ.
    pub fn union(&mut self, other: &Self) -> bool {
        if self.num_bits != other.num_bits
            || self.num_hashes != other.num_hashes
            || self.seed != other.seed
        {
            return false;
        }
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
        self.inserted += other.inserted;
        true
    }
}

/// A deterministic `Hasher` for the naive `HashSet` (so nothing in the
/// lesson depends on `RandomState`): the bytes written are folded with the
/// splitmix64 mixer.
#[derive(Debug, Clone, Default)]
pub struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_bytes(bytes, self.0);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = mix64(self.0 ^ i);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`FixedHasher`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedState;

impl BuildHasher for FixedState {
    type Hasher = FixedHasher;
    fn build_hasher(&self) -> FixedHasher {
        FixedHasher(GOLDEN)
    }
}

/// The naive membership set: every key stored exactly.
#[derive(Debug, Clone, Default)]
pub struct ExactSet {
    set: HashSet<Vec<u8>, FixedState>,
    key_bytes: usize,
}

impl ExactSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, item: impl AsRef<[u8]>) -> bool {
        let item = item.as_ref();
        let fresh = self.set.insert(item.to_vec());
        if fresh {
            self.key_bytes += item.len();
        }
        !fresh
    }

    pub fn contains(&self, item: impl AsRef<[u8]>) -> bool {
        self.set.contains(item.as_ref())
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Approximate memory: each table slot holds a `Vec` header plus one
    /// control byte, and each key's bytes live on the heap.
    pub fn bytes(&self) -> usize {
        self.set.capacity() * (std::mem::size_of::<Vec<u8>>() + 1) + self.key_bytes
    }
}

/// The `i`-th key of a stream: `"user:<16 hex digits>"`, 21 bytes.
fn key(x: u64) -> String {
    format!("user:{x:016x}")
}

/// The experiment: insert `items` keys into both sets, then query `probes`
/// keys that were never inserted.
pub fn lesson_with(seed: u64, items: usize, probes: usize, rate: f64) -> LessonReport {
    let mut rng = StdRng::seed_from_u64(seed);
    // Inserted keys have an even number, probes an odd one: never inserted.
    let inserted: Vec<String> = (0..items).map(|_| key(rng.random::<u64>() & !1)).collect();
    let absent: Vec<String> = (0..probes).map(|_| key(rng.random::<u64>() | 1)).collect();

    let mut exact = ExactSet::new();
    for k in &inserted {
        exact.insert(k);
    }
    let exact_fp = absent.iter().filter(|k| exact.contains(k)).count();
    let exact_ns = report::time_us(5, probes.clamp(1, 10_000), |i| {
        std::hint::black_box(exact.contains(&absent[i % absent.len().max(1)]));
    }) * 1000.0;

    let mut report = LessonReport::new(NAME, TITLE);
    let bloom = BloomFilter::with_rate(items.max(1), rate, seed);
    match bloom {
        Ok(mut bloom) => {
            for k in &inserted {
                bloom.insert(k);
            }
            let false_negatives = inserted.iter().filter(|k| !bloom.contains(k)).count();
            let fp = absent.iter().filter(|k| bloom.contains(k)).count();
            let bloom_ns = report::time_us(5, probes.clamp(1, 10_000), |i| {
                std::hint::black_box(bloom.contains(&absent[i % absent.len().max(1)]));
            }) * 1000.0;
            report = report
                .both(
                    "false_positive_rate",
                    exact_fp as f64 / probes.max(1) as f64,
                    fp as f64 / probes.max(1) as f64,
                )
                .both("false_negatives", 0.0, false_negatives as f64)
                .both("bytes", exact.bytes() as f64, bloom.bytes() as f64)
                .both(
                    "bytes_per_key",
                    exact.bytes() as f64 / items.max(1) as f64,
                    bloom.bytes() as f64 / items.max(1) as f64,
                )
                .both("lookup_ns", exact_ns, bloom_ns)
                .optimal("theoretical_fpr", bloom.theoretical_fpr(items as u64))
                .optimal("target_fpr", rate)
                .optimal("hashes", bloom.num_hashes() as f64)
                .optimal("fill_ratio", bloom.fill_ratio());
        }
        Err(e) => report = report.notes(format!("bad parameters: {e}")),
    }
    report.naive("items", items as f64).optimal("items", items as f64).notes(format!(
        "The HashSet answers exactly but stores every {}-byte key plus a table slot; the Bloom filter stores about \
         1.44 log2(1/p) bits per key whatever the key size, here {:.0}x less memory, and pays with a false-positive \
         rate that matches the formula (1 - e^(-kn/m))^k. It never gives a false negative, so a \"no\" can skip the \
         expensive lookup outright. Beyond this: blocked Bloom filters (all k bits in one cache line, as in RocksDB), \
         counting Bloom filters for deletion, and cuckoo or xor filters for fewer bits at low rates.",
        key(0).len(),
        exact.bytes() as f64 / BloomFilter::optimal_bits(items.max(1), rate).map_or(1.0, |b| b as f64 / 8.0),
    ))
}

/// The full-size experiment: 1,000,000 keys at a 1 % target, 1,000,000
/// probes.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 1_000_000, 1_000_000, 0.01)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizing_follows_the_formulas() {
        // n = 1000, p = 0.01: m = 9586 bits, k = 7.
        let m = BloomFilter::optimal_bits(1000, 0.01).unwrap();
        assert_eq!(m, 9586);
        assert_eq!(BloomFilter::optimal_hashes(m, 1000), 7);
        let f = BloomFilter::with_rate(1000, 0.01, 0).unwrap();
        assert_eq!((f.num_bits(), f.num_hashes()), (9586, 7));
        assert_eq!(f.bytes(), 9586usize.div_ceil(64) * 8);
        assert!((f.theoretical_fpr(1000) - 0.01).abs() < 0.001);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert_eq!(BloomFilter::with_rate(0, 0.01, 0), Err(BloomError::NoItems));
        assert_eq!(
            BloomFilter::with_rate(10, 0.0, 0),
            Err(BloomError::BadRate(0.0))
        );
        assert_eq!(
            BloomFilter::with_rate(10, 1.0, 0),
            Err(BloomError::BadRate(1.0))
        );
        assert!(matches!(
            BloomFilter::with_rate(10, f64::NAN, 0),
            Err(BloomError::BadRate(_))
        ));
        assert_eq!(BloomFilter::with_size(0, 3, 0), Err(BloomError::Empty));
        assert_eq!(BloomFilter::with_size(10, 0, 0), Err(BloomError::Empty));
    }

    #[test]
    fn insert_contains_union() {
        let mut a = BloomFilter::with_rate(100, 0.01, 3).unwrap();
        assert!(!a.contains("x"));
        assert!(!a.insert("x"));
        assert!(a.insert("x"));
        assert!(a.contains("x"));
        assert_eq!(a.inserted(), 2);
        let mut b = BloomFilter::with_rate(100, 0.01, 3).unwrap();
        b.insert("y");
        assert!(a.union(&b));
        assert!(a.contains("x") && a.contains("y"));
        let c = BloomFilter::with_rate(100, 0.01, 4).unwrap();
        assert!(!a.union(&c), "different seeds cannot be merged");
    }

    #[test]
    fn exact_set_counts() {
        let mut s = ExactSet::new();
        assert!(s.is_empty());
        assert!(!s.insert("a"));
        assert!(s.insert("a"));
        assert!(s.contains("a") && !s.contains("b"));
        assert_eq!(s.len(), 1);
        assert!(s.bytes() >= 1);
    }

    #[test]
    fn similar_fpr_to_fastbloom_at_the_same_size() {
        let n = 20_000;
        let probes = 100_000;
        let mine_f = BloomFilter::with_rate(n, 0.01, 1).unwrap();
        let (m, k) = (mine_f.num_bits(), mine_f.num_hashes());
        let mut mine = mine_f;
        let mut theirs = fastbloom::BloomFilter::with_num_bits(m as usize)
            .seed(&7)
            .hashes(k);
        for i in 0..n {
            let key = key(2 * i as u64);
            mine.insert(&key);
            theirs.insert(&key);
        }
        let fp = |f: &dyn Fn(&str) -> bool| {
            (0..probes).filter(|&i| f(&key(2 * i as u64 + 1))).count() as f64 / probes as f64
        };
        let mine_rate = fp(&|s| mine.contains(s));
        let theirs_rate = fp(&|s| theirs.contains(s));
        let theory = mine.theoretical_fpr(n as u64);
        assert!(
            (mine_rate - theory).abs() < 0.3 * theory,
            "mine {mine_rate} theory {theory}"
        );
        assert!(
            (mine_rate - theirs_rate).abs() < 0.5 * theory,
            "mine {mine_rate} fastbloom {theirs_rate}"
        );
        // The same memory, give or take a word.
        assert!((mine.bytes() as i64 - theirs.as_slice().len() as i64 * 8).abs() <= 64);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn never_a_false_negative(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..200),
            bits in 1u64..5000,
            hashes in 1u32..12,
            seed in any::<u64>(),
        ) {
            let mut f = BloomFilter::with_size(bits, hashes, seed).unwrap();
            for k in &keys {
                f.insert(k);
            }
            for k in &keys {
                prop_assert!(f.contains(k));
            }
        }
    }

    #[test]
    fn lesson_shows_the_effect() {
        let r = lesson_with(5, 20_000, 50_000, 0.01);
        let (n, o) = (&r.naive, &r.optimal);
        assert_eq!(n["false_positive_rate"], 0.0);
        assert_eq!(o["false_negatives"], 0.0);
        assert!(
            o["false_positive_rate"] > 0.005 && o["false_positive_rate"] < 0.015,
            "{}",
            r.table()
        );
        assert!(
            (o["false_positive_rate"] - o["theoretical_fpr"]).abs() < 0.003,
            "{}",
            r.table()
        );
        assert!(o["bytes"] * 10.0 < n["bytes"], "{}", r.table());
    }
}
