//! Signed receipts for MCP tool calls, bound to the channel's Noise handshake hash.
//!
//! - The caller's daemon signs the SHA-256 of each `tools/call` line it sends
//!   ([`RequestSignature`], context `nullport-mcp-request-v1`) and sends the signature just
//!   before the request as the notification `notifications/nullport/request-signature`.
//! - The callee signs a [`Receipt`] (context `nullport-mcp-receipt-v1`) over the handshake
//!   hash, both NodeIds, the request's id and digest, its decision and the digest of the
//!   answer line it sent, and sends it right after the answer as
//!   `notifications/nullport/receipt`.
//!
//! Digests are over the exact line bytes on the channel (without the newline), which both
//! daemons see. Each side writes what it signed and what it received to its audit log, so
//! either can later prove what was asked and what was decided.

use nullport_protocol::{Identity, NodeId, domain, identity::verify};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The caller's request-signature notification method.
pub const REQUEST_SIGNATURE_METHOD: &str = "notifications/nullport/request-signature";
/// The callee's receipt notification method.
pub const RECEIPT_METHOD: &str = "notifications/nullport/receipt";

fn hex(bytes: &[u8]) -> String {
    nullport_protocol::hex::encode(bytes)
}

fn unhex64(s: &str) -> Option<[u8; 64]> {
    nullport_protocol::hex::decode_array(s)
}

/// SHA-256 (hex) of a line's bytes.
pub fn digest(line: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(line))
}

/// A callee's signed statement about one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The channel's handshake hash (hex).
    pub handshake: String,
    /// The caller's NodeId.
    pub caller: String,
    /// The callee's NodeId (the signer).
    pub callee: String,
    /// The JSON-RPC id of the request (its JSON text).
    pub id: String,
    /// SHA-256 of the request line as received.
    pub request_sha256: String,
    /// `allowed`, `denied`, `approved`, `not approved`.
    pub decision: String,
    /// SHA-256 of the answer line as sent.
    pub result_sha256: String,
    /// The callee's signature (hex).
    pub sig: String,
}

impl Receipt {
    fn body(&self) -> Vec<u8> {
        format!(
            "hs:{}\ncaller:{}\ncallee:{}\nid:{}\nreq:{}\ndecision:{}\nres:{}",
            self.handshake,
            self.caller,
            self.callee,
            self.id,
            self.request_sha256,
            self.decision,
            self.result_sha256
        )
        .into_bytes()
    }

    /// Builds and signs a receipt.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        callee: &Identity,
        handshake: &[u8; 32],
        caller: &NodeId,
        id: &Value,
        request_sha256: &str,
        decision: &str,
        result_sha256: &str,
    ) -> Receipt {
        let mut r = Receipt {
            handshake: hex(handshake),
            caller: caller.to_string(),
            callee: callee.node_id().to_string(),
            id: id.to_string(),
            request_sha256: request_sha256.to_owned(),
            decision: decision.to_owned(),
            result_sha256: result_sha256.to_owned(),
            sig: String::new(),
        };
        r.sig = hex(&callee.sign(domain::MCP_RECEIPT_V1, &r.body()));
        r
    }

    /// Checks the signature against the callee NodeId it names.
    pub fn verify(&self) -> bool {
        let (Ok(callee), Some(sig)) = (self.callee.parse::<NodeId>(), unhex64(&self.sig)) else {
            return false;
        };
        verify(&callee, domain::MCP_RECEIPT_V1, &self.body(), &sig).is_ok()
    }

    /// The notification line that carries this receipt.
    pub fn notification(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(
            &json!({ "jsonrpc": "2.0", "method": RECEIPT_METHOD, "params": self }),
        )
        .unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A caller's signature over one request line's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSignature {
    /// SHA-256 of the request line.
    pub request_sha256: String,
    /// The caller's signature over `hs:{handshake}\nreq:{request_sha256}` (hex).
    pub sig: String,
}

impl RequestSignature {
    fn body(handshake: &[u8; 32], request_sha256: &str) -> Vec<u8> {
        format!("hs:{}\nreq:{request_sha256}", hex(handshake)).into_bytes()
    }

    /// Signs a request digest.
    pub fn sign(caller: &Identity, handshake: &[u8; 32], request_sha256: &str) -> RequestSignature {
        RequestSignature {
            request_sha256: request_sha256.to_owned(),
            sig: hex(&caller.sign(
                domain::MCP_REQUEST_V1,
                &Self::body(handshake, request_sha256),
            )),
        }
    }

    /// Checks it was made by `caller` for this channel.
    pub fn verify(&self, caller: &NodeId, handshake: &[u8; 32]) -> bool {
        unhex64(&self.sig).is_some_and(|s| {
            verify(
                caller,
                domain::MCP_REQUEST_V1,
                &Self::body(handshake, &self.request_sha256),
                &s,
            )
            .is_ok()
        })
    }

    /// The notification line that carries this signature.
    pub fn notification(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(
            &json!({ "jsonrpc": "2.0", "method": REQUEST_SIGNATURE_METHOD, "params": self }),
        )
        .unwrap_or_default();
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_verifies_and_fails_after_any_change() {
        let callee = Identity::from_seed([1; 32]);
        let caller = Identity::from_seed([2; 32]).node_id();
        let r = Receipt::sign(
            &callee,
            &[9; 32],
            &caller,
            &json!(7),
            &digest(b"req"),
            "allowed",
            &digest(b"res"),
        );
        assert!(r.verify());
        type Change = Box<dyn Fn(&mut Receipt)>;
        let changes: Vec<Change> = vec![
            Box::new(|r| r.decision = "denied".into()),
            Box::new(|r| r.result_sha256 = digest(b"other")),
            Box::new(|r| r.request_sha256 = digest(b"other")),
            Box::new(|r| r.id = "8".into()),
            Box::new(|r| r.handshake = hex(&[8; 32])),
            Box::new(|r| r.caller = Identity::from_seed([3; 32]).node_id().to_string()),
            Box::new(|r| r.callee = Identity::from_seed([3; 32]).node_id().to_string()),
            Box::new(|r| r.sig.replace_range(0..2, "00")),
        ];
        for change in changes {
            let mut bad = r.clone();
            change(&mut bad);
            if bad != r {
                assert!(!bad.verify(), "{bad:?}");
            }
        }
    }

    #[test]
    fn request_signature_is_bound_to_caller_and_channel() {
        let caller = Identity::from_seed([2; 32]);
        let s = RequestSignature::sign(&caller, &[9; 32], &digest(b"req"));
        assert!(s.verify(&caller.node_id(), &[9; 32]));
        assert!(!s.verify(&caller.node_id(), &[8; 32]));
        assert!(!s.verify(&Identity::from_seed([3; 32]).node_id(), &[9; 32]));
    }
}
