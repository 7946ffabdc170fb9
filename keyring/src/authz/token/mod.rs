//! Capability tokens: signed, scoped, time-bound, holder-bound, attenuable by delegation.
//!
//! A token is a chain of 1 to [`MAX_CHAIN`] links. Link 0 is issued by an issuer the callee
//! trusts; each later link is issued by the previous link's holder and may only narrow it:
//! same service, audience the same or newly pinned, every scope pattern covered by the
//! parent's, validity inside the parent's. The last link's holder must be the NodeId the
//! Noise handshake proved. Verification is offline at the callee.
//!
//! Wire form: `postcard(Chain)` where each link carries its body as the exact bytes signed
//! (`postcard(TokenBody)`), so nothing is re-encoded before checking a signature. Text form:
//! `npt1` + base64url (no padding). At most [`MAX_TOKEN_BYTES`] bytes.

use nullport_protocol::{Identity, NodeId, domain, identity::verify};
use serde::{Deserialize, Serialize};

/// Deepest delegation chain accepted.
pub const MAX_CHAIN: usize = 8;
/// Largest encoded chain (it travels in handshake message 3, whose blob is 16 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Token format version (2: scopes carry argument rules).
pub const TOKEN_VERSION: u8 = 2;
const TEXT_PREFIX: &str = "npt1";

/// What a token allows. `None` in a list means "whatever the parent (or the issuer's own
/// policy) allows"; `Some(list)` narrows to those patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// MCP tool names or `*` globs.
    pub tools: Option<Vec<String>>,
    /// MCP resource URI prefixes.
    pub resources: Option<Vec<String>>,
    /// MCP prompt names or globs.
    pub prompts: Option<Vec<String>>,
    /// Extra JSON-RPC methods.
    pub methods: Option<Vec<String>>,
    /// Rules on tool arguments, on top of the issuer's own (a delegation keeps every one of
    /// its parent's and may add more).
    pub args: Vec<crate::args::ArgRule>,
}

/// The signed part of one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBody {
    /// Format version.
    pub version: u8,
    /// Unique id (for revocation and audit).
    pub id: [u8; 16],
    /// Who signed this link.
    pub issuer: NodeId,
    /// Who may present it.
    pub holder: NodeId,
    /// The callee it is for (`None`: any).
    pub audience: Option<NodeId>,
    /// The service it opens.
    pub service: String,
    /// What it allows there.
    pub scope: Scope,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds).
    pub expires: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireLink {
    body: Vec<u8>,
    sig: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireChain {
    version: u8,
    links: Vec<WireLink>,
}

/// One verified-structure link (signature not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The decoded body.
    pub body: TokenBody,
    body_bytes: Vec<u8>,
    sig: [u8; 64],
}

/// A delegation chain, root first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The links.
    pub links: Vec<Link>,
}

/// Why a token is refused. Each variant names the link (0 = root) where it applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token (bad encoding, version, trailing bytes, empty chain).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Over the size bound.
    #[error("token of {0} bytes exceeds {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    /// More links than allowed.
    #[error("delegation chain of {0} links exceeds {MAX_CHAIN}")]
    TooDeep(usize),
    /// The root issuer is not trusted by this callee for this service.
    #[error("issuer {0} is not trusted for this service")]
    UntrustedIssuer(NodeId),
    /// A link's signature does not verify.
    #[error("link {0}: bad signature")]
    BadSignature(usize),
    /// A link has expired.
    #[error("link {link}: expired at {expires}")]
    Expired {
        /// Which link.
        link: usize,
        /// When (Unix seconds).
        expires: u64,
    },
    /// A link is not valid yet.
    #[error("link {link}: not valid before {not_before}")]
    NotYetValid {
        /// Which link.
        link: usize,
        /// From when (Unix seconds).
        not_before: u64,
    },
    /// A link's issuer is not the previous link's holder.
    #[error("link {0}: issued by someone other than the previous holder")]
    BrokenChain(usize),
    /// A delegation widens its parent.
    #[error("link {link}: widens its parent ({what})")]
    Widened {
        /// Which link.
        link: usize,
        /// What was widened.
        what: &'static str,
    },
    /// Presented by someone other than its holder.
    #[error("token held by {holder}, presented by {presenter}")]
    WrongHolder {
        /// The holder.
        holder: NodeId,
        /// Who presented it.
        presenter: NodeId,
    },
    /// For another callee.
    #[error("token is for another node")]
    WrongAudience,
    /// For another service.
    #[error("token is for service {0:?}")]
    WrongService(String),
    /// Revoked.
    #[error("token or key revoked")]
    Revoked,
}

pub use crate::pattern::glob_match;

impl Scope {
    fn narrows(&self, parent: &Scope) -> Option<&'static str> {
        use crate::pattern::{PatternKind, list_narrows};
        if !list_narrows(PatternKind::Glob, &self.tools, &parent.tools) {
            return Some("tools");
        }
        if !list_narrows(PatternKind::UriPrefix, &self.resources, &parent.resources) {
            return Some("resources");
        }
        if !list_narrows(PatternKind::Glob, &self.prompts, &parent.prompts) {
            return Some("prompts");
        }
        if !crate::args::narrows(&self.args, &parent.args) {
            return Some("argument rules");
        }
        if !list_narrows(PatternKind::Glob, &self.methods, &parent.methods) {
            return Some("methods");
        }
        None
    }
}

/// base64url without padding.
fn b64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        // Canonical: unused low bits must be zero.
        let used_bits = 8 * produced;
        let mask = if used_bits >= 24 {
            0
        } else {
            (1u32 << (24 - used_bits)) - 1
        };
        if n & mask != 0 {
            return None;
        }
    }
    Some(out)
}

impl Token {
    /// Issues a root token signed by `issuer`.
    pub fn issue(
        issuer: &Identity,
        holder: NodeId,
        audience: Option<NodeId>,
        service: &str,
        scope: Scope,
        not_before: u64,
        expires: u64,
    ) -> Result<Token, TokenError> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|_| TokenError::Malformed("no randomness"))?;
        let body = TokenBody {
            version: TOKEN_VERSION,
            id,
            issuer: issuer.node_id(),
            holder,
            audience,
            service: service.to_owned(),
            scope,
            not_before,
            expires,
        };
        Ok(Token {
            links: vec![sign_link(issuer, body)?],
        })
    }

    /// Delegates to `holder` with a narrower (or equal) scope, signed by the current holder.
    /// Refuses locally what a verifier would refuse.
    pub fn delegate(
        &self,
        current_holder: &Identity,
        holder: NodeId,
        audience: Option<NodeId>,
        scope: Scope,
        not_before: u64,
        expires: u64,
    ) -> Result<Token, TokenError> {
        let parent = &self.last().body;
        if parent.holder != current_holder.node_id() {
            return Err(TokenError::WrongHolder {
                holder: parent.holder,
                presenter: current_holder.node_id(),
            });
        }
        if self.links.len() >= MAX_CHAIN {
            return Err(TokenError::TooDeep(self.links.len() + 1));
        }
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|_| TokenError::Malformed("no randomness"))?;
        let body = TokenBody {
            version: TOKEN_VERSION,
            id,
            issuer: current_holder.node_id(),
            holder,
            audience: audience.or(parent.audience),
            service: parent.service.clone(),
            scope,
            not_before: not_before.max(parent.not_before),
            expires,
        };
        let link = self.links.len();
        check_attenuation(link, &body, parent)?;
        let mut links = self.links.clone();
        links.push(sign_link(current_holder, body)?);
        Ok(Token { links })
    }

    /// The last link (the one presented).
    pub fn last(&self) -> &Link {
        &self.links[self.links.len() - 1]
    }

    /// The encoded chain.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = WireChain {
            version: TOKEN_VERSION,
            links: self
                .links
                .iter()
                .map(|l| WireLink {
                    body: l.body_bytes.clone(),
                    sig: l.sig.to_vec(),
                })
                .collect(),
        };
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Decodes a chain (structure only; [`Token::verify`] checks it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Token, TokenError> {
        if bytes.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(bytes.len()));
        }
        let (wire, rest): (WireChain, &[u8]) = postcard::take_from_bytes(bytes)
            .map_err(|_| TokenError::Malformed("not a token chain"))?;
        if !rest.is_empty() {
            return Err(TokenError::Malformed("trailing bytes"));
        }
        if wire.version != TOKEN_VERSION {
            return Err(TokenError::Malformed("unknown version"));
        }
        if wire.links.is_empty() {
            return Err(TokenError::Malformed("empty chain"));
        }
        if wire.links.len() > MAX_CHAIN {
            return Err(TokenError::TooDeep(wire.links.len()));
        }
        let mut links = Vec::with_capacity(wire.links.len());
        for l in wire.links {
            let (body, rest): (TokenBody, &[u8]) = postcard::take_from_bytes(&l.body)
                .map_err(|_| TokenError::Malformed("bad link body"))?;
            if !rest.is_empty() || body.version != TOKEN_VERSION {
                return Err(TokenError::Malformed("bad link body"));
            }
            let sig: [u8; 64] = l
                .sig
                .as_slice()
                .try_into()
                .map_err(|_| TokenError::Malformed("bad signature length"))?;
            links.push(Link {
                body,
                body_bytes: l.body,
                sig,
            });
        }
        Ok(Token { links })
    }

    /// Text form: `npt1` + base64url.
    pub fn to_text(&self) -> String {
        format!("{TEXT_PREFIX}{}", b64_encode(&self.to_bytes()))
    }

    /// Parses the text form.
    pub fn from_text(text: &str) -> Result<Token, TokenError> {
        let body = text
            .trim()
            .strip_prefix(TEXT_PREFIX)
            .ok_or(TokenError::Malformed("not a nullport token (npt1...)"))?;
        if body.len() > MAX_TOKEN_BYTES * 4 / 3 + 4 {
            return Err(TokenError::TooLarge(body.len() * 3 / 4));
        }
        Token::from_bytes(&b64_decode(body).ok_or(TokenError::Malformed("bad base64url"))?)
    }

    /// Verifies the whole chain for a presentation by `presenter` to `callee` for
    /// `service` at time `now` (Unix seconds, with `skew` seconds of tolerance), given the
    /// issuers the callee trusts for that service. Returns the effective (last) scope.
    pub fn verify(
        &self,
        presenter: &NodeId,
        callee: &NodeId,
        service: &str,
        trusted_issuers: &[NodeId],
        now: u64,
        skew: u64,
    ) -> Result<Scope, TokenError> {
        let root = &self.links[0].body;
        if !trusted_issuers.contains(&root.issuer) {
            return Err(TokenError::UntrustedIssuer(root.issuer));
        }
        for (i, link) in self.links.iter().enumerate() {
            verify(
                &link.body.issuer,
                domain::TOKEN_V1,
                &link.body_bytes,
                &link.sig,
            )
            .map_err(|_| TokenError::BadSignature(i))?;
            if now > link.body.expires.saturating_add(skew) {
                return Err(TokenError::Expired {
                    link: i,
                    expires: link.body.expires,
                });
            }
            if now.saturating_add(skew) < link.body.not_before {
                return Err(TokenError::NotYetValid {
                    link: i,
                    not_before: link.body.not_before,
                });
            }
            if i > 0 {
                let parent = &self.links[i - 1].body;
                if link.body.issuer != parent.holder {
                    return Err(TokenError::BrokenChain(i));
                }
                check_attenuation(i, &link.body, parent)?;
            }
        }
        let last = &self.last().body;
        if last.holder != *presenter {
            return Err(TokenError::WrongHolder {
                holder: last.holder,
                presenter: *presenter,
            });
        }
        if last.audience.is_some_and(|a| a != *callee) {
            return Err(TokenError::WrongAudience);
        }
        if last.service != service {
            return Err(TokenError::WrongService(last.service.clone()));
        }
        Ok(last.scope.clone())
    }

    /// Every link id (hex), for revocation checks.
    pub fn ids(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|l| nullport_protocol::hex::encode(&l.body.id))
            .collect()
    }
}

fn sign_link(issuer: &Identity, body: TokenBody) -> Result<Link, TokenError> {
    let body_bytes =
        postcard::to_stdvec(&body).map_err(|_| TokenError::Malformed("cannot encode"))?;
    let sig = issuer.sign(domain::TOKEN_V1, &body_bytes);
    Ok(Link {
        body,
        body_bytes,
        sig,
    })
}

fn check_attenuation(link: usize, child: &TokenBody, parent: &TokenBody) -> Result<(), TokenError> {
    if child.service != parent.service {
        return Err(TokenError::Widened {
            link,
            what: "service",
        });
    }
    if parent.audience.is_some() && child.audience != parent.audience {
        return Err(TokenError::Widened {
            link,
            what: "audience",
        });
    }
    if child.expires > parent.expires {
        return Err(TokenError::Widened {
            link,
            what: "expiry",
        });
    }
    if child.not_before < parent.not_before {
        return Err(TokenError::Widened {
            link,
            what: "not-before",
        });
    }
    if let Some(what) = child.scope.narrows(&parent.scope) {
        return Err(TokenError::Widened { link, what });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
