//! Reading and writing relay-link messages on QUIC streams (node side).

use nullport_protocol::relay_link;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, LinkLost};

/// Reads one `len || postcard` message of at most `max` bytes.
pub(crate) async fn read_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, Error> {
    let lost = |e: quinn::ReadExactError| Error::RelayLinkLost(LinkLost::Read(e));
    let mut prefix = [0u8; relay_link::LENGTH_PREFIX];
    recv.read_exact(&mut prefix).await.map_err(lost)?;
    let len = relay_link::decode_len(prefix, max).map_err(|e| Error::Link(e.into()))?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(lost)?;
    relay_link::decode(&body).map_err(|e| Error::Link(e.into()))
}

/// Writes one message of at most `max` bytes (the bound of the stream it goes on); a larger
/// one is [`Error::TooLarge`] and nothing is written.
pub(crate) async fn write_message<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
    max: usize,
) -> Result<(), Error> {
    let mut buf = Vec::with_capacity(64);
    relay_link::encode(message, max, &mut buf).map_err(Error::Encode)?;
    send.write_all(&buf)
        .await
        .map_err(|e| Error::RelayLinkLost(LinkLost::Write(e)))
}
