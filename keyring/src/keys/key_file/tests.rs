use super::*;
use std::os::unix::fs::PermissionsExt;

fn fast() -> Protection {
    Protection::Passphrase(Zeroizing::new("correct horse".into()), KdfParams::FLOOR)
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Identity) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    (dir, path, Identity::from_seed([4; 32]))
}

#[test]
fn round_trip_encrypted_and_plaintext() {
    let (_d, path, id) = setup();
    store(&path, &id, &fast(), false).unwrap();
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o777)
        .ok();
    assert_eq!(mode, Some(0o600));
    assert!(matches!(is_encrypted(&path), Ok(true)));
    let back = load(&path, Some("correct horse")).unwrap();
    assert_eq!(back.node_id(), id.node_id());
    let p2 = path.with_extension("plain");
    store(&p2, &id, &Protection::InsecurePlaintext, false).unwrap();
    assert!(matches!(is_encrypted(&p2), Ok(false)));
    assert_eq!(
        load(&p2, None).ok().map(|i| i.node_id()),
        Some(id.node_id())
    );
}

#[test]
fn never_overwrites_unless_asked() {
    let (_d, path, id) = setup();
    store(&path, &id, &Protection::InsecurePlaintext, false).unwrap();
    let other = Identity::from_seed([5; 32]);
    assert!(matches!(
        store(&path, &other, &Protection::InsecurePlaintext, false),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        load(&path, None).ok().map(|i| i.node_id()),
        Some(id.node_id())
    );
    store(&path, &other, &Protection::InsecurePlaintext, true).unwrap();
    assert_eq!(
        load(&path, None).ok().map(|i| i.node_id()),
        Some(other.node_id())
    );
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap_or(Path::new(".")))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn wrong_passphrase_and_tamper_give_the_same_error() {
    let (_d, path, id) = setup();
    store(&path, &id, &fast(), false).unwrap();
    assert!(matches!(
        load(&path, Some("wrong")),
        Err(Error::DecryptFailed { .. })
    ));
    assert!(matches!(
        load(&path, None),
        Err(Error::PassphraseRequired { .. })
    ));
    let original = std::fs::read(&path).unwrap_or_default();
    // Stored NodeId, a parameter flip that stays in bounds, salt, nonce, ciphertext, tag.
    for at in [
        HEADER + 5,
        PARAMS_AT + 3,
        PARAMS_AT + PARAMS_LEN,
        PARAMS_AT + PARAMS_LEN + SALT_LEN + 1,
        ENCRYPTED_AAD_LEN,
        ENCRYPTED_LEN - 1,
    ] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let r = load(&path, Some("correct horse"));
        assert!(
            matches!(r, Err(Error::DecryptFailed { .. })),
            "byte {at}: {r:?}"
        );
    }
}

#[test]
fn kdf_parameters_are_bounded_before_running() {
    let (_d, path, id) = setup();
    store(&path, &id, &fast(), false).unwrap();
    let original = std::fs::read(&path).unwrap_or_default();
    for (field, value) in [
        (0usize, 8u32),
        (0, u32::MAX),
        (1, 1),
        (1, u32::MAX),
        (2, 0),
        (2, 255),
    ] {
        let mut bytes = original.clone();
        let at = PARAMS_AT + 4 * field;
        bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let started = std::time::Instant::now();
        let r = load(&path, Some("correct horse"));
        assert!(
            matches!(r, Err(Error::KdfParams { .. })),
            "{field}={value}: {r:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    let tiny = Protection::Passphrase(
        Zeroizing::new("x".into()),
        KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        },
    );
    assert!(matches!(
        store(&path, &id, &tiny, true),
        Err(Error::KdfParams { .. })
    ));
}

#[test]
fn truncated_version_magic_and_trailing_each_have_their_error() {
    let (_d, path, id) = setup();
    store(&path, &id, &fast(), false).unwrap();
    let original = std::fs::read(&path).unwrap_or_default();
    type Case = (Vec<u8>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (original[..original.len() - 1].to_vec(), |e| {
            matches!(e, Error::Truncated { .. })
        }),
        (original[..3].to_vec(), |e| {
            matches!(e, Error::Truncated { .. })
        }),
        (Vec::new(), |e| matches!(e, Error::Truncated { .. })),
        ([&original[..], b"x"].concat(), |e| {
            matches!(e, Error::Corrupt { .. })
        }),
        ([b"NPKEY\x02", &original[6..]].concat(), |e| {
            matches!(e, Error::UnsupportedVersion { version: 2, .. })
        }),
        ([b"SSH-K", &original[5..]].concat(), |e| {
            matches!(e, Error::NotAKeyFile { .. })
        }),
        ([b"NPKEY\x01\x07", &original[7..]].concat(), |e| {
            matches!(e, Error::Corrupt { .. })
        }),
    ];
    for (i, (bytes, ok)) in cases.into_iter().enumerate() {
        std::fs::write(&path, &bytes).unwrap();
        let r = load(&path, Some("correct horse"));
        assert!(r.as_ref().err().is_some_and(ok), "case {i}: {r:?}");
    }
}

#[test]
fn node_id_is_readable_without_the_passphrase() {
    let (_d, path, id) = setup();
    store(&path, &id, &fast(), false).unwrap();
    assert_eq!(read_node_id(&path).ok(), Some(id.node_id()));
    let p2 = path.with_extension("plain");
    store(&p2, &id, &Protection::InsecurePlaintext, false).unwrap();
    assert_eq!(read_node_id(&p2).ok(), Some(id.node_id()));
}

#[test]
fn plaintext_with_mismatched_node_id_is_corrupt() {
    let (_d, path, id) = setup();
    store(&path, &id, &Protection::InsecurePlaintext, false).unwrap();
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    bytes[HEADER] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load(&path, None), Err(Error::Corrupt { .. })));
}

#[test]
fn loose_permissions_are_refused() {
    let (_d, path, id) = setup();
    store(&path, &id, &Protection::InsecurePlaintext, false).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        load(&path, None),
        Err(Error::LoosePermissions { mode: 0o644, .. })
    ));
}

#[test]
fn errors_and_debug_never_show_secrets() {
    let (_d, path, id) = setup();
    store(&path, &id, &fast(), false).unwrap();
    let err = load(&path, Some("wrong-secret-pass"))
        .err()
        .map(|e| format!("{e} {e:?}"))
        .unwrap_or_default();
    assert!(!err.contains("wrong-secret-pass"));
    assert!(!format!("{:?}", fast()).contains("correct horse"));
}

#[test]
fn crash_between_write_and_rename_leaves_the_old_key() {
    // A crash after the temporary file was written but before the rename leaves a stray
    // temporary file: the key file itself is exactly the old one, and the next store
    // works.
    let (_d, path, id) = setup();
    store(&path, &id, &Protection::InsecurePlaintext, false).unwrap();
    let stray = path.with_file_name(".identity.key.tmp-42");
    std::fs::write(&stray, b"NPKEY\x01\x00 half written").unwrap();
    assert_eq!(
        load(&path, None).ok().map(|i| i.node_id()),
        Some(id.node_id())
    );
    let new = Identity::from_seed([6; 32]);
    store(&path, &new, &Protection::InsecurePlaintext, true).unwrap();
    assert_eq!(
        load(&path, None).ok().map(|i| i.node_id()),
        Some(new.node_id())
    );
}

#[test]
fn empty_passphrase_is_refused() {
    let (_d, path, id) = setup();
    let p = Protection::Passphrase(Zeroizing::new(String::new()), KdfParams::FLOOR);
    assert!(matches!(
        store(&path, &id, &p, false),
        Err(Error::EmptyPassphrase)
    ));
    assert!(!path.exists());
}
