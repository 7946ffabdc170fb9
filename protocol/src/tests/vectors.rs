//! Known-answer tests for the primitives nullport relies on, from `../shared/vectors/`
//! (Wycheproof, the Noise vectors of snow and cacophony) and the RFCs.

use std::path::PathBuf;

use serde_json::Value;
use snow::params::DHChoice;
use snow::resolvers::CryptoResolver;

use crate::noise::{NOISE_PATTERN, ZeroCheckResolver, builder};
use crate::{NodeId, NodeIdError};

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s}: {e}")))
        .collect()
}

pub(crate) fn hex32(s: &str) -> [u8; 32] {
    hex(s)
        .try_into()
        .unwrap_or_else(|_| panic!("not 32 bytes: {s}"))
}

/// Loads a vector file from the workplace's shared vectors; a missing file fails the test
/// (a known-answer test that cannot run is not a pass).
fn load(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors")
        .join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors missing: {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("missing {key}"))
}

#[test]
fn rfc8032_ed25519_test1() {
    let id = crate::Identity::from_seed(hex32(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    assert_eq!(
        id.node_id().as_bytes(),
        &hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    );
    let sig = ed25519_dalek::Signer::sign(&ed25519_dalek::SigningKey::from_bytes(&id.seed()), b"");
    assert_eq!(
        sig.to_bytes().to_vec(),
        hex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        )
    );
}

#[test]
fn rfc7748_x25519_through_our_resolver() {
    let mut dh = ZeroCheckResolver
        .resolve_dh(&DHChoice::Curve25519)
        .unwrap_or_else(|| panic!("no dh"));
    dh.set(&hex(
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
    ));
    let mut out = [0u8; 32];
    dh.dh(
        &hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        out,
        hex32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    );
}

#[test]
fn wycheproof_x25519_zero_results_rejected_others_match() {
    let doc = load("wycheproof/x25519_test.json");
    let (mut checked, mut zero) = (0, 0);
    for group in doc["testGroups"].as_array().into_iter().flatten() {
        for t in group["tests"].as_array().into_iter().flatten() {
            let mut dh = ZeroCheckResolver
                .resolve_dh(&DHChoice::Curve25519)
                .unwrap_or_else(|| panic!("no dh"));
            dh.set(&hex(str_of(t, "private")));
            let public = hex(str_of(t, "public"));
            let shared = hex(str_of(t, "shared"));
            let mut out = [0u8; 32];
            let r = dh.dh(&public, &mut out);
            if shared.iter().all(|&b| b == 0) {
                assert_eq!(r, Err(snow::Error::Dh), "tcId {}", t["tcId"]);
                zero += 1;
            } else {
                assert_eq!(r, Ok(()), "tcId {}", t["tcId"]);
                assert_eq!(out.to_vec(), shared, "tcId {}", t["tcId"]);
            }
            checked += 1;
        }
    }
    assert!(
        checked > 500 && zero >= 20,
        "checked {checked}, zero {zero}"
    );
}

#[test]
fn wycheproof_ed25519_verify_strict() {
    let doc = load("wycheproof/ed25519_test.json");
    let mut checked = 0;
    for group in doc["testGroups"].as_array().into_iter().flatten() {
        let pk = hex32(str_of(&group["publicKey"], "pk"));
        let key = NodeId::from_bytes(&pk);
        for t in group["tests"].as_array().into_iter().flatten() {
            let sig = hex(str_of(t, "sig"));
            let ok = match (&key, <[u8; 64]>::try_from(sig.as_slice())) {
                (Ok(id), Ok(sig)) => id
                    .verifying_key()
                    .verify_strict(
                        &hex(str_of(t, "msg")),
                        &ed25519_dalek::Signature::from_bytes(&sig),
                    )
                    .is_ok(),
                _ => false,
            };
            match str_of(t, "result") {
                "valid" => assert!(ok, "tcId {} should verify", t["tcId"]),
                "invalid" => assert!(!ok, "tcId {} should fail", t["tcId"]),
                _ => {}
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "checked {checked}");
}

#[test]
fn small_order_ed25519_keys_are_weak() {
    // The eight small-order points' canonical encodings (identity, order 2, 4 and 8).
    let weak = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ];
    for w in weak {
        let r = NodeId::from_bytes(&hex32(w));
        assert!(
            matches!(r, Err(NodeIdError::WeakKey | NodeIdError::InvalidPoint)),
            "{w}: {r:?}"
        );
    }
}

#[test]
fn noise_vectors_for_our_suite_through_our_resolver() {
    let mut ran = 0;
    for file in ["noise/snow.txt", "noise/cacophony.txt"] {
        let doc = load(file);
        for v in doc["vectors"].as_array().into_iter().flatten() {
            if v["protocol_name"].as_str() != Some(NOISE_PATTERN) {
                continue;
            }
            run_noise_vector(v);
            ran += 1;
        }
    }
    assert!(ran >= 2, "no {NOISE_PATTERN} vectors found");
}

fn run_noise_vector(v: &Value) {
    let (ip, is, ie) = (
        hex(str_of(v, "init_prologue")),
        hex(str_of(v, "init_static")),
        hex(str_of(v, "init_ephemeral")),
    );
    let (rp, rs, re) = (
        hex(str_of(v, "resp_prologue")),
        hex(str_of(v, "resp_static")),
        hex(str_of(v, "resp_ephemeral")),
    );
    let mut init = builder()
        .local_private_key(&is)
        .and_then(|b| b.prologue(&ip))
        .map(|b| b.fixed_ephemeral_key_for_testing_only(&ie))
        .and_then(|b| b.build_initiator())
        .unwrap();
    let mut resp = builder()
        .local_private_key(&rs)
        .and_then(|b| b.prologue(&rp))
        .map(|b| b.fixed_ephemeral_key_for_testing_only(&re))
        .and_then(|b| b.build_responder())
        .unwrap();
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    let mut buf = vec![0u8; 65_535];
    let mut plain = vec![0u8; 65_535];
    let mut i = 0;
    while i < messages.len() && !(init.is_handshake_finished() && resp.is_handshake_finished()) {
        let m = &messages[i];
        let (w, r) = if i % 2 == 0 {
            (&mut init, &mut resp)
        } else {
            (&mut resp, &mut init)
        };
        let n = w
            .write_message(&hex(str_of(m, "payload")), &mut buf)
            .unwrap();
        assert_eq!(
            buf[..n].to_vec(),
            hex(str_of(m, "ciphertext")),
            "handshake message {i}"
        );
        let p = r.read_message(&buf[..n], &mut plain).unwrap();
        assert_eq!(plain[..p].to_vec(), hex(str_of(m, "payload")));
        i += 1;
    }
    if let Some(h) = v["handshake_hash"].as_str() {
        assert_eq!(init.get_handshake_hash().to_vec(), hex(h));
    }
    let mut ti = init.into_transport_mode().unwrap();
    let mut tr = resp.into_transport_mode().unwrap();
    for (j, m) in messages.iter().enumerate().skip(i) {
        let (w, r) = if j % 2 == 0 {
            (&mut ti, &mut tr)
        } else {
            (&mut tr, &mut ti)
        };
        let n = w
            .write_message(&hex(str_of(m, "payload")), &mut buf)
            .unwrap();
        assert_eq!(
            buf[..n].to_vec(),
            hex(str_of(m, "ciphertext")),
            "transport message {j}"
        );
        let p = r.read_message(&buf[..n], &mut plain).unwrap();
        assert_eq!(plain[..p].to_vec(), hex(str_of(m, "payload")));
    }
}

#[test]
fn wycheproof_aes_256_gcm_through_ring() {
    // The AEAD our channel uses (ring's AES-256-GCM, 96-bit nonces, 128-bit tags).
    let doc = load("wycheproof/aes_gcm_test.json");
    let mut checked = 0;
    for group in doc["testGroups"].as_array().into_iter().flatten() {
        if group["keySize"] != 256 || group["ivSize"] != 96 || group["tagSize"] != 128 {
            continue;
        }
        for t in group["tests"].as_array().into_iter().flatten() {
            let key = ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &hex(str_of(t, "key")))
                    .unwrap_or_else(|_| panic!("key")),
            );
            let nonce: [u8; 12] = hex(str_of(t, "iv"))
                .try_into()
                .unwrap_or_else(|_| panic!("iv"));
            let aad = hex(str_of(t, "aad"));
            let mut sealed = [hex(str_of(t, "ct")), hex(str_of(t, "tag"))].concat();
            let opened = key
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(&aad),
                    &mut sealed,
                )
                .map(|p| p.to_vec());
            match str_of(t, "result") {
                "valid" => assert_eq!(
                    opened.ok(),
                    Some(hex(str_of(t, "msg"))),
                    "tcId {}",
                    t["tcId"]
                ),
                "invalid" => assert!(opened.is_err(), "tcId {} opened", t["tcId"]),
                _ => {}
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "checked {checked}");
}
