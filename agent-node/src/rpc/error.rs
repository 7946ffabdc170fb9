//! The error every RPC call returns: a [`Code`] to match on and a message to read.

use nullport_protocol::rpc::{Code, Status};

/// Why a call failed. The caller matches on [`RpcError::code`]; the message says why in one
/// line (the callee's own words for its errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// What kind of failure.
    pub code: Code,
    /// Why.
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The method does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// The callee refused the call.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(Code::Denied, message)
    }

    /// The request is malformed.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// The handler failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// The peer or channel is gone.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub(crate) fn status(&self) -> Status {
        Status {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl From<Status> for RpcError {
    fn from(status: Status) -> Self {
        Self {
            code: status.code,
            message: status.message,
        }
    }
}

impl From<crate::Error> for RpcError {
    fn from(e: crate::Error) -> Self {
        let code = match &e {
            crate::Error::Denied { .. } => Code::Denied,
            crate::Error::Timeout { .. } => Code::DeadlineExceeded,
            _ => Code::Unavailable,
        };
        Self::new(code, e.to_string())
    }
}

/// At most `max` bytes of `text`, cut at a character boundary, marked when cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &text[..end], text.len())
}
