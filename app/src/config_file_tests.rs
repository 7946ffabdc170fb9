//! The node file's parsing and validation.

use super::*;

#[test]
fn round_trip_and_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let mut file = NodeFile::default();
    file.services.insert(
        "ssh".into(),
        Service {
            proxy_protocol: true,
            ..Service::new(ServiceSpec::Tcp("127.0.0.1:22".into()))
        },
    );
    file.services.insert(
        "api".into(),
        Service {
            http_peer_header: true,
            ..Service::new(ServiceSpec::Tcp("127.0.0.1:8081".into()))
        },
    );
    file.services.insert(
        "date".into(),
        Service {
            env: vec!["LANG".into(), "TZ=UTC".into()],
            ..Service::new(ServiceSpec::Exec(vec!["date".into(), "-u".into()]))
        },
    );
    file.save(&path).unwrap();
    let back = NodeFile::load(&path).unwrap();
    assert_eq!(back.services, file.services);
    std::fs::write(
        &path,
        "relay = \"x\"\n[services.ssh]\ntcp = \"a\"\nudp = \"b\"\n",
    )
    .unwrap();
    let err = NodeFile::load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("line 4") && err.contains("udp"), "{err}");
    for (text, want) in [
        (
            "[services.a]\ntcp = \"x\"\nexec = [\"y\"]\n",
            "exactly one of",
        ),
        (
            "[services.a]\nexec = [\"y\"]\nproxy_protocol = true\n",
            "proxy_protocol is for tcp",
        ),
        (
            "[services.a]\nexec = [\"y\"]\nhttp_peer_header = true\n",
            "http_peer_header is for tcp",
        ),
        (
            "[services.a]\ntcp = \"x\"\nenv = [\"A\"]\n",
            "env is for exec and mcp",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = NodeFile::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("service \"a\"") && err.contains(want), "{err}");
    }
}

#[test]
fn child_environment_is_built_from_nothing() {
    let service = Service {
        env: vec!["EXTRA".into(), "SET=1".into(), "NULLPORT_HOME=/x".into()],
        ..Service::new(ServiceSpec::Exec(vec!["env".into()]))
    };
    let daemon = |name: &str| match name {
        "PATH" => Some("/usr/bin".to_owned()),
        "EXTRA" => Some("e".to_owned()),
        "NULLPORT_PASSPHRASE" | "SECRET" => Some("s3cret".to_owned()),
        _ => None,
    };
    let env = service.child_env("date", "np-peer", Some("laptop"), daemon);
    assert_eq!(
        env,
        vec![
            ("EXTRA".to_owned(), "e".to_owned()),
            ("NULLPORT_PEER".to_owned(), "np-peer".to_owned()),
            ("NULLPORT_PEER_ALIAS".to_owned(), "laptop".to_owned()),
            ("NULLPORT_SERVICE".to_owned(), "date".to_owned()),
            ("PATH".to_owned(), "/usr/bin".to_owned()),
            ("SET".to_owned(), "1".to_owned()),
        ]
    );
}

#[test]
fn link_table_sets_resumption_and_zero_turns_it_off() {
    let table: LinkTable = toml::from_str("resume_secs = 0").unwrap();
    assert!(table.limits(false).handshake.resume_lifetime.is_zero());
    let table: LinkTable = toml::from_str("resume_secs = 30").unwrap();
    assert_eq!(
        table.limits(true).handshake.resume_lifetime,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        LinkTable::default().limits(false).handshake.resume_lifetime,
        nullport_protocol::resume::DEFAULT_RESUME_LIFETIME
    );
    assert!(!LinkTable::default().limits(false).handshake.resume_dh);
    let table: LinkTable = toml::from_str("resume_dh = true").unwrap();
    assert!(table.limits(false).handshake.resume_dh);
    assert!(
        toml::from_str::<LinkTable>("resume = 3").is_err(),
        "unknown key"
    );
}
