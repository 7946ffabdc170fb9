//! What a handler gets: who is calling ([`CallContext`]), the requests of a streaming call
//! ([`Requests`]) and where its responses go ([`Responses`]).

use std::marker::PhantomData;
use std::sync::Arc;

use nullport_keyring::token::Token;
use nullport_protocol::NodeId;
use nullport_protocol::rpc::Frame;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::RpcError;
use super::wire::{CallIo, CallSender, Inbound};
use super::{decode, encode};

/// Who is calling what, as the callee proved and decided it.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The caller, proven by the end-to-end handshake.
    pub peer: NodeId,
    /// The caller's alias in this node's trust store, if any.
    pub alias: Option<String>,
    /// The service.
    pub service: String,
    /// The method.
    pub method: String,
    /// The verified capability token the caller presented, if it came in by one.
    pub token: Option<Arc<Token>>,
    /// The policy rule (or token) that allowed the call.
    pub rule: String,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
    pub(crate) cancelled: watch::Receiver<bool>,
}

impl CallContext {
    /// Resolves when the call is cancelled: the caller cancelled or went away, or the
    /// deadline passed. The handler's future is dropped then too; this is for work it
    /// handed to other tasks.
    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Whether the call is cancelled already.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }
}

/// The requests of a client-streaming or bidirectional call, as the handler reads them.
pub struct Requests<Req> {
    pub(crate) io: CallIo,
    pub(crate) done: bool,
    pub(crate) _types: PhantomData<fn() -> Req>,
}

impl<Req> std::fmt::Debug for Requests<Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("call", &self.io.tx.id)
            .finish()
    }
}

impl<Req: DeserializeOwned> Requests<Req> {
    /// The next request; `Ok(None)` once the caller finished sending.
    pub async fn next(&mut self) -> Result<Option<Req>, RpcError> {
        if self.done {
            return Ok(None);
        }
        match self.io.recv().await {
            Inbound::Message(body) => decode(body.bytes(), "request").map(Some),
            Inbound::End => {
                self.done = true;
                Ok(None)
            }
            Inbound::Status(_) => Err(RpcError::unavailable("caller sent a status")),
            Inbound::Lost(e) => Err(e),
        }
    }
}

/// Where a handler sends the responses of a server-streaming or bidirectional call.
pub struct Responses<Resp> {
    pub(crate) tx: CallSender,
    pub(crate) _types: PhantomData<fn(Resp)>,
}

impl<Resp> std::fmt::Debug for Responses<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses")
            .field("call", &self.tx.id)
            .finish()
    }
}

impl<Resp: Serialize> Responses<Resp> {
    /// Sends one response (waits for the caller's credit).
    pub async fn send(&self, response: &Resp) -> Result<(), RpcError> {
        self.tx.send_message(encode(response)?, "response").await
    }
}

/// Ends the call: its last response, if the handler returned one, and the STATUS, queued
/// as one write (a unary answer is one packet, not two).
pub(crate) async fn send_status(tx: &CallSender, result: Result<Option<Vec<u8>>, RpcError>) {
    let mut bytes = Vec::new();
    let result = match result {
        Ok(Some(body)) => match tx.message_bytes(body, "response").await {
            Ok(message) => {
                bytes = message;
                Ok(())
            }
            Err(e) => Err(e),
        },
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let mut status = match &result {
        Ok(()) => nullport_protocol::rpc::Status {
            code: nullport_protocol::rpc::Code::Ok,
            message: String::new(),
        },
        Err(e) => e.status(),
    };
    // A long error message is cut, never the reason the STATUS cannot be sent.
    if status.message.len() > 1024 {
        let mut cut = 1024;
        while !status.message.is_char_boundary(cut) {
            cut -= 1;
        }
        status.message.truncate(cut);
    }
    if (Frame::Status {
        call: tx.id,
        status,
    })
    .encode(&mut bytes)
    .is_ok()
    {
        let _ = tx.out.send(bytes).await;
    }
}
