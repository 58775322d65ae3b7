//! Embeds the source of every lesson module, hld's and the AI lessons', in
//! the binary, so `sdlab learn` shows a lesson's code and explanation (its
//! module doc) from any directory, without a checkout beside the binary.
//!
//! Writes `$OUT_DIR/lesson_sources.rs`: one `(key, files)` pair per module,
//! where `key` is `hld::<module>` or `ai::<module>` and `files` are
//! `(path relative to the workspace, contents)`, the module's root file
//! (`x.rs` or `x/mod.rs`) first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    // The module's root file first, the other parts after it.
    files.sort_by_key(|p| p.file_name().is_none_or(|n| n != "mod.rs"));
    files
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut out = String::from("pub static SOURCES: &[(&str, &[(&str, &str)])] = &[\n");
    for (prefix, dir) in [("hld", "hld/src"), ("ai", "src/ai_lessons")] {
        println!("cargo:rerun-if-changed={dir}");
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let files = if path.is_dir() {
                rust_files(&path)
            } else if path.extension().is_some_and(|x| x == "rs") && name != "mod" {
                vec![path.clone()]
            } else {
                continue;
            };
            if files.is_empty() {
                continue;
            }
            write!(out, "    ({:?}, &[", format!("{prefix}::{name}")).unwrap();
            for f in files {
                let rel = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
                write!(
                    out,
                    "({rel:?}, include_str!({:?})), ",
                    f.display().to_string()
                )
                .unwrap();
            }
            out.push_str("]),\n");
        }
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("lesson_sources.rs");
    std::fs::write(dest, out).expect("writing lesson_sources.rs");
}
