//! Direct TCP over loopback: the floor of latency, the ceiling of throughput.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};

use super::Path;
use crate::procs::Proc;
use crate::workload::{self, Opener, Stream};

/// Opens TCP connections to one address.
pub struct TcpOpener(pub SocketAddr);

impl Opener for TcpOpener {
    fn open(&self) -> Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send + '_>> {
        Box::pin(async move {
            let s = TcpStream::connect(self.0).await?;
            s.set_nodelay(true)?;
            Ok(Box::pin(s) as Stream)
        })
    }
}

/// Role `serve-tcp`: the bench server on a TCP port; prints `tcp ADDR`.
pub async fn serve() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    crate::say(&format!("tcp {}", listener.local_addr()?));
    loop {
        let (s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(workload::serve(s));
    }
}

/// Starts the server process; the client connects to it directly.
pub fn start() -> Result<Path> {
    let server = Proc::role(&["serve-tcp"])?;
    let addr: SocketAddr = server.word(1)?.parse()?;
    Ok(Path {
        name: "direct TCP",
        security: "none (loopback floor)",
        opener: Arc::new(TcpOpener(addr)),
        relay_pid: None,
        _procs: vec![server],
        _keep: Vec::new(),
    })
}
