//! `sdlab learn` driven by scripted keys (`--keys`): every module and every
//! lesson of the menu is reached, run to its table, explained and shown as
//! code, and the menu goes back and quits; plus what it says to bad input.

mod common;
use common::sdlab;
use serde_json::Value;
use std::collections::BTreeMap;

fn screens(keys: &str) -> Vec<String> {
    let out = sdlab(&["learn", "--size", "120x60", "--keys", keys]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sdlab learn --keys {keys:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.trim_end().ends_with("--- quit ---"),
        "q did not quit:\n{stdout}"
    );
    stdout
        .split("--- screen ---\n")
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// The lessons of each module, in menu order, from `sdlab lesson list --json`.
fn menu() -> Vec<(String, Vec<String>)> {
    let out = sdlab(&["lesson", "list", "--json"]);
    assert!(out.status.success());
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut modules: Vec<(String, Vec<String>)> = Vec::new();
    for l in list {
        let module = l["module"].as_str().unwrap().to_string();
        let name = l["name"].as_str().unwrap().to_string();
        match modules.last_mut() {
            Some((m, names)) if *m == module => names.push(name),
            _ => modules.push((module, vec![name])),
        }
    }
    modules
}

fn moves(n: usize) -> String {
    let mut keys = "home".to_string();
    for _ in 0..n {
        keys.push_str(" down");
    }
    keys
}

#[test]
fn every_lesson_runs_explains_and_shows_its_code_from_the_menu() {
    let modules = menu();
    assert!(modules.len() >= 8, "{modules:?}");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (m, (module, lessons)) in modules.iter().enumerate() {
        // Open the module with the arrows, then each lesson: run (wait for
        // its table), explain, code, back to the list.
        let mut keys = format!("{} enter dump", moves(m));
        for i in 0..lessons.len() {
            keys.push_str(&format!(
                " {} enter 1 wait dump esc 2 dump esc 3 dump esc esc",
                moves(i)
            ));
        }
        keys.push_str(" esc dump q");
        let s = screens(&keys);
        assert_eq!(s.len(), 3 * lessons.len() + 3, "{module}");
        assert!(s[0].contains(module.as_str()), "{}", s[0]);
        for name in lessons {
            assert!(s[0].contains(name.as_str()), "{name} not listed:\n{}", s[0]);
        }
        for (i, name) in lessons.iter().enumerate() {
            let (run, explain, code) = (&s[1 + 3 * i], &s[2 + 3 * i], &s[3 + 3 * i]);
            assert!(
                run.contains(&format!("{name}: run (finished in")),
                "{name} did not finish its run:\n{run}"
            );
            assert!(run.contains("naive") && run.contains("optimal"), "{run}");
            assert!(
                explain.contains(&format!("{name}: what it shows"))
                    && explain.lines().filter(|l| l.len() > 40).count() >= 5,
                "{name}: thin explanation:\n{explain}"
            );
            assert!(
                code.contains(&format!("{name}: code"))
                    && code.contains("// ---- ")
                    && code.contains("   1  //!"),
                "{name}: no code:\n{code}"
            );
            *seen.entry(name.clone()).or_default() += 1;
        }
        let last = &s[s.len() - 2];
        assert!(
            last.contains("Modules"),
            "esc did not go back to the modules:\n{last}"
        );
    }
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

#[test]
fn numbers_navigate_and_bad_input_is_explained() {
    // `1` opens the first module and `1` its first lesson; `9` is not an
    // action, which the footer says; `4` is the Back action.
    let s = screens("1 1 9 dump 4 dump q");
    assert!(s[0].contains("there is no item 9"), "{}", s[0]);
    assert_eq!(
        s[1].lines().next().unwrap().trim(),
        "sdlab learn > Concurrency and thread safety",
        "{}",
        s[1]
    );
    let out = sdlab(&["learn", "--keys", "enterr"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key `enterr`"));
    // Without a terminal and without --keys: a clear error, not a broken screen.
    let out = sdlab(&["learn"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"));
}
