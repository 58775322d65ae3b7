//! URL shortener codes: random strings with collision retries against base62
//! of a counter.
//!
//! **The pattern.** A shortener maps a long URL to a short code
//! (`sdl.ab/3fXk`) and back. The code must be unique, short, and cheap to
//! make.
//!
//! **The naive way.** [`RandomShortener`] draws a random `len`-character
//! code and, if that code is taken, draws again. By the birthday paradox the
//! first collision comes after about `sqrt(62^len)` codes, and as the table
//! fills every new code costs more lookups (and, in a real service, more
//! round trips to the database to check).
//!
//! **The optimal way.** [`CounterShortener`] takes the next value of a
//! counter and writes it in base 62 ([`encode`]): digits `0-9A-Za-z`. The
//! mapping is a bijection between `u64` and canonical base-62 strings
//! ([`decode`] inverts it), so codes are unique by construction: zero
//! collisions, zero retries, and the shortest possible codes (the `n`-th URL
//! gets `ceil(log62(n+1))` characters). A counter shared by many servers is
//! handed out in ranges (each server leases a block of 1000 values), so it is
//! not a per-request bottleneck.
//!
//! **Complexity.** Both are O(1) per URL; random codes cost an expected
//! `1 / (1 - load)` attempts at table load `load`.

use crate::LessonReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// The lesson's command-line name.
pub const NAME: &str = "url-shortener";
/// A short human title.
pub const TITLE: &str = "URL shortener: random codes vs base62 counter";

/// The base-62 digits, in value order.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in base 62 (`0` is `"0"`).
pub fn encode(mut n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut digits = Vec::with_capacity(11);
    while n > 0 {
        digits.push(ALPHABET[(n % 62) as usize]);
        n /= 62;
    }
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

fn digit_value(c: u8) -> Option<u64> {
    match c {
        b'0'..=b'9' => Some(u64::from(c - b'0')),
        b'A'..=b'Z' => Some(u64::from(c - b'A') + 10),
        b'a'..=b'z' => Some(u64::from(c - b'a') + 36),
        _ => None,
    }
}

/// The number a canonical base-62 code stands for. `None` for an empty
/// string, a character outside `0-9A-Za-z`, a leading zero (not canonical,
/// so the mapping stays a bijection), or a value past `u64::MAX`.
pub fn decode(code: &str) -> Option<u64> {
    let bytes = code.as_bytes();
    if bytes.is_empty() || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &c| {
        acc.checked_mul(62)?.checked_add(digit_value(c)?)
    })
}

/// Why a random code could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortenError {
    #[error("no free code after {0} attempts: the keyspace is (nearly) full")]
    KeyspaceExhausted(u32),
}

/// The naive shortener: random fixed-length codes, redrawn on collision.
#[derive(Debug, Clone)]
pub struct RandomShortener {
    len: usize,
    max_attempts: u32,
    rng: StdRng,
    urls: HashMap<String, String>,
    collisions: u64,
    retries: u64,
}

impl RandomShortener {
    /// Codes of `len` characters (at least 1), drawn from `seed`; gives up
    /// after 1000 attempts for one URL.
    pub fn new(len: usize, seed: u64) -> Self {
        Self {
            len: len.max(1),
            max_attempts: 1000,
            rng: StdRng::seed_from_u64(seed),
            urls: HashMap::new(),
            collisions: 0,
            retries: 0,
        }
    }

    fn random_code(&mut self) -> String {
        (0..self.len)
            .map(|_| char::from(ALPHABET[self.rng.random_range(0..62)]))
            .collect()
    }

    /// Stores `url` under a fresh random code and returns the code.
    pub fn shorten(&mut self, url: &str) -> Result<String, ShortenError> {
        for attempt in 0..self.max_attempts {
            let code = self.random_code();
            if !self.urls.contains_key(&code) {
                self.urls.insert(code.clone(), url.to_string());
                return Ok(code);
            }
            if attempt == 0 {
                self.collisions += 1;
            }
            self.retries += 1;
        }
        Err(ShortenError::KeyspaceExhausted(self.max_attempts))
    }

    pub fn resolve(&self, code: &str) -> Option<&str> {
        self.urls.get(code).map(String::as_str)
    }

    /// URLs whose first random code was already taken.
    pub fn collisions(&self) -> u64 {
        self.collisions
    }

    /// Extra draws in total (every taken code drawn again).
    pub fn retries(&self) -> u64 {
        self.retries
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

/// The optimal shortener: code = base62(counter).
#[derive(Debug, Clone, Default)]
pub struct CounterShortener {
    /// URL `i` got the code `encode(first + i)`.
    first: u64,
    urls: Vec<String>,
}

impl CounterShortener {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shortener whose counter starts at `first` (e.g. the start of the
    /// range this server leased from a shared counter).
    pub fn starting_at(first: u64) -> Self {
        Self {
            first,
            urls: Vec::new(),
        }
    }

    /// Stores `url` under the next counter value and returns its code;
    /// `None` only once the `u64` counter is used up.
    pub fn shorten(&mut self, url: &str) -> Option<String> {
        let n = self.first.checked_add(self.urls.len() as u64)?;
        self.urls.push(url.to_string());
        Some(encode(n))
    }

    pub fn resolve(&self, code: &str) -> Option<&str> {
        let n = decode(code)?.checked_sub(self.first)?;
        self.urls.get(usize::try_from(n).ok()?).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

/// Runs both shorteners on `urls` URLs; the naive one draws codes of
/// `random_len` characters.
pub fn lesson_with(seed: u64, urls: usize, random_len: usize) -> LessonReport {
    let mut naive = RandomShortener::new(random_len, seed);
    let mut optimal = CounterShortener::new();
    let mut url_rng = StdRng::seed_from_u64(seed ^ 0x05ee_d0f0_ff1c);
    let (mut naive_len, mut opt_len) = (0usize, 0usize);
    let mut naive_failures = 0u64;
    let mut optimal_collisions = 0u64;
    for i in 0..urls {
        let url = format!("https://example.com/{i}/{:016x}", url_rng.random::<u64>());
        match naive.shorten(&url) {
            Ok(code) => naive_len += code.len(),
            Err(_) => naive_failures += 1,
        }
        match optimal.shorten(&url) {
            Some(code) => opt_len += code.len(),
            None => optimal_collisions += 1,
        }
    }
    let n = urls.max(1) as f64;
    let keyspace = 62f64.powi(random_len as i32);
    let six = n * n / (2.0 * 62f64.powi(6));
    LessonReport::new(NAME, TITLE)
        .both("urls", urls as f64, urls as f64)
        .both("collisions", naive.collisions() as f64, optimal_collisions as f64)
        .both("retries", naive.retries() as f64, 0.0)
        .both("code_len", naive_len as f64 / n, opt_len as f64 / n)
        .both("failures", naive_failures as f64, 0.0)
        .naive("keyspace", keyspace)
        .notes(format!(
            "The naive side draws {random_len}-character random codes (keyspace 62^{random_len} = {keyspace:.0}; \
             deliberately small so that {urls} URLs show collisions: with 6 characters the birthday \
             estimate n^2 / (2 * 62^6) gives only ~{six:.0} first-draw collisions). Each taken code costs a lookup and a redraw, and the cost \
             grows as the table fills. Base62 of a counter is a bijection, so codes are unique by \
             construction (0 collisions, 0 retries) and as short as they can be. Sequential codes are \
             guessable: if that matters, permute the counter with a keyed bijection (e.g. a small \
             Feistel cipher) before encoding; at scale, servers lease counter ranges from ZooKeeper/etcd \
             or a database sequence."
        ))
}

/// The lesson at full size: 1M URLs, 4-character random codes.
pub fn lesson(seed: u64) -> LessonReport {
    lesson_with(seed, 1_000_000, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn known_codes() {
        assert_eq!(encode(0), "0");
        assert_eq!(encode(61), "z");
        assert_eq!(encode(62), "10");
        assert_eq!(encode(62 * 62 - 1), "zz");
        assert_eq!(decode("zz"), Some(3843));
        assert_eq!(decode(&encode(u64::MAX)), Some(u64::MAX));
        assert_eq!(encode(u64::MAX).len(), 11);
    }

    #[test]
    fn decode_rejects_bad_codes() {
        assert_eq!(decode(""), None);
        assert_eq!(decode("ab-c"), None);
        assert_eq!(decode("é"), None);
        assert_eq!(decode("01"), None, "leading zero is not canonical");
        assert_eq!(decode("zzzzzzzzzzzz"), None, "past u64::MAX");
    }

    #[test]
    fn shorteners_resolve_what_they_stored() {
        let mut c = CounterShortener::starting_at(1000);
        let code = c.shorten("https://a").unwrap();
        assert_eq!(code, encode(1000));
        assert_eq!(c.resolve(&code), Some("https://a"));
        assert_eq!(c.resolve("0"), None);
        assert_eq!(c.resolve("!!"), None);
        let mut r = RandomShortener::new(6, 1);
        let code = r.shorten("https://b").unwrap();
        assert_eq!(code.len(), 6);
        assert_eq!(r.resolve(&code), Some("https://b"));
    }

    #[test]
    fn random_shortener_fails_cleanly_when_full() {
        let mut r = RandomShortener::new(1, 7);
        let codes: HashSet<String> = (0..62)
            .map(|i| r.shorten(&format!("u{i}")).unwrap())
            .collect();
        assert_eq!(codes.len(), 62);
        assert!(
            r.retries() > 62,
            "filling the last slots takes many redraws"
        );
        assert_eq!(
            r.shorten("one too many"),
            Err(ShortenError::KeyspaceExhausted(1000))
        );
    }

    #[test]
    fn lesson_shows_collisions_only_for_random_codes() {
        // 50k URLs in a 3-char keyspace (238k): load reaches ~21%.
        let r = lesson_with(42, 50_000, 3);
        assert!(r.naive["collisions"] > 2_000.0, "{:?}", r.naive);
        assert!(r.naive["retries"] >= r.naive["collisions"]);
        assert_eq!(r.optimal["collisions"], 0.0);
        assert_eq!(r.optimal["retries"], 0.0);
        assert_eq!(r.naive["code_len"], 3.0);
        assert!(
            r.optimal["code_len"] < 3.0,
            "counter codes are shorter: {}",
            r.optimal["code_len"]
        );
    }

    proptest! {
        #[test]
        fn base62_round_trips(n in any::<u64>()) {
            let code = encode(n);
            prop_assert!(code.bytes().all(|c| ALPHABET.contains(&c)));
            prop_assert_eq!(decode(&code), Some(n));
        }

        #[test]
        fn canonical_codes_round_trip(code in "[1-9A-Za-z][0-9A-Za-z]{0,9}") {
            let n = decode(&code).unwrap();
            prop_assert_eq!(encode(n), code);
        }

        #[test]
        fn counter_codes_are_unique(start in 0u64..u64::MAX / 2, count in 1usize..2000) {
            let mut c = CounterShortener::starting_at(start);
            let mut seen = HashSet::new();
            for i in 0..count {
                let code = c.shorten(&format!("u{i}")).unwrap();
                prop_assert!(seen.insert(code.clone()));
                let expected = format!("u{i}");
                prop_assert_eq!(c.resolve(&code), Some(expected.as_str()));
            }
        }
    }
}
