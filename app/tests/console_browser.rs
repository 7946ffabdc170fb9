//! The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by
//! `console_browser.py` over WebDriver): a real MCP client's call that needs approval waits,
//! the page shows its arguments, approve completes it (audited as decided in the console),
//! deny refuses the next, a live channel is closed from the status page, the audit trail is
//! verified from its page, and the policy form allows. Screenshots of each page land in
//! target/console-screenshots (docs/console.md shows them).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let test = "console_in_a_real_browser";
    let Some(peers) = mcp_peers(test) else { return };
    if !require(test, &["chromium", "chromedriver"]) {
        return;
    }
    let (_net, tool, agent) = pair().await;
    let data = tool.join("../docs-console");
    std::fs::create_dir_all(&data).unwrap();
    let server = peers.join("server-filesystem/dist/index.js");
    ok(
        &tool,
        &[
            "expose",
            "mcp",
            "files",
            "--",
            "node",
            &server.display().to_string(),
            &data.display().to_string(),
        ],
    )
    .await;
    ok(
        &tool,
        &["mcp", "allow", "agent", "files", "--tools", "write_file"],
    )
    .await;
    ok(&tool, &["mcp", "require-approval", "files", "write_file"]).await;
    ok(&tool, &["expose", "exec", "hold", "--", "cat"]).await;
    ok(&tool, &["allow", "agent", "hold"]).await;
    let login = ok(&tool, &["console"]).await.trim().to_owned();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let approved = data.join("approved.txt");
    let browser = Command::new(peers_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py"))
        .arg(&login)
        .arg(&shots)
        .arg(approved.display().to_string())
        .kill_on_drop(true)
        .stderr(std::process::Stdio::inherit())
        .output();
    let browser = tokio::spawn(browser);
    let call = |path: &Path| serde_json::json!([{ "tool": "write_file", "args": { "path": path.display().to_string(), "content": "written <b>here</b>" } }]);
    // Approved in the browser.
    let report = sdk_client(&agent, "tool/files", call(&approved)).await;
    assert_eq!(report["calls"][0]["ok"], true, "{report}");
    assert!(approved.exists());
    // Denied in the browser.
    let denied = data.join("denied.txt");
    let report = sdk_client(&agent, "tool/files", call(&denied)).await;
    assert_eq!(report["calls"][0]["code"], -32003, "{report}");
    assert!(!denied.exists());
    // A live channel, closed from the status page.
    let (mut hold, mut stdin) = spawn_pipe(&agent, "tool/hold");
    stdin.write_all(b"held open\n").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), hold.wait()).await;
    assert!(ended.is_ok(), "the channel was not closed from the page");
    let out = tokio::time::timeout(Duration::from_secs(60), browser)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen["status_link"].as_str().unwrap().starts_with("online"),
        "{seen}"
    );
    assert_eq!(seen["first_title"], "files/write_file");
    let args = seen["first_args"].as_str().unwrap();
    assert!(
        args.contains(&format!("\"path\": \"{}\"", approved.display()))
            && args.contains("\"content\": \"written <b>here</b>\""),
        "the arguments were not shown as text: {args}"
    );
    assert!(
        seen["channel_row"].as_str().unwrap().contains("hold"),
        "{seen}"
    );
    assert!(
        seen["verify"].as_str().unwrap().starts_with("OK: "),
        "{seen}"
    );
    assert_eq!(seen["policy_message"], "agent may now use extra");
    assert_eq!(seen["browser_errors"], serde_json::json!([]), "{seen}");
    for page in ["status", "approvals", "status-channel", "audit", "policy"] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}.png");
    }
    // The audit log says who decided, where, and why.
    let log = std::fs::read_to_string(tool.join("audit.log")).unwrap();
    let decided: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "approval")
        .collect();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(
        (
            decided[0]["outcome"].as_str(),
            decided[0]["by"].as_str(),
            decided[0]["reason"].as_str()
        ),
        (
            Some("approved"),
            Some("console"),
            Some("looked right in the browser")
        )
    );
    assert_eq!(
        (
            decided[1]["outcome"].as_str(),
            decided[1]["by"].as_str(),
            decided[1]["reason"].as_str()
        ),
        (Some("denied"), Some("console"), Some("not this one"))
    );
    let actions: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "console")
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        actions,
        [
            "login",
            "approve",
            "deny",
            "close channel",
            "verify audit log",
            "allow"
        ]
    );
}
