//! The callee's side: [`RpcService`]s of typed methods, served by an [`RpcServer`] that lets a
//! caller in by [`Access`], then decides every call through the call gate (method rules,
//! quotas, approvals), runs it on its own task under its deadline, and stops it when the
//! caller cancels or goes away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant as StdInstant;

use nullport_audit::{AuditWriter, Event};
use nullport_protocol::rpc::{Frame, Hello, MAX_MESSAGE_LIMIT, Open, RPC_VERSION};
use nullport_protocol::{DenyReason, NodeId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use tracing::Instrument;

use super::access::{Access, Admission, ApprovalRequest, Approver};
use super::context::{CallContext, send_status};
use super::decide::decide;
use super::error::{RpcError, cut};
use super::service::{CatchUnwind, RpcService};
use super::state::{ChannelSlot, Inner, RpcLimits};
use super::wire::{
    Budget, CallIo, CallSender, Credit, FrameReader, Held, Inbound, OUT_QUEUE, Slot, frame_bytes,
    run_writer,
};
use crate::handshake::IncomingChannel;
use crate::node::Node;
use crate::rpc::Code;

/// Serves [`RpcService`]s on a node. Configure it, then serve: share a running server with
/// `Arc` (serving takes `&self`).
pub struct RpcServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("services", &self.inner.services.keys().collect::<Vec<_>>())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// A server deciding by `access` (default deny: a caller `access` does not admit is
    /// refused before any application byte).
    pub fn new(access: impl Access) -> Self {
        Self::build(
            Arc::new(access),
            Vec::new(),
            None,
            None,
            RpcLimits::default(),
        )
    }

    fn build(
        access: Arc<dyn Access>,
        services: Vec<RpcService>,
        approver: Option<Arc<dyn Approver>>,
        audit: Option<mpsc::Sender<Event>>,
        limits: RpcLimits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
                access,
                approver,
                audit,
                limits,
                in_flight: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                gates: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Applies a configuration change. The server is not `Clone` and its builder methods
    /// take it by value, so nothing else holds its state while it is configured.
    fn configure(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => tracing::error!("rpc server configured while serving: change ignored"),
        }
        self
    }

    fn handle(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }

    /// Adds a service.
    pub fn service(self, service: RpcService) -> Self {
        self.configure(|inner| {
            inner.services.insert(service.name.clone(), service);
        })
    }

    /// Asks `approver` before methods the policy marks `approve` (without one, they are
    /// refused).
    pub fn approver(self, approver: impl Approver) -> Self {
        self.configure(|inner| inner.approver = Some(Arc::new(approver)))
    }

    /// Records every decision (allowed, denied, over quota, approved, not approved, not
    /// found) in `writer`'s tamper-evident log, from a thread of its own.
    pub fn audit(self, writer: AuditWriter) -> Self {
        let (tx, mut rx) = mpsc::channel::<Event>(1024);
        std::thread::spawn(move || {
            let mut writer = writer;
            while let Some(event) = rx.blocking_recv() {
                if let Err(e) = writer.append(std::time::SystemTime::now(), &event) {
                    tracing::error!("audit append failed: {e}");
                }
            }
        });
        self.configure(|inner| inner.audit = Some(tx))
    }

    /// Sets the bounds.
    pub fn limits(self, mut limits: RpcLimits) -> Self {
        limits.max_message = limits.max_message.min(MAX_MESSAGE_LIMIT);
        limits.window = limits.window.max(1);
        limits.max_in_flight_per_caller = limits.max_in_flight_per_caller.max(1);
        limits.max_channels_per_caller = limits.max_channels_per_caller.max(1);
        limits.max_buffered_per_channel = limits
            .max_buffered_per_channel
            .max(limits.max_message as usize);
        self.configure(|inner| inner.limits = limits)
    }

    /// Calls running now, over all callers.
    pub fn calls_in_flight(&self) -> usize {
        let counts = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.values().map(|n| *n as usize).sum()
    }

    /// Serves incoming channels of `node` until it shuts down. Channels for services this
    /// server does not have are denied (`UnknownService`); use [`RpcServer::serve_channel`]
    /// from your own accept loop to mix RPC with other services.
    pub async fn serve(&self, node: &Node) {
        let mut sessions = JoinSet::new();
        loop {
            let incoming = tokio::select! {
                incoming = node.accept() => match incoming {
                    Some(incoming) => incoming,
                    None => break,
                },
                Some(_) = sessions.join_next() => continue,
            };
            let server = self.handle();
            sessions.spawn(async move { server.serve_channel(incoming).await });
        }
    }

    /// Serves one incoming channel: admits or denies it, then runs its calls until it ends.
    pub async fn serve_channel(&self, incoming: IncomingChannel) {
        let peer = incoming.peer();
        let service = incoming.service().to_owned();
        let span = tracing::info_span!("rpc_session", peer = %peer.fmt_short(), %service);
        async {
            if !self.inner.services.contains_key(&service) {
                let _ = incoming.deny(DenyReason::UnknownService).await;
                return;
            }
            let admission = match self.inner.access.admit(peer, &service, incoming.blob()) {
                Ok(admission) => admission,
                Err(refused) => {
                    tracing::info!("channel refused: {}", refused.why);
                    self.record(
                        peer,
                        &service,
                        "",
                        "denied",
                        &refused.why,
                        StdInstant::now(),
                    )
                    .await;
                    let _ = incoming.deny(refused.reason).await;
                    return;
                }
            };
            let Some(_slot) = ChannelSlot::take(&self.inner, peer) else {
                let why = format!(
                    "caller holds {} channels already",
                    self.inner.limits.max_channels_per_caller
                );
                tracing::info!("channel refused: {why}");
                self.record(peer, &service, "", "over quota", &why, StdInstant::now())
                    .await;
                let _ = incoming.deny(DenyReason::RateLimited).await;
                return;
            };
            match incoming.accept().await {
                Ok(channel) => {
                    if let Err(e) = self.session(channel, Arc::new(admission)).await {
                        tracing::info!("rpc session ended: {e}");
                    }
                }
                Err(e) => tracing::info!("accept failed: {e}"),
            }
        }
        .instrument(span)
        .await
    }

    async fn record(
        &self,
        caller: NodeId,
        service: &str,
        method: &str,
        outcome: &str,
        reason: &str,
        started: StdInstant,
    ) {
        if let Some(audit) = &self.inner.audit {
            // The audit keeps what identifies the call, not what a caller chose to make long.
            let (method, reason) = (cut(method, 256), cut(reason, 512));
            let event = Event::Rpc {
                caller,
                service: service.to_owned(),
                method,
                outcome: outcome.to_owned(),
                reason,
                latency_us: started.elapsed().as_micros() as u64,
            };
            let _ = audit.send(event).await;
        }
    }

    async fn session(
        &self,
        channel: crate::Channel,
        admission: Arc<Admission>,
    ) -> Result<(), RpcError> {
        let limits = self.inner.limits;
        let (read, write) = tokio::io::split(channel);
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        tokio::spawn(run_writer(write, rx).in_current_span());
        let hello = Hello {
            version: RPC_VERSION,
            max_message: limits.max_message,
            max_in_flight: limits.max_in_flight_per_caller,
            window: limits.window,
        };
        out.send(frame_bytes(&Frame::Hello(hello))?)
            .await
            .map_err(|_| RpcError::unavailable("channel closed"))?;
        let mut reader = FrameReader::new(read, limits.max_message);
        let caller = reader.hello().await?;
        if caller.version != RPC_VERSION {
            return Err(RpcError::unavailable(format!(
                "caller speaks rpc version {}",
                caller.version
            )));
        }
        let mut calls: HashMap<u32, Live> = HashMap::new();
        let budget = Budget::new(limits.max_buffered_per_channel);
        let mut generation = 0u64;
        let mut tasks = JoinSet::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u32, u64)>();
        // Calls being decided, running or answering, per channel: past this the channel is
        // not read until some end, so a caller that floods OPENs and never reads its answers
        // holds a bounded number of tasks.
        let max_tasks = limits.max_in_flight_per_caller as usize * 2 + 64;
        let ended = loop {
            let frame = tokio::select! {
                frame = reader.next(), if tasks.len() < max_tasks && !budget.over() => frame,
                () = budget.freed(), if budget.over() => continue,
                Some((id, ended)) = done_rx.recv() => {
                    // Only the call that ended: its id may already belong to a new one.
                    if calls.get(&id).is_some_and(|live| live.generation == ended) {
                        calls.remove(&id);
                    }
                    continue;
                }
                Some(_) = tasks.join_next() => continue,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            match frame {
                Frame::Open { call, open } => {
                    if calls.contains_key(&call) {
                        break Err(RpcError::unavailable(format!("call {call} opened twice")));
                    }
                    let (tx, inbox) = mpsc::unbounded_channel();
                    let credit = Credit::new(caller.window, limits.window);
                    let sender = CallSender {
                        id: call,
                        out: out.clone(),
                        credit: credit.clone(),
                        peer_max_message: caller.max_message,
                    };
                    let (cancel, cancelled) = watch::channel(false);
                    generation += 1;
                    calls.insert(
                        call,
                        Live {
                            slot: Slot { inbox: tx, credit },
                            cancel,
                            generation,
                            ended: false,
                        },
                    );
                    let io = CallIo::new(sender, inbox, limits.window);
                    let done = (done_tx.clone(), generation);
                    let run = self.open(&admission, open, io, cancelled, done);
                    tasks.spawn(run.in_current_span());
                }
                Frame::Message { call, body } => {
                    if let Some(live) = calls.get(&call) {
                        if live.ended {
                            break Err(RpcError::unavailable(format!(
                                "caller sent a request after END on call {call}"
                            )));
                        }
                        if let Err(e) = live.slot.deliver(
                            call,
                            Inbound::Message(Held::new(body, Some(budget.clone()))),
                        ) {
                            break Err(e);
                        }
                    }
                }
                Frame::End { call } => {
                    // One END per call: with the credit on messages, a call's inbox holds
                    // at most window + 1 items whatever the caller sends.
                    if let Some(live) = calls.get_mut(&call) {
                        if live.ended {
                            break Err(RpcError::unavailable(format!(
                                "caller sent END twice on call {call}"
                            )));
                        }
                        live.ended = true;
                        let _ = live.slot.deliver(call, Inbound::End);
                    }
                }
                Frame::Cancel { call } => {
                    if let Some(live) = calls.remove(&call) {
                        let _ = live.cancel.send(true);
                    }
                }
                Frame::Credit { call, credit } => {
                    if let Some(live) = calls.get(&call) {
                        live.slot.credit.grant_send(credit);
                    }
                }
                Frame::Hello(_) | Frame::Status { .. } => {
                    break Err(RpcError::unavailable(
                        "caller sent a frame only a callee sends",
                    ));
                }
            }
        };
        // The caller is gone (or broke the protocol): every call of this channel stops.
        for (_, live) in calls.drain() {
            let _ = live.cancel.send(true);
            live.slot.credit.close();
        }
        tasks.shutdown().await;
        ended
    }

    /// Decides an OPEN, and returns the task that runs the call (or answers the refusal).
    fn open(
        &self,
        admission: &Arc<Admission>,
        open: Open,
        io: CallIo,
        mut cancelled: watch::Receiver<bool>,
        (done, generation): (mpsc::UnboundedSender<(u32, u64)>, u64),
    ) -> impl Future<Output = ()> + Send + 'static {
        let server = self.handle();
        let admission = admission.clone();
        let started = StdInstant::now();
        let decided = decide(&self.inner, &admission, &open);
        async move {
            let id = io.tx.id;
            let tx = io.tx.clone();
            let method = open.method.clone();
            let service = admission.service.clone();
            let (handler, in_flight, approve) = match decided {
                Ok(ok) => ok,
                Err(refusal) => {
                    // Nothing of a refused call is kept while its answer waits to be sent.
                    drop(io);
                    let outcome = refusal.outcome;
                    let reason = refusal.error.message.clone();
                    send_status(&tx, Err(refusal.error)).await;
                    server
                        .record(admission.peer, &service, &method, outcome, &reason, started)
                        .await;
                    let _ = done.send((id, generation));
                    return;
                }
            };
            let _in_flight = in_flight;
            let deadline = open
                .deadline_ms
                .map(|ms| Instant::now() + Duration::from_millis(u64::from(ms)));
            let expired = || async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let deadline_error = || {
                RpcError::new(
                    Code::DeadlineExceeded,
                    format!(
                        "deadline of {} ms passed at the callee",
                        open.deadline_ms.unwrap_or(0)
                    ),
                )
            };
            if approve {
                let asked = match &server.inner.approver {
                    Some(approver) => {
                        let request = ApprovalRequest {
                            peer: admission.peer,
                            alias: admission.alias.clone(),
                            service: service.clone(),
                            method: method.clone(),
                            rule: admission.rule.clone(),
                        };
                        tokio::select! {
                            ok = approver.approve(request) => ok,
                            _ = cancelled.wait_for(|c| *c) => false,
                            _ = expired() => false,
                        }
                    }
                    None => false,
                };
                let outcome = if asked { "approved" } else { "not approved" };
                server
                    .record(
                        admission.peer,
                        &service,
                        &method,
                        outcome,
                        &admission.rule,
                        started,
                    )
                    .await;
                if !asked {
                    let e = RpcError::denied(format!(
                        "method {method:?} needs a human's approval, which was not given"
                    ));
                    send_status(&tx, Err(e)).await;
                    let _ = done.send((id, generation));
                    return;
                }
            } else {
                server
                    .record(
                        admission.peer,
                        &service,
                        &method,
                        "allowed",
                        &admission.rule,
                        started,
                    )
                    .await;
            }
            let (cancel_all, ctx_cancelled) = watch::channel(false);
            let ctx = CallContext {
                peer: admission.peer,
                alias: admission.alias.clone(),
                service: service.clone(),
                method: method.clone(),
                token: admission.token.clone(),
                rule: admission.rule.clone(),
                deadline,
                cancelled: ctx_cancelled,
            };
            let span = tracing::debug_span!("rpc_call", call = id, %method);
            let handler = CatchUnwind(Box::pin(handler(ctx, io).instrument(span)));
            let result = tokio::select! {
                result = handler => Some(result.unwrap_or_else(|()| {
                    tracing::error!(%method, "rpc handler panicked");
                    Err(RpcError::internal("the handler failed (panicked)"))
                })),
                _ = cancelled.wait_for(|c| *c) => None,
                _ = expired() => Some(Err(deadline_error())),
            };
            // Work the handler handed elsewhere learns it through `CallContext::cancelled`.
            if !matches!(result, Some(Ok(_))) {
                let _ = cancel_all.send(true);
            }
            if let Some(result) = result {
                send_status(&tx, result).await;
            }
            let _ = done.send((id, generation));
        }
    }
}

/// A call of this channel the session still routes frames to.
struct Live {
    slot: Slot,
    cancel: watch::Sender<bool>,
    /// Which OPEN of this id it is (an id may be reused once its call ended).
    generation: u64,
    /// The caller sent END.
    ended: bool,
}
