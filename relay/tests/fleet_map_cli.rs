//! A fleet's relay map as its operator makes it: `nullport-relay map sign|show|bootstrap` on
//! real files (what is signed is what is shown; no rollback unless forced; a forged or
//! hand-edited file is refused with the reason).
// A failed unwrap is how a test reports a failure (clippy.toml allows it inside #[test]
// functions; the helpers of an integration test need it too).
#![allow(missing_docs, clippy::unwrap_used)]

mod fleet_common;

use fleet_common::{Keys, fails, ok};
use nullport_keyring::relay_map::FleetBootstrap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_sign_show_and_bootstrap_print_what_was_signed() {
    let keys = Keys::new();
    let (r1, r2) = (keys.key("r1.key").await, keys.key("r2.key").await);
    let admin = keys.key("admin.key").await;
    let relays = [
        format!("{r1}@relay1.example.net:7443,[2001:db8::1]:7443#eu-west"),
        format!("{r2}@192.0.2.2:7443"),
    ];
    let (signed, stderr) = keys.sign(3, &relays, "map.json").await;
    assert!(signed, "{stderr}");
    assert!(
        stderr.contains("wrote relay map version 3 (2 relays"),
        "{stderr}"
    );

    let file = keys.s("map.json");
    let show = ok(&["map", "show", &file]).await;
    for expected in [
        "relay map version 3 (signature valid)".to_owned(),
        format!("admin   {admin}"),
        "2 relays:".to_owned(),
        format!("{r1}  region eu-west"),
        "addresses  relay1.example.net:7443, [2001:db8::1]:7443".to_owned(),
        format!("bootstrap  fleet:{admin}/{r1}@relay1.example.net:7443"),
        format!("bootstrap  fleet:{admin}/{r2}@192.0.2.2:7443"),
    ] {
        assert!(show.contains(&expected), "{expected:?} not in:\n{show}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["map", "show", "--json", &file]).await).unwrap();
    assert_eq!(json["version"], 3);
    assert_eq!(json["admin"], admin.to_string());
    assert_eq!(json["relays"].as_array().unwrap().len(), 2);

    // Checked against the admin key nodes pin: the right one passes, another is refused.
    let pinned = admin.to_string();
    ok(&["map", "show", &file, "--admin", &pinned]).await;
    let other = keys.key("r2.key").await.to_string();
    let e = fails(&["map", "show", &file, "--admin", &other]).await;
    assert!(
        e.contains(&format!("not by the network admin {other}")),
        "{e}"
    );
    let e = fails(&["map", "bootstrap", &file, "--admin", &other]).await;
    assert!(e.contains("not by the network admin"), "{e}");

    let lines = ok(&["map", "bootstrap", &file, "--admin", &pinned]).await;
    let parsed: Vec<FleetBootstrap> = lines.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(parsed.len(), 2);
    assert!(parsed.iter().all(|b| b.admin == admin));
    assert!(
        parsed
            .iter()
            .any(|b| b.relay == r1 && b.addr == "relay1.example.net:7443")
    );
    assert!(
        parsed
            .iter()
            .any(|b| b.relay == r2 && b.addr == "192.0.2.2:7443")
    );

    // Bad --relay values name the value and what is wrong.
    for (bad, why) in [
        (format!("{r1}"), "no '@'"),
        (format!("{r1}@relay1.example.net"), "not host:port"),
        ("npnope@h:1".to_owned(), "--relay \"npnope@h:1\""),
    ] {
        let (signed, stderr) = keys.sign(4, &[bad], "other.json").await;
        assert!(!signed && stderr.contains(why), "{why}: {stderr}");
    }
    let twice = [format!("{r1}@a:1"), format!("{r1}@b:2")];
    let (signed, stderr) = keys.sign(4, &twice, "other.json").await;
    assert!(!signed && stderr.contains("listed twice"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_sign_refuses_a_version_that_is_not_newer_unless_forced() {
    let keys = Keys::new();
    let r1 = keys.key("r1.key").await;
    let relays = [format!("{r1}@127.0.0.1:7443")];
    assert!(keys.sign(5, &relays, "map.json").await.0);
    for version in [5, 4, 1] {
        let (signed, stderr) = keys.sign(version, &relays, "map.json").await;
        assert!(!signed, "version {version} written over version 5");
        assert!(
            stderr.contains(&format!(
                "--version {version} is not higher than version 5 in"
            )) && stderr.contains("use --version 6"),
            "{stderr}"
        );
    }
    let show = ok(&["map", "show", &keys.s("map.json")]).await;
    assert!(show.contains("version 5"), "{show}");
    let (admin, out) = (keys.s("admin.key"), keys.s("map.json"));
    let relay = &relays[0];
    ok(&[
        "map",
        "sign",
        "--admin-key",
        &admin,
        "--version",
        "2",
        "--relay",
        relay,
        "--out",
        &out,
        "--force",
    ])
    .await;
    assert!(ok(&["map", "show", &out]).await.contains("version 2"));

    // A map by another admin is not silently replaced: nodes pin the first admin.
    ok(&[
        "init",
        "--insecure-plaintext-key",
        "--key",
        &keys.s("admin2.key"),
    ])
    .await;
    let e = fails(&[
        "map",
        "sign",
        "--admin-key",
        &keys.s("admin2.key"),
        "--version",
        "9",
        "--relay",
        relay,
        "--out",
        &out,
    ])
    .await;
    assert!(
        e.contains("not by this key") && e.contains("--force"),
        "{e}"
    );
    // Nor is a file that is not a map.
    std::fs::write(keys.path("junk.json"), "{}").unwrap();
    let e = fails(&[
        "map",
        "sign",
        "--admin-key",
        &admin,
        "--version",
        "9",
        "--relay",
        relay,
        "--out",
        &keys.s("junk.json"),
    ])
    .await;
    assert!(e.contains("is not a valid relay map"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_edited_map_file_is_refused_with_the_reason() {
    let keys = Keys::new();
    let r1 = keys.key("r1.key").await;
    assert!(
        keys.sign(1, &[format!("{r1}@127.0.0.1:7443")], "map.json")
            .await
            .0
    );
    let text = std::fs::read_to_string(keys.path("map.json")).unwrap();
    // Version 2's body (and readable copy) under version 1's signature: a raised version
    // without the admin key.
    assert!(
        keys.sign(2, &[format!("{r1}@127.0.0.1:7443")], "v2.json")
            .await
            .0
    );
    let v1: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut forged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys.path("v2.json")).unwrap()).unwrap();
    forged["sig"] = v1["sig"].clone();
    std::fs::write(keys.path("forged.json"), forged.to_string()).unwrap();
    let e = fails(&["map", "show", &keys.s("forged.json")]).await;
    assert!(e.contains("relay map signature invalid"), "{e}");

    // Only the readable copy edited.
    let edited = text.replace("\"version\": 1", "\"version\": 7");
    std::fs::write(keys.path("edited.json"), edited).unwrap();
    let e = fails(&["map", "show", &keys.s("edited.json")]).await;
    assert!(e.contains("differs from the signed"), "{e}");

    std::fs::write(keys.path("junk.json"), "not json").unwrap();
    let e = fails(&["map", "show", &keys.s("junk.json")]).await;
    assert!(e.contains("not a nullport relay map file"), "{e}");
    let e = fails(&["map", "bootstrap", &keys.s("missing.json")]).await;
    assert!(e.contains("missing.json"), "{e}");
}
