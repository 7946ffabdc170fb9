//! Entry points for the fuzz targets (feature `fuzzing`). Not part of the stable API.

use std::time::Instant;

use crate::wire::Msg3Payload;
use crate::{
    Channel, DialRequest, Error, HandshakeKeys, Identity, Initiator, Limits, Responder,
    ServiceName, SessionId,
};

fn keys(seed: u8) -> HandshakeKeys {
    HandshakeKeys::from_static(&Identity::from_seed([seed; 32]), [seed ^ 0x55; 32])
}

/// Decodes a message 3 payload (the part behind the AEAD).
pub fn decode_msg3_payload(bytes: &[u8]) -> Result<(), Error> {
    Msg3Payload::decode(bytes).map(drop)
}

/// Feeds `data` to a responder as message 1 (first 32 bytes or less) then message 3.
pub fn responder_messages(data: &[u8]) {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let Ok(resp) = Responder::new(&b, a.node_id(), SessionId(1), Limits::default(), now) else {
        return;
    };
    let (msg1, msg3) = data.split_at(data.len().min(32));
    let mut out = Vec::new();
    if let Ok(resp) = resp.handle_hello(msg1, now, &mut out) {
        assert!(
            resp.handle_finish(msg3, now).is_err(),
            "forged message 3 accepted"
        );
    }
}

/// Feeds `data` to an initiator as message 2 (first 192 bytes or less) then a verdict.
pub fn initiator_messages(data: &[u8]) {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let Ok(service) = ServiceName::new("fuzz") else {
        return;
    };
    let dial = DialRequest {
        expected: b.node_id(),
        session: SessionId(1),
        service,
        blob: Vec::new(),
    };
    let mut out = Vec::new();
    let Ok(init) = Initiator::start(&a, dial, Limits::default(), now, &mut out) else {
        return;
    };
    let (msg2, verdict) = data.split_at(data.len().min(192));
    out.clear();
    if let Ok(awaiting) = init.handle_response(msg2, now, &mut out) {
        assert!(
            awaiting.handle_verdict(verdict, now).is_err(),
            "forged verdict accepted"
        );
    }
}

/// An established channel pair (initiator, responder) with fixed keys.
pub fn channel_pair() -> (Channel, Channel) {
    let (a, b) = (keys(1), keys(2));
    let now = Instant::now();
    let limits = Limits::default();
    let fail = || -> (Channel, Channel) { panic!("fixed-key handshake failed") };
    let Ok(service) = ServiceName::new("fuzz") else {
        return fail();
    };
    let dial = DialRequest {
        expected: b.node_id(),
        session: SessionId(1),
        service,
        blob: Vec::new(),
    };
    let mut m = Vec::new();
    let Ok(init) = Initiator::start(&a, dial, limits, now, &mut m) else {
        return fail();
    };
    let mut r = Vec::new();
    let Ok(resp) = Responder::new(&b, a.node_id(), SessionId(1), limits, now)
        .and_then(|resp| resp.handle_hello(&m[2..], now, &mut r))
    else {
        return fail();
    };
    m.clear();
    let Ok(verdict) = init.handle_response(&r[2..], now, &mut m) else {
        return fail();
    };
    r.clear();
    let Ok(cb) = resp
        .handle_finish(&m[2..], now)
        .and_then(|req| req.accept(&mut r))
    else {
        return fail();
    };
    match verdict.handle_verdict(&r[2..], now) {
        Ok(ca) => (ca, cb),
        Err(_) => fail(),
    }
}
