#![allow(clippy::unwrap_used)]

use super::*;
use nullport_keyring::relay_map::RelayEntry;
use nullport_protocol::Identity;

fn verified(admin: &Identity, version: u64) -> VerifiedMap {
    let map = RelayMap {
        admin: admin.node_id(),
        version,
        issued: 1_800_000_000,
        relays: vec![
            RelayEntry {
                node_id: Identity::from_seed([1; 32]).node_id(),
                addrs: vec![
                    "relay1.example.net:7443".into(),
                    "[2001:db8::1]:7443".into(),
                ],
                region: Some("eu-west".into()),
            },
            RelayEntry {
                node_id: Identity::from_seed([2; 32]).node_id(),
                addrs: vec!["192.0.2.2:7443".into()],
                region: None,
            },
        ],
    };
    let signed = map.sign(admin).unwrap();
    let map = RelayMap::verify_self_signed(&signed).unwrap();
    VerifiedMap { map, signed }
}

fn edit(text: &str, f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_rendered_map_parses_back_exactly() {
    let admin = Identity::from_seed([9; 32]);
    let v = verified(&admin, 3);
    let text = render(&v);
    assert!(
        text.contains("\"version\": 3") && text.contains("eu-west"),
        "{text}"
    );
    assert_eq!(parse(text.as_bytes()).unwrap(), v);
}

#[test]
fn a_saved_map_loads_and_is_readable_by_all() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("map.json");
    let v = verified(&Identity::from_seed([9; 32]), 1);
    save(&path, &v).unwrap();
    assert_eq!(load(&path).unwrap(), v);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn anything_malformed_or_forged_is_refused_with_the_reason() {
    let admin = Identity::from_seed([9; 32]);
    let text = render(&verified(&admin, 3));
    let format = |bytes: &[u8]| match parse(bytes) {
        Err(MapProblem::Format(why)) => why,
        other => panic!("expected a format error, got {other:?}"),
    };
    assert!(format(b"").contains("EOF"));
    assert!(format(b"{}").contains("missing field"));
    assert!(format(&edit(&text, |v| v["extra"] = 1.into())).contains("unknown field"));
    assert!(format(&edit(&text, |v| v["nullport_relay_map"] = 2.into())).contains("format 2"));
    assert!(format(&edit(&text, |v| v["body"] = "0g".into())).contains("not hex"));
    assert!(format(&edit(&text, |v| v["body"] = "abc".into())).contains("not hex"));
    assert!(format(&edit(&text, |v| v["sig"] = "00".into())).contains("64 bytes"));
    // The readable copy must say what the signed body says: a hand edit is caught.
    let edited = edit(&text, |v| v["map"]["version"] = 4.into());
    assert!(format(&edited).contains("differs from the signed"));
    let edited = edit(&text, |v| v["map"]["relays"][1]["region"] = "us".into());
    assert!(format(&edited).contains("differs from the signed"));
    let edited = edit(&text, |v| v["map"]["note"] = "x".into());
    assert!(format(&edited).contains("differs from the signed"));

    // A forged signature, and a body signed by someone else but naming the admin.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut sig = v["sig"].as_str().unwrap().to_owned();
    sig.replace_range(0..2, if sig.starts_with("00") { "01" } else { "00" });
    v["sig"] = sig.into();
    assert!(matches!(
        parse(&serde_json::to_vec(&v).unwrap()),
        Err(MapProblem::Refused(RelayMapError::BadSignature))
    ));
    let mallory = Identity::from_seed([7; 32]);
    let forged = SignedRelayMap {
        body: verified(&admin, 9).signed.body,
        sig: Signature(mallory.sign(nullport_protocol::domain::RELAY_MAP_V1, b"x")),
    };
    let forged = edit(&text, |v| {
        v["body"] = hex(&forged.body).into();
        v["sig"] = hex(&forged.sig.0).into();
    });
    assert!(matches!(
        parse(&forged),
        Err(MapProblem::Refused(RelayMapError::BadSignature))
    ));
    assert!(matches!(
        parse(&vec![b' '; MAX_MAP_FILE as usize + 1]),
        Err(MapProblem::TooLarge)
    ));
}

#[test]
fn errors_name_the_file() {
    let e = load(Path::new("/nonexistent/map.json")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("relay map /nonexistent/map.json: "),
        "{e}"
    );
}

#[test]
fn hex_round_trips_and_is_strict() {
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    assert_eq!(unhex("ABcd"), Some(vec![0xab, 0xcd]));
    for bad in ["a", "+1", " 1", "zz", "1\u{e9}"] {
        assert_eq!(unhex(bad), None, "{bad:?}");
    }
}
