//! A relay fleet as real processes on real hosts: three relay hosts (each a `nullport-relay
//! run --map --store etcd://...` and an etcd member: a three-member cluster) and two node
//! hosts that drop every new inbound connection, all network namespaces on one bridge
//! (198.18.100.0/24). The node hosts run 36 fleet nodes (`np-testnode fleet-nodes`), chosen
//! so that 20 are homed on the relay that is then killed with SIGKILL.
//!
//! Checked: every node's home is its rendezvous first choice; callers reach callees homed on
//! other relays; after `kill -9` of one relay (and of the etcd member on its host), each of
//! its nodes is homed on its next relay,
//! and reached there by a caller on another host, within a stated bound (p50 and max printed),
//! while a transfer between nodes of the two other relays runs across the loss intact and no
//! other node changes home; when the relay is back (same key, same address), its nodes go
//! home after the settle time and stay there. Run twice: with the fleet nodes' default link
//! timers (keep-alive 3 s, idle timeout 9 s, settle 5 s) and with short ones (500 ms, 2 s,
//! 2 s), whose figures these tests print. A third test stops the relay the planned way
//! (SIGTERM: a drain announced): its nodes move first, and every channel opened after the
//! announcement ends intact although the relay stops while it runs.
//!
//! Needs root, iproute2, nftables, etcd and the workspace's `nullport-relay` binary next to
//! `np-testnode` (`cargo build --workspace`). Under `CI=true` a missing prerequisite fails.

mod hosts;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hosts::{
    Fleet, HOMED, LOST, NODE_HOSTS, NODE_NS, RELAYS, TESTNODE, Timers, address, p50_max, unix_ms,
};
use nullport_tests::netns::{Namespaces, can_run, run};

impl Fleet {
    /// Callers look for each node `g` of `lost` (4 KiB from node `prober[g]`) in two ways
    /// at once, until each has reached it once, or `deadline`: one caller retrying (a new
    /// dial 100 ms after each failure, as a program retrying would), and fresh dials every
    /// 250 ms whatever the earlier ones are doing (when a new dial first gets through).
    fn probe(
        &mut self,
        lost: &[usize],
        prober: &HashMap<usize, usize>,
        deadline: Instant,
    ) -> Probes {
        let mut p = Probes::default();
        let mut due: Vec<(Instant, String, usize)> = Vec::new();
        for g in lost {
            due.push((Instant::now(), format!("retry{g}-0"), *g));
            due.push((Instant::now(), format!("fresh{g}-0"), *g));
        }
        let mut outstanding: Vec<(String, usize)> = Vec::new();
        let done = |p: &Probes| p.retrying.len() == lost.len() && p.fresh.len() == lost.len();
        while !done(&p) && Instant::now() < deadline {
            let now = Instant::now();
            for (_, tag, g) in due.iter().filter(|(at, _, _)| *at <= now) {
                self.send(tag, prober[g], *g, 4096, Duration::ZERO);
                outstanding.push((tag.clone(), *g));
            }
            due.retain(|(at, _, _)| *at > now);
            // Fresh dials go on every 250 ms while the node has not been reached by one.
            for g in lost.iter().filter(|g| !p.fresh.contains_key(g)) {
                let sent = p.fresh_sent.entry(*g).or_insert(1);
                if !due.iter().any(|(_, t, d)| d == g && t.starts_with("fresh")) {
                    due.push((
                        now + Duration::from_millis(250),
                        format!("fresh{g}-{sent}"),
                        *g,
                    ));
                    *sent += 1;
                }
            }
            self.pump(Duration::from_millis(10));
            outstanding.retain(|(tag, g)| {
                let Some((ok, _, at)) = self.answers.remove(tag) else {
                    return true;
                };
                let fresh = tag.starts_with("fresh");
                match (ok, fresh) {
                    (true, true) => {
                        p.fresh.entry(*g).or_insert(at);
                    }
                    (true, false) => {
                        p.retrying.insert(*g, at);
                    }
                    (false, true) => {}
                    (false, false) => {
                        let n = p.failed.entry(*g).or_default();
                        *n += 1;
                        let next = format!("retry{g}-{n}");
                        due.push((Instant::now() + Duration::from_millis(100), next, *g));
                    }
                }
                false
            });
        }
        p
    }
}

/// What [`Fleet::probe`] saw: for each node, when (unix ms) it was first reached.
#[derive(Default)]
struct Probes {
    /// By one caller retrying after each failure.
    retrying: HashMap<usize, u128>,
    /// By a fresh dial (one every 250 ms).
    fresh: HashMap<usize, u128>,
    /// Failed attempts of the retrying caller.
    failed: HashMap<usize, u32>,
    fresh_sent: HashMap<usize, u32>,
}

/// The bridge (namespace 0), the relay hosts and the node hosts, each with its address on
/// the bridge; node hosts drop every new inbound connection.
fn network(tag: &str) -> Result<Namespaces, String> {
    let mut names = vec![format!("np-fsw-{tag}")];
    names.extend((0..RELAYS).map(|r| format!("np-fr{r}-{tag}")));
    names.extend((0..NODE_HOSTS).map(|h| format!("np-fn{h}-{tag}")));
    let ns = Namespaces::create(names)?;
    let sw = ns.name(0).to_owned();
    run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
    for host in 1..ns.names.len() {
        let port = format!("p{host}");
        let (name, cidr) = (ns.name(host), format!("{}/24", address(host)));
        run(&[
            "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            name,
        ])?;
        run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
        run(&["ip", "-n", name, "addr", "add", &cidr, "dev", "eth0"])?;
        run(&["ip", "-n", name, "link", "set", "eth0", "up"])?;
    }
    for h in 0..NODE_HOSTS {
        ns.drop_new_inbound(NODE_NS + h)?;
    }
    Ok(ns)
}

/// The namespace tests of this file run one at a time even under `cargo test` (threads): the
/// figures mean something only on an otherwise quiet machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The fleet up, every node homed on its rendezvous first choice (checked); None (and the
/// test reported as not run) when namespaces or etcd cannot be had. Returns when the homes
/// settled (unix ms).
fn fleet_up(
    test: &str,
    tag: &str,
    timers: &Timers,
) -> Option<(Fleet, u128, std::sync::MutexGuard<'static, ()>)> {
    if !can_run(test) || !nullport_tests::skip::require(test, &["etcd", "etcdctl"]) {
        return None;
    }
    let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let relay_bin = Path::new(TESTNODE).parent().unwrap().join("nullport-relay");
    assert!(
        relay_bin.exists(),
        "build the workspace first (cargo build --workspace): no {}",
        relay_bin.display()
    );
    let tag = format!("{tag}{}", std::process::id() % 10_000);
    let ns = network(&tag).unwrap_or_else(|e| panic!("namespace setup: {e}"));
    // The node hosts' firewalls are live: a datagram from a relay host is dropped, counted.
    for h in 0..NODE_HOSTS {
        let before = ns.dropped_inbound(NODE_NS + h);
        let probe = format!("echo probe > /dev/udp/{}/9", address(NODE_NS + h));
        let _ = ns.exec(1, &["bash", "-c", &probe]);
        // (The first datagram to a host waits for ARP: look for a moment.)
        let started = Instant::now();
        while ns.dropped_inbound(NODE_NS + h) == before {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "node host {h} let a probe in"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut f = Fleet::start(ns, relay_bin, timers);
    f.wait(
        Duration::from_secs(30),
        "not every node homed on its first choice",
        |f| (0..f.nodes.len()).all(|g| f.home(g) == Some(f.nodes[g].order[0])),
    );
    let settled = unix_ms();
    let spread: Vec<usize> = (0..RELAYS)
        .map(|r| (0..f.nodes.len()).filter(|g| f.home(*g) == Some(r)).count())
        .collect();
    assert_eq!(spread, HOMED);
    Some((f, settled, serial))
}

/// A caller for each node of `lost`: a node of the other host homed on another relay, a
/// few lost nodes each, so that no caller goes over the relays' 50 dials a second.
fn callers(f: &Fleet, lost: &[usize]) -> HashMap<usize, usize> {
    lost.iter()
        .enumerate()
        .map(|(k, g)| {
            let other = (f.nodes[*g].host + 1) % NODE_HOSTS;
            let callers: Vec<usize> = (0..f.nodes.len())
                .filter(|c| f.nodes[*c].host == other && f.nodes[*c].order[0] != LOST)
                .collect();
            (*g, callers[k % callers.len()])
        })
        .collect()
}

/// The whole scenario (see the module doc), with `timers`.
fn kill_9_scenario(test: &str, tag: &str, timers: Timers) {
    // Every node homed on its rendezvous first choice.
    let Some((mut f, settled, _serial)) = fleet_up(test, tag, &timers) else {
        return;
    };

    // A caller homed on relay 0 reaches callees homed on relays 1 and 2, on the other host
    // (1 MiB each, SHA-256 checked by the sink).
    let caller = f.homed(0, 0, &[]);
    for r in [1, 2] {
        let tag = format!("reach{r}");
        f.send(&tag, caller, f.homed(r, 1, &[]), 1 << 20, Duration::ZERO);
        let said = f.sent(&tag, Duration::from_secs(30));
        eprintln!("relay 0 -> a callee homed on relay {r}: 1 MiB in {said} (bytes, ms)");
    }

    // The caller's extra links (to relays 1 and 2) close once idle, when the test sets that
    // time short (the default is a minute).
    if let Some(extra) = timers.extra_idle {
        let started = Instant::now();
        while f.links(caller) != [(0, true)] {
            assert!(
                started.elapsed() < extra + Duration::from_secs(3),
                "extra links not closed when idle: {:?}",
                f.links(caller)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "the caller's extra links closed {:?} after its last transfer",
            started.elapsed()
        );
    }

    // A transfer between nodes homed on relays 0 and 2, paced to run across the loss and the
    // moves that follow it.
    let far = f.homed(2, 1, &[]);
    let pace = timers.idle + Duration::from_secs(6);
    f.send("across", caller, far, 16 << 20, pace);
    f.idle(Duration::from_millis(500));

    // Relay host 1 is lost: kill -9 of its relay and its etcd member (the two others keep
    // quorum). Each of the relay's nodes must be homed on its next relay, and reached there
    // by a caller on the other node host (homed on another relay), within `bound`: a node
    // notices the silence after its idle timeout, counted from its first keep-alive that goes
    // unanswered (so up to a keep-alive interval later), then links to its next relay.
    let bound = timers.idle + timers.keep_alive + Duration::from_secs(2);
    let killed = f.lose_host(LOST);
    let lost: Vec<usize> = (0..f.nodes.len())
        .filter(|g| f.nodes[*g].order[0] == LOST)
        .collect();
    let prober = callers(&f, &lost);
    let probes = f.probe(
        &lost,
        &prober,
        Instant::now() + bound + Duration::from_secs(10),
    );
    f.idle(Duration::from_millis(100));
    let mut figures: [Vec<u128>; 4] = Default::default();
    for g in &lost {
        let next = f.nodes[*g].order[1];
        let moved = f.homed_at(*g, next, killed).unwrap_or_else(|| {
            panic!(
                "node {g} not homed on its next relay {next}: {:?}\n{}",
                f.homes[*g],
                f.logs()
            )
        }) - killed;
        let reached = |by: &HashMap<usize, u128>, how: &str| {
            by.get(g).unwrap_or_else(|| {
                panic!("node {g} not reached after the loss {how}\n{}", f.logs())
            }) - killed
        };
        let fresh = reached(&probes.fresh, "by a new dial");
        let retrying = reached(&probes.retrying, "by a caller retrying");
        for (i, ms) in [moved, fresh, moved.max(fresh), retrying]
            .into_iter()
            .enumerate()
        {
            figures[i].push(ms);
        }
    }
    let [moved, fresh, failover, retrying] = figures.map(|mut v| p50_max(&mut v));
    eprintln!(
        "kill -9 of a relay (keep-alive {:?}, idle timeout {:?}), {} nodes: homed on the next \
         relay p50 {} ms max {} ms; reached there by a new dial p50 {} ms max {} ms; failover \
         (homed and reached) p50 {} ms max {} ms; one caller retrying reached them p50 {} ms \
         max {} ms",
        timers.keep_alive,
        timers.idle,
        lost.len(),
        moved.0,
        moved.1,
        fresh.0,
        fresh.1,
        failover.0,
        failover.1,
        retrying.0,
        retrying.1
    );
    assert!(
        failover.1 <= bound.as_millis(),
        "failover took {} ms, over the bound {bound:?}",
        failover.1
    );
    // A caller retrying gets through as soon as a new dial would: a dial does not wait on a
    // relay it found down moments ago (it would otherwise wait the connect timeout, 5 s, for
    // a new link to the lost relay after the next relay said "not here"), so its next
    // attempt, 100 ms later, finds the moved node.
    let retry_slack = Duration::from_secs(1);
    assert!(
        retrying.1 <= (bound + retry_slack).as_millis(),
        "a retrying caller reached the moved nodes only after {} ms (bound {:?} + {retry_slack:?})",
        retrying.1,
        bound
    );
    // The transfer across the loss ended intact (the sink's SHA-256 matched).
    let said = f.sent("across", pace + Duration::from_secs(30));
    eprintln!("16 MiB across the loss, relay 0 -> relay 2: intact ({said})");

    // The host returns: its etcd member rejoins, the relay starts again (same key, same
    // address, same store): its nodes go home after the settle time.
    let back = unix_ms();
    f.start_etcd(LOST);
    f.start_relay(LOST);
    f.wait(
        timers.settle + Duration::from_secs(10),
        "not every node back home",
        |f| lost.iter().all(|g| f.home(*g) == Some(LOST)),
    );
    let mut returned: Vec<u128> = lost
        .iter()
        .map(|g| f.homed_at(*g, LOST, back).unwrap() - back)
        .collect();
    let returned = p50_max(&mut returned);
    eprintln!(
        "relay back: its nodes home again after p50 {} ms max {} ms (settle {:?})",
        returned.0, returned.1, timers.settle
    );
    assert!(
        returned.0 >= timers.settle.as_millis(),
        "home again before the settle time"
    );
    // And they stay: for three seconds no node changes home.
    let quiet = unix_ms();
    f.idle(Duration::from_secs(3));
    let mut detours = Vec::new();
    for g in 0..f.nodes.len() {
        let n = &f.nodes[g];
        let changes: Vec<&(u128, Option<usize>)> =
            f.homes[g].iter().filter(|(ms, _)| *ms > settled).collect();
        if n.order[0] != LOST {
            assert!(
                changes.is_empty(),
                "node {g} (home {}) changed home: {changes:?}",
                n.order[0]
            );
            continue;
        }
        // Away: it lands on its next relay and stays there until its home is back. Right
        // after the loss it may pass through a later relay whose link came up first (the
        // node side's hysteresis exception for a failover): counted and reported.
        let next = n.order[1];
        let landed = f.homed_at(g, next, killed).unwrap();
        let away: Vec<_> = changes.iter().filter(|(ms, _)| *ms < back).collect();
        assert!(
            away.iter().all(|(ms, r)| *ms <= landed || *r == Some(next)),
            "node {g} (order {:?}) left its next relay while its home was down: {changes:?}",
            n.order
        );
        if away.iter().any(|(_, r)| r.is_some_and(|r| r != next)) {
            detours.push(changes.clone());
        }
        assert!(
            changes.iter().all(|(ms, r)| *ms < back || *r == Some(LOST)),
            "node {g} flapped after its home returned: {changes:?}"
        );
        assert!(
            changes.iter().filter(|(ms, _)| *ms >= back).count() == 1,
            "node {g} moved more than once after the relay returned: {changes:?}"
        );
        assert!(
            changes.iter().all(|(ms, _)| *ms <= quiet),
            "node {g} moved after settling: {changes:?}"
        );
    }
    eprintln!(
        "{} of {} nodes passed through a later relay for a moment before their next one: \
         {detours:?}",
        detours.len(),
        lost.len()
    );
}

#[test]
fn fleet_netns_kill_9_of_a_relay_moves_its_nodes_within_the_idle_timeout_and_back() {
    // The fleet defaults: keep-alive 3 s, idle 9 s, settle 5 s (`NodeConfig::fleet`).
    kill_9_scenario(
        "fleet_netns_kill_9_of_a_relay_moves_its_nodes_within_the_idle_timeout_and_back",
        "k",
        Timers {
            flags: Vec::new(),
            extra_idle: None,
            keep_alive: Duration::from_secs(3),
            idle: Duration::from_secs(9),
            settle: Duration::from_secs(5),
        },
    );
}

#[test]
fn fleet_netns_kill_9_with_short_link_timers_fails_over_in_seconds() {
    // Keep-alive 500 ms, idle 2 s, settle 2 s: what an operator may choose for faster failover
    // (and extra links closed after 1 s idle instead of a minute).
    #[rustfmt::skip]
    let flags = [
        "--keep-alive-ms", "500", "--idle-ms", "2000", "--settle-ms", "2000",
        "--extra-idle-ms", "1000",
    ];
    kill_9_scenario(
        "fleet_netns_kill_9_with_short_link_timers_fails_over_in_seconds",
        "s",
        Timers {
            flags: flags.iter().map(|s| (*s).to_owned()).collect(),
            extra_idle: Some(Duration::from_secs(1)),
            keep_alive: Duration::from_millis(500),
            idle: Duration::from_secs(2),
            settle: Duration::from_secs(2),
        },
    );
}

impl Fleet {
    /// Stops relay `r` the planned way (SIGTERM: it announces a drain to its nodes, serves
    /// for `--drain-secs`, 5 by default, then stops); returns when (unix ms).
    fn stop_relay(&mut self, r: usize) -> u128 {
        let id = self.relays[r].unwrap();
        let pid = self.ns.child(id).id().to_string();
        let at = unix_ms();
        run(&["kill", "-TERM", &pid]).unwrap();
        at
    }

    /// Waits until relay `r` has logged `what`.
    fn relay_logged(&mut self, r: usize, what: &str, within: Duration) {
        let path = self.dir.path().join(format!("relay{r}.log"));
        self.wait(within, &format!("relay {r} did not log {what:?}"), |_| {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains(what))
        });
    }

    /// Waits until relay `r`'s process has ended.
    fn relay_exited(&mut self, r: usize, within: Duration) {
        let id = self.relays[r].take().unwrap();
        let started = Instant::now();
        while self.ns.child(id).try_wait().unwrap().is_none() {
            assert!(started.elapsed() < within, "relay {r} still runs");
            self.pump(Duration::from_millis(20));
        }
        self.ns.kill(id);
    }
}

#[test]
fn fleet_netns_a_relay_stopped_with_sigterm_sees_its_nodes_move_first_and_loses_no_new_channel() {
    let test = "fleet_netns_a_relay_stopped_with_sigterm_sees_its_nodes_move_first_and_loses_no_new_channel";
    let timers = Timers {
        flags: Vec::new(),
        extra_idle: None,
        keep_alive: Duration::from_secs(3),
        idle: Duration::from_secs(9),
        settle: Duration::from_secs(5),
    };
    let Some((mut f, settled, _serial)) = fleet_up(test, "d", &timers) else {
        return;
    };
    let lost: Vec<usize> = (0..f.nodes.len())
        .filter(|g| f.nodes[*g].order[0] == LOST)
        .collect();
    let caller = callers(&f, &lost);
    let stopped = f.stop_relay(LOST);
    f.relay_logged(LOST, "draining: told", Duration::from_secs(5));
    // A channel to each of the relay's nodes, opened after the announcement and spread over
    // 8 s, past the end of the 5 s drain: each must end intact (the sink's SHA-256). A dial
    // may find its callee nowhere for a moment while it moves ("offline"): tried again.
    let pace = Duration::from_secs(8);
    let mut attempt: HashMap<usize, u32> = lost.iter().map(|g| (*g, 0)).collect();
    for g in &lost {
        f.send(&format!("after{g}-0"), caller[g], *g, 2 << 20, pace);
    }
    f.wait(
        Duration::from_secs(3),
        "the relay's nodes did not move",
        |f| {
            lost.iter()
                .all(|g| f.home(*g) == Some(f.nodes[*g].order[1]))
        },
    );
    let mut moved: Vec<u128> = lost
        .iter()
        .map(|g| f.homed_at(*g, f.nodes[*g].order[1], stopped).unwrap() - stopped)
        .collect();
    let moved = p50_max(&mut moved);
    f.relay_exited(LOST, Duration::from_secs(10));
    let exited = unix_ms() - stopped;
    let mut done = 0;
    let started = Instant::now();
    while done < lost.len() {
        assert!(
            started.elapsed() < pace + Duration::from_secs(30),
            "channels not done"
        );
        f.pump(Duration::from_millis(20));
        for g in &lost {
            let tag = format!("after{g}-{}", attempt[g]);
            match f.answers.remove(&tag) {
                Some((true, _, _)) => done += 1,
                Some((false, why, _)) => {
                    assert!(
                        why.contains("offline"),
                        "a channel opened after the announcement failed: {why}"
                    );
                    let n = attempt.get_mut(g).unwrap();
                    *n += 1;
                    f.send(&format!("after{g}-{n}"), caller[g], *g, 2 << 20, pace);
                }
                None => {}
            }
        }
    }
    let retried = attempt.values().filter(|n| **n > 0).count();
    eprintln!(
        "SIGTERM (drain 5 s): {} nodes homed on their next relay after p50 {} ms max {} ms; the \
         relay stopped {exited} ms after the signal; {} channels opened after it ended \
         intact ({retried} dials tried again)",
        lost.len(),
        moved.0,
        moved.1,
        lost.len()
    );
    for g in (0..f.nodes.len()).filter(|g| f.nodes[*g].order[0] != LOST) {
        assert!(
            f.homes[g].iter().all(|(ms, _)| *ms <= settled),
            "node {g} changed home: {:?}",
            f.homes[g]
        );
    }
}
