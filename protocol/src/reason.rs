//! [`DenyReason`]: why a responder refused a channel, or either side ended one. Only the
//! one-byte code crosses the wire (in a `Deny` or `Abort` frame); details stay in local logs.

use std::fmt;

/// Why a responder refused a channel. Only the code crosses the wire; details stay in the
/// responder's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// Policy does not allow this caller to use this service.
    NotAllowed,
    /// No such service is exposed.
    UnknownService,
    /// A capability token was invalid, expired, revoked or did not cover the request.
    BadToken,
    /// The callee is over a rate or concurrency limit for this caller.
    RateLimited,
    /// The callee is shutting down or cannot serve now.
    Unavailable,
    /// What authorised the channel was revoked (the caller's key, or a token in its chain).
    Revoked,
    /// The capability token that authorised the channel expired.
    Expired,
    /// The channel carried nothing for longer than the callee's idle timeout.
    Idle,
    /// The same dial already reached the callee through a resumed open that a relay told the
    /// caller had failed, and the callee accepted that one or is still deciding it: it may
    /// have taken effect, so this one is refused and the request takes effect at most once.
    Duplicate,
    /// A reason code this version does not know.
    Other(u8),
}

impl DenyReason {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            DenyReason::NotAllowed => 1,
            DenyReason::UnknownService => 2,
            DenyReason::BadToken => 3,
            DenyReason::RateLimited => 4,
            DenyReason::Unavailable => 5,
            DenyReason::Revoked => 6,
            DenyReason::Expired => 7,
            DenyReason::Idle => 8,
            DenyReason::Duplicate => 9,
            DenyReason::Other(code) => code,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => DenyReason::NotAllowed,
            2 => DenyReason::UnknownService,
            3 => DenyReason::BadToken,
            4 => DenyReason::RateLimited,
            5 => DenyReason::Unavailable,
            6 => DenyReason::Revoked,
            7 => DenyReason::Expired,
            8 => DenyReason::Idle,
            9 => DenyReason::Duplicate,
            other => DenyReason::Other(other),
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NotAllowed => f.write_str("not allowed"),
            DenyReason::UnknownService => f.write_str("service not exposed"),
            DenyReason::BadToken => f.write_str("capability token rejected"),
            DenyReason::RateLimited => f.write_str("rate limited"),
            DenyReason::Unavailable => f.write_str("service unavailable"),
            DenyReason::Revoked => f.write_str("access revoked"),
            DenyReason::Expired => f.write_str("capability token expired"),
            DenyReason::Idle => f.write_str("idle for too long"),
            DenyReason::Duplicate => {
                f.write_str("an earlier open of the same dial may already have taken effect")
            }
            DenyReason::Other(code) => write!(f, "refused (code {code})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(DenyReason::from_code(code).code(), code);
        }
    }
}
