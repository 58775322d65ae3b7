//! The one hash every lesson's structures use: seeded, hand-written and the
//! same on every platform, so each experiment reproduces from its seed
//! (std's `RandomState` is keyed at random per process).

/// 2^64 / golden ratio, the splitmix64 increment.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finalizer: a bijective mix with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded 64-bit hash of bytes: eight bytes at a time, each word folded in
/// with [`mix64`]; the length is mixed in first so that zero padding of the
/// last word is unambiguous.
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h = mix64(seed ^ GOLDEN ^ (bytes.len() as u64).wrapping_mul(GOLDEN));
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word)).wrapping_add(GOLDEN);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_deterministic_and_length_aware() {
        assert_eq!(hash_bytes(b"abc", 1), hash_bytes(b"abc", 1));
        assert_ne!(hash_bytes(b"abc", 1), hash_bytes(b"abc", 2));
        assert_ne!(hash_bytes(b"a", 0), hash_bytes(b"a\0", 0));
        assert_ne!(hash_bytes(b"", 0), hash_bytes(b"\0", 0));
        // Avalanche: one flipped input bit changes about half the output bits.
        let flips: u32 = (0..64u64)
            .map(|i| {
                (hash_bytes(&i.to_le_bytes(), 0) ^ hash_bytes(&(i ^ 1).to_le_bytes(), 0))
                    .count_ones()
            })
            .sum();
        assert!((1600..2500).contains(&flips), "{flips}");
    }
}
