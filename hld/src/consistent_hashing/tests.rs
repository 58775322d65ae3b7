use super::*;
use proptest::prelude::*;

#[test]
fn hash_is_deterministic_and_seeded() {
    assert_eq!(hash_bytes(b"hello", 1), hash_bytes(b"hello", 1));
    assert_ne!(hash_bytes(b"hello", 1), hash_bytes(b"hello", 2));
    assert_ne!(hash_bytes(b"hello", 1), hash_bytes(b"hellp", 1));
    // Padding is not ambiguous: a trailing zero byte changes the hash.
    assert_ne!(hash_bytes(b"ab", 1), hash_bytes(b"ab\0", 1));
}

#[test]
fn constructors_reject_bad_input() {
    assert_eq!(ModuloSharder::new(0, 1), Err(PlacementError::NoNodes));
    assert_eq!(
        HashRing::new(0, 1).err(),
        Some(PlacementError::NoVirtualNodes)
    );
    assert_eq!(
        Maglev::new::<&str>(&[], 13, 1).err(),
        Some(PlacementError::NoNodes)
    );
    assert_eq!(
        Maglev::new(&["a"], 12, 1).err(),
        Some(PlacementError::BadTableSize(12))
    );
    assert_eq!(
        Maglev::new(&["a", "b", "c"], 3, 1).err(),
        Some(PlacementError::BadTableSize(3))
    );
    assert_eq!(jump_hash(5, 0), None);
}

#[test]
fn ring_add_remove_and_lookup() {
    let mut ring = HashRing::new(50, 7).unwrap();
    assert_eq!(ring.node_for("k"), None);
    assert!(ring.add_node("a"));
    assert!(!ring.add_node("a"));
    assert_eq!(ring.node_for("k"), Some("a"));
    assert!(ring.add_node("b"));
    assert!(ring.add_node("c"));
    let keys: Vec<String> = (0..2000).map(|i| format!("key{i}")).collect();
    let before: Vec<String> = keys
        .iter()
        .map(|k| ring.node_for(k).unwrap().to_string())
        .collect();
    assert!(ring.remove_node("b"));
    assert!(!ring.remove_node("b"));
    for (k, owner) in keys.iter().zip(&before) {
        let now = ring.node_for(k).unwrap();
        // Only b's keys move, and they move to a surviving node.
        if owner != "b" {
            assert_eq!(now, owner);
        } else {
            assert_ne!(now, "b");
        }
    }
    // The order nodes were added in does not matter.
    let r1 = HashRing::with_nodes(20, 3, &["x", "y", "z"]).unwrap();
    let r2 = HashRing::with_nodes(20, 3, &["z", "x", "y"]).unwrap();
    for k in &keys {
        assert_eq!(r1.node_for(k), r2.node_for(k));
    }
}

#[test]
fn jump_hash_spreads_evenly_and_moves_minimally() {
    let hashes: Vec<u64> = (0..50_000u64)
        .map(|i| hash_bytes(&i.to_le_bytes(), 0))
        .collect();
    let owners: Vec<usize> = hashes
        .iter()
        .map(|&h| jump_hash(h, 10).unwrap() as usize)
        .collect();
    assert!(owners.iter().all(|&o| o < 10));
    assert!(load_stddev(&owners, 10) < 0.05);
    for &h in &hashes {
        let a = jump_hash(h, 10).unwrap();
        let b = jump_hash(h, 11).unwrap();
        // A key either stays or goes to the new bucket.
        assert!(a == b || b == 10);
    }
}

#[test]
fn maglev_table_is_balanced_and_lookup_stable() {
    let names = node_names(7);
    let m = Maglev::new(&names, 1009, 11).unwrap();
    let mut counts = vec![0usize; 7];
    for &o in &m.table {
        counts[o] += 1;
    }
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(hi - lo <= 1, "{counts:?}");
    assert_eq!(m.node_for("abc"), m.node_for("abc"));
    assert_eq!(m.table_size(), 1009);
}

#[test]
fn ring_matches_a_btreemap_ring() {
    // The textbook ring is a BTreeMap from point to node: the owner of a
    // key is the first entry at or after its hash, else the first entry.
    let names = node_names(5);
    let ring = HashRing::with_nodes(40, 9, &names).unwrap();
    let mut map = std::collections::BTreeMap::new();
    for n in &names {
        for v in 0..40 {
            map.insert(hash_bytes(format!("{n}#{v}").as_bytes(), 9), n.clone());
        }
    }
    for i in 0..5000u64 {
        let k = i.to_le_bytes();
        let h = hash_bytes(&k, 9);
        let want = map
            .range(h..)
            .next()
            .or_else(|| map.iter().next())
            .map(|(_, n)| n.as_str());
        assert_eq!(ring.node_for(k), want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn adding_a_ring_node_only_moves_keys_to_it(n in 1usize..8, keys in proptest::collection::vec(any::<u64>(), 1..300)) {
        let names = node_names(n + 1);
        let small = HashRing::with_nodes(16, 5, &names[..n]).unwrap();
        let big = HashRing::with_nodes(16, 5, &names).unwrap();
        for k in keys {
            let k = k.to_le_bytes();
            let (a, b) = (small.node_for(k).unwrap(), big.node_for(k).unwrap());
            prop_assert!(a == b || b == names[n]);
        }
    }

    #[test]
    fn jump_hash_is_in_range_and_monotone(key in any::<u64>(), n in 1u32..500) {
        let a = jump_hash(key, n).unwrap();
        let b = jump_hash(key, n + 1).unwrap();
        prop_assert!(a < n);
        prop_assert!(a == b || b == n);
    }
}

#[test]
fn lesson_shows_the_effect() {
    let r = lesson_with(1, 20_000, 10, 100);
    assert!(r.naive["moved_fraction"] > 0.8, "{}", r.table());
    assert!(r.optimal["moved_fraction"] < 0.15, "{}", r.table());
    assert!(r.optimal["jump_moved_fraction"] < 0.12, "{}", r.table());
    assert!(r.optimal["maglev_moved_fraction"] < 0.2, "{}", r.table());
    assert!(
        r.optimal["ring_1vnode_load_stddev"] > r.optimal["load_stddev"],
        "{}",
        r.table()
    );
    assert!(r.optimal["maglev_load_stddev"] < 0.1, "{}", r.table());
}

/// The walk from a key starts at its owner and meets every node once.
#[test]
fn walk_from_a_key_starts_at_its_owner_and_covers_every_node() {
    let names: Vec<String> = (0..5).map(|i| format!("node-{i}")).collect();
    let ring = HashRing::with_nodes(64, 9, &names).unwrap();
    for k in 0..200u32 {
        let key = format!("key-{k}");
        let order = ring.node_indices_from(&key);
        assert_eq!(Some(order[0]), ring.node_index_for(&key));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..5).collect::<Vec<_>>());
    }
    assert!(HashRing::new(8, 1)
        .unwrap()
        .node_indices_from("x")
        .is_empty());
}
