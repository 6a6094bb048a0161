//! `fuzz/Cargo.lock` is kept in step with the main one: the fuzz targets build this crate, and
//! a fuzz run must exercise the dependency versions the daemon ships with.

use std::collections::{BTreeMap, BTreeSet};

/// `name -> versions` of a Cargo.lock.
fn packages(path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            out.entry(n)
                .or_default()
                .insert(v.trim_matches('"').to_owned());
        }
    }
    out
}

#[test]
fn the_fuzz_lock_file_has_the_main_lock_files_versions() {
    let root = env!("CARGO_MANIFEST_DIR");
    let main = packages(&format!("{root}/Cargo.lock"));
    let fuzz = packages(&format!("{root}/fuzz/Cargo.lock"));
    let mut differ = Vec::new();
    for (name, versions) in &fuzz {
        // The main lock may hold more versions (its dev-dependencies'), never other ones.
        if let Some(ours) = main.get(name)
            && !versions.is_subset(ours)
        {
            differ.push(format!("{name}: main {ours:?}, fuzz {versions:?}"));
        }
    }
    // Every normal dependency of the daemon reaches the fuzz build too.
    let manifest = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap();
    for line in deps.lines().filter(|l| l.contains(" = ")) {
        let name = line.split(" = ").next().unwrap().trim();
        if !fuzz.contains_key(name) {
            differ.push(format!("{name}: not in fuzz/Cargo.lock"));
        }
    }
    assert!(
        differ.is_empty(),
        "run `cargo update -w` in fuzz/:\n{}",
        differ.join("\n")
    );
}
