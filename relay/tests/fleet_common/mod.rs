//! Helpers shared by the fleet tests: the `nullport-relay` binary as a command and as a
//! running relay, keys and signed maps made with it, and a raw relay-link client.
// Each test crate uses some of these.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nullport_keyring::relay_map::RelayMap;
use nullport_protocol::relay_link::{
    self, LINK_VERSION, MAX_CONTROL_MESSAGE, MAX_LINK_MESSAGE, NodeToRelay, RelayToNode,
};
use nullport_protocol::{Identity, NodeId};
use tokio::process::{Child, Command};

pub const RELAY: &str = env!("CARGO_BIN_EXE_nullport-relay");

/// `nullport-relay ARGS` to completion: (success, stdout, stderr).
pub async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RELAY).args(args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub async fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = cli(args).await;
    assert!(success, "{args:?}: {stderr}");
    stdout
}

pub async fn fails(args: &[&str]) -> String {
    let (success, _, stderr) = cli(args).await;
    assert!(!success, "{args:?} should fail");
    stderr
}

/// A directory with an admin key and relay keys, for `map sign`.
pub struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// `init`s key `name` (once) and returns its NodeId.
    pub async fn key(&self, name: &str) -> NodeId {
        let path = self.s(name);
        if !self.path(name).exists() {
            ok(&["init", "--insecure-plaintext-key", "--key", &path]).await;
        }
        ok(&["id", "--key", &path]).await.trim().parse().unwrap()
    }

    /// `map sign` by `admin.key` into `out`, one `--relay` per entry.
    pub async fn sign(&self, version: u64, relays: &[String], out: &str) -> (bool, String) {
        self.key("admin.key").await;
        let (admin, out, version) = (self.s("admin.key"), self.s(out), version.to_string());
        let mut args = vec![
            "map",
            "sign",
            "--admin-key",
            &admin,
            "--version",
            &version,
            "--out",
            &out,
        ];
        for r in relays {
            args.extend(["--relay", r.as_str()]);
        }
        let (success, _, stderr) = cli(&args).await;
        (success, stderr)
    }
}

/// A running `nullport-relay run --map`.
pub struct RelayProcess {
    pub child: Child,
    pub id: NodeId,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl RelayProcess {
    pub async fn start(keys: &Keys, key: &str, port: u16, extra: &[&str]) -> RelayProcess {
        let mut child = Command::new(RELAY)
            .args(["run", "--open", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--key", &keys.s(key)])
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
        let (addr, id) = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                eprintln!("relay: {line}");
                if let Some(rest) = line.strip_prefix("nullport-relay listening on udp ") {
                    let (addr, id) = rest.split_once(" as ").unwrap();
                    return (addr.parse().unwrap(), id.parse().unwrap());
                }
            }
            panic!("relay exited before listening");
        })
        .await
        .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("relay: {line}");
                kept.lock().unwrap().push(line);
            }
        });
        RelayProcess {
            child,
            id,
            addr,
            log,
        }
    }

    /// Waits (up to 10 s) for a log line containing `text`.
    pub async fn logged(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "relay never logged {text:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
}

/// A free UDP port on loopback (the map must name the relay's port before it starts).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A raw relay-link client: admitted, `Hello` answered, its control stream kept.
pub struct Link {
    _endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

pub async fn write(send: &mut quinn::SendStream, message: &NodeToRelay) {
    let mut buf = Vec::new();
    relay_link::encode(message, MAX_LINK_MESSAGE, &mut buf).unwrap();
    send.write_all(&buf).await.unwrap();
}

pub async fn read(recv: &mut quinn::RecvStream) -> Option<RelayToNode> {
    let mut prefix = [0u8; relay_link::LENGTH_PREFIX];
    recv.read_exact(&mut prefix).await.ok()?;
    let len = relay_link::decode_len(prefix, MAX_CONTROL_MESSAGE).unwrap();
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.unwrap();
    Some(relay_link::decode(&body).unwrap())
}

impl Link {
    pub async fn connect(relay: &RelayProcess) -> Link {
        let identity = Identity::generate().unwrap();
        let crypto =
            nullport_node::tls::client_crypto(&identity, relay.id, Arc::default()).unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = endpoint
            .connect_with(
                quinn::ClientConfig::new(Arc::new(crypto)),
                relay.addr,
                "nullport-relay",
            )
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write(
            &mut send,
            &NodeToRelay::Hello {
                version: LINK_VERSION,
            },
        )
        .await;
        assert!(matches!(
            read(&mut recv).await,
            Some(RelayToNode::Welcome { .. })
        ));
        Link {
            _endpoint: endpoint,
            conn,
            send,
            recv,
        }
    }

    /// `MapQuery`: the version of the map the relay hands out.
    pub async fn map_version(&mut self) -> Option<u64> {
        write(&mut self.send, &NodeToRelay::MapQuery).await;
        match read(&mut self.recv).await {
            Some(RelayToNode::Map { map }) => {
                map.map(|m| RelayMap::verify_self_signed(&m).unwrap().version)
            }
            other => panic!("expected Map, got {other:?}"),
        }
    }

    /// The next message the relay pushes (on a stream it opens), within `limit`.
    pub async fn pushed(&self, limit: Duration) -> Option<RelayToNode> {
        tokio::time::timeout(limit, async {
            let (_send, mut recv) = self.conn.accept_bi().await.ok()?;
            read(&mut recv).await
        })
        .await
        .ok()
        .flatten()
    }
}

pub async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}
