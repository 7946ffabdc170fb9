//! The relay and the relay link, end to end over real QUIC on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_node::{Error, LinkState, Node, Refusal};
use nullport_protocol::relay_link::LinkErrorCode;
use nullport_protocol::{DenyReason, Identity, Signature};
use nullport_relay::RelayLimits;
use nullport_relay::testing::{Direction, Tamper, TamperMode, Tap, TestHooks};
use nullport_tests::{
    RelayOptions, TestNet, fast_limits, init_tracing, pattern, send_to_sink, serve_echo,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves every incoming channel on `node` with an echo (accepting all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_through_the_relay() {
    init_tracing();
    let net = TestNet::start().await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let _server = serve_echo(b.clone());
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    assert_eq!(ch.peer(), b.node_id());
    ch.write_all(b"hello through the relay").await.unwrap();
    ch.shutdown().await.unwrap();
    let mut got = Vec::new();
    ch.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello through the relay");
    assert!(
        net.relay()
            .render_metrics()
            .contains("nullport_relay_dials_total{result=\"ok\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_both_ways_hashes_match() {
    let net = TestNet::start().await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let size: usize = std::env::var("NULLPORT_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        << 20;
    let a_data = Arc::new(pattern(size, 1));
    let b_data = Arc::new(pattern(size, 2));
    let b2 = b.clone();
    let bd = b_data.clone();
    let server = tokio::spawn(async move {
        let incoming = b2.accept().await.unwrap_or_else(|| panic!("no incoming"));
        let ch = incoming.accept().await.unwrap();
        let (mut r, mut w) = tokio::io::split(ch);
        let writer = tokio::spawn(async move {
            w.write_all(&bd).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let _ = writer.await;
        hasher.finalize().to_vec()
    });
    let ch = a.dial(b.node_id(), "bulk").await.unwrap();
    let (mut r, mut w) = tokio::io::split(ch);
    let ad = a_data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&ad).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
        hasher.update(&buf[..n]);
    }
    let _ = writer.await;
    assert_eq!(total, size);
    assert_eq!(
        hasher.finalize().to_vec(),
        Sha256::digest(&*b_data).to_vec(),
        "B -> A bytes differ"
    );
    let b_got = server.await.unwrap();
    assert_eq!(
        b_got,
        Sha256::digest(&*a_data).to_vec(),
        "A -> B bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_node_is_refused_at_the_handshake() {
    let allowed = Arc::new(Identity::generate().unwrap());
    let net = TestNet::start_with(RelayOptions {
        allow: Some(vec![allowed.node_id()]),
        ..Default::default()
    })
    .await;
    let ok = net.node_unchecked(allowed, fast_limits()).await;
    ok.wait_online(Duration::from_secs(5)).await.unwrap();
    let stranger = net
        .node_unchecked(Arc::new(Identity::generate().unwrap()), fast_limits())
        .await;
    let r = stranger.wait_online(Duration::from_secs(5)).await;
    assert!(
        matches!(&r, Err(Error::RelayRefused(Refusal::NotListed))),
        "{r:?}"
    );
    assert!(matches!(stranger.state(), LinkState::Refused { .. }));
    // It cannot dial or even ask about presence.
    assert!(matches!(
        stranger.dial(ok.node_id(), "x").await,
        Err(Error::RelayRefused(Refusal::NotListed))
    ));
    assert!(matches!(
        stranger.presence(ok.node_id()).await,
        Err(Error::RelayRefused(Refusal::NotListed))
    ));
    assert!(!net.relay().is_online(&stranger.node_id()));
    assert!(
        net.relay()
            .render_metrics()
            .contains("nullport_relay_admission_refusals_total{reason=\"not_admitted\"} ")
    );
    assert!(
        !net.relay()
            .render_metrics()
            .contains("reason=\"not_admitted\"} 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_relay_key_is_refused_by_the_node() {
    let net = TestNet::start().await;
    let impostor_key = Identity::generate().unwrap().node_id();
    let addr = format!("{impostor_key}@{}", net.addr).parse().unwrap();
    let mut config = nullport_node::NodeConfig::new(Arc::new(Identity::generate().unwrap()), addr);
    config.limits = fast_limits();
    let node = Node::start(config).await.unwrap();
    let r = node.wait_online(Duration::from_secs(5)).await;
    assert!(
        matches!(&r, Err(Error::RelayRefused(Refusal::WrongRelayKey { expected, presented })) if *expected == impostor_key && *presented == net.relay_identity.node_id().to_string()),
        "{r:?}"
    );
    assert!(!net.relay().is_online(&node.node_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_an_offline_node_fails_fast() {
    let net = TestNet::start().await;
    let a = net.node().await;
    let ghost = Identity::generate().unwrap().node_id();
    let started = Instant::now();
    let r = a.dial(ghost, "ssh").await;
    assert!(
        matches!(r, Err(Error::PeerOffline(id)) if id == ghost),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!a.presence(ghost).await.unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_denial_are_reported() {
    let net = TestNet::start().await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    assert_eq!(a.presence(b.node_id()).await.ok(), Some(true));
    let b2 = b.clone();
    tokio::spawn(async move {
        while let Some(incoming) = b2.accept().await {
            let _ = incoming.deny(DenyReason::NotAllowed).await;
        }
    });
    let r = a.dial(b.node_id(), "files").await;
    assert!(
        matches!(&r, Err(Error::Denied { reason: DenyReason::NotAllowed, service, .. }) if service == "files"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_nodes_reconnect_and_old_channel_fails_clearly() {
    let mut net = TestNet::start().await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let _server = serve_echo(b.clone());
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    ch.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    ch.read_exact(&mut buf).await.unwrap();
    net.restart(RelayOptions::default()).await;
    let back = Instant::now();
    // The old channel fails with an error, never a clean (truncated) end.
    let mut rest = Vec::new();
    let r = ch.read_to_end(&mut rest).await;
    assert!(r.is_err(), "old channel ended cleanly: {r:?}");
    assert!(rest.is_empty());
    // Both nodes come back by themselves, and a new channel works within 5 s.
    loop {
        match a.dial(b.node_id(), "echo").await {
            Ok(mut ch) => {
                ch.write_all(b"after").await.unwrap();
                ch.shutdown().await.unwrap();
                let mut got = Vec::new();
                ch.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, b"after");
                break;
            }
            Err(e) => {
                assert!(
                    back.elapsed() < Duration::from_secs(5),
                    "no channel 5 s after restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(back.elapsed() < Duration::from_secs(5));
}

/// Runs one echo exchange with a marker under the given relay hooks; returns what the
/// caller read and the error, if any.
async fn exchange_under(
    hooks: TestHooks,
    payload: &[u8],
) -> (Vec<u8>, Option<std::io::Error>, TestNet) {
    let net = TestNet::start_with(RelayOptions {
        hooks,
        ..Default::default()
    })
    .await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let _server = serve_echo(b.clone());
    let mut ch = match a.dial(b.node_id(), "secret-service").await {
        Ok(ch) => ch,
        Err(e) => return (Vec::new(), Some(std::io::Error::other(e)), net),
    };
    let (got, err) = nullport_tests::exchange(&mut ch, payload).await;
    (got, err, net)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tap_never_sees_plaintext_or_service() {
    let tap = Arc::new(Tap::default());
    let marker = b"CANARY-7f3a9c-plaintext-marker".repeat(100);
    let hooks = TestHooks {
        splice: Some(tap.clone()),
        ..Default::default()
    };
    let (got, err, _net) = exchange_under(hooks, &marker).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, marker);
    let seen = tap.bytes.lock().map(|b| b.clone()).unwrap_or_default();
    assert!(
        seen.len() > marker.len() * 2,
        "tap saw only {} bytes",
        seen.len()
    );
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"CANARY-7f3a9c"));
    assert!(!contains(b"secret-service"));
}

fn tamper(direction: Direction, offset: u64, mode: TamperMode) -> TestHooks {
    TestHooks {
        splice: Some(Arc::new(Tamper::new(direction, offset, mode))),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_relay_is_detected_and_nothing_altered_is_delivered() {
    let payload = pattern(300_000, 9);
    // Offsets: inside the handshake (msg1 at 0, msg2 back at 0) and inside data frames.
    let cases = [
        (Direction::CallerToTarget, 10, TamperMode::FlipBit),
        (Direction::TargetToCaller, 50, TamperMode::FlipBit),
        (Direction::CallerToTarget, 100_000, TamperMode::FlipBit),
        (Direction::TargetToCaller, 200_000, TamperMode::FlipBit),
        (Direction::CallerToTarget, 150_000, TamperMode::DropChunk),
        (
            Direction::TargetToCaller,
            150_000,
            TamperMode::DuplicateChunk,
        ),
    ];
    for (direction, offset, mode) in cases {
        let (got, err, _net) = exchange_under(tamper(direction, offset, mode), &payload).await;
        let err = err
            .unwrap_or_else(|| panic!("{direction:?} {offset} {mode:?}: tampering went unnoticed"));
        assert!(
            payload.starts_with(&got),
            "{direction:?} {offset} {mode:?}: altered bytes delivered"
        );
        assert!(got.len() < payload.len());
        let kind = err.kind();
        assert!(
            matches!(
                kind,
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::Other
            ),
            "{direction:?} {offset} {mode:?}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerouted_dial_is_refused_by_the_caller() {
    // A relay that routes dials for B (offline) to M (a valid, online node).
    let b = Identity::generate().unwrap().node_id();
    let m_identity = Arc::new(Identity::generate().unwrap());
    let net = TestNet::start_with(RelayOptions {
        hooks: TestHooks {
            reroute: Some((b, m_identity.node_id())),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let a = net.node().await;
    let m = Arc::new(net.node_unchecked(m_identity, fast_limits()).await);
    m.wait_online(Duration::from_secs(5)).await.unwrap();
    let _server = serve_echo(m.clone());
    let r = a.dial(b, "echo").await;
    // M answers under its own identity: A's prologue names B, so message 2 fails
    // authentication and A never sends message 3 (M never learns who called).
    assert!(
        matches!(
            r,
            Err(Error::Protocol(nullport_protocol::Error::Authentication))
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabelled_caller_fails_the_handshake() {
    let fake = Identity::generate().unwrap().node_id();
    let net = TestNet::start_with(RelayOptions {
        hooks: TestHooks {
            relabel_caller: Some(fake),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let _server = serve_echo(b.clone());
    let r = a.dial(b.node_id(), "echo").await;
    assert!(
        matches!(
            r,
            Err(Error::Protocol(nullport_protocol::Error::Authentication))
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_rate_limit_is_per_identity() {
    let limits = RelayLimits {
        dials_per_second: 2,
        dial_burst: 3,
        ..RelayLimits::default()
    };
    let net = TestNet::start_with(RelayOptions {
        limits: Some(limits),
        ..Default::default()
    })
    .await;
    let (a, b, c) = (
        net.node().await,
        Arc::new(net.node().await),
        net.node().await,
    );
    let _server = serve_echo(b.clone());
    let mut limited = 0;
    for _ in 0..6 {
        match a.dial(b.node_id(), "echo").await {
            Ok(_) => {}
            Err(Error::Link(LinkErrorCode::RateLimited)) => limited += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert!(limited >= 2, "only {limited} of 6 dials limited");
    // Another identity is unaffected.
    assert!(c.dial(b.node_id(), "echo").await.is_ok());
    // The bucket is keyed on the identity: reconnecting does not refill it.
    let a_identity = Arc::new(Identity::from_seed([0; 32]));
    drop(a);
    let again = net.node_unchecked(a_identity.clone(), fast_limits()).await;
    again.wait_online(Duration::from_secs(5)).await.unwrap();
    let mut limited_again = 0;
    for _ in 0..6 {
        if matches!(
            again.dial(b.node_id(), "echo").await,
            Err(Error::Link(LinkErrorCode::RateLimited))
        ) {
            limited_again += 1;
        }
    }
    drop(again);
    let reconnected = net.node_unchecked(a_identity, fast_limits()).await;
    reconnected
        .wait_online(Duration::from_secs(5))
        .await
        .unwrap();
    let r = reconnected.dial(b.node_id(), "echo").await;
    assert!(
        limited_again >= 2,
        "first connection of the seeded identity: {limited_again} limited"
    );
    assert!(
        matches!(r, Err(Error::Link(LinkErrorCode::RateLimited))),
        "reconnect refilled the bucket: {r:?}"
    );
}

/// Serves every incoming channel with a sink that answers the SHA-256 of what it read.
fn serve_sink(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { nullport_tests::sink(&node).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_rate_limit_slows_only_that_sender() {
    let limits = RelayLimits {
        bytes_per_second: 2 << 20,
        byte_burst: 512 << 10,
        ..RelayLimits::default()
    };
    let net = TestNet::start_with(RelayOptions {
        limits: Some(limits),
        ..Default::default()
    })
    .await;
    let (a, b, c) = (
        net.node().await,
        Arc::new(net.node().await),
        net.node().await,
    );
    let _server = serve_sink(b.clone());
    let (big, small) = (pattern(4 << 20, 3), pattern(256 << 10, 3));
    let (slow, fast) = tokio::join!(send_to_sink(&a, b.node_id(), &big), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_to_sink(&c, b.node_id(), &small).await
    });
    // A: 4 MiB at 2 MiB/s after a 512 KiB burst needs about 1.75 s. C, with its own bucket,
    // is not held up by A's.
    assert!(
        slow >= Duration::from_millis(1500),
        "limited sender took only {slow:?}"
    );
    assert!(
        fast < Duration::from_millis(700),
        "unrelated sender slowed down: {fast:?} (A: {slow:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_identity_twice_newest_wins_without_flapping() {
    let net = TestNet::start().await;
    let identity = Arc::new(Identity::generate().unwrap());
    let first = net.node_unchecked(identity.clone(), fast_limits()).await;
    first.wait_online(Duration::from_secs(5)).await.unwrap();
    let second = net.node_unchecked(identity.clone(), fast_limits()).await;
    second.wait_online(Duration::from_secs(5)).await.unwrap();
    let mut state = first.watch_state();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| matches!(s, LinkState::Refused { .. })),
    )
    .await;
    assert!(
        matches!(first.state().refusal(), Some(Refusal::Superseded)),
        "{:?}",
        first.state()
    );
    // No flapping: a second later the newest is still the one online.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(second.state().is_online());
    assert!(matches!(first.state(), LinkState::Refused { .. }));
    assert!(
        net.relay()
            .render_metrics()
            .contains("nullport_relay_superseded_total 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_http_without_payload() {
    let mut net = TestNet::start().await;
    let bound = net
        .relay
        .as_mut()
        .unwrap_or_else(|| panic!("no relay"))
        .serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let _server = serve_echo(b.clone());
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    ch.write_all(b"METRICS-CANARY").await.unwrap();
    ch.shutdown().await.unwrap();
    let mut got = Vec::new();
    ch.read_to_end(&mut got).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(bound).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"));
    assert!(
        response.contains("nullport_relay_nodes_online 2"),
        "{response}"
    );
    assert!(response.contains("nullport_relay_dials_total{result=\"ok\"} 1"));
    assert!(!response.contains("METRICS-CANARY") && !response.contains("echo"));
    let spliced: u64 = response
        .lines()
        .find_map(|l| l.strip_prefix("nullport_relay_spliced_bytes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(spliced > 2 * 14, "spliced {spliced}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_truncation_is_reported_as_truncated() {
    let payload = pattern(300_000, 4);
    let hooks = tamper(Direction::TargetToCaller, 120_000, TamperMode::TruncateAt);
    let (got, err, _net) = exchange_under(hooks, &payload).await;
    let err = err.unwrap_or_else(|| panic!("truncation went unnoticed"));
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err:?}");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<nullport_protocol::Error>());
    assert_eq!(inner, Some(&nullport_protocol::Error::Truncated));
    assert!(got.len() < 120_000 && payload.starts_with(&got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostor_without_the_key_is_refused() {
    // The impostor presents the victim's public key but can only sign with its own key.
    let victim = Arc::new(Identity::generate().unwrap());
    let net = TestNet::start_with(RelayOptions {
        allow: Some(vec![victim.node_id()]),
        ..Default::default()
    })
    .await;
    let impostor = Identity::generate().unwrap();
    let pkcs8 = impostor.to_pkcs8_der();
    let key = rustls::crypto::ring::sign::any_eddsa_type(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
    )
    .unwrap();
    let forged = rustls::sign::CertifiedKey::new(
        vec![rustls::pki_types::CertificateDer::from(
            victim.node_id().to_spki_der(),
        )],
        key,
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(Arc::new(forged)),
        ));
    config.alpn_protocols = vec![nullport_protocol::relay_link::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            net.addr,
            "nullport-relay",
        )
        .unwrap()
        .await;
    let refused = match conn {
        Err(_) => true,
        Ok(conn) => {
            conn.open_bi().await.is_err()
                || tokio::time::timeout(Duration::from_secs(2), conn.closed())
                    .await
                    .is_ok()
        }
    };
    assert!(refused, "an impostor without the private key was admitted");
    assert!(!net.relay().is_online(&victim.node_id()));
}

/// A server verifier that accepts any raw key (the impostor test only attacks the relay).
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dispatches_by_service_and_enforces_allow() {
    use nullport_node::Handlers;
    let net = TestNet::start().await;
    let (tool, caller, stranger) = (
        Arc::new(net.node().await),
        net.node().await,
        net.node().await,
    );
    let allowed = caller.node_id();
    let server = tool.clone();
    tokio::spawn(async move {
        let handlers = Handlers::new().add("upper", |mut ch: nullport_node::Channel| async move {
            let mut input = Vec::new();
            if ch.read_to_end(&mut input).await.is_ok() {
                let _ = ch.write_all(&input.to_ascii_uppercase()).await;
                let _ = ch.shutdown().await;
            }
        });
        server.serve(handlers, move |peer, _| peer == allowed).await;
    });
    let mut ch = caller.dial(tool.node_id(), "upper").await.unwrap();
    ch.write_all(b"shout").await.unwrap();
    ch.shutdown().await.unwrap();
    let mut got = Vec::new();
    ch.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"SHOUT");
    let r = caller.dial(tool.node_id(), "other").await;
    assert!(
        matches!(
            r,
            Err(Error::Denied {
                reason: DenyReason::UnknownService,
                ..
            })
        ),
        "{r:?}"
    );
    let r = stranger.dial(tool.node_id(), "upper").await;
    assert!(
        matches!(
            r,
            Err(Error::Denied {
                reason: DenyReason::NotAllowed,
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnessed_checkpoints_survive_a_relay_restart_and_cannot_roll_back() {
    use nullport_protocol::relay_link::WitnessedCheckpoint;
    let state = tempfile::tempdir().unwrap();
    let mut net = TestNet::start_with(RelayOptions {
        state_dir: Some(state.path().to_owned()),
        ..Default::default()
    })
    .await;
    let identity = Arc::new(Identity::generate().unwrap());
    let node = net.node_unchecked(identity.clone(), fast_limits()).await;
    node.wait_online(Duration::from_secs(5)).await.unwrap();
    let checkpoint = |seq: u64| {
        let head = format!("{seq:064x}");
        let sig = identity.sign(
            nullport_protocol::domain::AUDIT_CHECKPOINT_V1,
            format!("seq:{seq}\nhead:{head}").as_bytes(),
        );
        WitnessedCheckpoint {
            seq,
            head: nullport_protocol::Digest::from_hex(&head).unwrap(),
            node_sig: Signature(sig),
            relay_sig: None,
        }
    };
    let witnessed = node.witness(checkpoint(10)).await.unwrap();
    let relay_sig = witnessed.relay_sig.unwrap();
    assert!(
        nullport_protocol::identity::verify(
            &net.relay_identity.node_id(),
            nullport_protocol::domain::AUDIT_WITNESS_V1,
            &nullport_audit::witness_body(&node.node_id(), witnessed.seq, &witnessed.head.to_hex()),
            &relay_sig.0
        )
        .is_ok()
    );
    // A forged checkpoint (not signed by the node) and a rollback are refused.
    let mut forged = checkpoint(11);
    forged.head = nullport_protocol::Digest([99; 32]);
    assert!(matches!(
        node.witness(forged).await,
        Err(Error::Link(LinkErrorCode::Refused))
    ));
    assert!(matches!(
        node.witness(checkpoint(5)).await,
        Err(Error::Link(LinkErrorCode::Refused))
    ));
    // The relay restarts with the same state directory: it still holds checkpoint 10.
    net.restart(RelayOptions {
        state_dir: Some(state.path().to_owned()),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let held = loop {
        match node.witnessed().await {
            Ok(held) => break held,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(5), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(held.map(|c| c.seq), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_invites_are_single_use_expiring_and_race_safe() {
    use nullport_keyring::invite::Invite;
    let net = TestNet::start_with(RelayOptions {
        allow: Some(vec![]),
        enroll: true,
        ..Default::default()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let invite = Invite::create(&net.relay_identity, now + 600, 1).unwrap();
    let with_invite = |invite: Option<Vec<u8>>| {
        let net = &net;
        async move {
            let identity = Arc::new(Identity::generate().unwrap());
            let mut config = nullport_node::NodeConfig::new(identity.clone(), net.relay_addr());
            config.limits = fast_limits();
            config.join = invite;
            let node = Node::start(config).await.unwrap();
            let r = node.wait_online(Duration::from_secs(5)).await;
            (node, identity, r)
        }
    };
    // Joins with the invite, and stays admitted after reconnecting without it.
    let (a, a_id, r) = with_invite(Some(invite.clone())).await;
    assert!(r.is_ok(), "{r:?}");
    assert!(net.relay().is_online(&a.node_id()));
    a.shutdown().await;
    let mut again = nullport_node::NodeConfig::new(a_id, net.relay_addr());
    again.limits = fast_limits();
    let a2 = Node::start(again).await.unwrap();
    assert!(a2.wait_online(Duration::from_secs(5)).await.is_ok());
    // Reuse, expiry, forgery and no invite at all: refused, with the reason.
    let (_b, _, r) = with_invite(Some(invite.clone())).await;
    assert!(
        matches!(
            &r,
            Err(Error::RelayRefused(Refusal::Enrollment(
                LinkErrorCode::InviteUsed
            )))
        ),
        "{r:?}"
    );
    let expired = Invite::create(&net.relay_identity, now - 10, 1).unwrap();
    let (_c, _, r) = with_invite(Some(expired)).await;
    assert!(
        matches!(
            &r,
            Err(Error::RelayRefused(Refusal::Enrollment(
                LinkErrorCode::InviteExpired
            )))
        ),
        "{r:?}"
    );
    let stranger_invite = Invite::create(&Identity::generate().unwrap(), now + 600, 1).unwrap();
    let (_d, _, r) = with_invite(Some(stranger_invite)).await;
    assert!(
        matches!(
            &r,
            Err(Error::RelayRefused(Refusal::Enrollment(
                LinkErrorCode::InviteInvalid
            )))
        ),
        "{r:?}"
    );
    let (e, _, r) = with_invite(None).await;
    assert!(
        matches!(&r, Err(Error::RelayRefused(Refusal::NotAdmitted))),
        "{r:?}"
    );
    assert!(!net.relay().is_online(&e.node_id()));
    // Two nodes race for a one-time invite: exactly one wins.
    let race = Invite::create(&net.relay_identity, now + 600, 1).unwrap();
    let (x, y) = tokio::join!(with_invite(Some(race.clone())), with_invite(Some(race)));
    assert_eq!(
        u8::from(x.2.is_ok()) + u8::from(y.2.is_ok()),
        1,
        "{:?} {:?}",
        x.2,
        y.2
    );
}

/// A callee that drops its channel without closing it (a task aborted, a service that
/// crashed) resets the stream: the caller's read fails as truncated instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_dropped_without_close_fails_the_peers_read() {
    init_tracing();
    let net = TestNet::start().await;
    let (a, b) = (net.node().await, Arc::new(net.node().await));
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            let incoming = b.accept().await.unwrap();
            let mut ch = incoming.accept().await.unwrap();
            let mut buf = [0u8; 5];
            ch.read_exact(&mut buf).await.unwrap();
            drop(ch);
        })
    };
    let mut ch = a.dial(b.node_id(), "echo").await.unwrap();
    ch.write_all(b"hello").await.unwrap();
    ch.flush().await.unwrap();
    server.await.unwrap();
    let mut got = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(30), ch.read_to_end(&mut got))
        .await
        .expect("the caller kept waiting on a channel its peer dropped");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}
