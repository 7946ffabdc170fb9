//! The relay link's wire tags, pinned: each message's first body byte is the tag
//! `docs/protocol.md` gives it. Postcard numbers variants in declaration order, so a variant
//! inserted or moved in the source would silently change the wire; this test fails instead.

use crate::relay_link::{
    LinkErrorCode, NodeToRelay, RelayToNode, SignedRevocations, SignedRotation,
    WitnessedCheckpoint, encode,
};
use crate::{Digest, NodeId, SessionId, Signature};

fn id() -> NodeId {
    crate::Identity::from_seed([1; 32]).node_id()
}

/// The tag of `m` on the wire: the first byte after the length prefix.
fn tag<T: serde::Serialize>(m: &T) -> u8 {
    let mut out = Vec::new();
    encode(m, 1 << 20, &mut out).unwrap();
    out[crate::relay_link::LENGTH_PREFIX]
}

fn checkpoint() -> WitnessedCheckpoint {
    WitnessedCheckpoint {
        seq: 1,
        head: Digest([2; 32]),
        node_sig: Signature([3; 64]),
        relay_sig: None,
    }
}

#[test]
fn node_to_relay_tags_are_the_documented_ones() {
    let list = SignedRevocations {
        body: vec![1],
        sig: Signature([0; 64]),
    };
    let rotation = SignedRotation {
        body: vec![1],
        old_sig: Signature([0; 64]),
        new_sig: Signature([0; 64]),
    };
    let cases: [(NodeToRelay, u8); 12] = [
        (NodeToRelay::Hello { version: 2 }, 0),
        (NodeToRelay::Dial { target: id() }, 1),
        (NodeToRelay::Presence { target: id() }, 2),
        (
            NodeToRelay::Witness {
                checkpoint: checkpoint(),
            },
            3,
        ),
        (NodeToRelay::WitnessQuery, 4),
        (NodeToRelay::PublishRevocations { list }, 5),
        (NodeToRelay::RevocationQuery, 6),
        (NodeToRelay::PublishRotation { rotation }, 7),
        (NodeToRelay::RotationQuery, 8),
        (
            NodeToRelay::Join {
                invite: vec![0; 4],
                version: 2,
            },
            9,
        ),
        (NodeToRelay::MapQuery, 10),
        (
            NodeToRelay::DialWith {
                target: id(),
                session: SessionId(7),
            },
            11,
        ),
    ];
    for (m, expected) in cases {
        assert_eq!(tag(&m), expected, "{m:?}");
    }
}

#[test]
fn relay_to_node_tags_are_the_documented_ones() {
    let cases: [(RelayToNode, u8); 10] = [
        (
            RelayToNode::Welcome {
                version: 2,
                node_id: id(),
            },
            0,
        ),
        (
            RelayToNode::Dialed {
                session: SessionId(7),
            },
            1,
        ),
        (
            RelayToNode::Incoming {
                caller: id(),
                session: SessionId(7),
            },
            2,
        ),
        (
            RelayToNode::Presence {
                target: id(),
                online: true,
            },
            3,
        ),
        (
            RelayToNode::Error {
                code: LinkErrorCode::Offline,
            },
            4,
        ),
        (RelayToNode::Witnessed { checkpoint: None }, 5),
        (
            RelayToNode::Revocations {
                lists: Vec::new(),
                more: false,
            },
            6,
        ),
        (
            RelayToNode::Rotations {
                rotations: Vec::new(),
                more: false,
            },
            7,
        ),
        (RelayToNode::Map { map: None }, 8),
        (RelayToNode::Draining { within_secs: 5 }, 9),
    ];
    for (m, expected) in cases {
        assert_eq!(tag(&m), expected, "{m:?}");
    }
}

#[test]
fn error_codes_are_the_documented_ones() {
    use LinkErrorCode as C;
    let codes = [
        (C::Offline, 0),
        (C::Refused, 1),
        (C::RateLimited, 2),
        (C::TooLarge, 3),
        (C::UnsupportedVersion, 4),
        (C::Malformed, 5),
        (C::TooManyStreams, 6),
        (C::InviteInvalid, 7),
        (C::InviteExpired, 8),
        (C::InviteUsed, 9),
        (C::KeyRevoked, 10),
        (C::KeyRetired, 11),
        (C::AlreadyRotated, 12),
        (C::ListsFull, 13),
        (C::StoreUnavailable, 14),
    ];
    for (code, expected) in codes {
        let mut out = Vec::new();
        encode(&RelayToNode::Error { code }, 64, &mut out).unwrap();
        assert_eq!(
            out[crate::relay_link::LENGTH_PREFIX..],
            [4, expected],
            "{code:?}"
        );
    }
}

#[test]
fn fixed_size_values_are_length_checked_on_the_wire() {
    // A witnessed checkpoint whose signature is one byte short does not decode.
    let mut out = Vec::new();
    encode(
        &NodeToRelay::Witness {
            checkpoint: checkpoint(),
        },
        1 << 20,
        &mut out,
    )
    .unwrap();
    let body = &out[crate::relay_link::LENGTH_PREFIX..];
    // tag 3, seq varint 1, head: len 32 + 32 bytes, node_sig: len 64 + 64 bytes, relay_sig None.
    assert_eq!(body.len(), 1 + 1 + 33 + 65 + 1);
    let mut short = body.to_vec();
    short[1 + 1 + 33] = 63;
    short.remove(1 + 1 + 33 + 1);
    assert!(crate::relay_link::decode::<NodeToRelay>(&short).is_err());
}
