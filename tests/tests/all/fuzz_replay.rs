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
            let path = entry.unwrap().path();
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
            .unwrap();
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

/// The structure-aware harnesses must reach the parsers behind the AEAD: a genuine message 2
/// proof goes on, a genuine verdict opens the channel, a genuine message 3 yields its request,
/// and data frames deliver their bytes. If encryption in the harness were wrong, every input
/// would fail at decryption and these would fail.
#[test]
fn structure_aware_fuzz_harnesses_reach_past_the_aead() {
    use nullport_protocol::fuzzing;
    assert!(fuzzing::initiator_msg2_payload(
        &fuzzing::genuine_responder_proof()
    ));
    assert!(!fuzzing::initiator_msg2_payload(&[0; 96]));
    assert!(fuzzing::initiator_verdict(&[4]).is_ok());
    assert!(matches!(
        fuzzing::initiator_verdict(&[5, 3]),
        Err(nullport_protocol::Error::Denied {
            reason: nullport_protocol::DenyReason::BadToken
        })
    ));
    assert_eq!(
        fuzzing::responder_msg3_payload(b"\x05files\x00\x02ab", true).as_deref(),
        Some("files")
    );
    assert_eq!(
        fuzzing::responder_msg3_payload(b"\x05files\x00\x00", false),
        None
    );
    // data "ab", a rekey, data "cd" after the rekey, then close: delivered exactly.
    assert_eq!(
        fuzzing::channel_frames(b"\x03\x01ab\x01\x03\x03\x01cd\x01\x02"),
        b"abcd"
    );
}

/// The `relay_map` seeds hold genuinely signed maps in both forms the target reads (a
/// travelling `SignedRelayMap`, first byte even; a map file, odd), so the fuzzer starts from
/// inputs that reach its property checks, past the signature.
#[test]
fn relay_map_seeds_reach_past_the_signature_in_both_forms() {
    use nullport_keyring::relay_map::RelayMap;
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/relay_map");
    let (mut travelling, mut files) = (0, 0);
    for entry in std::fs::read_dir(seeds).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let Some((mode, rest)) = data.split_first() else {
            continue;
        };
        if mode % 2 == 1 {
            files += usize::from(nullport_relay::map_file::parse(rest).is_ok());
        } else if let Ok(signed) =
            postcard::from_bytes::<nullport_protocol::relay_link::SignedRelayMap>(rest)
            && RelayMap::verify_self_signed(&signed).is_ok()
        {
            travelling += 1;
        }
    }
    assert!(travelling >= 3 && files >= 3, "{travelling} {files}");
}
