//! The caller's side: one [`RpcClient`] per (callee, service), one channel under it, any
//! number of concurrent [`Call`]s over it.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullport_protocol::NodeId;
use nullport_protocol::rpc::{Frame, Hello, MAX_MESSAGE_LIMIT, Open, RPC_VERSION, Shape};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::error::RpcError;
use super::wire::{
    CallIo, CallSender, Credit, FrameReader, Held, Inbound, OUT_QUEUE, Slot, frame_bytes, route,
    run_writer,
};
use super::{decode, encode};
use crate::Node;
use crate::rpc::Code;

/// Per-call options.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// How long the caller waits. The callee learns it and stops the handler when it has
    /// passed; the caller gets [`Code::DeadlineExceeded`].
    pub deadline: Option<Duration>,
}

impl CallOptions {
    /// Options with a deadline.
    pub fn deadline(within: Duration) -> Self {
        Self {
            deadline: Some(within),
        }
    }
}

/// How long a dropped call's CANCEL may wait for room in a full write queue.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The caller's limits, announced in its HELLO.
const CLIENT_MAX_MESSAGE: u32 = MAX_MESSAGE_LIMIT;
const CLIENT_WINDOW: u32 = 32;

struct Shared {
    peer: NodeId,
    service: String,
    out: mpsc::Sender<Vec<u8>>,
    slots: Mutex<HashMap<u32, Slot>>,
    /// Why the channel ended, once it has.
    lost: Mutex<Option<RpcError>>,
    next: AtomicU32,
    peer_hello: Hello,
    in_flight: Arc<Semaphore>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut reader) = self.reader.lock()
            && let Some(reader) = reader.take()
        {
            reader.abort();
        }
    }
}

/// Typed calls to one service on one peer, over one end-to-end channel. Cheap to clone;
/// calls from clones share the channel. When the channel is lost, every call fails with
/// [`Code::Unavailable`] and the client stays failed: connect again.
#[derive(Clone)]
pub struct RpcClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("peer", &self.shared.peer)
            .field("service", &self.shared.service)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// Opens a channel to `service` on `peer` and exchanges limits.
    pub async fn connect(node: &Node, peer: NodeId, service: &str) -> Result<Self, RpcError> {
        Self::connect_with(node, peer, service, Vec::new()).await
    }

    /// Opens a channel presenting `token` (a capability token's bytes) in the handshake.
    pub async fn connect_with(
        node: &Node,
        peer: NodeId,
        service: &str,
        token: Vec<u8>,
    ) -> Result<Self, RpcError> {
        let channel = node.dial_with(peer, service, token).await?;
        let span = tracing::debug_span!("rpc_client", peer = %peer.fmt_short(), service);
        let (read, write) = tokio::io::split(channel);
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        tokio::spawn(run_writer(write, rx).instrument(span.clone()));
        let hello = Hello {
            version: RPC_VERSION,
            max_message: CLIENT_MAX_MESSAGE,
            max_in_flight: 0,
            window: CLIENT_WINDOW,
        };
        out.send(frame_bytes(&Frame::Hello(hello))?)
            .await
            .map_err(|_| RpcError::unavailable("channel closed"))?;
        let mut reader = FrameReader::new(read, CLIENT_MAX_MESSAGE);
        let peer_hello = reader.hello().await?;
        if peer_hello.version != RPC_VERSION {
            return Err(RpcError::unavailable(format!(
                "callee speaks rpc version {}, this node {RPC_VERSION}",
                peer_hello.version
            )));
        }
        let shared = Arc::new(Shared {
            peer,
            service: service.to_owned(),
            out,
            slots: Mutex::new(HashMap::new()),
            lost: Mutex::new(None),
            next: AtomicU32::new(1),
            in_flight: Arc::new(Semaphore::new(peer_hello.max_in_flight.max(1) as usize)),
            peer_hello,
            reader: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let task = tokio::spawn(
            async move {
                let end = loop {
                    let frame = match reader.next().await {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break RpcError::unavailable("callee closed the channel"),
                        Err(e) => break e,
                    };
                    let Some(shared) = weak.upgrade() else { return };
                    let mut slots = shared.slots.lock().unwrap_or_else(|p| p.into_inner());
                    let routed = match frame {
                        Frame::Message { call, body } => {
                            route(&slots, call, Inbound::Message(Held::new(body, None)))
                        }
                        Frame::Status { call, status } => {
                            // A call ends with its one STATUS: the slot goes at once, so
                            // anything the callee sends for it afterwards is dropped, and a
                            // sender waiting for credit is woken.
                            if let Some(slot) = slots.remove(&call) {
                                slot.credit.close();
                                let _ = slot.inbox.send(Inbound::Status(status));
                            }
                            Ok(())
                        }
                        Frame::Credit { call, credit } => {
                            if let Some(slot) = slots.get(&call) {
                                slot.credit.grant_send(credit);
                            }
                            Ok(())
                        }
                        Frame::End { .. } => Ok(()),
                        Frame::Hello(_) | Frame::Open { .. } | Frame::Cancel { .. } => Err(
                            RpcError::unavailable("callee sent a frame only a caller sends"),
                        ),
                    };
                    if let Err(e) = routed {
                        break e;
                    }
                };
                tracing::debug!("rpc channel ended: {end}");
                if let Some(shared) = weak.upgrade() {
                    *shared.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(end.clone());
                    let slots = std::mem::take(
                        &mut *shared.slots.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    for slot in slots.into_values() {
                        slot.credit.close();
                        let _ = slot.inbox.send(Inbound::Lost(end.clone()));
                    }
                    shared.in_flight.close();
                }
            }
            .instrument(span),
        );
        *shared.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(Self { shared })
    }

    /// The callee.
    pub fn peer(&self) -> NodeId {
        self.shared.peer
    }

    /// The callee's limits (largest message, calls in flight, window).
    pub fn limits(&self) -> Hello {
        self.shared.peer_hello
    }

    fn lost(&self) -> Option<RpcError> {
        self.shared
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts a call of any shape. Waits while the callee's in-flight bound is reached.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        shape: Shape,
        options: CallOptions,
    ) -> Result<Call<Req, Resp>, RpcError> {
        self.start(method, shape, options, None).await
    }

    /// Starts a call; with `only`, its single request goes in the same write as the OPEN,
    /// followed by END (one packet for a small unary call).
    async fn start<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        shape: Shape,
        options: CallOptions,
        only: Option<&Req>,
    ) -> Result<Call<Req, Resp>, RpcError> {
        let only = only.map(encode).transpose()?;
        let deadline = options.deadline.map(|d| Instant::now() + d);
        let permit = match deadline {
            Some(at) => tokio::time::timeout_at(at, self.shared.in_flight.clone().acquire_owned())
                .await
                .map_err(|_| {
                    RpcError::new(
                        Code::DeadlineExceeded,
                        "deadline passed waiting for a call slot",
                    )
                })?,
            None => self.shared.in_flight.clone().acquire_owned().await,
        };
        let permit = permit.map_err(|_| {
            self.lost()
                .unwrap_or_else(|| RpcError::unavailable("channel closed"))
        })?;
        if let Some(lost) = self.lost() {
            return Err(lost);
        }
        let (tx, inbox) = mpsc::unbounded_channel();
        let hello = self.shared.peer_hello;
        let credit = Credit::new(hello.window, CLIENT_WINDOW);
        let id = {
            let mut slots = self.shared.slots.lock().unwrap_or_else(|p| p.into_inner());
            let id = loop {
                let id = self.shared.next.fetch_add(1, Ordering::Relaxed);
                if id != 0 && !slots.contains_key(&id) {
                    break id;
                }
            };
            slots.insert(
                id,
                Slot {
                    inbox: tx,
                    credit: credit.clone(),
                },
            );
            id
        };
        let tx = CallSender {
            id,
            out: self.shared.out.clone(),
            credit,
            peer_max_message: hello.max_message,
        };
        let io = CallIo::new(tx, inbox, CLIENT_WINDOW);
        let mut call = Call {
            io,
            shared: self.shared.clone(),
            deadline,
            ended: false,
            finished: false,
            _permit: permit,
            _types: PhantomData,
        };
        let deadline_ms = options
            .deadline
            .map(|d| d.as_millis().clamp(1, u128::from(u32::MAX)) as u32);
        let mut bytes = frame_bytes(&Frame::Open {
            call: id,
            open: Open {
                method: method.to_owned(),
                shape,
                deadline_ms,
            },
        })?;
        if let Some(body) = only {
            let message = call
                .within(call.io.tx.message_bytes(body, "request"))
                .await?;
            bytes.extend_from_slice(&message);
            bytes.extend_from_slice(&frame_bytes(&Frame::End { call: id })?);
            call.finished = true;
        }
        let out = call.io.tx.out.clone();
        call.within(async move {
            out.send(bytes)
                .await
                .map_err(|_| RpcError::unavailable("channel closed"))
        })
        .await?;
        Ok(call)
    }

    /// One request, one response.
    pub async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, RpcError> {
        let mut call = self
            .start::<Req, Resp>(method, Shape::Unary, options, Some(request))
            .await?;
        call.response().await
    }

    /// One request, a stream of responses: read them with [`Call::recv`].
    pub async fn server_stream<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Call<Req, Resp>, RpcError> {
        self.start(method, Shape::ServerStream, options, Some(request))
            .await
    }

    /// A stream of requests ([`Call::send`]), then one response ([`Call::response`]).
    pub async fn client_stream<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        options: CallOptions,
    ) -> Result<Call<Req, Resp>, RpcError> {
        self.call(method, Shape::ClientStream, options).await
    }

    /// Streams both ways.
    pub async fn bidi<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        options: CallOptions,
    ) -> Result<Call<Req, Resp>, RpcError> {
        self.call(method, Shape::Bidi, options).await
    }
}

/// One call in progress. Dropping it before it ended cancels it at the callee.
pub struct Call<Req, Resp> {
    io: CallIo,
    shared: Arc<Shared>,
    deadline: Option<Instant>,
    ended: bool,
    /// END was sent: no more requests.
    finished: bool,
    _permit: OwnedSemaphorePermit,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for Call<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("id", &self.io.tx.id)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> Call<Req, Resp> {
    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, RpcError>>,
    ) -> Result<T, RpcError> {
        match self.deadline {
            Some(at) => tokio::time::timeout_at(at, f)
                .await
                .map_err(|_| RpcError::new(Code::DeadlineExceeded, "deadline exceeded"))?,
            None => f.await,
        }
    }

    /// Sends one request (waits for the callee's credit).
    pub async fn send(&mut self, request: &Req) -> Result<(), RpcError> {
        if self.ended {
            return Err(RpcError::new(Code::Cancelled, "call already ended"));
        }
        if self.finished {
            return Err(RpcError::invalid_argument(
                "the call's requests were finished already",
            ));
        }
        let body = encode(request)?;
        let result = self.within(self.io.tx.send_message(body, "request")).await;
        if result.is_err() {
            self.ended_by_error();
        }
        result
    }

    /// Sends no more requests.
    pub async fn finish(&mut self) -> Result<(), RpcError> {
        if self.ended || self.finished {
            return Ok(());
        }
        self.finished = true;
        let end = Frame::End {
            call: self.io.tx.id,
        };
        self.within(self.io.tx.send_frame(&end)).await
    }

    /// The next response; `Ok(None)` once the callee ended the call successfully.
    pub async fn recv(&mut self) -> Result<Option<Resp>, RpcError> {
        if self.ended {
            return Ok(None);
        }
        let deadline = self.deadline;
        let next = async {
            match self.io.recv().await {
                Inbound::Message(body) => Some(decode::<Resp>(body.bytes(), "response")),
                Inbound::Status(status) if status.code == Code::Ok => None,
                Inbound::Status(status) => Some(Err(RpcError::from(status))),
                Inbound::Lost(e) => Some(Err(e)),
                Inbound::End => None,
            }
        };
        let item = match deadline {
            Some(at) => {
                tokio::time::timeout_at(at, next)
                    .await
                    .unwrap_or(Some(Err(RpcError::new(
                        Code::DeadlineExceeded,
                        "deadline exceeded",
                    ))))
            }
            None => next.await,
        };
        match item {
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(e)) => {
                // A decode failure leaves the call running at the callee: cancel it.
                self.ended_by_error();
                Err(e)
            }
            None => {
                self.ended = true;
                self.release();
                Ok(None)
            }
        }
    }

    /// The single response of a unary or client-streaming call (finishes sending first).
    pub async fn response(&mut self) -> Result<Resp, RpcError> {
        self.finish().await?;
        let response = self
            .recv()
            .await?
            .ok_or_else(|| RpcError::internal("callee ended the call without a response"))?;
        match self.recv().await? {
            None => Ok(response),
            Some(_) => Err(RpcError::internal("callee sent more than one response")),
        }
    }

    fn ended_by_error(&mut self) {
        if !self.ended {
            self.ended = true;
            self.cancel();
        }
    }

    fn cancel(&self) {
        let _ = self.io.tx.out.try_send(
            frame_bytes(&Frame::Cancel {
                call: self.io.tx.id,
            })
            .unwrap_or_default(),
        );
        self.release();
    }

    fn release(&self) {
        self.io.tx.credit.close();
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.io.tx.id);
    }
}

impl<Req, Resp> Drop for Call<Req, Resp> {
    fn drop(&mut self) {
        if !self.ended {
            let cancel = frame_bytes(&Frame::Cancel {
                call: self.io.tx.id,
            })
            .unwrap_or_default();
            if self.io.tx.out.try_send(cancel.clone()).is_err() {
                // The queue is full: hand the cancel to a task rather than lose it.
                let out = self.io.tx.out.clone();
                if tokio::runtime::Handle::try_current().is_ok() {
                    tokio::spawn(async move {
                        // Bounded: a callee that stopped reading does not keep this task.
                        let _ = tokio::time::timeout(CANCEL_WAIT, out.send(cancel)).await;
                    });
                }
            }
        }
        self.io.tx.credit.close();
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.io.tx.id);
    }
}
