//! Every committed fuzz input (`fuzz/seeds/<target>/`, minimized corpora from the long
//! campaigns plus hand-written seeds and regression cases) replayed through the same
//! function the fuzz target calls: CI covers the corpora without a fuzzer.

use std::path::Path;

use nullport_tests::fuzz::TARGETS;

#[test]
fn committed_fuzz_corpora_replay_without_findings() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut total = 0;
    for (name, body) in TARGETS {
        let dir = seeds.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target needs seeds)", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(outcome.is_ok(), "fuzz input {} fails", path.display());
            count += 1;
        }
        assert!(count > 0, "no committed inputs for fuzz target {name}");
        total += count;
    }
    eprintln!(
        "replayed {total} committed fuzz inputs over {} targets",
        TARGETS.len()
    );
}

#[test]
fn every_fuzz_target_has_a_body_here() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let declared: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "nullport-fuzz")
        .collect();
    let mut ours: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let mut declared_sorted = declared.clone();
    ours.sort_unstable();
    declared_sorted.sort_unstable();
    assert_eq!(ours, declared_sorted);
}
