//! In-memory pair harness for the handshake and channel, with an adversary in the middle.
//!
//! Every byte passes through [`Wire`], which splits it into messages exactly as a relay-fed
//! [`Deframer`] would, so tests tamper with the very messages a relay could touch.

mod channel_attacks;
mod first_bytes;
mod handshake_attacks;
mod relay_link_tags;
mod vectors;

use std::time::Instant;

use crate::wire::IdentityProof;
use crate::{
    AwaitingVerdict, Channel, Deframer, DialRequest, Error, HandshakeKeys, Identity, Initiator,
    Limits, NodeId, Received, Request, Responder, ServiceName, SessionId, noise,
};

/// A node for tests: identity plus handshake keys.
pub(crate) struct TestNode {
    pub(crate) identity: Identity,
    pub(crate) keys: HandshakeKeys,
}

impl TestNode {
    pub(crate) fn new(seed: u8) -> Self {
        let identity = Identity::from_seed([seed; 32]);
        let keys = HandshakeKeys::from_static(&identity, [seed.wrapping_add(100); 32]);
        Self { identity, keys }
    }

    pub(crate) fn id(&self) -> NodeId {
        self.identity.node_id()
    }
}

pub(crate) fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap_or_else(|e| panic!("test service name: {e}"))
}

pub(crate) fn request(to: &TestNode, session: u64) -> DialRequest {
    DialRequest {
        expected: to.id(),
        session: SessionId(session),
        service: service("files"),
        blob: b"token-bytes".to_vec(),
    }
}

/// Splits a byte stream into its messages (must be whole).
pub(crate) fn messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut d = Deframer::new(65_535);
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        while let Ok(Some(m)) = d.next_message() {
            out.push(m.to_vec());
        }
        if rest.is_empty() {
            break;
        }
        let n = d.push(rest);
        rest = &rest[n..];
    }
    assert_eq!(d.buffered(), 0, "stream ended mid-message");
    out
}

/// Runs one handshake step on `bytes` and returns the single message it produced.
pub(crate) fn only_message(bytes: &[u8]) -> Vec<u8> {
    let mut m = messages(bytes);
    assert_eq!(m.len(), 1, "expected exactly one message");
    m.remove(0)
}

/// What the harness saw: every message on the wire, in order, tagged with its direction.
#[derive(Default)]
pub(crate) struct Tap {
    pub(crate) to_responder: Vec<Vec<u8>>,
    pub(crate) to_initiator: Vec<Vec<u8>>,
}

impl Tap {
    pub(crate) fn all(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for m in self.to_responder.iter().chain(&self.to_initiator) {
            v.extend_from_slice(m);
        }
        v
    }
}

/// A complete handshake between `a` (initiator) and `b` (responder), no tampering.
pub(crate) fn connect(a: &TestNode, b: &TestNode, tap: &mut Tap) -> (Channel, Channel) {
    let now = Instant::now();
    let limits = Limits::default();
    let (verdict, request) = handshake_until_decision(a, b, request(b, 7), limits, now, tap)
        .unwrap_or_else(|e| {
            panic!("handshake failed: {e}");
        });
    let (initiator, responder, accept) = accept_both(verdict, request);
    tap.to_initiator.push(accept);
    (initiator, responder)
}

/// The callee accepts `request` and the caller reads the verdict: (caller, callee, the
/// Accept message).
pub(crate) fn accept_both(
    verdict: AwaitingVerdict,
    request: Request,
) -> (Channel, Channel, Vec<u8>) {
    let mut out = Vec::new();
    let callee = request
        .accept(&mut out)
        .unwrap_or_else(|e| panic!("accept: {e}"));
    let accept = only_message(&out);
    let caller = verdict
        .handle_verdict(&accept, Instant::now())
        .unwrap_or_else(|e| panic!("verdict: {e}"));
    (caller, callee, accept)
}

pub(crate) fn handshake_until_decision(
    a: &TestNode,
    b: &TestNode,
    dial: DialRequest,
    limits: Limits,
    now: Instant,
    tap: &mut Tap,
) -> Result<(AwaitingVerdict, Request), Error> {
    let session = dial.session;
    let mut out = Vec::new();
    let init = Initiator::start(&a.keys, dial, limits, now, &mut out)?;
    let msg1 = only_message(&out);
    tap.to_responder.push(msg1.clone());
    let resp = Responder::new(&b.keys, a.id(), session, limits, now)?;
    out.clear();
    let resp = resp.handle_hello(&msg1, now, &mut out)?;
    let msg2 = only_message(&out);
    tap.to_initiator.push(msg2.clone());
    out.clear();
    let verdict = init.handle_response(&msg2, now, &mut out)?;
    let msg3 = only_message(&out);
    tap.to_responder.push(msg3.clone());
    let request = resp.handle_finish(&msg3, now)?;
    Ok((verdict, request))
}

/// Seals `data` on `from` and returns the messages it produced.
pub(crate) fn seal(from: &mut Channel, data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    from.seal(data, &mut out)
        .unwrap_or_else(|e| panic!("seal: {e}"));
    messages(&out)
}

/// Opens messages in order; returns the bytes delivered and the first error.
pub(crate) fn open_all(to: &mut Channel, msgs: &[Vec<u8>]) -> (Vec<u8>, Option<Error>) {
    let mut delivered = Vec::new();
    for m in msgs {
        match to.open(m, &mut delivered) {
            Ok(Received::Data(_) | Received::Control | Received::Close) => {}
            Err(e) => return (delivered, Some(e)),
        }
    }
    (delivered, None)
}

/// A responder that behaves as the test says: any static key, any prologue, any payload.
pub(crate) fn evil_msg2(
    static_private: &[u8],
    prologue: &[u8],
    msg1: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut hs = noise::builder()
        .local_private_key(static_private)
        .and_then(|b| b.prologue(prologue))
        .and_then(|b| b.build_responder())
        .unwrap_or_else(|e| panic!("evil responder: {e}"));
    let mut scratch = [0u8; 64];
    hs.read_message(msg1, &mut scratch)
        .unwrap_or_else(|e| panic!("evil read: {e}"));
    let mut msg2 = vec![0u8; 1024];
    let n = hs
        .write_message(payload, &mut msg2)
        .unwrap_or_else(|e| panic!("evil write: {e}"));
    msg2.truncate(n);
    msg2
}

/// An identity proof's bytes.
pub(crate) fn proof_bytes(node_id: NodeId, signature: [u8; 64]) -> Vec<u8> {
    let mut v = Vec::new();
    IdentityProof { node_id, signature }.encode(&mut v);
    v
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
