//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`), replayed through the same checks
//! the targets run, as a plain test: CI needs no nightly toolchain and no libFuzzer.

use smtp_auth_proxy::fuzz_checks::TARGETS;
use std::path::Path;

#[test]
fn seed_corpus_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, check) in TARGETS {
        let dir = root.join(name);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            check(&data);
            inputs += 1;
        }
        assert!(inputs > 0, "no corpus for target {name}");
    }
}
