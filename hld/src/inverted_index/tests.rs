use super::*;
use proptest::prelude::*;

#[test]
fn zipf_is_skewed_and_normalised() {
    let z = Zipf::new(1000, 1.0).unwrap();
    let total: f64 = (0..1000).map(|r| z.probability(r)).sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert!((z.probability(0) / z.probability(9) - 10.0).abs() < 1e-6);
    let mut rng = StdRng::seed_from_u64(1);
    let mut counts = vec![0usize; 1000];
    for _ in 0..100_000 {
        counts[z.sample(&mut rng)] += 1;
    }
    let expect0 = z.probability(0) * 100_000.0;
    assert!(
        (counts[0] as f64 - expect0).abs() < 0.05 * expect0,
        "{}",
        counts[0]
    );
    assert!(counts[0] > counts[10] && counts[10] > counts[500]);
    assert!(Zipf::new(0, 1.0).is_none() && Zipf::new(5, f64::NAN).is_none());
}

#[test]
fn pseudo_words_are_distinct() {
    let mut w: Vec<String> = (0..20_000).map(pseudo_word).collect();
    w.sort();
    w.dedup();
    assert_eq!(w.len(), 20_000);
}

#[test]
fn index_finds_and_ranks() {
    let docs = [
        "the quick brown fox",
        "The fox, the FOX and the hound",
        "a lazy dog",
        "quick quick quick dog",
    ];
    let ix = InvertedIndex::build(&docs);
    assert_eq!(ix.len(), 4);
    assert_eq!(
        ix.postings("fox"),
        &[Posting { doc: 0, tf: 1 }, Posting { doc: 1, tf: 2 }]
    );
    assert_eq!(ix.matching("fox"), vec![0, 1]);
    assert_eq!(ix.matching("Quick DOG"), vec![3]);
    assert_eq!(ix.matching("fox cat"), Vec::<DocId>::new());
    assert!(ix.matching("  ,, ").is_empty());
    let hits = ix.search("quick", 10);
    assert_eq!(hits.iter().map(|h| h.doc).collect::<Vec<_>>(), vec![3, 0]);
    assert!(hits[0].score > hits[1].score);
    // A rarer term outweighs a commoner one.
    let hits = ix.search("hound fox", 1);
    assert_eq!(hits[0].doc, 1);
    assert!(ix.search("", 5).is_empty());
    assert!(ix.search("zebra", 5).is_empty());
}

#[test]
fn bm25_matches_the_formula() {
    let p = Bm25::default();
    let idf = p.idf(10, 2);
    assert!((idf - (1.0f64 + 8.5 / 2.5).ln()).abs() < 1e-12);
    // tf=1, doc of average length: idf * 2.2 / 2.2.
    assert!((p.term_score(idf, 1, 100, 100.0) - idf).abs() < 1e-12);
    // Saturation: tf 10 is worth less than 10x tf 1.
    assert!(p.term_score(1.0, 10, 100, 100.0) < 3.0);
}

#[test]
fn grep_and_index_agree_on_a_corpus() {
    let docs = synthetic_corpus(3, 500, 2000);
    let ix = InvertedIndex::build(&docs);
    let grep = Grep::new(docs);
    let w = |r: usize| pseudo_word(r);
    let queries = [
        w(3),
        format!("{} {}", w(3), w(20)),
        format!("{} {} {}", w(1), w(40), w(90)),
        "nothing".to_string(),
        format!("{} {}", w(5), w(5)),
    ];
    for q in &queries {
        let q = q.as_str();
        assert_eq!(grep.matching(q), ix.matching(q), "{q}");
        assert_eq!(grep.search(q, 7), ix.search(q, 7), "{q}");
    }
    let common = pseudo_word(0);
    assert!(!ix.matching(&common).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn index_equals_scan(
        docs in proptest::collection::vec(
            proptest::collection::vec(0usize..30, 0..20), 1..40),
        q in proptest::collection::vec(0usize..35, 0..4),
    ) {
        let texts: Vec<String> = docs
            .iter()
            .map(|d| d.iter().map(|&w| pseudo_word(w)).collect::<Vec<_>>().join(" "))
            .collect();
        let query = q.iter().map(|&w| pseudo_word(w)).collect::<Vec<_>>().join(" ");
        let ix = InvertedIndex::build(&texts);
        let grep = Grep::new(texts);
        prop_assert_eq!(grep.matching(&query), ix.matching(&query));
        prop_assert_eq!(grep.search(&query, 5), ix.search(&query, 5));
    }
}

#[test]
fn lesson_shows_the_index_wins() {
    let r = lesson_with(7, 3000, 5000, 10);
    assert_eq!(r.optimal["results_match"], 1.0);
    assert_eq!(r.optimal["ranking_match"], 1.0);
    assert!(r.naive["matches_per_query"] > 0.0);
    assert!(
        r.naive["query_us"] > 5.0 * r.optimal["query_us"],
        "{}",
        r.table()
    );
    assert!(r.naive["ranked_query_us"] > 5.0 * r.optimal["ranked_query_us"]);
}
