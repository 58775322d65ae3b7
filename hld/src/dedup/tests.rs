use super::*;
use proptest::prelude::*;
use rand::RngCore;
use std::collections::HashSet;

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn check_tiling(chunks: &[Chunk], data: &[u8], min: usize, max: usize) {
    let mut offset = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.offset, offset);
        assert!(c.len <= max);
        if i + 1 < chunks.len() {
            assert!(c.len >= min, "chunk {i} of {} bytes below min", c.len);
        }
        assert_eq!(
            c.fingerprint,
            fingerprint64(&data[c.offset..c.offset + c.len])
        );
        offset += c.len;
    }
    assert_eq!(offset, data.len());
}

#[test]
fn rejects_bad_parameters() {
    assert!(FastCdc::new(8, 16, 32, 0).is_err());
    assert!(FastCdc::new(4096, 2048, 65536, 0).is_err());
    assert_eq!(
        FastCdc::with_level(64, 128, 1024, 7, 0).unwrap_err(),
        ChunkerError::BadLevel(7)
    );
    assert!(FastCdc::new(2048, 8192, 65536, 0).is_ok());
}

#[test]
fn fixed_and_cdc_tile_the_data() {
    let data = random_bytes(1, 1 << 20);
    let fixed = FixedChunker::new(4096).chunks(&data);
    assert_eq!(fixed.len(), 256);
    check_tiling(&fixed, &data, 4096, 4096);
    let cdc = FastCdc::new(2048, 8192, 65536, 9).unwrap();
    check_tiling(&cdc.chunks(&data), &data, 2048, 65536);
    assert!(cdc.chunks(&[]).is_empty());
    assert_eq!(cdc.chunks(&data[..100]).len(), 1);
}

#[test]
fn constant_input_gives_equal_chunks() {
    // Every chunk of constant input starts in the same state, so all
    // chunks but the last have the same length, within [min, max].
    let cdc = FastCdc::new(256, 1024, 4096, 3).unwrap();
    let data = vec![7u8; 40_000];
    let chunks = cdc.chunks(&data);
    check_tiling(&chunks, &data, 256, 4096);
    assert!(chunks.len() >= 10);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.len == chunks[0].len));
}

#[test]
fn fingerprint_distinguishes_small_changes() {
    let a = random_bytes(2, 10_000);
    let mut b = a.clone();
    b[5_000] ^= 1;
    assert_ne!(fingerprint64(&a), fingerprint64(&b));
    assert_ne!(fingerprint64(&a[..9_999]), fingerprint64(&a));
    assert_ne!(
        fingerprint64(&[0]),
        fingerprint64(&[0, 0]),
        "length is mixed in"
    );
    let fps: HashSet<u64> = (0..10_000u32)
        .map(|i| fingerprint64(&i.to_le_bytes()))
        .collect();
    assert_eq!(fps.len(), 10_000);
}

/// Compares the size distribution with the `fastcdc` crate's v2020
/// chunker on the same data (different Gear tables, so the cuts
/// differ, but the statistics must agree).
#[test]
fn size_distribution_matches_fastcdc_crate() {
    let data = random_bytes(3, 16 << 20);
    let ours: Vec<usize> = FastCdc::new(2048, 8192, 65536, 42)
        .unwrap()
        .chunks(&data)
        .iter()
        .map(|c| c.len)
        .collect();
    let theirs: Vec<usize> = fastcdc::v2020::FastCDC::new(&data, 2048, 8192, 65536)
        .map(|c| c.length)
        .collect();
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    let (mo, mt) = (mean(&ours), mean(&theirs));
    assert!(
        (mo / mt - 1.0).abs() < 0.15,
        "mean chunk size ours {mo:.0} vs fastcdc {mt:.0}"
    );
    // Share of chunks above the average size: normalization keeps it similar.
    let above = |v: &[usize]| v.iter().filter(|&&l| l > 8192).count() as f64 / v.len() as f64;
    let (ao, at) = (above(&ours), above(&theirs));
    assert!(
        (ao - at).abs() < 0.1,
        "share above avg ours {ao:.3} vs fastcdc {at:.3}"
    );
    let sd = |v: &[usize], m: f64| {
        (v.iter().map(|&l| (l as f64 - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    let (so, st) = (sd(&ours, mo), sd(&theirs, mt));
    assert!(
        (so / st - 1.0).abs() < 0.25,
        "std dev ours {so:.0} vs fastcdc {st:.0}"
    );
}

#[test]
fn insert_in_the_middle_changes_only_nearby_chunks() {
    let data = random_bytes(4, 4 << 20);
    let mut edited = data.clone();
    edited.insert(2 << 20, 0x42);
    let cdc = FastCdc::new(2048, 8192, 65536, 1).unwrap();
    let old: HashSet<u64> = cdc.chunks(&data).iter().map(|c| c.fingerprint).collect();
    let new_chunks: Vec<Chunk> = cdc
        .chunks(&edited)
        .into_iter()
        .filter(|c| !old.contains(&c.fingerprint))
        .collect();
    assert!(
        !new_chunks.is_empty() && new_chunks.len() <= 3,
        "{} chunks changed",
        new_chunks.len()
    );
    for c in &new_chunks {
        assert!(
            c.offset <= (2 << 20) + 1 && c.offset + c.len + 2 * 65536 > 2 << 20,
            "changed chunk far from the edit: {c:?}"
        );
    }
    // Fixed blocks: everything after the insert changes.
    let fixed = FixedChunker::new(4096);
    let old: HashSet<u64> = fixed.chunks(&data).iter().map(|c| c.fingerprint).collect();
    let changed = fixed
        .chunks(&edited)
        .iter()
        .filter(|c| !old.contains(&c.fingerprint))
        .count();
    assert!(changed >= 500, "{changed}");
}

#[test]
fn lesson_shows_the_effect() {
    let r = lesson_with(42, 4 << 20);
    assert!(r.naive["bytes_reuploaded_fraction"] > 0.99, "{:?}", r.naive);
    assert!(
        r.optimal["bytes_reuploaded_fraction"] < r.naive["bytes_reuploaded_fraction"] / 10.0,
        "{:?}",
        r.optimal
    );
    assert!(r.naive["dedup_ratio"] < 1.01);
    assert!(r.optimal["dedup_ratio"] > 1.8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn chunks_tile_and_resync_after_an_edit(
        seed in any::<u64>(),
        len in 0usize..200_000,
        pos_frac in 0.0f64..1.0,
        insert in proptest::collection::vec(any::<u8>(), 1..50),
    ) {
        let data = random_bytes(seed, len);
        let cdc = FastCdc::new(64, 256, 1024, seed).unwrap();
        let chunks = cdc.chunks(&data);
        check_tiling(&chunks, &data, 64, 1024);
        prop_assert_eq!(&chunks, &cdc.chunks(&data), "deterministic");

        let pos = (len as f64 * pos_frac) as usize;
        let mut edited = data[..pos].to_vec();
        edited.extend_from_slice(&insert);
        edited.extend_from_slice(&data[pos..]);
        let after = cdc.chunks(&edited);
        check_tiling(&after, &edited, 64, 1024);
        // Old chunks that end before the edit, or start 4 max-chunks
        // after it, come back unchanged (shifted by the insert). The
        // cuts realign within ~2 max-chunks (worst 1869 bytes in 3000
        // trials), so 4 leaves a wide margin.
        let new_cuts: HashSet<usize> = after.iter().map(|c| c.offset + c.len).collect();
        for c in &chunks {
            let end = c.offset + c.len;
            if end <= pos && end < len {
                prop_assert!(new_cuts.contains(&end));
            } else if c.offset >= pos + 4 * 1024 {
                prop_assert!(new_cuts.contains(&(end + insert.len())), "cut at {} lost after edit at {}", end, pos);
            }
        }
    }
}
