//! `http_peer_header`: a tcp service that relays HTTP and names the caller in
//! `X-Nullport-Peer`, tested with real processes: a relay, the callee and caller daemons
//! (`nullport up`), `nullport connect --listen`, `curl`, and a Python HTTP backend
//! (`http_peer_backend.py`) that reports every header line it received. The same backend is
//! also exposed without the option, to show that the option is what strips.
// A failed unwrap is how a test reports a failure (clippy.toml allows it inside #[test]
// functions; the helpers of an integration test need it too).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// A callee exposing the backend twice (`web` with the option, `raw` without), a caller
/// with a `connect --listen` for each.
struct Setup {
    net: Net,
    tool: PathBuf,
    agent_id: String,
    /// `host:port` of `connect tool/web` and `connect tool/raw`.
    web: String,
    raw: String,
    _backend: Child,
    _connects: Vec<Child>,
}

async fn setup(test: &str) -> Option<Setup> {
    if !require(test, &["python3", "curl"]) {
        return None;
    }
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    ok(&tool, &["trust", "add", "agent", &agent_id]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http_peer_backend.py");
    let mut backend = Command::new("python3")
        .arg(script)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = tokio::io::BufReader::new(backend.stdout.take().unwrap()).lines();
    let ready = said.next_line().await.unwrap().unwrap_or_default();
    let port = ready
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("{ready}"));
    let target = format!("127.0.0.1:{port}");
    let exposed = ok(
        &tool,
        &["expose", "tcp", "web", &target, "--http-peer-header"],
    )
    .await;
    assert!(exposed.contains("(HTTP, X-Nullport-Peer)"), "{exposed}");
    ok(&tool, &["expose", "tcp", "raw", &target]).await;
    ok(&tool, &["allow", "agent", "web"]).await;
    ok(&tool, &["allow", "agent", "raw"]).await;
    net.up(&tool).await;
    net.up(&agent).await;
    let (web_connect, web) = connect(&agent, "tool/web").await;
    let (raw_connect, raw) = connect(&agent, "tool/raw").await;
    Some(Setup {
        net,
        tool,
        agent_id,
        web,
        raw,
        _backend: backend,
        _connects: vec![web_connect, raw_connect],
    })
}

/// `nullport connect TARGET --listen 127.0.0.1:0`; returns it and the address it took.
async fn connect(home: &Path, target: &str) -> (Child, String) {
    let mut child = Command::new(NULLPORT)
        .arg("--home")
        .arg(home)
        .args(["connect", target, "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = said.next_line().await.unwrap().unwrap_or_default();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (child, addr)
}

/// Runs curl (`-sS`, failing on HTTP errors) and returns its stdout.
async fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "60"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

/// The backend's reports in curl's output (one JSON line each; other lines skipped).
fn reports(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every value of the header `name` (compared without case) the backend received, in order.
fn header(report: &Value, name: &str) -> Vec<String> {
    report["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_owned())
        .collect()
}

const FORGED: [&str; 8] = [
    "-H",
    "X-Nullport-Peer: npFAKE",
    "-H",
    "x-nullport-peer: npFAKE2",
    "-H",
    "X-NULLPORT-PEER: npFAKE3",
    "-H",
    "X-Nullport-Peer-Alias: admin",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_peer_header_names_the_caller_and_replaces_forgeries() {
    let Some(s) = setup("http_peer_header_names_the_caller_and_replaces_forgeries").await else {
        return;
    };
    let stamped = |r: &Value| {
        assert_eq!(
            header(r, "x-nullport-peer"),
            vec![s.agent_id.clone()],
            "{r}"
        );
        assert_eq!(header(r, "x-nullport-peer-alias"), vec!["agent"], "{r}");
    };
    // A plain request: the caller's exact NodeId and its alias here.
    let plain = reports(&curl(&[&format!("http://{}/plain?x=1", s.web)]).await);
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0]["path"], "/plain?x=1");
    stamped(&plain[0]);
    // Forged values, in several spellings: only the true one arrives, once.
    let mut args = FORGED.to_vec();
    let url = format!("http://{}/forged", s.web);
    args.push(&url);
    let forged = reports(&curl(&args).await);
    stamped(&forged[0]);
    // Five requests on one kept-alive connection (curl reuses it: one connect), each
    // forged and each stamped; the daemon reuses one backend connection for them too.
    let urls: Vec<String> = (0..5).map(|i| format!("http://{}/k{i}", s.web)).collect();
    let mut args = FORGED.to_vec();
    args.extend(["-w", "connects=%{num_connects}\\n"]);
    args.extend(urls.iter().map(String::as_str));
    let out = curl(&args).await;
    let text = String::from_utf8_lossy(&out);
    let connects: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("connects="))
        .collect();
    assert_eq!(
        connects,
        [
            "connects=1",
            "connects=0",
            "connects=0",
            "connects=0",
            "connects=0"
        ]
    );
    let kept = reports(&out);
    assert_eq!(kept.len(), 5);
    for (i, r) in kept.iter().enumerate() {
        assert_eq!(r["path"], format!("/k{i}"));
        stamped(r);
        assert_eq!(
            r["client_port"], kept[0]["client_port"],
            "backend connection reused"
        );
    }
    // A backend that closes its connection after every answer: the caller's connection
    // stays open (its `Connection: close` is the backend's hop only), a new backend
    // connection is made for each request.
    let urls: Vec<String> = (0..3)
        .map(|i| format!("http://{}/close{i}", s.web))
        .collect();
    let mut args = vec!["-w", "connects=%{num_connects}\\n"];
    args.extend(urls.iter().map(String::as_str));
    let out = curl(&args).await;
    let text = String::from_utf8_lossy(&out);
    let connects: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("connects="))
        .collect();
    assert_eq!(connects, ["connects=1", "connects=0", "connects=0"]);
    let closing = reports(&out);
    assert_eq!(closing.len(), 3);
    closing.iter().for_each(stamped);
    let mut ports: Vec<_> = closing
        .iter()
        .map(|r| r["client_port"].to_string())
        .collect();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");
    // The option off: the same bytes reach the backend untouched, forgeries and all.
    let mut args = FORGED.to_vec();
    let url = format!("http://{}/raw", s.raw);
    args.push(&url);
    let raw = reports(&curl(&args).await);
    let names: Vec<(String, String)> = raw[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-nullport"))
        .collect();
    let sent: Vec<(String, String)> = FORGED
        .iter()
        .skip(1)
        .step_by(2)
        .map(|h| h.split_once(": ").unwrap())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(names, sent);
    // A caller with no alias on the callee (allowed by NodeId): a forged alias is removed
    // and none is set.
    let (caller, identity) = s.net.library_node().await;
    let caller_id = identity.node_id().to_string();
    ok(&s.tool, &["allow", &caller_id, "web"]).await;
    let tool_id = ok(&s.tool, &["id"]).await.trim().parse().unwrap();
    let mut ch = caller.dial(tool_id, "web").await.unwrap();
    ch.write_all(
        b"GET /bare HTTP/1.1\r\nHost: x\r\nX-Nullport-Peer-Alias: agent\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    ch.read_to_end(&mut answer).await.unwrap();
    let bare = reports(&answer);
    assert_eq!(header(&bare[0], "x-nullport-peer"), vec![caller_id]);
    assert!(
        header(&bare[0], "x-nullport-peer-alias").is_empty(),
        "{}",
        bare[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_peer_header_streams_16_mib_bodies_both_ways_byte_exact() {
    let Some(s) = setup("http_peer_header_streams_16_mib_bodies_both_ways_byte_exact").await else {
        return;
    };
    const SIZE: usize = 16 << 20;
    let body: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = s.net.dir.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let want = format!("{:x}", Sha256::digest(&body));
    let data = format!("@{}", file.display());
    let tool_pid = s.net.daemons[0].id().unwrap();
    // First without the option: the peak memory the transport itself reaches moving these
    // bodies. Then with it: the relay adds little to that peak (it never holds a body).
    let mut peak = 0;
    for addr in [&s.raw, &s.web] {
        let url = format!("http://{addr}/upload");
        // With Content-Length, then chunked (curl streams the file either way).
        for extra in [None, Some("Transfer-Encoding: chunked")] {
            let mut args = vec!["--data-binary", &data, "-H", "Content-Type: x/y"];
            if let Some(h) = extra {
                args.extend(["-H", h]);
            }
            args.push(&url);
            let r = reports(&curl(&args).await);
            assert_eq!(r[0]["method"], "POST");
            assert_eq!(r[0]["body_len"], SIZE, "{addr} {extra:?}");
            assert_eq!(r[0]["body_sha256"], want, "{addr} {extra:?}");
            let stamped = if *addr == s.web {
                vec![s.agent_id.clone()]
            } else {
                vec![]
            };
            assert_eq!(header(&r[0], "x-nullport-peer"), stamped);
        }
        // And 16 MiB down.
        let headers = s.net.dir.path().join("headers.txt");
        let got = curl(&[
            "-D",
            &headers.display().to_string(),
            &format!("http://{addr}/bytes/{SIZE}"),
        ])
        .await;
        let head = std::fs::read_to_string(&headers)
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(got.len(), SIZE);
        let sha = format!("x-body-sha256: {:x}", Sha256::digest(&got));
        assert!(head.contains(&sha), "{head}");
        if *addr == s.raw {
            peak = peak_rss_kib(tool_pid);
        }
    }
    let grew = peak_rss_kib(tool_pid).saturating_sub(peak);
    assert!(
        grew < 4 << 10,
        "the daemon's peak memory grew by {grew} KiB relaying HTTP"
    );
}

/// The peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends `request` on a new connection to `addr` and reads until the other side closes.
async fn exchange(addr: &str, request: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_peer_header_answers_malformed_requests_and_keeps_serving() {
    let Some(s) = setup("http_peer_header_answers_malformed_requests_and_keeps_serving").await
    else {
        return;
    };
    let first = reports(&curl(&[&format!("http://{}/first", s.web)]).await);
    let count = first[0]["count"].as_u64().unwrap();
    // A malformed request line: 400, and the channel closes.
    let started = Instant::now();
    let said = exchange(&s.web, b"GET /x HTTP/1.1 trailing junk\r\nHost: x\r\n\r\n").await;
    assert!(said.starts_with("HTTP/1.1 400 "), "{said:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let said = exchange(&s.web, b"\x01\x02\x03 / HTTP/1.1\r\n\r\n").await;
    assert!(said.starts_with("HTTP/1.1 400 "), "{said:?}");
    // A good request, then a broken one on the same connection: 200, then 400, then close.
    let said = exchange(
        &s.web,
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n",
    )
    .await;
    assert!(said.starts_with("HTTP/1.1 200 "), "{said:?}");
    assert!(
        said.contains("\r\n\r\n{") && said.contains("HTTP/1.1 400 "),
        "{said:?}"
    );
    // Too many header lines, and one header line too long.
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let said = exchange(&s.web, &many).await;
    assert!(said.starts_with("HTTP/1.1 431 "), "{said:?}");
    let long = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let said = exchange(&s.web, long.as_bytes()).await;
    assert!(said.starts_with("HTTP/1.1 431 "), "{said:?}");
    // CONNECT is refused (the connection stays open for other requests: closed here).
    let said = exchange(
        &s.web,
        b"CONNECT example.net:443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(said.starts_with("HTTP/1.1 405 "), "{said:?}");
    // The backend saw only the one good request among them; the service still serves.
    let after = reports(&curl(&[&format!("http://{}/after", s.web)]).await);
    assert_eq!(after[0]["count"].as_u64().unwrap(), count + 2);
    assert_eq!(
        header(&after[0], "x-nullport-peer"),
        vec![s.agent_id.clone()]
    );
    let status = ok(&s.tool, &["status"]).await;
    assert!(status.contains("link     online"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_peer_header_passes_an_upgrade_through_stamped() {
    let Some(s) = setup("http_peer_header_passes_an_upgrade_through_stamped").await else {
        return;
    };
    let mut tcp = tokio::net::TcpStream::connect(&s.web).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: np-echo\r\nX-Nullport-Peer: npFAKE\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reader = tokio::io::BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.unwrap();
        assert!(n > 0, "closed after {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    assert!(
        lower.contains("upgrade: np-echo") && lower.contains("connection: upgrade"),
        "{head:?}"
    );
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let report: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(header(&report, "x-nullport-peer"), vec![s.agent_id.clone()]);
    assert_eq!(header(&report, "upgrade"), vec!["np-echo"]);
    // From here on the bytes are the backend's protocol, both ways.
    for word in ["ping\n", "a longer line of the upgraded protocol\n"] {
        reader.get_mut().write_all(word.as_bytes()).await.unwrap();
        let mut back = vec![0u8; word.len()];
        reader.read_exact(&mut back).await.unwrap();
        assert_eq!(back, word.as_bytes());
    }
    reader.get_mut().shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}
