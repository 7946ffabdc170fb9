//! rathole with its Noise transport: B's rathole client dials out to the rathole server
//! (the "relay"), which exposes B's service on a TCP port; A connects there. Encryption
//! is hop by hop (Noise_NK between client and server): the server sees plaintext. Runs only
//! when `rathole` is installed (`cargo install rathole`).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::tcp::TcpOpener;
use super::{Path, free_port};
use crate::procs::Proc;
use crate::workload::Opener;

/// Why the path cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    match Command::new("rathole").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("rathole not installed (cargo install rathole)".into()),
    }
}

fn keypair() -> Result<(String, String)> {
    let out = Command::new("rathole").arg("--genkey").output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let after = |label: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with(label))
            .skip(1)
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    };
    match (after("Private Key"), after("Public Key")) {
        (Some(private), Some(public)) => Ok((private, public)),
        _ => bail!("unexpected `rathole --genkey` output: {text}"),
    }
}

/// Starts the rathole server and client and the TCP bench server behind the client.
pub async fn start() -> Result<Path> {
    let dir = tempfile::tempdir()?;
    let (private, public) = keypair()?;
    let (control, exposed) = (free_port()?, free_port()?);
    let server = Proc::role(&["serve-tcp"])?;
    let server_addr: SocketAddr = server.word(1)?.parse()?;
    std::fs::write(
        dir.path().join("server.toml"),
        format!(
            "[server]\nbind_addr = \"127.0.0.1:{control}\"\n[server.transport]\ntype = \"noise\"\n\
             [server.transport.noise]\nlocal_private_key = \"{private}\"\n\
             [server.services.bench]\ntoken = \"bench\"\nbind_addr = \"127.0.0.1:{exposed}\"\nnodelay = true\n"
        ),
    )?;
    std::fs::write(
        dir.path().join("client.toml"),
        format!(
            "[client]\nremote_addr = \"127.0.0.1:{control}\"\n[client.transport]\ntype = \"noise\"\n\
             [client.transport.noise]\nremote_public_key = \"{public}\"\n\
             [client.services.bench]\ntoken = \"bench\"\nlocal_addr = \"{server_addr}\"\nnodelay = true\n"
        ),
    )?;
    let relay = Proc::spawn(
        Command::new("rathole")
            .arg("--server")
            .arg(dir.path().join("server.toml"))
            .env("RUST_LOG", "error"),
        false,
    )?;
    let client = Proc::spawn(
        Command::new("rathole")
            .arg("--client")
            .arg(dir.path().join("client.toml"))
            .env("RUST_LOG", "error"),
        false,
    )?;
    let opener = TcpOpener(SocketAddr::from(([127, 0, 0, 1], exposed)));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = tokio::time::timeout(
            Duration::from_secs(1),
            crate::workload::setup_times(&opener as &dyn Opener, 1),
        )
        .await;
        if matches!(ok, Ok(Ok(_))) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the rathole tunnel never carried an echo");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Path {
        name: "rathole + Noise",
        security: "hop by hop (Noise_NK); rathole server sees plaintext",
        opener: Arc::new(opener),
        relay_pid: Some(relay.pid()),
        _procs: vec![client, relay, server],
        _keep: vec![Box::new(dir)],
    })
}
