//! `tcp` services with `http_peer_header = true`: the daemon speaks HTTP/1.1 on the channel
//! instead of copying bytes, and hands each request to the backend with the caller named in
//! [`PEER_HEADER`] (its NodeId) and [`PEER_ALIAS_HEADER`] (its alias here, if it has one).
//! Whatever the caller sent under either name, in any case and any number of times, is
//! removed first, so the backend sees exactly one value, set by nullport.
//!
//! One channel is one HTTP connection from the caller, served by hyper: requests in turn
//! (keep-alive), bodies streamed both ways with backpressure (never held whole), heads
//! bounded by [`MAX_BUF`] and [`MAX_HEADERS`]. A request hyper cannot parse gets hyper's own
//! 400 (431 for a head too large, 414 for a URI too long) and the channel closes. Requests go
//! to the backend over one kept-alive connection, made again when the backend closed it.
//! An upgrade (`Connection: upgrade`, e.g. WebSocket) is passed through: the stamped request
//! goes to the backend, and if it answers 101 the channel and that backend connection are
//! joined byte for byte from then on. `CONNECT` is refused with 405.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::io::connect_tcp;
use super::io::{Counted, Shared, forward};

/// The caller's NodeId (`np...`), set by nullport on every request.
pub const PEER_HEADER: HeaderName = HeaderName::from_static("x-nullport-peer");
/// The caller's alias in this node's trust store, set when it has one.
pub const PEER_ALIAS_HEADER: HeaderName = HeaderName::from_static("x-nullport-peer-alias");

/// Read buffer of each HTTP connection (caller and backend side): the largest request or
/// response head, and the most body bytes read ahead.
pub const MAX_BUF: usize = 64 * 1024;
/// Most header lines in one request or response head.
pub const MAX_HEADERS: usize = 100;
/// Time for a request head to arrive, counted from the end of the previous exchange: a
/// kept-alive connection idle this long is closed.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Hop-by-hop headers (RFC 9110 section 7.6.1), which describe the connection they came
/// on and are not passed on in either direction. `Expect: 100-continue` is answered by the
/// daemon itself. `Upgrade` is put back on an upgrade request and its 101 answer.
const HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    UPGRADE,
    EXPECT,
];

/// Headers that a `Connection` header may not remove: they frame the message (hyper has
/// already checked them) or name its target.
const NOT_HOP_BY_HOP: [HeaderName; 3] = [CONTENT_LENGTH, TRANSFER_ENCODING, HOST];

/// What the backend is told about the caller.
#[derive(Debug, Clone)]
pub struct CallerHeaders {
    peer: HeaderValue,
    alias: Option<HeaderValue>,
}

impl CallerHeaders {
    /// The headers naming `peer` (and its `alias` here, if any).
    pub fn new(peer: &nullport_protocol::NodeId, alias: Option<&str>) -> Self {
        // A NodeId is ASCII letters and digits; aliases are checked by the trust store
        // (letters, digits, `.`, `_`, `-`), so both always make header values.
        let peer = HeaderValue::from_str(&peer.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let alias = alias.and_then(|a| HeaderValue::from_str(a).ok());
        Self { peer, alias }
    }
}

/// Rewrites a request's headers for the backend: drops hop-by-hop headers and every
/// [`PEER_HEADER`] / [`PEER_ALIAS_HEADER`] the caller sent, then sets them for the caller.
/// Returns the protocols the caller asks to upgrade to (then put back with
/// `Connection: upgrade`), if it does.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    version: Version,
    caller: &CallerHeaders,
) -> Option<HeaderValue> {
    let upgrade = upgrade_asked(headers, version);
    strip_hop_by_hop(headers);
    // Every value under either name goes (names are compared without case); `insert`
    // would replace them too, but the alias must go even when none is set.
    headers.remove(PEER_HEADER);
    headers.remove(PEER_ALIAS_HEADER);
    headers.insert(PEER_HEADER, caller.peer.clone());
    if let Some(alias) = &caller.alias {
        headers.insert(PEER_ALIAS_HEADER, alias.clone());
    }
    if let Some(protocols) = &upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocols.clone());
    }
    upgrade
}

/// Rewrites a response's headers for the caller: drops hop-by-hop headers, but keeps
/// `Upgrade` (with `Connection: upgrade`) on a 101 that answers an upgrade request.
pub fn rewrite_response(headers: &mut HeaderMap, switching: bool) {
    let upgrade = switching.then(|| joined(headers, &UPGRADE)).flatten();
    strip_hop_by_hop(headers);
    if let Some(protocols) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocols);
    }
}

/// The `Upgrade` protocols of an HTTP/1.1 request whose `Connection` names `upgrade`.
fn upgrade_asked(headers: &HeaderMap, version: Version) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || !connection_tokens(headers).any(|t| t == UPGRADE) {
        return None;
    }
    joined(headers, &UPGRADE)
}

/// Every value under `name`, joined with commas (None: there is none).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut all = Vec::new();
    for value in headers.get_all(name) {
        if !all.is_empty() {
            all.extend_from_slice(b", ");
        }
        all.extend_from_slice(value.as_bytes());
    }
    (!all.is_empty())
        .then(|| HeaderValue::from_bytes(&all).ok())
        .flatten()
}

/// The header names listed in `Connection`.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|n| !NOT_HOP_BY_HOP.contains(n))
        .collect();
    for name in named.into_iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Where the backend is, and how each connection to it starts.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// The PROXY v2 header each connection starts with, if the service sends one.
    pub proxy_header: Option<Vec<u8>>,
}

/// Why a request did not reach the backend.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("connecting to the backend: {0}")]
    Connect(#[from] io::Error),
    #[error("backend connection: {0}")]
    Http(#[from] hyper::Error),
}

/// The backend side: one kept-alive connection at a time.
struct Backend {
    target: Target,
    /// The connection made before the channel was accepted, used first.
    first: Option<TcpStream>,
    sender: Option<SendRequest<Incoming>>,
    /// Drives the backend connections (aborted with the channel).
    connections: JoinSet<()>,
}

impl Backend {
    /// Sends `request`, on the kept-alive connection if it is still open, else on a new one;
    /// a request the closing connection did not take is sent again on a new one.
    async fn send(
        &mut self,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, BackendError> {
        let mut request = request;
        let mut retried = false;
        loop {
            let mut sender = match self.sender.take() {
                Some(mut sender) => match sender.ready().await {
                    Ok(()) => sender,
                    Err(_) => self.connect().await?,
                },
                None => self.connect().await?,
            };
            let sent = sender.try_send_request(request).await;
            self.sender = Some(sender);
            match sent {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(back) if !retried => {
                        retried = true;
                        self.sender = None;
                        request = back;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    async fn connect(&mut self) -> Result<SendRequest<Incoming>, BackendError> {
        let tcp = match self.first.take() {
            Some(tcp) => tcp,
            None => {
                let mut tcp = connect_tcp(&self.target.addr).await?;
                if let Some(header) = &self.target.proxy_header {
                    tokio::io::AsyncWriteExt::write_all(&mut tcp, header).await?;
                }
                tcp
            }
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_BUF)
            .max_headers(MAX_HEADERS)
            .handshake(TokioIo::new(tcp))
            .await?;
        while self.connections.try_join_next().is_some() {}
        self.connections.spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("backend connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// A channel served as HTTP, for one caller.
pub struct HttpRelay {
    caller: CallerHeaders,
    backend: tokio::sync::Mutex<Backend>,
    /// The two halves of an upgrade the backend accepted: the caller's, the backend's.
    upgrade: std::sync::Mutex<Option<(OnUpgrade, OnUpgrade)>>,
}

impl HttpRelay {
    /// A relay to `target` for `caller`.
    pub fn new(target: Target, caller: CallerHeaders) -> Self {
        let backend = Backend {
            target,
            first: None,
            sender: None,
            connections: JoinSet::new(),
        };
        Self {
            caller,
            backend: tokio::sync::Mutex::new(backend),
            upgrade: std::sync::Mutex::new(None),
        }
    }

    /// Serves the channel until the caller closes it, a request is malformed, or an
    /// upgraded connection ends. The first request goes on `first` (connected before the
    /// channel was accepted, its PROXY header already sent).
    pub async fn run(
        mut self,
        channel: Counted<nullport_node::Channel>,
        first: TcpStream,
    ) -> io::Result<()> {
        self.backend.get_mut().first = Some(first);
        let relay = Arc::new(self);
        let service = {
            let relay = relay.clone();
            hyper::service::service_fn(move |request| relay.clone().handle(request))
        };
        // One handle for hyper, one to close the channel when hyper is done.
        let channel = Shared::new(channel);
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_BUF)
            .max_headers(MAX_HEADERS)
            .half_close(true)
            .serve_connection(TokioIo::new(channel.clone()), service)
            .with_upgrades()
            .await;
        let upgrade = lock(&relay.upgrade).take();
        let ended = match (served, upgrade) {
            (Err(e), _) => Err(io::Error::other(e)),
            (Ok(()), None) => Ok(()),
            (Ok(()), Some((caller, backend))) => splice(caller, backend).await,
        };
        // The backend connections end here; the channel ends with a close frame however
        // hyper finished (it closes the channel itself only after a clean end).
        drop(relay);
        let _ = tokio::time::timeout(Duration::from_secs(2), channel.shutdown()).await;
        ended
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let mut request = request;
        if request.method() == Method::CONNECT {
            return Ok(refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not relayed\n",
            ));
        }
        let version = request.version();
        let upgrade = rewrite_request(request.headers_mut(), version, &self.caller);
        let caller_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let sent = self.backend.lock().await.send(request).await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!("request not relayed: {e}");
                return Ok(refusal(
                    StatusCode::BAD_GATEWAY,
                    "the service's backend is unavailable\n",
                ));
            }
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(caller_upgrade) = caller_upgrade else {
                tracing::warn!("the backend switched protocols unasked");
                return Ok(refusal(
                    StatusCode::BAD_GATEWAY,
                    "the service's backend switched protocols unasked\n",
                ));
            };
            let backend_upgrade = hyper::upgrade::on(&mut response);
            *lock(&self.upgrade) = Some((caller_upgrade, backend_upgrade));
        }
        rewrite_response(response.headers_mut(), switching);
        Ok(response.map(Body::new))
    }
}

/// Joins an upgraded channel and backend connection, byte for byte, until both are done.
async fn splice(caller: OnUpgrade, backend: OnUpgrade) -> io::Result<()> {
    let (caller, backend) = tokio::join!(caller, backend);
    let mut caller = TokioIo::new(caller.map_err(io::Error::other)?);
    let mut backend = TokioIo::new(backend.map_err(io::Error::other)?);
    forward(&mut caller, &mut backend).await.map(drop)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A short plain-text answer from the daemon itself.
fn refusal(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(alias: Option<&str>) -> CallerHeaders {
        let peer = nullport_protocol::Identity::from_seed([7; 32]).node_id();
        CallerHeaders::new(&peer, alias)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn forged_peer_headers_are_replaced_by_one_true_value() {
        let who = caller(Some("laptop"));
        let mut h = headers(&[
            ("X-Nullport-Peer", "npFAKE"),
            ("x-nullport-peer", "npFAKE2"),
            ("X-NULLPORT-PEER-ALIAS", "admin"),
            ("accept", "*/*"),
        ]);
        assert_eq!(rewrite_request(&mut h, Version::HTTP_11, &who), None);
        let peer: Vec<_> = h.get_all(PEER_HEADER).iter().collect();
        assert_eq!(peer, vec![&who.peer]);
        assert!(peer[0].to_str().unwrap().starts_with("np"));
        let alias: Vec<_> = h.get_all(PEER_ALIAS_HEADER).iter().collect();
        assert_eq!(alias, vec![&HeaderValue::from_static("laptop")]);
        assert_eq!(h.get("accept").unwrap(), "*/*");
        // No alias here: a forged one is removed and none is set.
        let mut h = headers(&[("x-nullport-peer-alias", "admin")]);
        rewrite_request(&mut h, Version::HTTP_11, &caller(None));
        assert!(h.get(PEER_ALIAS_HEADER).is_none());
        assert_eq!(h.get_all(PEER_HEADER).iter().count(), 1);
    }

    #[test]
    fn hop_by_hop_headers_go_but_framing_and_our_header_stay() {
        let who = caller(None);
        let mut h = headers(&[
            (
                "connection",
                "keep-alive, X-Nullport-Peer, content-length, x-secret",
            ),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("expect", "100-continue"),
            ("content-length", "3"),
        ]);
        assert_eq!(rewrite_request(&mut h, Version::HTTP_11, &who), None);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te",
            "expect",
            "upgrade",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h.get(CONTENT_LENGTH).unwrap(), "3");
        assert_eq!(h.get(PEER_HEADER), Some(&who.peer));
    }

    #[test]
    fn upgrades_are_kept_only_when_asked_for_in_http_1_1() {
        let who = caller(None);
        let asked = [("connection", "Upgrade"), ("upgrade", "websocket")];
        let mut h = headers(&asked);
        let got = rewrite_request(&mut h, Version::HTTP_11, &who);
        assert_eq!(got, Some(HeaderValue::from_static("websocket")));
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        let mut h = headers(&asked);
        assert_eq!(rewrite_request(&mut h, Version::HTTP_10, &who), None);
        assert!(h.get(UPGRADE).is_none());
        let mut h = headers(&[("upgrade", "websocket")]);
        assert_eq!(rewrite_request(&mut h, Version::HTTP_11, &who), None);
        assert!(h.get(UPGRADE).is_none());
        let mut h = headers(&[("connection", "upgrade"), ("upgrade", "h2c"), ("x", "1")]);
        rewrite_response(&mut h, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "h2c");
        let mut h = headers(&[("connection", "close, x"), ("upgrade", "h2c"), ("x", "1")]);
        rewrite_response(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }
}
