//! The console's own security, over raw HTTP: loopback only, a one-time token for a session
//! cookie, Host and origin checks, a strict content security policy, every change audited.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request to `addr`; the response as text.
async fn http(addr: &str, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: &str, path: &str, host: &str, cookie: Option<&str>) -> String {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let _ = addr;
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n")
}

fn post(path: &str, host: &str, cookie: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn console_url(home: &Path) -> (String, String) {
    let url = ok(home, &["console"]).await.trim().to_owned();
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    (addr.to_owned(), format!("/{path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_loopback_token_session_and_same_origin_only() {
    let (_net, tool, _agent) = pair().await;
    let (addr, login) = console_url(&tool).await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    // Nothing without a session.
    let r = http(&addr, &get(&addr, "/", &addr, None)).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // The one-time token gives a session cookie, once.
    let r = http(&addr, &get(&addr, &login, &addr, None)).await;
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    let cookie_line = r
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"),
        "{cookie_line}"
    );
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let replay = http(&addr, &get(&addr, &login, &addr, None)).await;
    assert!(replay.starts_with("HTTP/1.1 403"), "{replay}");
    // With the session: the pages, with a strict policy and no CORS.
    for page in [
        "/",
        "/approvals",
        "/audit",
        "/policy",
        "/audit?caller=np&outcome=accepted",
    ] {
        let r = http(&addr, &get(&addr, page, &addr, Some(&cookie))).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{page}: {r}");
        let lower = r.to_ascii_lowercase();
        assert!(
            lower.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{page}"
        );
        assert!(!lower.contains("access-control-allow"), "{page}");
    }
    // Verifying writes a checkpoint: a change, so a POST from the console's own page.
    let own = format!("Origin: http://{addr}\r\n");
    let verified = http(
        &addr,
        &post("/audit/verify", &addr, &cookie, &own, "verify=1"),
    )
    .await;
    assert!(verified.contains("id=\"verify\">OK: "), "{verified}");
    let by_get = http(&addr, &get(&addr, "/audit/verify", &addr, Some(&cookie))).await;
    assert!(by_get.starts_with("HTTP/1.1 405"), "{by_get}");
    // Another Host (a page that reached here through DNS rebinding): refused.
    let r = http(&addr, &get(&addr, "/", "evil.example", Some(&cookie))).await;
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    // Changes only from the console's own pages.
    let body = "action=allow&peer=agent&service=web";
    for extra in [
        "Origin: http://evil.example\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
        "Origin: null\r\n",
        "",
    ] {
        let r = http(&addr, &post("/policy", &addr, &cookie, extra, body)).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{extra:?}: {r}");
    }
    let policy = std::fs::read_to_string(tool.join("policy.toml")).unwrap_or_default();
    assert!(
        !policy.contains("web"),
        "a refused change was written: {policy}"
    );
    let origin = format!("Origin: http://{addr}\r\n");
    let r = http(&addr, &post("/policy", &addr, &cookie, &origin, body)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("agent may now use web"), "{r}");
    // Without the cookie, even from the right origin: refused.
    let r = http(
        &addr,
        &post("/policy", &addr, "np_console=nope", &origin, body),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // Every action is in the audit log.
    let log = std::fs::read_to_string(tool.join("audit.log")).unwrap();
    let console: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "console")
        .collect();
    let actions: Vec<&str> = console
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["login", "login refused", "verify audit log", "allow"],
        "{console:?}"
    );
    assert!(
        console[0]["detail"].as_str().unwrap().contains("session "),
        "{console:?}"
    );
    // Logging out ends the session.
    let r = http(&addr, &post("/logout", &addr, &cookie, &own, "")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = http(&addr, &get(&addr, "/", &addr, Some(&cookie))).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_does_not_burn_the_right_one() {
    let (_net, tool, _agent) = pair().await;
    let (addr, login) = console_url(&tool).await;
    let wrong = format!("/login?token={}", "0".repeat(64));
    let r = http(&addr, &get(&addr, &wrong, &addr, None)).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = http(&addr, &get(&addr, &login, &addr, None)).await;
    assert!(
        r.starts_with("HTTP/1.1 303"),
        "the owner was locked out: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_user_gets_nothing_even_with_the_cookie() {
    if !require(
        "another_local_user_gets_nothing_even_with_the_cookie",
        &["setpriv", "curl"],
    ) {
        return;
    }
    let (_net, tool, _agent) = pair().await;
    let (addr, login) = console_url(&tool).await;
    let r = http(&addr, &get(&addr, &login, &addr, None)).await;
    let cookie = r
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().split(';').next().unwrap().to_owned())
        .unwrap();
    // uid 4242 holds the stolen cookie and all the right headers: the connection is closed
    // before a byte of HTTP is read.
    let out = tokio::process::Command::new("setpriv")
        .args([
            "--reuid",
            "4242",
            "--regid",
            "4242",
            "--clear-groups",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args([
            "-H",
            &format!("Cookie: {cookie}"),
            "-H",
            "Sec-Fetch-Site: same-origin",
        ])
        .args(["-d", "action=allow&peer=agent&service=stolen"])
        .arg(format!("http://{addr}/policy"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "000",
        "uid 4242 got an HTTP answer"
    );
    let policy = std::fs::read_to_string(tool.join("policy.toml")).unwrap_or_default();
    assert!(!policy.contains("stolen"));
    // The owner, same cookie: served.
    let r = http(&addr, &get(&addr, "/", &addr, Some(&cookie))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}
