//! An OpenSSH reverse tunnel: B runs `ssh -R` to a local `sshd` (the "relay"); A connects
//! to the forwarded port on the sshd host. What people use today for "no inbound port".

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::tcp::TcpOpener;
use super::{Path, free_port};
use crate::procs::Proc;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why the path cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    ["ssh", "ssh-keygen", "/usr/sbin/sshd"]
        .into_iter()
        .find(|t| !have(t))
        .map(|t| format!("{t} not installed (Debian: openssh-server, openssh-client)"))
}

/// Starts sshd, the TCP bench server and `ssh -R`; the client dials the forwarded port.
pub async fn start() -> Result<Path> {
    let dir = tempfile::tempdir()?;
    for key in ["host_key", "user_key"] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.path().join(key))
            .status()?;
        if !st.success() {
            bail!("ssh-keygen failed");
        }
    }
    std::fs::copy(
        dir.path().join("user_key.pub"),
        dir.path().join("authorized_keys"),
    )?;
    let sshd_port = free_port()?;
    let config = format!(
        "Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
         PidFile none\nPermitRootLogin yes\nAllowTcpForwarding yes\nGatewayPorts no\n\
         Ciphers chacha20-poly1305@openssh.com\nLogLevel ERROR\n",
        dir.path().join("host_key").display(),
        dir.path().join("authorized_keys").display()
    );
    std::fs::write(dir.path().join("sshd_config"), config)?;
    let _ = std::fs::create_dir_all("/run/sshd");
    let sshd = Proc::spawn(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config")),
        false,
    )?;
    wait_port(sshd_port).await.context("sshd did not start")?;

    let server = Proc::role(&["serve-tcp"])?;
    let server_addr: SocketAddr = server.word(1)?.parse()?;
    let forwarded = free_port()?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let tunnel = Proc::spawn(
        Command::new("ssh")
            .args([
                "-N",
                "-c",
                "chacha20-poly1305@openssh.com",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-p",
                &sshd_port.to_string(),
                "-R",
                &format!("127.0.0.1:{forwarded}:{server_addr}"),
                "-i",
            ])
            .arg(dir.path().join("user_key"))
            .arg(format!("{user}@127.0.0.1")),
        false,
    )?;
    wait_port(forwarded)
        .await
        .context("the ssh -R forward did not come up")?;
    Ok(Path {
        name: "ssh -R",
        security: "hop by hop (chacha20-poly1305); sshd host sees plaintext",
        opener: Arc::new(TcpOpener(SocketAddr::from(([127, 0, 0, 1], forwarded)))),
        relay_pid: Some(sshd.pid()),
        _procs: vec![tunnel, server, sshd],
        _keep: vec![Box::new(dir)],
    })
}

async fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("port {port} never opened")
}
