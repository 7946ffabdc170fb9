//! A key stored on disk, loaded back, and used for a real handshake.

use std::time::Instant;

use nullport_keyring::{KdfParams, Protection, key_file};
use nullport_protocol::{
    DialRequest, HandshakeKeys, Identity, Initiator, Limits, Responder, ServiceName, SessionId,
};

#[test]
fn stored_identities_complete_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.key"), dir.path().join("b.key"));
    let protection = Protection::Passphrase("pw".to_owned().into(), KdfParams::FLOOR);
    for path in [&pa, &pb] {
        let id = Identity::generate().unwrap();
        key_file::store(path, &id, &protection, false).unwrap();
    }
    let a = key_file::load(&pa, Some("pw")).unwrap();
    let b = key_file::load(&pb, Some("pw")).unwrap();
    let (ka, kb) = (
        HandshakeKeys::new(&a).unwrap(),
        HandshakeKeys::new(&b).unwrap(),
    );
    let now = Instant::now();
    let limits = Limits::default();
    let mut m = Vec::new();
    let dial = DialRequest {
        expected: b.node_id(),
        session: SessionId(42),
        service: ServiceName::new("ssh").unwrap(),
        blob: Vec::new(),
    };
    let init = Initiator::start(&ka, dial, limits, now, &mut m).unwrap();
    let mut r = Vec::new();
    let resp = Responder::new(&kb, a.node_id(), SessionId(42), limits, now)
        .and_then(|x| x.handle_hello(&m[2..], now, &mut r))
        .unwrap();
    m.clear();
    let verdict = init.handle_response(&r[2..], now, &mut m).unwrap();
    let req = resp.handle_finish(&m[2..], now).unwrap();
    assert_eq!(req.peer(), a.node_id());
    assert_eq!(req.service().as_str(), "ssh");
    r.clear();
    let cb = req.accept(&mut r).unwrap();
    let ca = verdict.handle_verdict(&r[2..], now).unwrap();
    assert_eq!(ca.peer(), b.node_id());
    assert_eq!(ca.handshake_hash(), cb.handshake_hash());
}
