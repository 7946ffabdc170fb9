//! Async drivers for the sans-IO end-to-end handshake (full or resumed), over one relayed
//! QUIC stream pair.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use nullport_protocol::limits::{MAX_FIRST_BYTES, MAX_NOISE_MESSAGE};
use nullport_protocol::relay_link::STREAM_BUSY;
use nullport_protocol::resume::{self, Answered, Opening, Resumed};
use nullport_protocol::wire::Replaced;
use nullport_protocol::{
    Deframer, DenyReason, HandshakeKeys, Limits, NodeId, Request, Responder, SessionId,
};

use crate::channel::Channel;
use crate::drain::Drain;
use crate::error::{Error, LinkLost};
use crate::held::Held;

/// Reads until the deframer holds one complete message and returns a copy of it.
async fn next_message(
    recv: &mut quinn::RecvStream,
    deframer: &mut Deframer,
) -> Result<Vec<u8>, Error> {
    loop {
        if let Some(m) = deframer.next_message()? {
            return Ok(m.to_vec());
        }
        match recv.read(deframer.spare()).await {
            Ok(Some(n)) => deframer.commit(n),
            Ok(None) => return Err(nullport_protocol::Error::Truncated.into()),
            Err(e) => return Err(LinkLost::ReadStream(e).into()),
        }
    }
}

async fn write_all(send: &mut quinn::SendStream, bytes: &[u8]) -> Result<(), Error> {
    send.write_all(bytes)
        .await
        .map_err(|e| LinkLost::Write(e).into())
}

/// The application bytes a dial sends behind its handshake's last message, before the
/// verdict ([`Node::dial_sending`](crate::Node::dial_sending)).
pub enum FirstBytes<'a> {
    /// These bytes (at most [`MAX_FIRST_BYTES`]).
    Bytes(Vec<u8>),
    /// Whatever this gives when an open of the dial starts (so a keyed resumed open's R1
    /// carries it: one round trip to the first answer) or, if it gave nothing by then, when
    /// the handshake's last message goes out. It is called each time an open of the dial
    /// starts while it gives nothing (once per relay a dial tries; not for an open with a DH,
    /// whose R1 would carry the bytes without the DH's protection), then once more behind
    /// the handshake; each time with a buffer of `MAX_FIRST_BYTES`. It must not wait (a
    /// socket's `try_read`), and returns how many bytes it put there (0: none ready, and
    /// nothing taken); once it gave bytes it is not called again (the dial keeps them for
    /// its later opens).
    Ready(ReadReady<'a>),
}

/// Reads what is ready into the buffer without waiting; returns how many bytes
/// ([`FirstBytes::Ready`]).
pub type ReadReady<'a> = Box<dyn FnMut(&mut [u8]) -> usize + Send + 'a>;

impl std::fmt::Debug for FirstBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FirstBytes::Bytes(b) => write!(f, "FirstBytes::Bytes({} bytes)", b.len()),
            FirstBytes::Ready(_) => f.write_str("FirstBytes::Ready"),
        }
    }
}

/// A dial's first bytes, taken once, and whether they may have left this node.
pub(crate) struct First<'a> {
    source: Mutex<Option<FirstBytes<'a>>>,
    /// How many bytes were handed to the stream behind a full handshake (0: none yet). Set
    /// before the write that carries them: from then on the callee may have read them, so
    /// the dial is never tried again elsewhere. (Bytes a resumed open's R1 carried do not
    /// count: the dial's next open names that R1, so the callee takes them once.)
    sent: AtomicUsize,
    /// Resumed opens of this dial given up so far, for its next open to name.
    given_up: Mutex<Vec<Replaced>>,
}

impl<'a> First<'a> {
    pub(crate) fn new(source: FirstBytes<'a>) -> Self {
        Self {
            source: Mutex::new(Some(source)),
            sent: AtomicUsize::new(0),
            given_up: Mutex::new(Vec::new()),
        }
    }

    /// How many bytes [`First::for_r1`] gives, without copying them.
    fn known_len(&self) -> usize {
        match self.source.lock().ok().as_deref() {
            Some(Some(FirstBytes::Bytes(bytes))) => bytes.len(),
            _ => 0,
        }
    }

    /// A copy of the first bytes for the dial's next open (R1 of a resumed open carries
    /// them), if they are known now: [`FirstBytes::Bytes`], or, when `read_ready`, what a
    /// [`FirstBytes::Ready`] source gives now, which then becomes the dial's bytes (a source
    /// that gives nothing yet is read again behind the handshake's last message). The
    /// source keeps them for a later open of the dial.
    pub(crate) fn for_r1(&self, read_ready: bool) -> Vec<u8> {
        let Ok(mut source) = self.source.lock() else {
            return Vec::new();
        };
        match source.as_mut() {
            Some(FirstBytes::Bytes(bytes)) => bytes.clone(),
            Some(FirstBytes::Ready(_)) if !read_ready => Vec::new(),
            Some(FirstBytes::Ready(read)) => {
                let buf = read_now(read);
                if !buf.is_empty() {
                    *source = Some(FirstBytes::Bytes(buf.clone()));
                }
                buf
            }
            None => Vec::new(),
        }
    }

    /// The resumed opens of this dial given up so far.
    pub(crate) fn given_up(&self) -> Vec<Replaced> {
        self.given_up.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Records a resumed open of this dial, to be named by its next open if it does not
    /// become a channel.
    pub(crate) fn give_up(&self, open: Replaced) {
        if let Ok(mut g) = self.given_up.lock() {
            g.push(open);
        }
    }

    /// Whether bytes may have left this node.
    pub(crate) fn were_sent(&self) -> bool {
        self.sent.load(Ordering::Acquire) > 0
    }

    /// The bytes to send now (empty once taken).
    fn take(&self) -> Vec<u8> {
        let source = self.source.lock().ok().and_then(|mut s| s.take());
        match source {
            None => Vec::new(),
            Some(FirstBytes::Bytes(bytes)) => bytes,
            Some(FirstBytes::Ready(mut read)) => read_now(&mut read),
        }
    }
}

/// What a [`FirstBytes::Ready`] source gives now (at most [`MAX_FIRST_BYTES`]; empty when
/// nothing is ready).
fn read_now(read: &mut ReadReady<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FIRST_BYTES];
    let n = read(&mut buf).min(MAX_FIRST_BYTES);
    buf.truncate(n);
    buf
}

/// The application error code of a reset (or stop) of the dial stream that `e` met, if it
/// met one: the callee's (or the relay's) doing, not the relay link's loss.
pub(crate) fn stream_reset(e: &Error) -> Option<u64> {
    use quinn::{ReadError, ReadExactError, WriteError};
    let code = match e {
        Error::RelayLinkLost(LinkLost::ReadStream(ReadError::Reset(code)))
        | Error::RelayLinkLost(LinkLost::Read(ReadExactError::ReadError(ReadError::Reset(code))))
        | Error::RelayLinkLost(LinkLost::Write(WriteError::Stopped(code))) => *code,
        _ => return None,
    };
    Some(code.into_inner())
}

/// Whether `e` is a callee's refusal to start a handshake ([`STREAM_BUSY`]), read from the
/// dial stream's reset (by the relay's answer or by the handshake).
pub(crate) fn refused_busy(e: &Error) -> bool {
    stream_reset(e) == Some(u64::from(STREAM_BUSY))
}

/// Runs the rest of the caller's side of an open (full or resumed) whose first message is
/// already on its way, on a dial stream the relay has answered.
pub(crate) async fn initiate(
    keys: &HandshakeKeys,
    opening: Opening,
    (expected, service): (NodeId, String),
    first: &First<'_>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    drain: Drain,
) -> Result<Channel, Error> {
    let resumed = opening.is_resumed();
    let carried = if opening.carried_first() {
        first.known_len()
    } else {
        0
    };
    let result = open(
        keys,
        opening,
        (expected, service),
        first,
        &mut send,
        &mut recv,
    )
    .await;
    match result {
        Ok((inner, deframer)) => {
            let mut channel = Channel::new(inner, send, recv, deframer, Vec::new(), drain);
            channel.count_sent(first.sent.load(Ordering::Acquire).max(carried));
            Ok(channel)
        }
        // Refused before the handshake began: the secret is still good.
        Err(e) if refused_busy(&e) => Err(e),
        Err(e) => {
            // A resumed open that failed for any reason but the callee's verdict drops this
            // side's secret for calling the peer: if the two sides disagree about it (one
            // restarted or speaks another version), the next open runs the full handshake
            // instead of failing again. Only that one: what this node holds as the peer's
            // callee (its tickets and the records of their counters) stays, or a relay that
            // breaks one open could erase the record that makes the peer's next open a
            // duplicate of an R1 that already took effect here.
            if resumed && !matches!(e, Error::Denied { .. }) {
                keys.sessions().forget_outgoing(&expected);
            }
            Err(e)
        }
    }
}

/// The caller's side of an open after its first message, up to the verdict.
async fn open(
    keys: &HandshakeKeys,
    mut opening: Opening,
    (expected, service): (NodeId, String),
    first: &First<'_>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(nullport_protocol::Channel, Deframer), Error> {
    let mut deframer = Deframer::new(MAX_NOISE_MESSAGE);
    let mut out = Vec::new();
    // At most two answers: REFUSED to a resumed open turns it into the full handshake.
    let awaiting = loop {
        let answer = next_message(recv, &mut deframer).await?;
        out.clear();
        match opening.handle_response(keys, &answer, Instant::now(), &mut out)? {
            Answered::Verdict(mut awaiting) => {
                // The first bytes ride in the same write as message 3 (or right after R2 or K2 when
                // R1 did not carry them); the callee reads them only once it has accepted.
                if awaiting.wants_first() {
                    let bytes = first.take();
                    first.sent.store(bytes.len(), Ordering::Release);
                    awaiting.seal_first(&bytes, &mut out)?;
                }
                if !out.is_empty() {
                    write_all(send, &out).await?;
                }
                break awaiting;
            }
            Answered::Retry(full) => {
                tracing::debug!("callee refused the resumed open; full handshake");
                write_all(send, &out).await?;
                opening = *full;
            }
        }
    };
    let verdict = next_message(recv, &mut deframer).await?;
    match awaiting.handle_verdict(&verdict, Instant::now()) {
        Ok(inner) => Ok((inner, deframer)),
        Err(nullport_protocol::Error::Denied { reason }) => Err(Error::Denied {
            peer: expected,
            service,
            reason,
        }),
        Err(e) => Err(e.into()),
    }
}

/// A caller that completed the handshake and waits for this node's decision. Nothing but
/// the handshake has been exchanged; no application byte reaches this node's application
/// before [`accept`] (the caller's first bytes, if any, are held unread until then; a caller
/// that sends more than them before the verdict cannot be accepted).
///
/// [`accept`]: IncomingChannel::accept
pub struct IncomingChannel {
    request: Request,
    /// The first bytes a resumed open's R1 carried, read by the application only after
    /// [`IncomingChannel::accept`].
    first: Vec<u8>,
    send: quinn::SendStream,
    held: Held,
    session: SessionId,
    drain: Drain,
}

impl std::fmt::Debug for IncomingChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingChannel")
            .field("peer", &self.request.peer())
            .field("service", self.request.service())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl IncomingChannel {
    /// The caller, proven by the handshake.
    pub fn peer(&self) -> NodeId {
        self.request.peer()
    }

    /// The requested service.
    pub fn service(&self) -> &str {
        self.request.service().as_str()
    }

    /// The opaque blob (capability tokens) the caller sent.
    pub fn blob(&self) -> &[u8] {
        self.request.blob()
    }

    /// Accepts the channel. Fails (and ends it) if the caller sent more than its first
    /// bytes before this decision.
    pub async fn accept(mut self) -> Result<Channel, Error> {
        // Stop holding before Accept goes out: what the caller sends after it is the
        // channel's.
        let holding = match self.held.finish().await {
            Ok(holding) => holding,
            Err(e) => {
                // Its caller broke the rule: both directions end with the same code.
                let _ = self.send.reset(crate::held::TOO_EARLY.into());
                return Err(e);
            }
        };
        let mut out = Vec::new();
        let inner = self.request.accept(&mut out)?;
        let mut channel = Channel::new(
            inner,
            self.send,
            holding.recv,
            holding.deframer,
            out,
            self.drain,
        );
        channel.preload(self.first);
        tokio::io::AsyncWriteExt::flush(&mut channel)
            .await
            .map_err(|e| LinkLost::Stream(e.kind()))?;
        Ok(channel)
    }

    /// Refuses the channel; the caller gets `Denied { reason }`.
    pub async fn deny(mut self, reason: DenyReason) -> Result<(), Error> {
        send_deny(self.request, reason, &mut self.send, &self.drain).await
    }
}

/// Sends `request`'s denial for `reason` and ends this side of the stream.
async fn send_deny(
    request: Request,
    reason: DenyReason,
    send: &mut quinn::SendStream,
    drain: &Drain,
) -> Result<(), Error> {
    let mut out = Vec::new();
    request.deny(reason, &mut out)?;
    write_all(send, &out).await?;
    let _ = send.finish();
    drain.hand_over(send);
    Ok(())
}

impl IncomingChannel {
    /// Holds `lease` (the use count of the relay link it came over) for as long as the
    /// channel lives.
    pub(crate) fn lease(&mut self, lease: &std::sync::Arc<()>) {
        self.drain = self.drain.leased(lease);
    }
}

/// Runs the responder side on an incoming stream for a dial from `caller`: a resumed open
/// when the first message is one and this node holds its ticket, the full handshake
/// otherwise (after REFUSED, on the same stream).
pub(crate) async fn respond(
    keys: &HandshakeKeys,
    caller: NodeId,
    session: SessionId,
    limits: Limits,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    drain: Drain,
) -> Result<IncomingChannel, Error> {
    let mut deframer = Deframer::new(MAX_NOISE_MESSAGE);
    let mut first = next_message(&mut recv, &mut deframer).await?;
    let mut out = Vec::new();
    let mut request = 'request: {
        if resume::is_resumption(&first) {
            match resume::respond(
                keys,
                caller,
                session,
                limits,
                &first,
                Instant::now(),
                &mut out,
            )? {
                Resumed::Opened(request) => {
                    // R2 or K2 now (the verdict follows when the application decides).
                    write_all(&mut send, &out).await?;
                    break 'request request;
                }
                Resumed::Refused => {
                    write_all(&mut send, &out).await?;
                    out.clear();
                    first = next_message(&mut recv, &mut deframer).await?;
                }
            }
        }
        let responder = Responder::new(keys, caller, session, limits, Instant::now())?;
        let awaiting = responder.handle_hello(&first, Instant::now(), &mut out)?;
        write_all(&mut send, &out).await?;
        let msg3 = next_message(&mut recv, &mut deframer).await?;
        awaiting.handle_finish(&msg3, Instant::now())?
    };
    if request.is_duplicate() {
        // An earlier open of this dial, one a relay told the caller had failed, reached this
        // node and may have taken effect: this one is denied before the application sees it.
        tracing::info!(peer = %caller, "an open named an earlier open of its dial that may have taken effect; denied as a duplicate");
        send_deny(request, DenyReason::Duplicate, &mut send, &drain).await?;
        return Err(nullport_protocol::Error::Duplicate.into());
    }
    let first = request.take_first();
    Ok(IncomingChannel {
        request,
        first,
        send,
        held: Held::start(recv, deframer),
        session,
        drain,
    })
}
