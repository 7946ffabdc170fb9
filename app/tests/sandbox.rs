//! Sandboxed services (`expose ... --sandbox`), with real processes: the official MCP
//! filesystem server told it may use all of `/`, so that only the sandbox stands between it
//! and the host, and an exec service that tries what a hostile tool would.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::*;

/// A directory of the test's own, resolved, that the sandbox's user (`nobody` when the
/// tests run as root) may write.
fn open_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::canonicalize(dir).unwrap()
}

/// Processes on the host whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

const HOSTILE: &str = r#"
import json, os, socket, subprocess, sys
work, outside, port, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
res = {"uid": os.getuid()}
def attempt(name, f):
    try:
        res[name] = f()
    except OSError as e:
        res[name] = "refused: " + (os.strerror(e.errno) if e.errno else str(e))
attempt("shadow", lambda: open("/etc/shadow").read() and "read")
attempt("etc", lambda: "listed %d" % len(os.listdir("/etc")))
attempt("home of root", lambda: "listed %d" % len(os.listdir("/root")))
attempt("tcp socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM) and "opened")
attempt("udp socket", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) and "opened")
attempt("write outside", lambda: open(outside + "/x", "w").write("x") and "written")
attempt("write work", lambda: open(work + "/made.txt", "w").write("made in the sandbox") and "written")
attempt("write tmp", lambda: open("/tmp/t", "w").write("t") and "written")
libc = __import__("ctypes").CDLL(None, use_errno=True)
def io_uring():
    import ctypes
    if libc.syscall(425, 8, ctypes.create_string_buffer(120)) >= 0:
        return "set up"
    return "refused: " + os.strerror(ctypes.get_errno())
attempt("io_uring", io_uring)
attempt("ptrace", lambda: subprocess.run(["/usr/bin/python3", "-c", "import ctypes; l=ctypes.CDLL(None); import sys; sys.exit(0 if l.ptrace(16, 1, 0, 0) == 0 else 1)"]).returncode == 0 and "attached" or "refused")
subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(300)", marker], start_new_session=True)
res["processes seen"] = len([p for p in os.listdir("/proc") if p.isdigit()])
print(json.dumps(res), flush=True)
"#;

/// An exec service in the sandbox: no /etc/shadow, no network sockets, no writes outside
/// its `--rw` path, not root, no ptrace, a PID namespace of its own; its work in the `--rw`
/// path lands on the host; and the process it left running is gone once the channel is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_exec_service_can_do_its_work_and_nothing_more() {
    if !require(
        "a_sandboxed_exec_service_can_do_its_work_and_nothing_more",
        &["bwrap", "python3"],
    ) {
        return;
    }
    let (net, tool, agent) = pair().await;
    let work = open_dir(net.dir.path(), "work");
    let outside = open_dir(net.dir.path(), "outside");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let marker = format!("nullport-sandbox-marker-{}", std::process::id());
    let work_s = work.display().to_string();
    let outside_s = outside.display().to_string();
    let expose = [
        "expose",
        "exec",
        "hostile",
        "--sandbox",
        "--rw",
        &work_s,
        "--",
        "/usr/bin/python3",
        "-c",
        HOSTILE,
        &work_s,
        &outside_s,
        &port,
        &marker,
    ];
    ok(&tool, &expose).await;
    let status = ok(&tool, &["status"]).await;
    assert!(
        status.contains("no network") && status.contains(&format!("rw {work_s}")),
        "{status}"
    );
    ok(&tool, &["allow", "agent", "hostile"]).await;
    let out = pipe_output(&agent, "tool/hostile").await;
    let report: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_ne!(report["uid"], 0, "{report}");
    assert!(
        report["shadow"].as_str().unwrap().starts_with("refused"),
        "{report}"
    );
    assert!(
        report["etc"].as_str().unwrap().starts_with("refused"),
        "{report}"
    );
    assert!(
        report["home of root"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{report}"
    );
    assert_eq!(
        report["tcp socket"], "refused: Permission denied",
        "{report}"
    );
    assert_eq!(
        report["udp socket"], "refused: Permission denied",
        "{report}"
    );
    assert!(
        report["write outside"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{report}"
    );
    assert_eq!(report["write work"], "written", "{report}");
    assert_eq!(report["write tmp"], "written", "{report}");
    assert_eq!(report["ptrace"], "refused", "{report}");
    // io_uring could open sockets without socket(): refused (425: io_uring_setup).
    assert_eq!(
        report["io_uring"], "refused: Operation not permitted",
        "{report}"
    );
    assert!(report["processes seen"].as_u64().unwrap() <= 4, "{report}");
    assert_eq!(
        std::fs::read_to_string(work.join("made.txt")).unwrap(),
        "made in the sandbox"
    );
    assert!(!outside.join("x").exists());
    // The channel is over: the process it started in a session of its own is gone too.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a sandboxed process outlived its channel: {:?}",
            processes_with(&marker)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(listener);
}

/// The official filesystem server, told it may use all of `/`, in a sandbox with one
/// `--rw` directory: its normal work there succeeds; /etc/shadow and writes elsewhere fail
/// (only the sandbox stands in the way); its process is gone when the session is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_filesystem_server_reads_and_writes_only_where_it_may() {
    let Some(peers) = mcp_peers("a_sandboxed_filesystem_server_reads_and_writes_only_where_it_may")
    else {
        return;
    };
    if !require(
        "a_sandboxed_filesystem_server_reads_and_writes_only_where_it_may",
        &["bwrap"],
    ) {
        return;
    }
    let (net, tool, agent) = pair().await;
    let work = open_dir(net.dir.path(), "work");
    let outside = open_dir(net.dir.path(), "outside");
    std::fs::write(work.join("a.txt"), "inside text").unwrap();
    let peers = std::fs::canonicalize(&peers).unwrap();
    let server = peers.join("server-filesystem/dist/index.js");
    // The server's code and its dependencies: the whole node_modules, read-only.
    let modules = peers.parent().unwrap();
    let (work_s, peers_s) = (work.display().to_string(), modules.display().to_string());
    ok(
        &tool,
        &[
            "expose",
            "mcp",
            "files",
            "--sandbox",
            "--ro",
            &peers_s,
            "--rw",
            &work_s,
            "--",
            "node",
            &server.display().to_string(),
            "/",
            &work_s,
        ],
    )
    .await;
    ok(&tool, &["mcp", "allow", "agent", "files", "--tools", "*"]).await;
    let calls = serde_json::json!([
        { "tool": "read_text_file", "args": { "path": format!("{work_s}/a.txt") } },
        { "tool": "write_file", "args": { "path": format!("{work_s}/new.txt"), "content": "written by the server" } },
        { "tool": "read_text_file", "args": { "path": "/etc/shadow" } },
        { "tool": "write_file", "args": { "path": format!("{}/x.txt", outside.display()), "content": "x" } },
        { "tool": "list_directory", "args": { "path": "/root" } },
    ]);
    let report = sdk_client(&agent, "tool/files", calls).await;
    let c = &report["calls"];
    assert_eq!(c[0]["text"], "inside text", "{report}");
    assert_eq!(c[1]["ok"], true, "{report}");
    for refused in [2, 3, 4] {
        assert_eq!(c[refused]["ok"], false, "call {refused}: {report}");
        // The server itself allows all of `/`: the refusal is the sandbox's (Landlock).
        assert!(
            c[refused]["text"]
                .as_str()
                .unwrap()
                .starts_with("EACCES: permission denied"),
            "call {refused}: {report}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(work.join("new.txt")).unwrap(),
        "written by the server"
    );
    assert!(!outside.join("x.txt").exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with(&server.display().to_string()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandboxed server outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bad sandboxes are refused when exposed, each with its reason: a program outside the
/// sandbox's view, a `--rw` path the sandbox's user cannot write, a relative or unresolved
/// path, and options without `--sandbox`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_cannot_work_is_refused_when_exposed() {
    if !require(
        "a_sandbox_that_cannot_work_is_refused_when_exposed",
        &["bwrap"],
    ) {
        return;
    }
    let (net, tool, _agent) = pair().await;
    let base = std::fs::canonicalize(net.dir.path()).unwrap();
    let prog = base.join("server.sh");
    std::fs::write(&prog, "#!/bin/sh\ncat\n").unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let closed = base.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let p = prog.display().to_string();
    let err = fails(&tool, &["expose", "exec", "s", "--sandbox", "--", &p]).await;
    assert!(
        err.contains("the program is not inside the sandbox"),
        "{err}"
    );
    if rustix_is_root() {
        let c = closed.display().to_string();
        let b = base.display().to_string();
        let err = fails(
            &tool,
            &[
                "expose",
                "exec",
                "s",
                "--sandbox",
                "--ro",
                &b,
                "--rw",
                &c,
                "--",
                &p,
            ],
        )
        .await;
        assert!(err.contains("not writable by the sandbox's user"), "{err}");
    }
    let err = fails(
        &tool,
        &[
            "expose",
            "exec",
            "s",
            "--sandbox",
            "--ro",
            "rel",
            "--",
            "cat",
        ],
    )
    .await;
    assert!(err.contains("rel: not an absolute path"), "{err}");
    let dotted = format!("{}/closed/..", base.display());
    let err = fails(
        &tool,
        &[
            "expose",
            "exec",
            "s",
            "--sandbox",
            "--ro",
            &dotted,
            "--",
            "cat",
        ],
    )
    .await;
    assert!(err.contains("not a resolved path"), "{err}");
    let err = fails(&tool, &["expose", "exec", "s", "--rw", "/srv", "--", "cat"]).await;
    assert!(err.contains("--sandbox"), "{err}");
    // Nothing was exposed by any of these.
    let status = ok(&tool, &["status"]).await;
    assert!(!status.contains(" s "), "{status}");
    // And a good one is.
    ok(&tool, &["expose", "exec", "s", "--sandbox", "--", "cat"]).await;
    // No sandbox path inside one a sandbox may write (it could plant a symlink there, and a
    // read-only path inside it would be writable), none near the node's home.
    let shared = open_dir(&base, "shared");
    std::fs::create_dir(shared.join("sub")).unwrap();
    let (sh, sub) = (
        shared.display().to_string(),
        shared.join("sub").display().to_string(),
    );
    ok(
        &tool,
        &["expose", "exec", "w", "--sandbox", "--rw", &sh, "--", "cat"],
    )
    .await;
    let err = fails(
        &tool,
        &[
            "expose",
            "exec",
            "r",
            "--sandbox",
            "--ro",
            &sub,
            "--",
            "cat",
        ],
    )
    .await;
    assert!(err.contains("which a sandbox may write"), "{err}");
    let err = fails(
        &tool,
        &[
            "expose",
            "exec",
            "n",
            "--sandbox",
            "--rw",
            &sh,
            "--ro",
            &sub,
            "--",
            "cat",
        ],
    )
    .await;
    assert!(err.contains("which a sandbox may write"), "{err}");
    let home = std::fs::canonicalize(&tool).unwrap().display().to_string();
    let err = fails(
        &tool,
        &[
            "expose",
            "exec",
            "h",
            "--sandbox",
            "--ro",
            &home,
            "--",
            "cat",
        ],
    )
    .await;
    assert!(err.contains("overlaps the node's home"), "{err}");
    // The same checks when the file is edited by hand: the reload is refused, the daemon
    // keeps what it had.
    let config = tool.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[services.cfgroot]\nexec = [\"cat\"]\n[services.cfgroot.sandbox]\nrw = [\"/\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    let err = fails(&tool, &["reload"]).await;
    assert!(
        err.contains("service \"cfgroot\"") && err.contains("cannot be bound"),
        "{err}"
    );
    let status = ok(&tool, &["status"]).await;
    assert!(status.contains("NOT IN FORCE"), "{status}");
    assert!(
        !status
            .lines()
            .any(|l| l.trim_start().starts_with("cfgroot")),
        "{status}"
    );
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// The launcher refuses to run the server when a bound path is not the directory the daemon
/// checked (a swap between the check and bubblewrap's mount).
#[test]
fn a_path_swapped_after_the_check_is_refused_by_the_launcher() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let other = std::fs::metadata(&b).unwrap();
    let plan = serde_json::json!({
        "sandbox": { "ro": [a], "memory_mib": 64, "processes": 8, "cpu_secs": 10 },
        "program": "/bin/true",
        "args": [],
        "bound": [[a, other.dev(), other.ino()]],
    });
    let out = std::process::Command::new(NULLPORT)
        .args(["__sandbox-exec", &plan.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("changed between the check and the mount"),
        "{said}"
    );
}
