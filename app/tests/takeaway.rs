//! Taking access away at the callee, with real daemons (`nullport up`) and a caller that sees
//! what happens (the `nullport-node` library, or the `nullport` CLI): every live channel is
//! re-checked when what authorised it changes and ended with a reason the caller reads; a
//! node's own revocation applies at once; revoked keys keep no grant under a new key; exec
//! and MCP processes start with a clean environment naming the caller; channel caps leave
//! room for other callers.
// A failed unwrap is how a test reports a failure (clippy.toml allows it inside #[test]
// functions; the helpers of an integration test need it too).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::io::ErrorKind;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nullport_protocol::{DenyReason, NodeId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Appends TOML to a home's config file (before its daemon starts).
fn configure(home: &Path, toml: &str) {
    let path = home.join("config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push('\n');
    text.push_str(toml);
    std::fs::write(&path, text).unwrap();
}

/// The error a live channel ends with (writing and reading until it breaks), and how long
/// it took from `since`.
async fn ended(ch: &mut nullport_node::Channel, since: Instant) -> (std::io::Error, Duration) {
    let mut buf = [0u8; 64];
    let mut writing = true;
    loop {
        // Writes fail as soon as the callee stops reading; the reason arrives on the read
        // side (as it does for a caller that reads and writes at once).
        if writing && ch.write_all(b"x").await.is_err() {
            writing = false;
        }
        match tokio::time::timeout(Duration::from_millis(50), ch.read(&mut buf)).await {
            Ok(Err(e)) => return (e, since.elapsed()),
            Ok(Ok(0)) => panic!("the channel ended cleanly instead of with a reason"),
            _ => {}
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the channel stayed open"
        );
    }
}

/// The reason the callee gave for ending the channel.
fn reason(e: &std::io::Error) -> Option<DenyReason> {
    match e.get_ref()?.downcast_ref::<nullport_protocol::Error>()? {
        nullport_protocol::Error::Aborted { reason } => Some(*reason),
        _ => None,
    }
}

/// A tool daemon exposing `cat` (exec) to a library caller it knows as `agent`.
async fn tool_and_caller(
    net: &mut Net,
    extra: &str,
) -> (std::path::PathBuf, NodeId, nullport_node::Node, NodeId) {
    let (tool, tool_id) = net.node("tool").await;
    let (caller, caller_identity) = net.library_node().await;
    let caller_id = caller_identity.node_id();
    ok(&tool, &["trust", "add", "agent", &caller_id.to_string()]).await;
    ok(&tool, &["expose", "exec", "cat", "--", "cat"]).await;
    ok(&tool, &["allow", "agent", "cat"]).await;
    configure(&tool, extra);
    net.up(&tool).await;
    (tool, tool_id.parse().unwrap(), caller, caller_id)
}

async fn open_cat(caller: &nullport_node::Node, tool: NodeId) -> nullport_node::Channel {
    let mut ch = caller.dial(tool, "cat").await.unwrap();
    ch.write_all(b"hello\n").await.unwrap();
    let mut back = [0u8; 6];
    ch.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello\n");
    ch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_revocation_applies_at_once_at_the_node_that_runs_it() {
    let mut net = Net::start().await;
    let (tool, tool_id, caller, _) = tool_and_caller(&mut net, "").await;
    let mut live = open_cat(&caller, tool_id).await;
    // The tool's operator revokes the caller: the tool trusts no issuer at all, yet its own
    // list applies here, at once.
    let said = ok(&tool, &["revoke", "agent"]).await;
    assert!(said.contains("refused here at once"), "{said}");
    let (e, took) = ended(&mut live, Instant::now()).await;
    assert_eq!(e.kind(), ErrorKind::ConnectionAborted, "{e}");
    assert_eq!(reason(&e), Some(DenyReason::Revoked), "{e}");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    match caller.dial(tool_id, "cat").await {
        Err(nullport_node::Error::Denied {
            reason: DenyReason::Revoked,
            ..
        }) => {}
        other => panic!("a revoked caller dialed: {other:?}"),
    }
    let status = ok(&tool, &["revocations", "show"]).await;
    assert!(
        status.contains("applies to everything (this node's own list)"),
        "{status}"
    );
    let audit = std::fs::read_to_string(tool.join("audit.log")).unwrap();
    assert!(
        audit.contains("\"event\":\"revocation\"") && audit.contains("this node's own list"),
        "{audit}"
    );
    assert!(audit.contains("\"outcome\":\"closed\""), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_unexpose_and_a_policy_edit_end_live_channels_with_a_reason() {
    let mut net = Net::start().await;
    let (tool, tool_id, caller, _) = tool_and_caller(&mut net, "").await;
    // `deny`: the caller reads "not allowed".
    let mut live = open_cat(&caller, tool_id).await;
    let started = Instant::now();
    ok(&tool, &["deny", "agent", "cat"]).await;
    let (e, took) = ended(&mut live, started).await;
    assert_eq!(reason(&e), Some(DenyReason::NotAllowed), "{e}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // `unexpose`: "service not exposed".
    ok(&tool, &["allow", "agent", "cat"]).await;
    let mut live = open_cat(&caller, tool_id).await;
    let started = Instant::now();
    ok(&tool, &["unexpose", "cat"]).await;
    let (e, took) = ended(&mut live, started).await;
    assert_eq!(reason(&e), Some(DenyReason::UnknownService), "{e}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The policy file edited by hand, then a reload (what SIGHUP-less operators do).
    ok(&tool, &["expose", "exec", "cat", "--", "cat"]).await;
    let mut live = open_cat(&caller, tool_id).await;
    std::fs::write(tool.join("policy.toml"), "# emptied by hand\n").unwrap();
    let started = Instant::now();
    ok(&tool, &["reload"]).await;
    let (e, took) = ended(&mut live, started).await;
    assert_eq!(reason(&e), Some(DenyReason::NotAllowed), "{e}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_and_token_revocation_end_live_channels() {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (admin, admin_id) = net.node("admin").await;
    let (caller, caller_identity) = net.library_node().await;
    let caller_id = caller_identity.node_id().to_string();
    ok(&tool, &["trust", "add", "admin", &admin_id]).await;
    ok(&admin, &["trust", "add", "agent", &caller_id]).await;
    ok(&admin, &["trust", "add", "tool", &tool_id]).await;
    ok(&tool, &["expose", "exec", "cat", "--", "cat"]).await;
    ok(&tool, &["token", "trust-issuer", "admin", "cat"]).await;
    configure(&tool, "[access]\ntoken_skew_secs = 0\n");
    net.up(&tool).await;
    net.up(&admin).await;
    let tool_id: NodeId = tool_id.parse().unwrap();
    let token = |ttl: &'static str| {
        let admin = admin.clone();
        async move {
            let text = ok(
                &admin,
                &[
                    "token",
                    "issue",
                    "--to",
                    "agent",
                    "--service",
                    "cat",
                    "--ttl",
                    ttl,
                ],
            )
            .await;
            nullport_keyring::token::Token::from_text(text.trim()).unwrap()
        }
    };
    // A 3-second token: the channel it opened ends when it expires.
    let short = token("3s").await;
    let expires = short.links[0].body.expires;
    let mut live = caller
        .dial_with(tool_id, "cat", short.to_bytes())
        .await
        .unwrap();
    let (e, _) = ended(&mut live, Instant::now()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(reason(&e), Some(DenyReason::Expired), "{e}");
    assert!(now <= expires + 2, "ended {}s after expiry", now - expires);
    // A token revoked by its issuer: the live channel ends within a second.
    let long = token("10m").await;
    let mut live = caller
        .dial_with(tool_id, "cat", long.to_bytes())
        .await
        .unwrap();
    live.write_all(b"ok").await.unwrap();
    let started = Instant::now();
    ok(&admin, &["revoke", &long.to_text()]).await;
    let (e, took) = ended(&mut live, started).await;
    assert_eq!(reason(&e), Some(DenyReason::Revoked), "{e}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_children_get_a_clean_environment_that_names_the_caller() {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    ok(&tool, &["trust", "add", "agent", &agent_id]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id]).await;
    ok(&tool, &["expose", "exec", "env", "--", "env"]).await;
    ok(
        &tool,
        &[
            "expose",
            "exec",
            "env2",
            "--env",
            "SHARED_SETTING",
            "--env",
            "FIXED=1",
            "--",
            "env",
        ],
    )
    .await;
    ok(&tool, &["allow", "agent", "env"]).await;
    ok(&tool, &["allow", "agent", "env2"]).await;
    // The daemon holds secrets in its environment, as the documented unattended start does.
    net.up_with(
        &tool,
        &[
            ("NULLPORT_PASSPHRASE", "correct horse battery staple"),
            ("NULLPORT_HOME", tool.to_str().unwrap()),
            ("AWS_SECRET_ACCESS_KEY", "AKIAsecret"),
            ("SHARED_SETTING", "shared"),
        ],
    )
    .await;
    net.up(&agent).await;
    // The daemon itself no longer holds the passphrase in its environment (it read it and
    // started again without it, under the same PID).
    let pid = net.daemons[0].id().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("NULLPORT_PASSPHRASE") && !environ.contains("correct horse"),
        "the daemon's environment still holds the passphrase"
    );
    assert!(
        environ.contains("AWS_SECRET_ACCESS_KEY"),
        "the rest of the environment stays"
    );
    let env = pipe_output(&agent, "tool/env").await;
    for secret in [
        "correct horse",
        "NULLPORT_HOME",
        "AKIAsecret",
        "SHARED_SETTING",
        tool.to_str().unwrap(),
    ] {
        assert!(
            !env.contains(secret),
            "{secret} leaked to an exec process:\n{env}"
        );
    }
    assert!(
        env.contains(&format!("NULLPORT_PEER={agent_id}\n")),
        "{env}"
    );
    assert!(env.contains("NULLPORT_PEER_ALIAS=agent\n"), "{env}");
    assert!(env.contains("NULLPORT_SERVICE=env\n"), "{env}");
    assert!(env.contains("PATH="), "{env}");
    let env2 = pipe_output(&agent, "tool/env2").await;
    assert!(
        env2.contains("SHARED_SETTING=shared\n") && env2.contains("FIXED=1\n"),
        "{env2}"
    );
    assert!(
        !env2.contains("AKIAsecret") && !env2.contains("correct horse"),
        "{env2}"
    );
    // nullport's own variables cannot be handed on, even when asked for.
    let e = fails(
        &tool,
        &[
            "expose",
            "exec",
            "leak",
            "--env",
            "NULLPORT_PASSPHRASE",
            "--",
            "env",
        ],
    )
    .await;
    assert!(e.contains("NULLPORT_* are nullport's own"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_names_the_caller_to_a_tcp_backend() {
    if !require(
        "proxy_protocol_v2_names_the_caller_to_a_tcp_backend",
        &["python3"],
    ) {
        return;
    }
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    ok(&tool, &["trust", "add", "agent", &agent_id]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id]).await;
    // A backend that parses the PROXY v2 header (signature, version/command, family, TLVs)
    // and answers with what it learned.
    let port = free_port();
    let script = format!(
        r#"
import socket, struct
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port})); s.listen(4); print("ready", flush=True)
while True:
    c, _ = s.accept()
    head = b""
    while len(head) < 16: head += c.recv(16 - len(head))
    assert head[:12] == b"\r\n\r\n\x00\r\nQUIT\n", head
    ver_cmd, fam, n = head[12], head[13], struct.unpack(">H", head[14:16])[0]
    body = b""
    while len(body) < n: body += c.recv(n - len(body))
    tlvs = {{}}
    while body:
        t, l = body[0], struct.unpack(">H", body[1:3])[0]
        tlvs[t] = body[3:3 + l].decode(); body = body[3 + l:]
    c.sendall(("v%x fam%d peer=%s alias=%s unique=%s\n" % (ver_cmd, fam, tlvs.get(0xE0), tlvs.get(0xE1), tlvs.get(0x05))).encode())
    c.close()
"#
    );
    let mut backend = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut ready = tokio::io::BufReader::new(backend.stdout.take().unwrap()).lines();
    assert_eq!(ready.next_line().await.unwrap().as_deref(), Some("ready"));
    ok(
        &tool,
        &[
            "expose",
            "tcp",
            "web",
            &format!("127.0.0.1:{port}"),
            "--proxy-protocol",
        ],
    )
    .await;
    ok(&tool, &["allow", "agent", "web"]).await;
    net.up(&tool).await;
    net.up(&agent).await;
    let said = pipe_output(&agent, "tool/web").await;
    assert_eq!(
        said,
        format!("v21 fam0 peer={agent_id} alias=agent unique={agent_id}\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_at_its_cap_leaves_room_for_others_and_idle_channels_end() {
    let mut net = Net::start().await;
    let (tool, tool_id, first, _) = tool_and_caller(
        &mut net,
        "[access]\nmax_channels_per_caller = 4\nidle_timeout_secs = 3\n",
    )
    .await;
    let (second, second_identity) = net.library_node().await;
    ok(
        &tool,
        &[
            "trust",
            "add",
            "other",
            &second_identity.node_id().to_string(),
        ],
    )
    .await;
    ok(&tool, &["allow", "other", "cat"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(open_cat(&first, tool_id).await);
    }
    match first.dial(tool_id, "cat").await {
        Err(nullport_node::Error::Denied {
            reason: DenyReason::RateLimited,
            ..
        }) => {}
        other => panic!("a fifth channel from one caller: {other:?}"),
    }
    // Another caller is served at once.
    let started = Instant::now();
    let mut other = open_cat(&second, tool_id).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "the other caller waited {took:?}"
    );
    // Idle channels end with their reason (the other one keeps talking, and stays).
    let idle_since = Instant::now();
    let chatter = async {
        loop {
            other.write_all(b"k\n").await.unwrap();
            let mut b = [0u8; 2];
            other.read_exact(&mut b).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let idle = async {
        let mut ch = held.pop().unwrap();
        let mut buf = [0u8; 8];
        let e = ch.read(&mut buf).await.unwrap_err();
        (e, idle_since.elapsed())
    };
    let (e, took) = tokio::select! {
        r = idle => r,
        _ = chatter => unreachable!(),
        _ = tokio::time::sleep(Duration::from_secs(8)) => panic!("idle channel not closed"),
    };
    assert_eq!(reason(&e), Some(DenyReason::Idle), "{e}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // With its channels gone, the first caller may open again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _again = open_cat(&first, tool_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_keeps_no_grant_under_a_new_key_and_retired_keys_are_remembered() {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    let (other, other_id) = net.node("other").await;
    for (home, alias, id) in [
        (&tool, "agent", &agent_id),
        (&tool, "other", &other_id),
        (&agent, "tool", &tool_id),
        (&other, "tool", &tool_id),
    ] {
        ok(home, &["trust", "add", alias, id]).await;
    }
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    ok(&tool, &["allow", "agent", "hello"]).await;
    ok(&tool, &["allow", "other", "hello"]).await;
    net.up(&tool).await;
    net.up(&agent).await;
    net.up(&other).await;
    // The tool revokes the agent, which then rotates to a fresh key: the tool does not
    // follow; the alias and the grant stay on the revoked key.
    ok(&tool, &["revoke", "agent"]).await;
    ok(&agent, &["rotate"]).await;
    let new_id = ok(&agent, &["id"]).await.trim().to_owned();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let trust = std::fs::read_to_string(tool.join("trust.toml")).unwrap();
    assert!(
        trust.contains(&agent_id) && !trust.contains(&new_id),
        "{trust}"
    );
    let audit = std::fs::read_to_string(tool.join("audit.log")).unwrap();
    assert!(
        audit.contains("rotation-refused") && audit.contains("the old key is revoked"),
        "{audit}"
    );
    net.daemons.remove(1);
    net.up(&agent).await;
    let e = fails(&agent, &["pipe", "tool/hello"]).await;
    assert!(
        e.contains("not allowed"),
        "the new key inherited a grant: {e}"
    );
    // `other` rotates honestly: the tool follows. Later the relay loses its state, and a
    // thief holding other's old key rotates it again, to a key of its own: the tool
    // remembers the old key is retired, and the first rotation stands.
    let old_other = other.join("identity.key");
    let stolen = net.dir.path().join("stolen.key");
    std::fs::copy(&old_other, &stolen).unwrap();
    ok(&other, &["rotate"]).await;
    let other_new = ok(&other, &["id"]).await.trim().to_owned();
    let started = Instant::now();
    while !std::fs::read_to_string(tool.join("trust.toml"))
        .unwrap()
        .contains(&other_new)
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the tool did not follow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    net.daemons.remove(1); // other's daemon, still holding the retired key
    net.restart_relay().await;
    let thief = net.dir.path().join("thief");
    std::fs::create_dir_all(&thief).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&thief, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::copy(&stolen, thief.join("identity.key")).unwrap();
    net.up(&thief).await;
    let said = ok(&thief, &["rotate"]).await;
    assert!(said.contains("rotated"), "{said}");
    let thief_new = ok(&thief, &["id"]).await.trim().to_owned();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let trust = std::fs::read_to_string(tool.join("trust.toml")).unwrap();
    assert!(
        trust.contains(&other_new) && !trust.contains(&thief_new),
        "{trust}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_and_key_files_of_other_users_or_open_to_them_are_refused() {
    let net = Net::start().await;
    let (home, _) = net.node("node").await;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let e = fails(&home, &["up", "--relay", &net.relay_address()]).await;
    assert!(
        e.contains("closed to others (mode 700)") && e.contains("chmod 700"),
        "{e}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // A key file that belongs to someone else (root can make one here) is refused.
    if nullport_keyring::fs::euid() == 0 {
        let key = home.join("identity.key");
        rustix::fs::chown(&key, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
        let e = fails(&home, &["up", "--relay", &net.relay_address()]).await;
        assert!(
            e.contains("belongs to uid 65534") && e.contains("chown"),
            "{e}"
        );
    } else {
        nullport_tests::skip::not_run(
            "homes_and_key_files_of_other_users (foreign owner part)",
            "needs root to give a key file to another user",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_node_keeps_trying_says_so_and_comes_back() {
    let mut net = Net::start().await;
    let (first, _) = net.node("first").await;
    configure(&first, "[link]\nsuperseded_retry_secs = 1\n");
    net.up(&first).await;
    // The same home copied elsewhere and started: the copy takes over the link.
    let copy = net.dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::copy(first.join("identity.key"), copy.join("identity.key")).unwrap();
    net.up(&copy).await;
    let started = Instant::now();
    loop {
        let s = ok(&first, &["status"]).await;
        if s.contains("superseded") && s.contains("retrying in ") && s.contains("home copied") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The copy stops: the first node is back within its retry interval (plus jitter).
    net.daemons.remove(1);
    let stopped = Instant::now();
    loop {
        if ok(&first, &["status"]).await.contains("link     online") {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "the superseded node gave up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one JSON-RPC line and returns the answer with the same id (skipping notifications).
async fn rpc(
    ch: &mut tokio::io::BufReader<nullport_node::Channel>,
    id: u64,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let line = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ch.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    loop {
        let mut answer = String::new();
        assert!(
            ch.read_line(&mut answer).await.unwrap() > 0,
            "the session ended"
        );
        let value: serde_json::Value = serde_json::from_str(&answer).unwrap();
        if value["id"] == id {
            return value;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_resource_tricks_are_refused_and_mcp_deny_ends_the_live_session() {
    let Some(peers) =
        mcp_peers("mcp_resource_tricks_are_refused_and_mcp_deny_ends_the_live_session")
    else {
        return;
    };
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (caller, caller_identity) = net.library_node().await;
    ok(
        &tool,
        &[
            "trust",
            "add",
            "agent",
            &caller_identity.node_id().to_string(),
        ],
    )
    .await;
    let entry = peers.join("server-everything/dist/index.js");
    let entry = entry.display().to_string();
    ok(
        &tool,
        &["expose", "mcp", "everything", "--", "node", &entry, "stdio"],
    )
    .await;
    // A rule for the text resources, and one written without a trailing segment boundary.
    ok(
        &tool,
        &[
            "mcp",
            "allow",
            "agent",
            "everything",
            "--tools",
            "echo",
            "--resources",
            "demo://resource/dynamic/text/,demo://resource/dynamic/bl",
        ],
    )
    .await;
    let shown = ok(&tool, &["mcp", "show", "everything"]).await;
    assert!(
        shown.contains("agent") && shown.contains("demo://resource/dynamic/text/"),
        "{shown}"
    );
    net.up(&tool).await;
    let tool_id: NodeId = tool_id.parse().unwrap();
    let ch = caller.dial(tool_id, "everything").await.unwrap();
    let mut ch = tokio::io::BufReader::new(ch);
    let init = rpc(
        &mut ch,
        1,
        "initialize",
        serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "takeaway", "version": "1"}}),
    )
    .await;
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    ch.get_mut()
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .unwrap();
    let fine = rpc(
        &mut ch,
        2,
        "resources/read",
        serde_json::json!({"uri": "demo://resource/dynamic/text/1"}),
    )
    .await;
    assert!(fine["result"]["contents"].is_array(), "{fine}");
    for (id, uri, why) in [
        (
            3,
            "demo://resource/dynamic/text/../blob/1",
            "\\\"..\\\" path segment",
        ),
        (
            4,
            "demo://resource/dynamic/text/%2e%2E/blob/1",
            "\\\"..\\\" path segment",
        ),
        (
            5,
            "demo://resource/dynamic/text/..%2fblob/1",
            "percent escape",
        ),
        (
            6,
            "demo://resource/dynamic/blob/1",
            "not under an allowed prefix",
        ),
    ] {
        let denied = rpc(
            &mut ch,
            id,
            "resources/read",
            serde_json::json!({"uri": uri}),
        )
        .await;
        assert_eq!(denied["error"]["code"], -32001, "{uri}: {denied}");
        let message = denied["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(why.trim_matches('\\')) || denied.to_string().contains(why),
            "{uri}: {denied}"
        );
    }
    // `nullport mcp deny` takes the rules away: the live session ends with the reason.
    let started = Instant::now();
    ok(&tool, &["mcp", "deny", "agent", "everything"]).await;
    let mut rest = String::new();
    let e = loop {
        match ch.read_line(&mut rest).await {
            Err(e) => break e,
            Ok(0) => panic!("the session ended cleanly instead of with a reason"),
            Ok(_) => rest.clear(),
        }
    };
    assert_eq!(reason(&e), Some(DenyReason::NotAllowed), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_on_a_unix_socket_serves_only_its_user() {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    ok(&tool, &["trust", "add", "agent", &agent_id]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id]).await;
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    ok(&tool, &["allow", "agent", "hello"]).await;
    net.up(&tool).await;
    net.up(&agent).await;
    let socket = net.dir.path().join("hello.sock");
    let mut connect = Command::new(NULLPORT)
        .arg("--home")
        .arg(&agent)
        .args(["connect", "tool/hello", "--listen"])
        .arg(format!("unix:{}", socket.display()))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = tokio::io::BufReader::new(connect.stdout.take().unwrap()).lines();
    let line = said.next_line().await.unwrap().unwrap_or_default();
    assert!(line.starts_with("listening on unix:"), "{line}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signers_list_of_thousands_of_keys_is_published_and_applied() {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (admin, admin_id) = net.node("admin").await;
    let (caller, caller_identity) = net.library_node().await;
    let caller_id = caller_identity.node_id();
    ok(&tool, &["trust", "add", "admin", &admin_id]).await;
    ok(&tool, &["trust", "add", "agent", &caller_id.to_string()]).await;
    ok(&tool, &["revocations", "trust", "admin"]).await;
    ok(&tool, &["expose", "exec", "cat", "--", "cat"]).await;
    ok(&tool, &["allow", "agent", "cat"]).await;
    ok(&admin, &["trust", "add", "agent", &caller_id.to_string()]).await;
    // The admin has already revoked 5,000 keys (its list, as `revoke` keeps it).
    let keys: Vec<String> = (0..5_000u32)
        .map(|i| {
            let mut seed = [9u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            nullport_protocol::Identity::from_seed(seed)
                .node_id()
                .to_string()
        })
        .collect();
    let issued = serde_json::json!({
        "signer": admin_id, "version": 7, "issued": 0, "keys": keys, "tokens": []
    });
    std::fs::write(admin.join("revocations-issued.json"), issued.to_string()).unwrap();
    net.up(&tool).await;
    net.up(&admin).await;
    let tool_id: NodeId = tool_id.parse().unwrap();
    let mut live = open_cat(&caller, tool_id).await;
    let started = Instant::now();
    let said = ok(&admin, &["revoke", "agent"]).await;
    assert!(said.contains("version 8"), "{said}");
    let (e, took) = ended(&mut live, started).await;
    assert_eq!(reason(&e), Some(DenyReason::Revoked), "{e}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let shown = ok(&tool, &["revocations", "show"]).await;
    assert!(shown.contains("v8: 5001 keys"), "{shown}");
}

/// Waits until `home`'s trust store names `id` (it followed a rotation).
async fn followed(home: &Path, id: &str) {
    let started = Instant::now();
    while !std::fs::read_to_string(home.join("trust.toml"))
        .unwrap_or_default()
        .contains(id)
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no rotation to {id} followed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_of_the_revoker_never_lifts_its_revocations() {
    let mut net = Net::start().await;
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    let (admin, admin_id) = net.node("admin").await;
    for (home, alias, id) in [
        (&tool, "agent", &agent_id),
        (&tool, "admin", &admin_id),
        (&agent, "tool", &tool_id),
        (&admin, "agent", &agent_id),
        (&admin, "tool", &tool_id),
    ] {
        ok(home, &["trust", "add", alias, id]).await;
    }
    ok(&tool, &["expose", "exec", "hello", "--", "echo", "hi"]).await;
    ok(&tool, &["allow", "agent", "hello"]).await;
    ok(&tool, &["revocations", "trust", "admin"]).await;
    net.up(&tool).await;
    net.up(&agent).await;
    net.up(&admin).await;
    assert_eq!(pipe_output(&agent, "tool/hello").await, "hi\n");
    // The node-wide signer revokes the agent, then rotates its own key: the tool follows
    // the rotation, and the revocation stays.
    ok(&admin, &["revoke", "agent"]).await;
    let e = fails(&agent, &["pipe", "tool/hello"]).await;
    assert!(e.contains("revoked"), "{e}");
    ok(&admin, &["rotate"]).await;
    let admin_new = ok(&admin, &["id"]).await.trim().to_owned();
    followed(&tool, &admin_new).await;
    let e = fails(&agent, &["pipe", "tool/hello"]).await;
    assert!(
        e.contains("revoked"),
        "the admin's rotation lifted its revocation: {e}"
    );
    let shown = ok(&tool, &["revocations", "show"]).await;
    assert!(shown.contains("signed by a key since rotated"), "{shown}");
    // The admin, on its new key, revokes more: its list now starts on the new key and
    // still carries the agent.
    net.daemons.remove(2);
    net.up(&admin).await;
    let said = ok(&admin, &["revoke", "tool"]).await;
    assert!(said.contains("version 1"), "{said}");
    let issued = std::fs::read_to_string(admin.join("revocations-issued.json")).unwrap();
    assert!(
        issued.contains(&admin_new) && issued.contains(&agent_id),
        "{issued}"
    );
    // The tool revokes the agent itself and rotates (and restarts): still revoked.
    ok(&tool, &["revoke", "agent"]).await;
    ok(&tool, &["rotate"]).await;
    let tool_new = ok(&tool, &["id"]).await.trim().to_owned();
    followed(&agent, &tool_new).await;
    net.daemons.remove(0);
    net.up(&tool).await;
    // Right after the restart the relay may still route to the old daemon's connection
    // until it notices it is gone (a dial that times out, finds the tool offline, or is cut
    // by the relay); a liveness bound, not a timing target.
    let started = Instant::now();
    let e = loop {
        let e = fails(&agent, &["pipe", "tool/hello"]).await;
        let transient = e.contains("timed out")
            || e.contains("offline")
            || e.contains("busy")
            || e.contains("was cut while it was being set up");
        if !transient || started.elapsed() > Duration::from_secs(30) {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        e.contains("revoked"),
        "the tool's rotation lifted its own revocation: {e}"
    );
}

/// A tool exposing `cat` to an agent, and a `pipe` from the agent to it whose first line
/// came back (the channel is live end to end, not merely listed by `status`).
async fn cat_through_pipe(
    net: &mut Net,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    tokio::process::Child,
    tokio::process::ChildStdin,
    tokio::io::BufReader<tokio::process::ChildStdout>,
) {
    let (tool, tool_id) = net.node("tool").await;
    let (agent, agent_id) = net.node("agent").await;
    ok(&tool, &["trust", "add", "agent", &agent_id]).await;
    ok(&agent, &["trust", "add", "tool", &tool_id]).await;
    ok(&tool, &["expose", "exec", "cat", "--", "cat"]).await;
    ok(&tool, &["allow", "agent", "cat"]).await;
    net.up(&tool).await;
    net.up(&agent).await;
    let (mut child, mut stdin) = spawn_pipe(&agent, "tool/cat");
    stdin.write_all(b"live\n").await.unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut echoed = String::new();
    tokio::time::timeout(Duration::from_secs(5), stdout.read_line(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, "live\n");
    (tool, agent, child, stdin, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_says_why_its_channel_ended_and_fails() {
    let mut net = Net::start().await;
    let (tool, _agent, child, _stdin, mut stdout) = cat_through_pipe(&mut net).await;
    assert!(ok(&tool, &["status"]).await.contains("in  agent"));
    ok(&tool, &["deny", "agent", "cat"]).await;
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "pipe exited 0 after its channel was taken away"
    );
    assert!(
        stderr.contains("tool/cat: channel closed by the peer: not allowed"),
        "{stderr}"
    );
    assert_eq!(rest, "", "nothing more after the echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_exec_process_started_ends_with_its_channel() {
    let mut net = Net::start().await;
    let (tool, tool_id, caller, _) = tool_and_caller(&mut net, "").await;
    let marker = format!("np-orphan-{}", std::process::id());
    ok(&tool, &["expose", "exec", "sh", "--", "sh"]).await;
    ok(&tool, &["allow", "agent", "sh"]).await;
    let mut ch = caller.dial(tool_id, "sh").await.unwrap();
    // Background jobs (a process that calls setsid leaves the group: only a sandbox holds
    // it, see docs/node.md).
    let script = format!(
        "sh -c 'sleep 300' {marker}-a & sh -c 'sleep 300; true' {marker}-b & echo started\n"
    );
    ch.write_all(script.as_bytes()).await.unwrap();
    let mut buf = [0u8; 8];
    ch.read_exact(&mut buf).await.unwrap();
    let running = || async {
        let out = Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert!(running().await >= 1, "the background jobs did not start");
    ok(&tool, &["deny", "agent", "sh"]).await;
    let started = Instant::now();
    while running().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "processes outlived the channel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_revokes_at_once_both_count() {
    let mut net = Net::start().await;
    let (admin, _) = net.node("admin").await;
    let (_, a) = net.node("a").await;
    let (_, b) = net.node("b").await;
    ok(&admin, &["trust", "add", "a", &a]).await;
    ok(&admin, &["trust", "add", "b", &b]).await;
    net.up(&admin).await;
    let (x, y) = tokio::join!(ok(&admin, &["revoke", "a"]), ok(&admin, &["revoke", "b"]));
    assert!(x.contains("revoked") && y.contains("revoked"));
    let issued = std::fs::read_to_string(admin.join("revocations-issued.json")).unwrap();
    assert!(issued.contains(&a) && issued.contains(&b), "{issued}");
    assert!(issued.contains("\"version\": 2"), "{issued}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_peer_ends_the_channels_to_it_and_refuses_new_dials() {
    let mut net = Net::start().await;
    let (_tool, agent, child, stdin, _stdout) = cat_through_pipe(&mut net).await;
    // The agent revokes the tool's key (stolen, say): its own channel to it ends at once...
    ok(&agent, &["revoke", "tool"]).await;
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("the channel to a revoked key stayed open")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pipe exited 0: {stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    // ... and it dials that key no more.
    let said = fails(&agent, &["pipe", "tool/cat"]).await;
    assert!(
        said.contains("is revoked here") && said.contains("does not dial a revoked key"),
        "{said}"
    );
    drop(stdin);
}
