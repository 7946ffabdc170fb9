//! The hosts of the fleet test: the bridge and the namespaces, etcd members, relays started
//! and killed with the relay's own CLI, and the node hosts (`np-testnode fleet-nodes`) with
//! what they say on stdout.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nullport_keyring::relay_map::{RelayEntry, rendezvous_order};
use nullport_protocol::NodeId;
use nullport_tests::netns::{Namespaces, run, seeded_identity};

pub(super) const TESTNODE: &str = env!("CARGO_BIN_EXE_np-testnode");
pub(super) const RELAYS: usize = 3;
pub(super) const NODE_HOSTS: usize = 2;
/// The relay killed.
pub(super) const LOST: usize = 1;
/// Nodes homed on each relay (the lost one holds at least 20: the failover sample).
pub(super) const HOMED: [usize; RELAYS] = [8, 20, 8];
/// Namespace 0 holds the bridge; relay `r` is namespace `1 + r`, node host `h` is `1 + 3 + h`.
pub(super) const RELAY_NS: usize = 1;
pub(super) const NODE_NS: usize = RELAY_NS + RELAYS;

/// The fleet's timers, as the nodes run them.
pub(super) struct Timers {
    /// `np-testnode` flags (empty: the fleet defaults of `NodeConfig::fleet`).
    pub(super) flags: Vec<String>,
    /// How long an unused extra link stays open (None: the default, a minute).
    pub(super) extra_idle: Option<Duration>,
    /// The keep-alive interval towards relays.
    pub(super) keep_alive: Duration,
    /// Silence after which a node drops its link to a relay.
    pub(super) idle: Duration,
    /// How long a returning home must stay linked before the node goes back.
    pub(super) settle: Duration,
}

pub(super) fn address(ns: usize) -> String {
    if ns < NODE_NS {
        format!("198.18.100.{ns}")
    } else {
        format!("198.18.100.{}", 11 + ns - NODE_NS)
    }
}

pub(super) fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One line of a node host's stdout, when the test read it.
struct Event {
    host: usize,
    line: String,
    at: u128,
}

/// A planned node: its seed, its id, its relays in rendezvous order, where it runs.
pub(super) struct Planned {
    pub(super) seed: u64,
    pub(super) id: NodeId,
    pub(super) order: Vec<usize>,
    pub(super) host: usize,
    pub(super) local: usize,
}

/// The hosts, the processes, and what the node hosts said.
pub(super) struct Fleet {
    pub(super) ns: Namespaces,
    pub(super) dir: tempfile::TempDir,
    relay_bin: PathBuf,
    relay_ids: Vec<NodeId>,
    pub(super) relays: Vec<Option<usize>>,
    /// Questions asked (to tag them).
    asked: u64,
    etcd: Vec<Option<usize>>,
    stdins: Vec<ChildStdin>,
    pub(super) nodes: Vec<Planned>,
    events: mpsc::Receiver<Event>,
    /// Every home change of each node: (unix ms, relay index or None).
    pub(super) homes: Vec<Vec<(u128, Option<usize>)>>,
    /// Answers to commands by tag: (ok, the rest of the line, unix ms).
    pub(super) answers: HashMap<String, (bool, String, u128)>,
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Fleet {
    /// The fleet on `ns` (made by [`network`]): keys, map, etcd, relays and node hosts
    /// started, with `timers` on the nodes.
    pub(super) fn start(ns: Namespaces, relay_bin: PathBuf, timers: &Timers) -> Fleet {
        let (events, received) = mpsc::channel();
        let mut f = Fleet {
            ns,
            dir: tempfile::tempdir().unwrap(),
            relay_bin,
            relay_ids: Vec::new(),
            relays: vec![None; RELAYS],
            asked: 0,
            etcd: vec![None; RELAYS],
            stdins: Vec::new(),
            nodes: Vec::new(),
            events: received,
            homes: Vec::new(),
            answers: HashMap::new(),
        };
        f.keys_and_map();
        f.plan();
        for r in 0..RELAYS {
            f.start_etcd(r);
        }
        f.wait_etcd(0);
        for r in 0..RELAYS {
            f.start_relay(r);
        }
        f.start_nodes(timers, events);
        f
    }

    /// Starts `args` on host `ns`, killed if the test dies without cleaning up (a timeout's
    /// SIGKILL): `setpriv --pdeathsig KILL`, where util-linux has it.
    fn spawn(
        &mut self,
        ns: usize,
        args: &[&str],
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<usize, String> {
        let mut full = Vec::new();
        if nullport_tests::skip::have("setpriv") {
            full.extend(["setpriv", "--pdeathsig", "KILL", "--"]);
        }
        full.extend_from_slice(args);
        self.ns.spawn_with(ns, &full, stdin, stdout, stderr)
    }

    fn relay_bin(&self) -> &str {
        self.relay_bin.to_str().unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// The last lines of every log, for a failure message.
    pub(super) fn logs(&self) -> String {
        let mut out = String::new();
        for r in 0..RELAYS {
            out += &format!(
                "--- relay {r}\n{}\n",
                tail(&self.dir.path().join(format!("relay{r}.log")))
            );
        }
        for h in 0..NODE_HOSTS {
            out += &format!(
                "--- node host {h}\n{}\n",
                tail(&self.dir.path().join(format!("nodes{h}.log")))
            );
        }
        out
    }

    /// Starts etcd member `r` on relay host `r` (again, after [`Fleet::lose_host`], on its
    /// data directory: the cluster flags are then ignored).
    pub(super) fn start_etcd(&mut self, r: usize) {
        let cluster: Vec<String> = (0..RELAYS)
            .map(|r| format!("m{r}=http://{}:2380", address(RELAY_NS + r)))
            .collect();
        let cluster = cluster.join(",");
        let ip = address(RELAY_NS + r);
        let (client, peer) = (format!("http://{ip}:2379"), format!("http://{ip}:2380"));
        let log_path = self.dir.path().join(format!("etcd{r}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap();
        let (name, data) = (format!("m{r}"), self.path(&format!("etcd{r}")));
        #[rustfmt::skip]
        let args = [
            "etcd", "--name", &name, "--data-dir", &data,
            "--listen-client-urls", &client, "--advertise-client-urls", &client,
            "--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer,
            "--initial-cluster", &cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "nullport-fleet-netns",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-level", "warn",
        ];
        let (out, err) = (log.try_clone().unwrap(), log);
        let id = self
            .spawn(RELAY_NS + r, &args, Stdio::null(), out.into(), err.into())
            .unwrap();
        self.etcd[r] = Some(id);
    }

    /// Waits until the etcd cluster takes a write (it has quorum), asking from relay host `r`.
    pub(super) fn wait_etcd(&self, r: usize) {
        let endpoints = self.store().replace("etcd://", "");
        let started = Instant::now();
        #[rustfmt::skip]
        let put = [
            "etcdctl", "--endpoints", &endpoints, "--command-timeout=1s",
            "put", "/nullport-test/ready", "1",
        ];
        while self.ns.exec(RELAY_NS + r, &put).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd cluster not ready: {}",
                tail(&self.dir.path().join("etcd0.log"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn store(&self) -> String {
        let members: Vec<String> = (0..RELAYS)
            .map(|r| format!("{}:2379", address(RELAY_NS + r)))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// Makes the keys, the allowlist and the map (with the relay's own CLI).
    fn keys_and_map(&mut self) {
        let mut relay_args = Vec::new();
        for r in 0..RELAYS {
            let key = self.path(&format!("relay{r}.key"));
            let ip = address(RELAY_NS + r);
            let out = run(&[
                self.relay_bin(),
                "init",
                "--key",
                &key,
                "--insecure-plaintext-key",
                "--public",
                &ip,
            ])
            .unwrap();
            let id = out.trim().split('@').next().unwrap().parse().unwrap();
            self.relay_ids.push(id);
            relay_args.push(format!("{id}@{ip}:7443"));
        }
        let admin = self.path("admin.key");
        run(&[
            self.relay_bin(),
            "init",
            "--key",
            &admin,
            "--insecure-plaintext-key",
        ])
        .unwrap();
        let mut sign = vec![
            self.relay_bin(),
            "map",
            "sign",
            "--admin-key",
            &admin,
            "--version",
            "1",
        ];
        for r in &relay_args {
            sign.extend(["--relay", r.as_str()]);
        }
        let map = self.path("relay-map.json");
        sign.extend(["--out", &map]);
        run(&sign).unwrap();
    }

    /// Picks seeds until each relay has its number of nodes homed on it (`HOMED`), spread
    /// over the node hosts, and writes them to the allowlist.
    fn plan(&mut self) {
        let entries: Vec<RelayEntry> = self
            .relay_ids
            .iter()
            .map(|id| RelayEntry {
                node_id: *id,
                addrs: vec![],
                region: None,
            })
            .collect();
        let mut wanted = HOMED;
        let mut seed = 0;
        let mut per_host = [0; NODE_HOSTS];
        while wanted.iter().any(|w| *w > 0) {
            seed += 1;
            let id = seeded_identity(seed).node_id();
            let order: Vec<usize> = rendezvous_order(&id, &entries)
                .iter()
                .map(|e| self.relay_ids.iter().position(|r| *r == e.node_id).unwrap())
                .collect();
            if wanted[order[0]] == 0 {
                continue;
            }
            wanted[order[0]] -= 1;
            let host = self.nodes.len() % NODE_HOSTS;
            self.nodes.push(Planned {
                seed,
                id,
                order,
                host,
                local: per_host[host],
            });
            per_host[host] += 1;
            self.homes.push(Vec::new());
        }
        let allow: String = self.nodes.iter().map(|n| format!("{}\n", n.id)).collect();
        std::fs::write(self.path("allow"), allow).unwrap();
    }

    /// Starts relay `r` (again: same key, address, map and store) and waits until its map is
    /// in force.
    pub(super) fn start_relay(&mut self, r: usize) {
        let log_path = self.dir.path().join(format!("relay{r}.log"));
        let before = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("in force")
            .count();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let (key, state) = (
            self.path(&format!("relay{r}.key")),
            self.path(&format!("state{r}")),
        );
        let (allow, map, store) = (
            self.path("allow"),
            self.path("relay-map.json"),
            self.store(),
        );
        let bin = self.relay_bin().to_owned();
        #[rustfmt::skip]
        let args = [
            bin.as_str(), "run", "--key", &key, "--listen", "0.0.0.0:7443", "--allow", &allow,
            "--map", &map, "--store", &store, "--state-dir", &state,
        ];
        let id = self
            .spawn(
                RELAY_NS + r,
                &args,
                Stdio::null(),
                Stdio::null(),
                log.into(),
            )
            .unwrap();
        self.relays[r] = Some(id);
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.matches("in force").count() > before {
                return;
            }
            let exited = self.ns.child(id).try_wait().unwrap();
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(20),
                "relay {r} did not start ({exited:?}; a relay built without the etcd feature \
                 refuses --store: build the workspace): {}",
                tail(&log_path)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Relay host `r` is lost: its relay and its etcd member are killed with SIGKILL at
    /// once; returns when (unix ms).
    pub(super) fn lose_host(&mut self, r: usize) -> u128 {
        let (relay, etcd) = (self.relays[r].take().unwrap(), self.etcd[r].take().unwrap());
        let at = unix_ms();
        self.ns.kill(relay);
        self.ns.kill(etcd);
        at
    }

    /// Starts the node hosts: host `h` bootstraps through relay `h`.
    fn start_nodes(&mut self, timers: &Timers, events: mpsc::Sender<Event>) {
        for h in 0..NODE_HOSTS {
            let seeds: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.host == h)
                .map(|n| n.seed.to_string())
                .collect();
            let bootstrap = format!(
                "fleet:{}/{}@{}:7443",
                self.admin_id(),
                self.relay_ids[h],
                address(RELAY_NS + h)
            );
            let seeds = seeds.join(",");
            let mut args = vec![
                TESTNODE,
                "fleet-nodes",
                "--bootstrap",
                &bootstrap,
                "--seeds",
                &seeds,
            ];
            args.extend(timers.flags.iter().map(String::as_str));
            let log = File::create(self.dir.path().join(format!("nodes{h}.log"))).unwrap();
            let id = self
                .spawn(
                    NODE_NS + h,
                    &args,
                    Stdio::piped(),
                    Stdio::piped(),
                    log.into(),
                )
                .unwrap();
            let child = self.ns.child(id);
            self.stdins.push(child.stdin.take().unwrap());
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let events = events.clone();
            std::thread::spawn(move || {
                for line in stdout.lines() {
                    let Ok(line) = line else { return };
                    if events
                        .send(Event {
                            host: h,
                            line,
                            at: unix_ms(),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    }

    fn admin_id(&self) -> NodeId {
        let out = run(&[
            self.relay_bin(),
            "map",
            "show",
            &self.path("relay-map.json"),
            "--json",
        ])
        .unwrap();
        let map: serde_json::Value = serde_json::from_str(&out).unwrap();
        map["admin"].as_str().unwrap().parse().unwrap()
    }

    fn node_at(&self, host: usize, local: usize) -> usize {
        self.nodes
            .iter()
            .position(|n| n.host == host && n.local == local)
            .unwrap()
    }

    /// Takes in what the node hosts said, for up to `wait`.
    pub(super) fn pump(&mut self, wait: Duration) {
        let Ok(first) = self.events.recv_timeout(wait) else {
            return;
        };
        let mut next = Some(first);
        while let Some(Event { host, line, at }) = next {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["node", i, id] => {
                    let n = &self.nodes[self.node_at(host, i.parse().unwrap())];
                    assert_eq!(
                        id.parse::<NodeId>().unwrap(),
                        n.id,
                        "node {i} of host {host}"
                    );
                }
                ["home", i, relay, ms] => {
                    let g = self.node_at(host, i.parse().unwrap());
                    let relay = relay
                        .parse::<NodeId>()
                        .ok()
                        .map(|id| self.relay_ids.iter().position(|r| *r == id).unwrap());
                    self.homes[g].push((ms.parse().unwrap(), relay));
                }
                ["sent", tag, rest @ ..] => {
                    self.answers
                        .insert((*tag).to_owned(), (true, rest.join(" "), at));
                }
                ["links", tag, rest @ ..] => {
                    self.answers
                        .insert((*tag).to_owned(), (true, rest.join(" "), at));
                }
                ["error", tag, rest @ ..] => {
                    self.answers
                        .insert((*tag).to_owned(), (false, rest.join(" "), at));
                }
                _ => {}
            }
            next = self.events.try_recv().ok();
        }
    }

    /// Pumps until `done` holds, or panics after `within` saying `what`.
    pub(super) fn wait(&mut self, within: Duration, what: &str, done: impl Fn(&Fleet) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < within,
                "{what} within {within:?}\n{}",
                self.logs()
            );
            self.pump(Duration::from_millis(20));
        }
    }

    pub(super) fn home(&self, g: usize) -> Option<usize> {
        self.homes[g].last().and_then(|(_, r)| *r)
    }

    /// Node `from` sends `bytes` to node `to`'s sink, spread over `pace`; the answer comes
    /// under `tag`.
    pub(super) fn send(&mut self, tag: &str, from: usize, to: usize, bytes: usize, pace: Duration) {
        self.answers.remove(tag);
        let (host, local, peer) = (
            self.nodes[from].host,
            self.nodes[from].local,
            self.nodes[to].id,
        );
        let line = format!("send {tag} {local} {peer} {bytes} {}\n", pace.as_millis());
        self.stdins[host].write_all(line.as_bytes()).unwrap();
    }

    /// Node `g`'s relay links: (relay index, up).
    pub(super) fn links(&mut self, g: usize) -> Vec<(usize, bool)> {
        self.asked += 1;
        let tag = format!("links{}", self.asked);
        let line = format!("links {tag} {}\n", self.nodes[g].local);
        self.stdins[self.nodes[g].host]
            .write_all(line.as_bytes())
            .unwrap();
        let said = self.sent(&tag, Duration::from_secs(5));
        said.split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (id, up) = l.split_once('=').unwrap();
                let id: NodeId = id.parse().unwrap();
                let r = self.relay_ids.iter().position(|r| *r == id).unwrap();
                (r, up == "up")
            })
            .collect()
    }

    /// Waits for the answer under `tag`; panics if it is an error.
    pub(super) fn sent(&mut self, tag: &str, within: Duration) -> String {
        self.wait(within, &format!("no answer to {tag}"), |f| {
            f.answers.contains_key(tag)
        });
        let (ok, said, _) = self.answers[tag].clone();
        assert!(ok, "{tag}: {said}\n{}", self.logs());
        said
    }

    /// The first node homed on `relay` that runs on `host`, other than `not`.
    pub(super) fn homed(&self, relay: usize, host: usize, not: &[usize]) -> usize {
        (0..self.nodes.len())
            .find(|g| {
                self.nodes[*g].order[0] == relay && self.nodes[*g].host == host && !not.contains(g)
            })
            .unwrap()
    }
}

/// Median and maximum of `ms` (sorted here).
pub(super) fn p50_max(ms: &mut [u128]) -> (u128, u128) {
    ms.sort_unstable();
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

impl Fleet {
    /// Takes in what the node hosts say for `d`.
    pub(super) fn idle(&mut self, d: Duration) {
        let started = Instant::now();
        while started.elapsed() < d {
            self.pump(Duration::from_millis(20));
        }
    }

    /// The first home change of node `g` to `relay` after `since` (unix ms).
    pub(super) fn homed_at(&self, g: usize, relay: usize, since: u128) -> Option<u128> {
        self.homes[g]
            .iter()
            .find(|(ms, r)| *ms >= since && *r == Some(relay))
            .map(|(ms, _)| *ms)
    }
}
