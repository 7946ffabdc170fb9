//! Both kinds of resumed open between real nodes through a real relay: keyed (the default)
//! and with a DH, a callee that wants a DH, bytes intact across rekeys, and what a failed
//! resumed open may drop.

use std::sync::Arc;

use nullport_node::Error;
use nullport_relay::testing::Direction;
use nullport_tests::{TestNet, pattern, serve_echo};

use super::{Act, Scripted, counting_echo, echo_ok, hooked_net, net_with};

/// The tests' node limits, with a DH in every resumed open when `dh`.
fn limits(dh: bool) -> nullport_node::NodeLimits {
    let mut limits = nullport_tests::fast_limits();
    limits.handshake.resume_dh = dh;
    limits
}

/// A node with a fresh identity and `limits` on `net`, online.
async fn node_with(net: &TestNet, limits: nullport_node::NodeLimits) -> nullport_node::Node {
    let identity = Arc::new(nullport_protocol::Identity::generate().unwrap());
    let node = net.node_unchecked(identity, limits).await;
    node.wait_online(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_kinds_of_resumed_open_cross_a_real_relay_and_a_callee_that_wants_a_dh_refuses_keyed_ones()
 {
    let hook = Scripted::with(&[]);
    let net = hooked_net(hook.clone()).await;
    let (with_dh, keyed, b) = (
        node_with(&net, limits(true)).await,
        node_with(&net, limits(false)).await,
        Arc::new(node_with(&net, limits(true)).await),
    );
    let (seen, server) = counting_echo(&b);
    let payload = pattern(256 * 1024, 9);
    // A caller that wants a DH: full, then resumed with one. R1 = header 25, ephemeral key
    // 32, age and delay and count 9, "echo" 5, empty blob 2, tag 16.
    echo_ok(&with_dh, b.node_id(), &payload).await;
    echo_ok(&with_dh, b.node_id(), &payload).await;
    assert_eq!(hook.first_message_len(0), Some(32));
    assert_eq!(hook.first_message_len(1), Some(25 + 32 + 9 + 5 + 2 + 16));
    // A keyed caller (the default): its keyed R1 (no ephemeral key) is refused unread by the
    // callee that wants a DH, saying so, and the same dial completes through the full
    // handshake; its next resumed open to that callee carries a DH.
    echo_ok(&keyed, b.node_id(), &payload).await;
    echo_ok(&keyed, b.node_id(), &payload).await;
    echo_ok(&keyed, b.node_id(), &payload).await;
    assert_eq!(hook.first_message_len(2), Some(32));
    assert_eq!(hook.first_message_len(3), Some(25 + 9 + 5 + 2 + 16));
    assert_eq!(hook.first_message_len(4), Some(25 + 32 + 9 + 5 + 2 + 16));
    // Each dial reached the application exactly once.
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 5);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_resumed_channel_carries_bytes_intact_both_ways_and_across_a_rekey() {
    // Keyed opens are the default: the second channel is one (its R1 has no ephemeral key).
    // Rekeys every 16 frames on both nodes, so a 4 MiB echo crosses many of them.
    let hook = Scripted::with(&[]);
    let net = hooked_net(hook.clone()).await;
    let mut limits = limits(false);
    limits.handshake.rekey_after = 16;
    let (a, b) = (
        node_with(&net, limits.clone()).await,
        Arc::new(node_with(&net, limits).await),
    );
    let _server = serve_echo(b.clone());
    echo_ok(&a, b.node_id(), b"full").await;
    let payload = pattern(4 << 20, 5);
    echo_ok(&a, b.node_id(), &payload).await;
    assert_eq!(hook.first_message_len(1), Some(25 + 9 + 5 + 2 + 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resumed_open_drops_only_the_callers_ticket_not_what_it_holds_as_callee() {
    // Session 0: B calls A (A now holds B's ticket as callee). Session 1: A calls B (full).
    // Session 2: A's resumed open to B, its answer (K2) flipped by the relay: A drops its
    // ticket for calling B, and keeps B's ticket and its counter record, which is what makes
    // a replacing open of B's a duplicate if an R1 of B's already took effect here (before
    // this fix, a relay could erase that record by breaking any one of A's opens to B).
    let hook = Scripted::with(&[(2, Act::Flip(Direction::TargetToCaller, 2 + 10))]);
    let (_net, a, b) = net_with(hook.clone()).await;
    let a = Arc::new(a);
    let _server_a = serve_echo(a.clone());
    let _server_b = serve_echo(b.clone());
    echo_ok(&b, a.node_id(), b"b calls a").await;
    echo_ok(&a, b.node_id(), b"a calls b").await;
    assert_eq!(a.resumption_secrets(), (1, 1));
    let r = a.dial(b.node_id(), "echo").await;
    assert!(
        matches!(
            r,
            Err(Error::Protocol(nullport_protocol::Error::Authentication))
        ),
        "{r:?}"
    );
    assert_eq!(hook.first_message_len(2), Some(25 + 9 + 5 + 2 + 16));
    assert_eq!(
        a.resumption_secrets(),
        (0, 1),
        "only the caller's ticket went"
    );
    // B's next call to A still resumes under the ticket A kept.
    echo_ok(&b, a.node_id(), b"b again").await;
    assert_eq!(hook.first_message_len(3), Some(25 + 9 + 5 + 2 + 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_bytes_ride_in_a_keyed_r1_but_never_in_an_r1_with_a_dh() {
    // A `connect` client's bytes (a `FirstBytes::Ready` source) go in a keyed R1, sealed as
    // the channel is. In an R1 with a DH they would lack the DH's protection, so they go
    // behind the answer, as before.
    let hook = Scripted::with(&[]);
    let net = hooked_net(hook.clone()).await;
    let (keyed, with_dh, b) = (
        node_with(&net, limits(false)).await,
        node_with(&net, limits(true)).await,
        Arc::new(node_with(&net, limits(true)).await),
    );
    let _server = serve_echo(b.clone());
    // With a DH: full, then resumed; R1 has no first bytes, the source is read once,
    // behind the answer.
    assert_eq!(dial_ready(&with_dh, b.node_id()).await, 1);
    assert_eq!(dial_ready(&with_dh, b.node_id()).await, 1);
    assert_eq!(hook.first_message_len(1), Some(25 + 32 + 9 + 5 + 2 + 16));
    // The keyed caller to a callee that wants a DH: refused once, then told to use one, so
    // its next R1 has a DH and no first bytes either.
    assert_eq!(dial_ready(&keyed, b.node_id()).await, 1);
    assert_eq!(dial_ready(&keyed, b.node_id()).await, 1);
    assert_eq!(hook.first_message_len(3), Some(25 + 9 + 5 + 2 + 16 + 5));
    assert_eq!(dial_ready(&keyed, b.node_id()).await, 1);
    assert_eq!(hook.first_message_len(4), Some(25 + 32 + 9 + 5 + 2 + 16));
}

/// Dials `target`'s echo with a `FirstBytes::Ready` source that gives "ready" whenever it is
/// read; checks the echo and returns how often the source was read.
async fn dial_ready(a: &nullport_node::Node, target: nullport_protocol::NodeId) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let calls = AtomicUsize::new(0);
    let ready = nullport_node::FirstBytes::Ready(Box::new(|buf: &mut [u8]| {
        calls.fetch_add(1, Ordering::SeqCst);
        buf[..5].copy_from_slice(b"ready");
        5
    }));
    let mut ch = a
        .dial_sending(target, "echo", Vec::new(), ready)
        .await
        .unwrap();
    let mut echoed = [0u8; 5];
    ch.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ready");
    calls.load(Ordering::SeqCst)
}
