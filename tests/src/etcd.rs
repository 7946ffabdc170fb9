//! Real etcd clusters for the fleet-store tests: the Debian `etcd` binary (package
//! `etcd-server`, installed by `scripts/install-peers`), every member on 127.0.0.1 with free
//! ports, data directories in a temporary directory, killed when the cluster is dropped.
//! Members can be stopped (SIGKILL) and started again on the same data directory, to take
//! quorum away and give it back.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nullport_relay::store::StoreSpec;

/// The etcd server program.
pub const ETCD: &str = "etcd";

/// One member: its ports, and its process while it runs.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster on loopback.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader. None (and the test is
    /// reported as not run: a failure under `CI=true`) when etcd is not installed.
    pub async fn start(test: &str, size: usize) -> Option<EtcdCluster> {
        if !crate::skip::require(test, &[ETCD]) {
            return None;
        }
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            members,
            dir: tempfile::tempdir().unwrap(),
        };
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster.wait_ready(Duration::from_secs(20)).await;
        Some(cluster)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    /// Starts member `i` (again, on its data directory, after [`EtcdCluster::stop`]).
    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let data = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .unwrap();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {i} is running");
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(ETCD)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "nullport-test"])
            // Loopback: a lost leader is replaced within about a second (etcd's defaults,
            // 100 ms and 1 s, take up to two), inside the relays' 2 s bound on a decision.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        m.child = Some(child);
    }

    /// Stops member `i` at once (SIGKILL: no goodbye to the others).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The `--store` value naming every member.
    pub fn store_url(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// The store spec naming every member.
    pub fn spec(&self) -> StoreSpec {
        self.store_url().parse().unwrap()
    }

    /// Client URLs of the members (for `etcdctl --endpoints` and the etcd client).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// Waits until a write needing quorum succeeds (panics after `within`).
    pub async fn wait_ready(&self, within: Duration) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < within {
            match self.try_write().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default()
            })
            .collect();
        panic!(
            "etcd cluster not ready within {within:?}: {last}\n{}",
            logs.join("\n")
        );
    }

    async fn try_write(&self) -> Result<(), String> {
        let options = etcd_client::ConnectOptions::new()
            .with_timeout(Duration::from_secs(1))
            .with_connect_timeout(Duration::from_secs(1))
            .with_require_leader(true);
        let mut client = etcd_client::Client::connect(self.endpoints(), Some(options))
            .await
            .map_err(|e| e.to_string())?;
        client
            .put("/nullport-test/ready", "1", None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Which running member leads the cluster now (None: no leader, or no member answered).
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}", m.client);
            let options = etcd_client::ConnectOptions::new()
                .with_timeout(Duration::from_secs(1))
                .with_connect_timeout(Duration::from_secs(1));
            let Ok(mut client) = etcd_client::Client::connect([url], Some(options)).await else {
                continue;
            };
            if let Ok(status) = client.status().await
                && status.header().map(|h| h.member_id()) == Some(status.leader())
            {
                return Some(i);
            }
        }
        None
    }

    /// A client of the cluster (for tests that look at what the relays wrote).
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.endpoints(), None)
            .await
            .unwrap()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}
