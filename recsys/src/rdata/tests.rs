//! Unit tests on hand-built serialization streams and a hand-built
//! lazy-load database.

use super::*;
use crate::RecsysError;
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use std::io::Write;

/// Builds an XDR serialization stream by hand.
#[derive(Default)]
struct W(Vec<u8>);

const ATTR: i32 = 1 << 9;
const TAG: i32 = 1 << 10;
const OBJ: i32 = 1 << 8;

impl W {
    fn v2() -> Self {
        let mut w = W::default();
        w.0.extend_from_slice(b"X\n");
        w.i(2).i(0x040201).i(0x020300);
        w
    }
    fn v3() -> Self {
        let mut w = W::default();
        w.0.extend_from_slice(b"X\n");
        w.i(3).i(0x040201).i(0x030500).i(5);
        w.0.extend_from_slice(b"UTF-8");
        w
    }
    fn i(&mut self, x: i32) -> &mut Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    fn f(&mut self, x: f64) -> &mut Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    /// A CHARSXP (ASCII flag set), or NA_STRING.
    fn chr(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => {
                self.i(9 | (64 << 12)).i(s.len() as i32);
                self.0.extend_from_slice(s.as_bytes());
            }
            None => {
                self.i(9).i(-1);
            }
        }
        self
    }
    fn sym(&mut self, s: &str) -> &mut Self {
        self.i(1).chr(Some(s))
    }
    fn ints(&mut self, flags: i32, v: &[i32]) -> &mut Self {
        self.i(13 | flags).i(v.len() as i32);
        for &x in v {
            self.i(x);
        }
        self
    }
    fn strs(&mut self, flags: i32, v: &[Option<&str>]) -> &mut Self {
        self.i(16 | flags).i(v.len() as i32);
        for s in v {
            self.chr(*s);
        }
        self
    }
    /// A tagged pairlist cell whose tag is a new symbol; the value follows.
    fn cell(&mut self, tag: &str) -> &mut Self {
        self.i(2 | TAG).sym(tag)
    }
    /// A tagged pairlist cell whose tag is reference `r` (1-based).
    fn cell_ref(&mut self, r: i32) -> &mut Self {
        self.i(2 | TAG).i(255 | (r << 8))
    }
    fn nil(&mut self) -> &mut Self {
        self.i(254)
    }
}

#[test]
fn reads_an_integer_vector_with_na() {
    let mut w = W::v2();
    w.ints(0, &[1, NA_INTEGER, -5]);
    let o = parse(&w.0).unwrap();
    assert_eq!(o.value, RValue::Int(vec![1, NA_INTEGER, -5]));
    assert!(o.attributes.is_empty());
    assert_eq!(o.len(), 3);
}

#[test]
fn reads_a_character_vector_with_na_in_version_3() {
    let mut w = W::v3();
    w.strs(0, &[Some("a"), None, Some("héllo")]);
    let o = parse(&w.0).unwrap();
    assert_eq!(
        o.value,
        RValue::Str(vec![Some("a".into()), None, Some("héllo".into())])
    );
}

#[test]
fn reads_reals_logicals_and_latin1() {
    let mut w = W::v2();
    // list(c(0.5, NaN), c(TRUE, NA, FALSE), latin-1 "é")
    w.i(19).i(3);
    w.i(14).i(2).f(0.5).f(f64::NAN);
    w.i(10).i(3).i(1).i(NA_INTEGER).i(0);
    w.i(16).i(1).i(9 | (4 << 12)).i(1);
    w.0.push(0xE9);
    let o = parse(&w.0).unwrap();
    let RValue::List(items) = &o.value else {
        panic!("{o:?}")
    };
    let RValue::Real(r) = &items[0].value else {
        panic!()
    };
    assert_eq!(r[0], 0.5);
    assert!(r[1].is_nan());
    assert_eq!(
        items[1].value,
        RValue::Logical(vec![Some(true), None, Some(false)])
    );
    assert_eq!(items[2].value, RValue::Str(vec![Some("é".into())]));
}

/// `data.frame(id = 1:2, g = factor(c("x", "y")))` as R writes it: the
/// symbols `levels`, `class` and `names` are written once, then referenced.
fn data_frame() -> Vec<u8> {
    let mut w = W::v3();
    w.i(19 | ATTR | OBJ).i(2);
    w.ints(0, &[1, 2]);
    // The factor: codes, then attributes levels (symbol ref 1), class (ref 2).
    w.ints(ATTR | OBJ, &[1, 2]);
    w.cell("levels").strs(0, &[Some("x"), Some("y")]);
    w.cell("class").strs(0, &[Some("factor")]);
    w.nil();
    // The data frame's attributes: names, class (ref 2), row.names.
    w.cell("names").strs(0, &[Some("id"), Some("g")]);
    w.cell_ref(2).strs(0, &[Some("data.frame")]);
    w.cell("row.names").ints(0, &[NA_INTEGER, -2]);
    w.nil();
    w.0
}

#[test]
fn reads_a_data_frame_with_a_factor_and_symbol_references() {
    let o = parse(&data_frame()).unwrap();
    assert_eq!(o.class(), vec!["data.frame"]);
    assert_eq!(
        o.names().unwrap(),
        &[Some("id".to_string()), Some("g".to_string())]
    );
    assert_eq!(
        o.attr("row.names").unwrap().value,
        RValue::Int(vec![NA_INTEGER, -2])
    );
    assert_eq!(o.get("id").unwrap().value, RValue::Int(vec![1, 2]));
    let g = o.get("g").unwrap();
    assert!(g.is_factor());
    assert_eq!(
        g.attr("levels").unwrap().value,
        RValue::Str(vec![Some("x".into()), Some("y".into())])
    );
    assert!(o.get("nope").is_none());
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = data_frame();
    for n in 0..full.len() {
        let e = parse(&full[..n]).expect_err("a truncated stream must be refused");
        assert!(matches!(e, RecsysError::Data(_)), "{e}");
    }
    let e = parse(&full[..full.len() - 3]).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn bad_headers_types_and_references_are_clear_errors() {
    let e = parse(b"RDX3\n").unwrap_err().to_string();
    assert!(e.contains("not an R serialization"), "{e}");
    let mut w = W::v2();
    w.i(7);
    w.i(1);
    let e = parse(&w.0).unwrap_err().to_string();
    assert!(e.contains("SEXP type 7") && e.contains("byte 14"), "{e}");
    let mut w = W::v2();
    w.i(255 | (3 << 8));
    let e = parse(&w.0).unwrap_err().to_string();
    assert!(e.contains("reference 3 out of range"), "{e}");
    let mut w = W(b"X\n".to_vec());
    w.i(4).i(0).i(0).i(13).i(0);
    let e = parse(&w.0).unwrap_err().to_string();
    assert!(e.contains("version 4"), "{e}");
}

#[test]
fn huge_lengths_and_deep_nesting_are_refused() {
    let mut w = W::v2();
    w.i(13).i(i32::MAX);
    let e = parse(&w.0).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let mut w = W::v2();
    w.i(13).i(-1).i(0x7fff_ffff).i(0);
    assert!(parse(&w.0).is_err());
    let mut w = W::v2();
    for _ in 0..10_000 {
        w.i(19).i(1);
    }
    w.nil();
    let e = parse(&w.0).unwrap_err().to_string();
    assert!(e.contains("nesting"), "{e}");
}

#[test]
fn reads_environments_and_special_codes() {
    // list(globalenv(), env(a = 1L) with itself as enclosure, that env again)
    let mut w = W::v2();
    w.i(19).i(3);
    w.i(253);
    w.i(4).i(0); // ENVSXP, unlocked: ref 1
    w.i(255 | (1 << 8)); // enclosure: itself
    w.cell("a").ints(0, &[1]).nil(); // frame
    w.nil(); // hash table
    w.nil(); // attributes
    w.i(255 | (1 << 8));
    let o = parse(&w.0).unwrap();
    let RValue::List(items) = &o.value else {
        panic!()
    };
    assert_eq!(items[0].value, RValue::SpecialEnv("global"));
    let RValue::Env { bindings, locked } = &items[1].value else {
        panic!("{:?}", items[1])
    };
    assert!(!locked);
    assert_eq!(bindings[0].0, "a");
    assert_eq!(items[2], items[1]);
}

#[test]
fn expands_a_compact_integer_sequence() {
    let mut w = W::v3();
    w.i(238);
    w.i(2)
        .sym("compact_intseq")
        .i(2)
        .sym("base")
        .i(2)
        .ints(0, &[13])
        .nil();
    w.i(14).i(3).f(4.0).f(10.0).f(1.0);
    w.nil();
    let o = parse(&w.0).unwrap();
    assert_eq!(o.value, RValue::Int(vec![10, 11, 12, 13]));
}

/// Writes a lazy-load database holding `x` (the data frame) and `y` (an
/// integer vector) with compression type `compressed` into a fresh folder.
fn lazy_db(tag: &str, compressed: i32) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("recsys-rdata-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut y = W::v2();
    y.ints(0, &[7, 8, 9]);
    let mut rdb = Vec::new();
    let mut spans = Vec::new();
    for obj in [data_frame(), y.0] {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&obj).unwrap();
        let body = z.finish().unwrap();
        let start = rdb.len() as i32;
        rdb.extend_from_slice(&(obj.len() as u32).to_be_bytes());
        rdb.extend_from_slice(&body);
        spans.push((start, rdb.len() as i32 - start));
    }
    std::fs::write(dir.join("Rdata.rdb"), &rdb).unwrap();
    // list(variables = list(x = c(o, n), y = c(o, n)), references = list(),
    //      compressed = TRUE or an integer)
    let mut w = W::v3();
    w.i(19 | ATTR).i(3);
    w.i(19 | ATTR).i(2);
    for (o, n) in &spans {
        w.ints(0, &[*o, *n]);
    }
    w.cell("names").strs(0, &[Some("x"), Some("y")]).nil();
    w.i(19).i(0);
    if compressed == 1 {
        w.i(10).i(1).i(1);
    } else {
        w.ints(0, &[compressed]);
    }
    w.cell_ref(1)
        .strs(
            0,
            &[Some("variables"), Some("references"), Some("compressed")],
        )
        .nil();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&w.0).unwrap();
    std::fs::write(dir.join("Rdata.rdx"), gz.finish().unwrap()).unwrap();
    dir
}

#[test]
fn reads_objects_from_a_lazy_load_database() {
    let dir = lazy_db("ok", 1);
    assert_eq!(lazy_load_names(&dir).unwrap(), vec!["x", "y"]);
    let y = read_lazy_load(&dir, "y").unwrap();
    assert_eq!(y.value, RValue::Int(vec![7, 8, 9]));
    let x = read_lazy_load(&dir, "x").unwrap();
    assert_eq!(x.class(), vec!["data.frame"]);
    let e = read_lazy_load(&dir, "movielens").unwrap_err().to_string();
    assert!(
        e.contains("no object `movielens`") && e.contains("x, y"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_xz_databases_and_missing_files() {
    let dir = lazy_db("xz", 3);
    let e = read_lazy_load(&dir, "y").unwrap_err().to_string();
    assert!(e.contains("xz") && e.contains("not supported"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let e = read_lazy_load(&dir, "y").unwrap_err();
    assert!(matches!(e, RecsysError::Io { .. }), "{e}");
}
