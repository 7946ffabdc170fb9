//! Typed RPC at the callee: the per-method policy (rules, live reloads, audit), approvals,
//! capability tokens narrowed to methods, and the planner example as real processes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nullport_keyring::token::{Scope, Token};
use nullport_node::Node;
use nullport_node::rpc::{ApprovalRequest, Approver, CallOptions, Code, RpcClient};
use nullport_protocol::{DenyReason, Identity, NodeId};
use nullport_tests::{TestNet, fast_limits};

use super::rpc::{Callee, Probes, allow_all, callee, write_policy};

#[tokio::test]
async fn rpc_per_method_policy_denies_audits_and_reloads_on_live_channels() {
    let net = TestNet::start().await;
    let caller = net.node().await;
    let stranger = net.node().await;
    let me = caller.node_id();
    let probes = Probes::default();
    let log = tempfile::tempdir().unwrap();
    let log_path = log.path().join("audit.log");
    let writer = nullport_audit::AuditWriter::open(
        &log_path,
        Identity::generate().unwrap(),
        nullport_audit::AuditConfig::default(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let policy = move |_| {
        format!(
            "[rpc.work]\napprove = [\"jobs.delete\"]\n\
             [rpc.work.allow.\"{me}\"]\nmethods = [\"echo\", \"add\", \"jobs.*\"]\n"
        )
    };
    let callee = callee(&net, policy, |s| s.audit(writer), &probes).await;
    let target = callee.node.node_id();
    // A stranger is refused the channel, before any application byte.
    let e = RpcClient::connect(&stranger, target, "work")
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied, "{e}");
    assert!(
        e.message.contains(&DenyReason::NotAllowed.to_string()),
        "{e}"
    );
    let client = RpcClient::connect(&caller, target, "work").await.unwrap();
    let opts = CallOptions::default();
    assert_eq!(
        client
            .unary::<_, u64>("add", &(1u64, 2u64), opts)
            .await
            .unwrap(),
        3
    );
    // A method outside the caller's rules: the typed denial, and the handler never runs.
    let e = client
        .unary::<_, ()>("admin.reset", &(), opts)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied);
    assert!(
        e.message.contains("method \"admin.reset\" is not allowed"),
        "{e}"
    );
    assert_eq!(probes.handler_ran.load(Ordering::SeqCst), 0);
    // A method marked approve, with no approver configured: refused (fail closed).
    let e = client
        .unary::<_, String>("jobs.delete", &(), opts)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied);
    assert!(e.message.contains("needs a human's approval"), "{e}");
    // The rule removed while the channel is live: the next call on it is denied.
    write_policy(callee.home.path(), "");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = client
        .unary::<_, u64>("add", &(1u64, 2u64), opts)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied, "{e}");
    // The audit log has every decision, as the MCP firewall's are recorded.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["event"] == "rpc")
        .collect();
    let outcome = |method: &str| {
        events
            .iter()
            .filter(|v| v["method"] == method)
            .map(|v| v["outcome"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(outcome("admin.reset"), ["denied"]);
    assert_eq!(outcome("jobs.delete"), ["not approved"]);
    assert_eq!(outcome("add"), ["allowed", "denied"]);
    assert!(
        events
            .iter()
            .any(|v| v["method"] == "" && v["caller"] == stranger.node_id().to_string()),
        "the stranger's refused channel is audited: {events:?}"
    );
}

struct Says(bool);
impl Approver for Says {
    fn approve(
        &self,
        request: ApprovalRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let yes = self.0 && request.method == "jobs.delete";
        Box::pin(async move { yes })
    }
}

#[tokio::test]
async fn rpc_approver_decides_methods_marked_approve() {
    let net = TestNet::start().await;
    let caller = net.node().await;
    let me = caller.node_id();
    let probes = Probes::default();
    let callee = callee(
        &net,
        |_| allow_all(&[me]),
        |s| s.approver(Says(true)),
        &probes,
    )
    .await;
    let client = RpcClient::connect(&caller, callee.node.node_id(), "work")
        .await
        .unwrap();
    let said: String = client
        .unary("jobs.delete", &(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(said, "deleted");
    let probes2 = Probes::default();
    let no = callee_with(&net, me, Says(false), &probes2).await;
    let client = RpcClient::connect(&caller, no.node.node_id(), "work")
        .await
        .unwrap();
    let e = client
        .unary::<_, String>("jobs.delete", &(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied);
    assert_eq!(probes2.handler_ran.load(Ordering::SeqCst), 0);
}

async fn callee_stranger(net: &TestNet) -> Node {
    net.node().await
}

async fn callee_with(net: &TestNet, me: NodeId, approver: Says, probes: &Probes) -> Callee {
    callee(net, |_| allow_all(&[me]), |s| s.approver(approver), probes).await
}

#[tokio::test]
async fn rpc_token_narrowed_to_one_method() {
    let net = TestNet::start().await;
    let issuer = Identity::generate().unwrap();
    let issuer_id = issuer.node_id();
    let holder_identity = Arc::new(Identity::generate().unwrap());
    let holder = net
        .node_unchecked(holder_identity.clone(), fast_limits())
        .await;
    holder.wait_online(Duration::from_secs(5)).await.unwrap();
    let probes = Probes::default();
    // The issuer holds echo and add; the caller has no rule of its own.
    let policy = move |_| {
        format!(
            "[tokens.work]\nissuers = [\"{issuer_id}\"]\n\
             [rpc.work.allow.\"{issuer_id}\"]\nmethods = [\"echo\", \"add\"]\n"
        )
    };
    let callee = callee(&net, policy, |s| s, &probes).await;
    let target = callee.node.node_id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let wide = Token::issue(
        &issuer,
        issuer_id,
        None,
        "work",
        Scope::default(),
        now - 10,
        now + 3600,
    )
    .unwrap();
    // Delegated to the holder, narrowed to one method.
    let narrow = wide
        .delegate(
            &issuer,
            holder.node_id(),
            Some(target),
            Scope {
                methods: Some(vec!["add".into()]),
                ..Scope::default()
            },
            now - 10,
            now + 3600,
        )
        .unwrap();
    let client = RpcClient::connect_with(&holder, target, "work", narrow.to_bytes())
        .await
        .unwrap();
    let opts = CallOptions::default();
    assert_eq!(
        client
            .unary::<_, u64>("add", &(5u64, 6u64), opts)
            .await
            .unwrap(),
        11
    );
    let e = client
        .unary::<_, Vec<u8>>("echo", &vec![1u8], opts)
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied);
    assert!(e.message.contains("method \"echo\" is not allowed"), "{e}");
    // Widening by delegation is refused.
    let widened = narrow.delegate(
        &holder_identity,
        holder.node_id(),
        Some(target),
        Scope {
            methods: Some(vec!["add".into(), "echo".into()]),
            ..Scope::default()
        },
        now - 10,
        now + 3600,
    );
    assert!(
        matches!(
            widened,
            Err(nullport_keyring::token::TokenError::Widened { .. })
        ),
        "{widened:?}"
    );
    // A token for another holder is refused at the channel.
    let e = RpcClient::connect_with(
        &callee_stranger(&net).await,
        target,
        "work",
        narrow.to_bytes(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::Denied, "{e}");
    // An expired token is refused at the channel, though the holder holds a resumption
    // secret for the target (so this open is a resumed one: the callee decides it all the
    // same).
    assert_eq!(holder.resumption_secrets().0, 1);
    let expired = Token::issue(
        &issuer,
        holder.node_id(),
        None,
        "work",
        Scope::default(),
        now - 100,
        now - 90,
    )
    .unwrap();
    let e = RpcClient::connect_with(&holder, target, "work", expired.to_bytes())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Denied, "{e}");
}

/// The planner example as real processes: three worker processes, one planner process
/// fanning 30 jobs out with streaming progress; a planner the workers' policy does not name
/// is refused by every worker.
#[tokio::test]
async fn rpc_planner_and_three_workers_as_processes() {
    use tokio::io::AsyncBufReadExt;
    let net = TestNet::start().await;
    let relay = net.relay_addr().to_string();
    let exe = env!("CARGO_BIN_EXE_np-planner");
    let planner_id = Identity::from_seed([77; 32]).node_id();
    let homes: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut workers = Vec::new();
    let mut ids = Vec::new();
    for home in &homes {
        let mut child = tokio::process::Command::new(exe)
            .args([
                "worker",
                "--relay",
                &relay,
                "--allow",
                &planner_id.to_string(),
            ])
            .arg("--home")
            .arg(home.path())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        ids.push(line.strip_prefix("worker ").unwrap().to_owned());
        workers.push(child);
    }
    let run = |seed: &str| {
        tokio::process::Command::new(exe)
            .args(["plan", "--relay", &relay, "--seed", seed, "--jobs", "30"])
            .args(["--workers", &ids.join(",")])
            .kill_on_drop(true)
            .output()
    };
    let out = tokio::time::timeout(Duration::from_secs(60), run("77"))
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.ends_with("100%") || l.contains("100% on"))
            .count(),
        30
    );
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("done 30 jobs on 3 workers"), "{last}");
    for part in last.rsplit(": ").next().unwrap().split(' ') {
        assert!(part.ends_with("=10"), "jobs spread evenly: {last}");
    }
    // Another planner (another key) is refused by the workers' policy.
    let out = tokio::time::timeout(Duration::from_secs(60), run("78"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("denied") && stderr.contains("not allowed"),
        "{stderr}"
    );
    drop(workers);
}
