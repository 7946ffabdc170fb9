//! Domain-separation strings for every signature made with a long-term key.
//!
//! Each context has its own string and version, so a signature made for one purpose never
//! verifies for another (see `ATTACKS.md`, "cross-context signature"). A signed message is
//! always `context || 0x00 || body`; the NUL keeps a context from being a prefix of another.

/// Binds a node's per-process X25519 Noise static key to its Ed25519 identity.
pub const NOISE_STATIC_V1: &str = "nullport-noise-static-v1";
/// Reserved: relay-link authentication statements.
pub const RELAY_AUTH_V1: &str = "nullport-relay-auth-v1";
/// Reserved: capability tokens.
pub const TOKEN_V1: &str = "nullport-token-v1";
/// Reserved: revocation lists.
pub const REVOCATION_V1: &str = "nullport-revocation-v1";
/// Reserved: audit log checkpoints.
pub const AUDIT_CHECKPOINT_V1: &str = "nullport-audit-checkpoint-v1";
/// A relay's countersignature of a node's audit checkpoint (the witness).
pub const AUDIT_WITNESS_V1: &str = "nullport-audit-witness-v1";
/// A callee's receipt for an MCP call (request digest, decision, result digest).
pub const MCP_RECEIPT_V1: &str = "nullport-mcp-receipt-v1";
/// A caller's signature over the digest of an MCP request it sent.
pub const MCP_REQUEST_V1: &str = "nullport-mcp-request-v1";
/// An enrollment invite signed by the network admin (the relay's key).
pub const INVITE_V1: &str = "nullport-invite-v1";
/// The relay map of a fleet, signed by the network admin key.
pub const RELAY_MAP_V1: &str = "nullport-relay-map-v1";
/// Reserved: key rotation statements.
pub const ROTATION_V1: &str = "nullport-rotation-v1";

/// The bytes actually signed for `context` and `body`.
pub fn signed_message(context: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + 1 + body.len());
    message.extend_from_slice(context.as_bytes());
    message.push(0);
    message.extend_from_slice(body);
    message
}
