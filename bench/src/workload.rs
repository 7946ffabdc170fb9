//! The workloads, identical on every path: one byte names the operation at the start of
//! each stream, then
//! - `U` + u64 length: the client uploads that many pattern bytes; the server checks them
//!   and answers `K` (intact) or `X`;
//! - `D` + u64 length: the server sends that many pattern bytes; the client checks them;
//! - `E`: echo until end of stream (round trips and setup time).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pattern::{self, BLOCK, Verifier};

/// A bidirectional byte stream of any path.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A boxed stream.
pub type Stream = Pin<Box<dyn Duplex>>;

/// How the client side opens a new stream on a path.
pub trait Opener: Send + Sync {
    /// Opens a new stream (a new TCP connection, ssh channel, QUIC stream or nullport
    /// channel) to the bench server.
    fn open(&self) -> Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send + '_>>;

    /// Opens a new stream and sends `first` on it, the quickest way the path has: by
    /// default a write right after [`Opener::open`] (a TCP connect, then the data; a QUIC
    /// stream's data goes in its first packet anyway); a nullport channel sends them behind
    /// its handshake's last message (`Node::dial_sending`).
    fn open_sending<'a>(
        &'a self,
        first: &'a [u8],
    ) -> Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send + 'a>> {
        Box::pin(async move {
            let mut s = self.open().await?;
            s.write_all(first).await?;
            Ok(s)
        })
    }
}

/// Serves one stream: reads the operation and carries it out.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    let mut op = [0u8; 1];
    s.read_exact(&mut op).await?;
    match op[0] {
        b'U' => {
            let len = s.read_u64().await?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut v = Verifier::default();
            while v.len() < len {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                v.update(&buf[..n]);
            }
            let ok = v.intact() && v.len() == len;
            s.write_all(if ok { b"K" } else { b"X" }).await?;
            s.shutdown().await
        }
        b'D' => {
            let len = s.read_u64().await?;
            send_pattern(&mut s, len).await?;
            s.shutdown().await
        }
        b'E' => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return s.shutdown().await;
                }
                s.write_all(&buf[..n]).await?;
                s.flush().await?;
            }
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown bench operation {other}"),
        )),
    }
}

async fn send_pattern<S: AsyncWrite + Unpin>(s: &mut S, len: u64) -> io::Result<()> {
    let mut block = vec![0u8; BLOCK];
    let mut sent = 0u64;
    let mut index = 0u64;
    while sent < len {
        pattern::block(index, &mut block);
        let n = (len - sent).min(BLOCK as u64) as usize;
        s.write_all(&block[..n]).await?;
        sent += n as u64;
        index += 1;
    }
    Ok(())
}

/// Uploads `len` bytes on a new stream; true when the server found them intact.
pub async fn upload(opener: &dyn Opener, len: u64) -> io::Result<()> {
    let mut s = opener.open().await?;
    s.write_all(b"U").await?;
    s.write_u64(len).await?;
    send_pattern(&mut s, len).await?;
    s.flush().await?;
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await?;
    if &answer != b"K" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "server received corrupted bytes",
        ));
    }
    Ok(())
}

/// Downloads `len` bytes on a new stream and checks them.
pub async fn download(opener: &dyn Opener, len: u64) -> io::Result<()> {
    let mut s = opener.open().await?;
    s.write_all(b"D").await?;
    s.write_u64(len).await?;
    s.flush().await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut v = Verifier::default();
    // Read exactly `len` (some tunnels forward the server's end of stream only when both
    // directions close), then the end.
    while v.len() < len {
        let want = (len - v.len()).min(buf.len() as u64) as usize;
        let n = s.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n]);
    }
    // The server may already be gone once it sent everything: closing is best effort.
    let _ = s.shutdown().await;
    if !v.intact() || v.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "received {} of {len} bytes, intact: {}",
                v.len(),
                v.intact()
            ),
        ));
    }
    Ok(())
}

/// Moves `total` bytes over `streams` parallel streams (upload or download); Gbit/s.
pub async fn bulk(opener: Arc<dyn Opener>, streams: u64, total: u64, up: bool) -> io::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let opener = opener.clone();
        let each = total / streams;
        tasks.push(tokio::spawn(async move {
            if up {
                upload(opener.as_ref(), each).await
            } else {
                download(opener.as_ref(), each).await
            }
        }));
    }
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    Ok(total as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9)
}

/// Longest a latency sample may take to collect (a path with 40 ms round trips would
/// otherwise need minutes for 10k).
const SAMPLE_TIME: Duration = Duration::from_secs(30);

/// Up to `count` request/response round trips of `size` bytes on one stream (at most
/// [`SAMPLE_TIME`]); microseconds each.
pub async fn round_trips(opener: &dyn Opener, size: usize, count: usize) -> io::Result<Vec<f64>> {
    let mut s = opener.open().await?;
    s.write_all(b"E").await?;
    let request = vec![0x5Au8; size];
    let mut reply = vec![0u8; size];
    let mut out = Vec::with_capacity(count);
    // Warm-up (windows, congestion state), not counted.
    for _ in 0..count / 10 + 10 {
        s.write_all(&request).await?;
        s.flush().await?;
        s.read_exact(&mut reply).await?;
    }
    let sampling = Instant::now();
    for _ in 0..count {
        if sampling.elapsed() > SAMPLE_TIME {
            break;
        }
        let started = Instant::now();
        s.write_all(&request).await?;
        s.flush().await?;
        s.read_exact(&mut reply).await?;
        out.push(started.elapsed().as_secs_f64() * 1e6);
    }
    if reply != request {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    s.shutdown().await?;
    Ok(out)
}

/// Time from asking for a new stream to the first echoed byte, up to `count` times (at
/// most [`SAMPLE_TIME`]); microseconds.
pub async fn setup_times(opener: &dyn Opener, count: usize) -> io::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(count);
    let sampling = Instant::now();
    for _ in 0..count {
        if sampling.elapsed() > SAMPLE_TIME {
            break;
        }
        let started = Instant::now();
        first_echo(opener).await?;
        out.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

async fn first_echo(opener: &dyn Opener) -> io::Result<()> {
    let mut s = opener.open_sending(b"E!").await?;
    s.flush().await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    if &b != b"!" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    s.shutdown().await?;
    Ok(())
}

/// New streams (each to its first echoed byte) per second over `duration`, `concurrency`
/// at a time.
pub async fn streams_per_second(
    opener: Arc<dyn Opener>,
    concurrency: usize,
    duration: Duration,
) -> io::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let opener = opener.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < duration {
                first_echo(opener.as_ref()).await?;
                n += 1;
            }
            Ok::<_, io::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(io::Error::other)??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
