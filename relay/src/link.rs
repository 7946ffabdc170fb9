//! Reading and writing relay-link messages on QUIC streams.

use nullport_protocol::relay_link::{self, LinkDecodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("stream ended")]
    Eof,
    #[error("stream failed: {0}")]
    Stream(String),
    #[error(transparent)]
    Decode(#[from] LinkDecodeError),
}

/// Reads one `len || postcard` message of at most `max` bytes.
pub(crate) async fn read_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, ReadError> {
    let mut prefix = [0u8; 2];
    recv.read_exact(&mut prefix).await.map_err(map_read)?;
    let len = relay_link::decode_len(prefix, max)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(map_read)?;
    Ok(relay_link::decode(&body)?)
}

fn map_read(e: quinn::ReadExactError) -> ReadError {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => ReadError::Eof,
        quinn::ReadExactError::ReadError(e) => ReadError::Stream(e.to_string()),
    }
}

/// Writes one message.
pub(crate) async fn write_message<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<(), quinn::WriteError> {
    let mut buf = Vec::with_capacity(64);
    relay_link::encode(message, &mut buf);
    send.write_all(&buf).await
}
