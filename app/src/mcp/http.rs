//! A local Streamable HTTP MCP server as the upstream of a caller session: each JSON-RPC
//! message the firewall lets through is POSTed; the answer (a JSON body or a `text/event-stream`
//! of messages) flows back through the firewall. Only `http://` on loopback is accepted: the
//! server sits next to the daemon, and the daemon is its only client.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to (loopback).
    pub authority: String,
    /// Request path, e.g. `/mcp`.
    pub path: String,
}

impl HttpTarget {
    /// Parses `http://127.0.0.1:PORT/path` (also `localhost` and `[::1]`).
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs on loopback are supported")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(format!(
                "{host} is not loopback: expose only a server on this machine"
            ));
        }
        if authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err("the URL needs an explicit port".into());
        }
        Ok(HttpTarget {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// One caller session's HTTP state.
#[derive(Debug)]
pub struct HttpUpstream {
    target: HttpTarget,
    session_id: Mutex<Option<String>>,
    protocol_version: Mutex<Option<String>>,
}

/// Largest response body accepted.
const MAX_BODY: usize = 64 << 20;

impl HttpUpstream {
    /// A session towards `target`.
    pub fn new(target: HttpTarget) -> Self {
        Self {
            target,
            session_id: Mutex::new(None),
            protocol_version: Mutex::new(None),
        }
    }

    /// POSTs one message; calls `on_message` for each JSON-RPC message in the answer.
    pub async fn post(
        &self,
        message: &[u8],
        mut on_message: impl FnMut(Vec<u8>),
    ) -> io::Result<()> {
        let body = message.strip_suffix(b"\n").unwrap_or(message);
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.target.path,
            self.target.authority,
            body.len()
        );
        if let Some(id) = self.session_id.lock().await.as_ref() {
            request.push_str(&format!("Mcp-Session-Id: {id}\r\n"));
        }
        if let Some(v) = self.protocol_version.lock().await.as_ref() {
            request.push_str(&format!("MCP-Protocol-Version: {v}\r\n"));
        }
        request.push_str("\r\n");
        let host = self.target.authority.replace(['[', ']'], "");
        let host = if host.starts_with("localhost:") {
            host.replacen("localhost", "127.0.0.1", 1)
        } else {
            host
        };
        let mut stream = TcpStream::connect(&host).await?;
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut reader = BufReader::new(stream);
        // Status line and headers.
        let mut status = String::new();
        reader.read_line(&mut status).await?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (mut chunked, mut length, mut sse) = (false, None, false);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-length" => length = value.parse::<usize>().ok(),
                "content-type" => sse = value.starts_with("text/event-stream"),
                "mcp-session-id" => *self.session_id.lock().await = Some(value.to_owned()),
                _ => {}
            }
        }
        if code == 202 || code == 204 {
            return Ok(());
        }
        if !(200..300).contains(&code) {
            return Err(io::Error::other(format!("MCP server answered HTTP {code}")));
        }
        let mut body = BodyReader {
            reader,
            chunked,
            remaining: length,
            chunk_left: 0,
            done: false,
        };
        let mut pending = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = body.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            if pending.len() > MAX_BODY {
                return Err(io::Error::other("MCP server response too large"));
            }
            if sse {
                // Each event ends with a blank line; its data lines make one message.
                while let Some(end) = find_event_end(&pending) {
                    let event: Vec<u8> = pending.drain(..end).collect();
                    if let Some(message) = sse_data(&event) {
                        self.observe(&message).await;
                        on_message(message);
                    }
                }
            }
        }
        if sse {
            if let Some(message) = sse_data(&pending) {
                self.observe(&message).await;
                on_message(message);
            }
        } else if !pending.iter().all(u8::is_ascii_whitespace) {
            self.observe(&pending).await;
            on_message(pending);
        }
        Ok(())
    }

    /// Remembers the negotiated protocol version from the initialize result.
    async fn observe(&self, message: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(message)
            && let Some(version) = v["result"]["protocolVersion"].as_str()
        {
            *self.protocol_version.lock().await = Some(version.to_owned());
        }
    }
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn sse_data(event: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    Some(data.join("\n").into_bytes())
}

/// An HTTP/1.1 body: chunked, sized, or until the connection closes.
struct BodyReader {
    reader: BufReader<TcpStream>,
    chunked: bool,
    remaining: Option<usize>,
    chunk_left: usize,
    done: bool,
}

impl BodyReader {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.chunked {
            if self.chunk_left == 0 {
                let mut size = String::new();
                self.reader.read_line(&mut size).await?;
                if size.trim().is_empty() {
                    size.clear();
                    self.reader.read_line(&mut size).await?;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                if n == 0 {
                    self.done = true;
                    return Ok(0);
                }
                self.chunk_left = n;
            }
            let want = buf.len().min(self.chunk_left);
            let n = self.reader.read(&mut buf[..want]).await?;
            if n == 0 {
                self.done = true;
            }
            self.chunk_left -= n;
            return Ok(n);
        }
        let want = match self.remaining {
            Some(0) => {
                self.done = true;
                return Ok(0);
            }
            Some(r) => buf.len().min(r),
            None => buf.len(),
        };
        let n = self.reader.read(&mut buf[..want]).await?;
        if n == 0 {
            self.done = true;
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= n;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_loopback_http_with_a_port() {
        assert_eq!(
            HttpTarget::parse("http://127.0.0.1:3001/mcp"),
            Ok(HttpTarget {
                authority: "127.0.0.1:3001".into(),
                path: "/mcp".into()
            })
        );
        assert!(HttpTarget::parse("http://localhost:8080").is_ok());
        assert!(HttpTarget::parse("https://127.0.0.1:3001/mcp").is_err());
        assert!(HttpTarget::parse("http://10.0.0.1:3001/mcp").is_err());
        assert!(HttpTarget::parse("http://127.0.0.1/mcp").is_err());
    }

    #[test]
    fn sse_events_are_split_and_joined() {
        let stream = b"event: message\nid: 1\ndata: {\"a\":1}\n\ndata: {\"b\":\ndata: 2}\n\n";
        let first = find_event_end(stream).unwrap_or(0);
        assert_eq!(sse_data(&stream[..first]), Some(b"{\"a\":1}".to_vec()));
        assert_eq!(sse_data(&stream[first..]), Some(b"{\"b\":\n2}".to_vec()));
    }
}
