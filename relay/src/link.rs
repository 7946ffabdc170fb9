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
    Stream(quinn::ReadError),
    #[error(transparent)]
    Decode(#[from] LinkDecodeError),
}

/// Reads one `len || postcard` message of at most `max` bytes.
pub(crate) async fn read_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, ReadError> {
    let mut prefix = [0u8; relay_link::LENGTH_PREFIX];
    recv.read_exact(&mut prefix).await.map_err(map_read)?;
    let len = relay_link::decode_len(prefix, max)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(map_read)?;
    Ok(relay_link::decode(&body)?)
}

fn map_read(e: quinn::ReadExactError) -> ReadError {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => ReadError::Eof,
        quinn::ReadExactError::ReadError(e) => ReadError::Stream(e),
    }
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Encode(#[from] relay_link::LinkEncodeError),
    #[error(transparent)]
    Stream(#[from] quinn::WriteError),
}

/// Writes one message on a dial or incoming stream (at most `MAX_LINK_MESSAGE` bytes).
pub(crate) async fn write_message<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<(), WriteError> {
    write_bounded(send, message, relay_link::MAX_LINK_MESSAGE).await
}

/// Writes one message on the control stream or a push stream (at most `MAX_CONTROL_MESSAGE`).
pub(crate) async fn write_control<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<(), WriteError> {
    write_bounded(send, message, relay_link::MAX_CONTROL_MESSAGE).await
}

async fn write_bounded<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
    max: usize,
) -> Result<(), WriteError> {
    let mut buf = Vec::with_capacity(64);
    relay_link::encode(message, max, &mut buf)?;
    send.write_all(&buf).await?;
    Ok(())
}
