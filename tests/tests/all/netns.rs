//! Zero inbound ports, proven: relay, node A and node B in three network namespaces, with an
//! nftables policy in A's and B's namespaces that drops every new inbound connection or
//! datagram. A and B still exchange data through the relay, and hold no listening socket.
//!
//! Needs root, `ip` (iproute2), `nft` (nftables) and `ss`. Under `CI=true` a missing
//! prerequisite fails the test; elsewhere it is skipped with a loud message.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use nullport_tests::netns::{Namespaces, can_run, run};

const TESTNODE: &str = env!("CARGO_BIN_EXE_np-testnode");

fn first_line(reader: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    line.trim().to_owned()
}

fn setup(tag: &str) -> Result<Namespaces, String> {
    let names = [
        format!("np-r-{tag}"),
        format!("np-a-{tag}"),
        format!("np-b-{tag}"),
    ];
    let ns = Namespaces::create(names.to_vec())?;
    // relay <-> A on 198.18.1.0/24, relay <-> B on 198.18.2.0/24 (RFC 2544 benchmark range).
    for (i, side) in [(1, "a"), (2, "b")] {
        let (r_if, n_if) = (format!("r{side}{tag}"), format!("{side}r{tag}"));
        let (r_if, n_if) = (&r_if[..r_if.len().min(15)], &n_if[..n_if.len().min(15)]);
        run(&[
            "ip", "link", "add", r_if, "netns", &names[0], "type", "veth", "peer", "name", n_if,
            "netns", &names[i],
        ])?;
        run(&[
            "ip",
            "-n",
            &names[0],
            "addr",
            "add",
            &format!("198.18.{i}.1/24"),
            "dev",
            r_if,
        ])?;
        run(&[
            "ip",
            "-n",
            &names[i],
            "addr",
            "add",
            &format!("198.18.{i}.2/24"),
            "dev",
            n_if,
        ])?;
        run(&["ip", "-n", &names[0], "link", "set", r_if, "up"])?;
        run(&["ip", "-n", &names[i], "link", "set", n_if, "up"])?;
        // Node hosts: drop every new inbound connection or datagram.
        ns.drop_new_inbound(i)?;
    }
    Ok(ns)
}

#[test]
fn zero_inbound_ports_nodes_behind_drop_all_firewalls_still_talk() {
    if !can_run("zero_inbound_ports test") {
        return;
    }
    let tag = format!("{}", std::process::id() % 100_000);
    let mut ns = setup(&tag).unwrap_or_else(|e| panic!("namespace setup: {e}"));

    let (relay_id, b_id) = relay_and_sink(&mut ns);
    let (relay_id, b_id) = (relay_id.as_str(), b_id.as_str());

    // The firewall is live: a probe datagram from the relay host to B is dropped and counted.
    let before = ns.dropped_inbound(2);
    let _ = ns.exec(0, &["bash", "-c", "echo probe > /dev/udp/198.18.2.2/9"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        ns.dropped_inbound(2) > before,
        "nftables drop rule did not see the probe"
    );

    let sent = ns
        .exec(
            1,
            &[
                TESTNODE,
                "send",
                "--relay",
                &format!("{relay_id}@198.18.1.1:7443"),
                b_id,
                "8388608",
            ],
        )
        .unwrap_or_else(|e| panic!("sender: {e}"));
    assert!(sent.starts_with("ok 8388608 "), "sender said {sent:?}");

    // No listening TCP socket on a non-loopback address in either node's namespace.
    for i in [1, 2] {
        let listening = ns.exec(i, &["ss", "-Hltn"]).unwrap();
        let exposed: Vec<&str> = listening
            .lines()
            .filter(|l| !l.contains("127.0.0.1:") && !l.contains("[::1]:"))
            .collect();
        assert!(
            exposed.is_empty(),
            "node namespace {i} listens: {exposed:?}"
        );
    }
}

/// Runs `args` in namespace `ns` under `timeout`, returning (success, stdout).
fn exec_timed(ns: &Namespaces, i: usize, secs: u64, args: &[&str]) -> (bool, String) {
    let secs = secs.to_string();
    let mut full = vec![
        "ip",
        "netns",
        "exec",
        ns.names[i].as_str(),
        "timeout",
        &secs,
    ];
    full.extend_from_slice(args);
    match Command::new(full[0]).args(&full[1..]).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        ),
        Err(e) => (false, format!("spawn: {e}")),
    }
}

/// Relay in namespace 0 on :7443, a sink in B; returns (relay id, B's id).
fn relay_and_sink(ns: &mut Namespaces) -> (String, String) {
    let (mut relay_out, _) = ns
        .spawn(0, &[TESTNODE, "relay", "--listen", "0.0.0.0:7443"])
        .unwrap();
    let relay_line = first_line(&mut relay_out);
    let relay_id = relay_line
        .strip_prefix("relay ")
        .unwrap_or_else(|| panic!("relay said {relay_line:?}"))
        .to_owned();
    let (mut b_out, _) = ns
        .spawn(
            2,
            &[
                TESTNODE,
                "sink",
                "--relay",
                &format!("{relay_id}@198.18.2.1:7443"),
            ],
        )
        .unwrap();
    let b_line = first_line(&mut b_out);
    let b_id = b_line
        .strip_prefix("node ")
        .unwrap_or_else(|| panic!("node B said {b_line:?}"))
        .to_owned();
    (relay_id, b_id)
}

/// Drops `percent`% of UDP datagrams at random in namespace `i`, both ways (0: remove).
/// The kernel here has no `netem` qdisc; nftables' `numgen random` drops in the kernel too.
fn set_loss(ns: &Namespaces, i: usize, percent: u32) {
    let _ = ns.exec(i, &["nft", "delete table inet nullport_loss"]);
    if percent == 0 {
        return;
    }
    ns.exec(i, &["nft", "add table inet nullport_loss"])
        .unwrap();
    let rule = if percent >= 100 {
        "meta l4proto udp counter drop".to_owned()
    } else {
        format!("meta l4proto udp numgen random mod 100 < {percent} counter drop")
    };
    for hook in ["input", "output"] {
        ns.exec(
            i,
            &[
                "nft",
                &format!(
                    "add chain inet nullport_loss {hook} {{ type filter hook {hook} priority -10; policy accept; }}"
                ),
            ],
        )
        .unwrap();
        ns.exec(
            i,
            &["nft", &format!("add rule inet nullport_loss {hook} {rule}")],
        )
        .unwrap();
    }
}

fn lost_packets(ns: &Namespaces, i: usize) -> u64 {
    let text = ns
        .exec(i, &["nft", "list table inet nullport_loss"])
        .unwrap_or_default();
    text.split("packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Sends `bytes` from A to the sink in B through `relay`; (success, what the sender said).
fn send(ns: &Namespaces, relay: &str, b_id: &str, bytes: usize, secs: u64) -> (bool, String) {
    exec_timed(
        ns,
        1,
        secs,
        &[TESTNODE, "send", "--relay", relay, b_id, &bytes.to_string()],
    )
}

#[test]
fn packet_loss_delivers_the_right_bytes_or_fails_clearly() {
    if !can_run("packet_loss test") {
        return;
    }
    let tag = format!("l{}", std::process::id() % 100_000);
    let mut ns = setup(&tag).unwrap_or_else(|e| panic!("namespace setup: {e}"));
    let (relay_id, b_id) = relay_and_sink(&mut ns);
    let relay = format!("{relay_id}@198.18.1.1:7443");
    for (percent, bytes) in [(1, 8 << 20), (5, 4 << 20), (20, 1 << 20)] {
        // Loss on both node hosts, both directions: a datagram crosses two lossy hops.
        set_loss(&ns, 1, percent);
        set_loss(&ns, 2, percent);
        let (ok, said) = send(&ns, &relay, &b_id, bytes, 120);
        let lost = lost_packets(&ns, 1) + lost_packets(&ns, 2);
        eprintln!("loss {percent}%: {said} ({lost} datagrams dropped)");
        assert!(lost > 0, "loss {percent}%: no datagram was dropped");
        // The sender checks the sink's SHA-256 of what arrived: "ok" means intact.
        assert!(
            !said.contains("digest mismatch"),
            "wrong bytes delivered: {said}"
        );
        if percent <= 5 {
            assert!(
                ok && said.starts_with(&format!("ok {bytes} ")),
                "{percent}%: {said}"
            );
        } else {
            assert!(
                (ok && said.starts_with(&format!("ok {bytes} "))) || said.starts_with("error "),
                "{percent}%: neither intact delivery nor a clear error: {said:?}"
            );
        }
    }
    // Healed: the next transfer works without restarting anything.
    set_loss(&ns, 1, 0);
    set_loss(&ns, 2, 0);
    let (ok, said) = send(&ns, &relay, &b_id, 1 << 20, 60);
    assert!(
        ok && said.starts_with("ok 1048576 "),
        "after healing: {said}"
    );
}

#[test]
fn delay_and_reordering_deliver_the_right_bytes() {
    if !can_run("delay test") {
        return;
    }
    let tag = format!("d{}", std::process::id() % 100_000);
    let mut ns = setup(&tag).unwrap_or_else(|e| panic!("namespace setup: {e}"));
    let (relay_id, b_id) = relay_and_sink(&mut ns);
    // A reaches the relay only through a 100 ms (+0..20 ms, so reordered) link, each way.
    let (mut lag_out, _) = ns
        .spawn(
            0,
            &[
                TESTNODE,
                "lag",
                "--listen",
                "198.18.1.1:7444",
                "--to",
                "127.0.0.1:7443",
                "--delay-ms",
                "100",
                "--jitter-ms",
                "20",
            ],
        )
        .unwrap();
    let lag_line = first_line(&mut lag_out);
    assert!(lag_line.starts_with("lag "), "lag said {lag_line:?}");
    let relay = format!("{relay_id}@198.18.1.1:7444");
    // Heavy reordering makes QUIC declare spurious losses and shrink its window, so this is
    // slow (about 60 KB/s); the point is that the bytes arrive intact.
    let (ok, said) = send(&ns, &relay, &b_id, 1 << 20, 120);
    eprintln!("100 ms + 0..20 ms each way: {said}");
    assert!(ok && said.starts_with("ok 1048576 "), "{said}");
    // The delay was real: dial + 1 MiB over a >= 200 ms round trip takes several RTTs.
    let secs: f64 = said
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(secs >= 0.6, "1 MiB over a 200 ms RTT took only {secs} s");
}

#[test]
fn partition_mid_handshake_fails_clearly_and_heals() {
    if !can_run("partition test") {
        return;
    }
    let tag = format!("p{}", std::process::id() % 100_000);
    let mut ns = setup(&tag).unwrap_or_else(|e| panic!("namespace setup: {e}"));
    let (relay_id, b_id) = relay_and_sink(&mut ns);
    let relay = format!("{relay_id}@198.18.1.1:7443");
    // B's host goes dark after B is online: the relay still thinks B is there, so A's dial
    // is forwarded and its handshake must hit its deadline rather than hang.
    set_loss(&ns, 2, 100);
    let (ok, said) = send(&ns, &relay, &b_id, 1 << 20, 60);
    assert!(
        !ok && said.starts_with("error "),
        "dial into a partition: {said:?}"
    );
    assert!(
        said.contains("timed out") || said.contains("offline"),
        "not a clear error: {said}"
    );
    // Heal before B's idle timeout: B's link survives and the next dial works.
    set_loss(&ns, 2, 0);
    let (ok, said) = send(&ns, &relay, &b_id, 1 << 20, 60);
    assert!(
        ok && said.starts_with("ok 1048576 "),
        "after healing: {said}"
    );
}
