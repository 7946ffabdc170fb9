//! Enrollment invites: one-time (or N-time), expiring, signed by the network admin (the
//! relay's key). `nullport-relay invite` makes one; `nullport join <invite>` presents it to
//! get the node's key onto the relay's allowlist without editing files by hand.

use nullport_protocol::{Identity, NodeId, domain, identity::verify};
use serde::{Deserialize, Serialize};

const TEXT_PREFIX: &str = "npi1";

/// What an invite says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Unique id (uses are counted per id).
    pub id: [u8; 16],
    /// The relay (admin) that signed it and will honour it.
    pub relay: NodeId,
    /// Valid until (Unix seconds).
    pub expires: u64,
    /// How many nodes may join with it.
    pub uses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Wire {
    body: Vec<u8>,
    sig: Vec<u8>,
}

/// Why an invite is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Malformed, forged, or for another relay.
    #[error("invalid invite")]
    Invalid,
    /// Past its expiry.
    #[error("invite expired")]
    Expired,
}

fn hex(bytes: &[u8]) -> String {
    nullport_protocol::hex::encode(bytes)
}

impl Invite {
    /// A new invite signed by `admin`.
    pub fn create(admin: &Identity, expires: u64, uses: u32) -> Result<Vec<u8>, InviteError> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|_| InviteError::Invalid)?;
        let invite = Invite {
            id,
            relay: admin.node_id(),
            expires,
            uses: uses.max(1),
        };
        let body = postcard::to_stdvec(&invite).map_err(|_| InviteError::Invalid)?;
        let sig = admin.sign(domain::INVITE_V1, &body).to_vec();
        postcard::to_stdvec(&Wire { body, sig }).map_err(|_| InviteError::Invalid)
    }

    /// Checks an invite's wire bytes against the admin key and the time.
    pub fn verify(bytes: &[u8], admin: &NodeId, now: u64) -> Result<Invite, InviteError> {
        if bytes.len() > 512 {
            return Err(InviteError::Invalid);
        }
        let (wire, rest): (Wire, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| InviteError::Invalid)?;
        let (invite, body_rest): (Invite, &[u8]) =
            postcard::take_from_bytes(&wire.body).map_err(|_| InviteError::Invalid)?;
        if !rest.is_empty() || !body_rest.is_empty() || invite.relay != *admin {
            return Err(InviteError::Invalid);
        }
        let sig: [u8; 64] = wire
            .sig
            .as_slice()
            .try_into()
            .map_err(|_| InviteError::Invalid)?;
        verify(admin, domain::INVITE_V1, &wire.body, &sig).map_err(|_| InviteError::Invalid)?;
        if now > invite.expires {
            return Err(InviteError::Expired);
        }
        Ok(invite)
    }

    /// The invite id as hex.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// Text form: `npi1` + hex.
    pub fn to_text(bytes: &[u8]) -> String {
        format!("{TEXT_PREFIX}{}", hex(bytes))
    }

    /// Parses the text form into wire bytes.
    pub fn from_text(text: &str) -> Result<Vec<u8>, InviteError> {
        let body = text
            .trim()
            .strip_prefix(TEXT_PREFIX)
            .ok_or(InviteError::Invalid)?;
        if body.len() % 2 != 0 || body.len() > 1024 {
            return Err(InviteError::Invalid);
        }
        (0..body.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&body[i..i + 2], 16).map_err(|_| InviteError::Invalid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invites_verify_only_for_their_admin_and_in_time() {
        let admin = Identity::from_seed([1; 32]);
        let bytes = Invite::create(&admin, 1000, 1).unwrap_or_default();
        let text = Invite::to_text(&bytes);
        assert_eq!(Invite::from_text(&text).ok(), Some(bytes.clone()));
        assert!(Invite::verify(&bytes, &admin.node_id(), 999).is_ok());
        assert_eq!(
            Invite::verify(&bytes, &admin.node_id(), 1001),
            Err(InviteError::Expired)
        );
        assert_eq!(
            Invite::verify(&bytes, &Identity::from_seed([2; 32]).node_id(), 1),
            Err(InviteError::Invalid)
        );
        let mut forged = bytes.clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert_eq!(
            Invite::verify(&forged, &admin.node_id(), 1),
            Err(InviteError::Invalid)
        );
        assert!(Invite::from_text("npi1zz").is_err());
    }
}
