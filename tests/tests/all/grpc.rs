//! gRPC and HTTP over nullport (`nullport_node::http`), through a real relay on loopback: tonic
//! unary and server-streaming calls with byte-exact payloads, an axum router called with a
//! hyper client over `Node::dial`, the caller's NodeId as every handler sees it, callers
//! denied before any handler runs, and the greeter example as separate processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nullport_node::http::{self, PeerIdentity};
use nullport_node::{Error, Node};
use nullport_protocol::{DenyReason, NodeId};
use nullport_tests::{TestNet, init_tracing, pattern};
use sha2::{Digest, Sha256};
use tonic::codegen::{BoxFuture, BoxStream, Context, Poll, Service, StdError, http as h};
use tonic::{Request, Response, Status};

/// `blobs.Blob`: bytes one way or the other.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

/// `blobs.Echoed`: what the server received, back, with its digest and the caller it saw.
#[derive(Clone, PartialEq, prost::Message)]
struct Echoed {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    sha256: Vec<u8>,
    #[prost(string, tag = "3")]
    caller: String,
}

/// `blobs.Want`: `len` patterned bytes from `seed`, sent in `chunk`-sized messages.
#[derive(Clone, PartialEq, prost::Message)]
struct Want {
    #[prost(uint64, tag = "1")]
    len: u64,
    #[prost(uint64, tag = "2")]
    seed: u64,
    #[prost(uint64, tag = "3")]
    chunk: u64,
}

const ECHO: &str = "/blobs.Blobs/Echo";
const CHUNKS: &str = "/blobs.Blobs/Chunks";
const MIB: usize = 1 << 20;

/// `service Blobs { rpc Echo(Blob) returns (Echoed); rpc Chunks(Want) returns (stream Blob); }`,
/// recording every caller its handlers saw.
#[derive(Clone, Default)]
struct Blobs {
    seen: Arc<Mutex<Vec<PeerIdentity>>>,
}

impl Blobs {
    fn record<T>(&self, request: &Request<T>) -> Result<NodeId, Status> {
        let peer = http::peer(request)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no PeerIdentity"))?;
        let node_id = peer.node_id;
        self.seen.lock().unwrap().push(peer);
        Ok(node_id)
    }

    fn seen(&self) -> Vec<PeerIdentity> {
        self.seen.lock().unwrap().clone()
    }
}

impl tonic::server::NamedService for Blobs {
    const NAME: &'static str = "blobs.Blobs";
}

impl tonic::server::UnaryService<Blob> for Blobs {
    type Response = Echoed;
    type Future = BoxFuture<Response<Echoed>, Status>;

    fn call(&mut self, request: Request<Blob>) -> Self::Future {
        let caller = self.record(&request);
        Box::pin(async move {
            let data = request.into_inner().data;
            Ok(Response::new(Echoed {
                sha256: Sha256::digest(&data).to_vec(),
                data,
                caller: caller?.to_string(),
            }))
        })
    }
}

impl tonic::server::ServerStreamingService<Want> for Blobs {
    type Response = Blob;
    type ResponseStream = BoxStream<Blob>;
    type Future = BoxFuture<Response<BoxStream<Blob>>, Status>;

    fn call(&mut self, request: Request<Want>) -> Self::Future {
        let caller = self.record(&request);
        Box::pin(async move {
            caller?;
            let want = request.into_inner();
            let data = pattern(want.len as usize, want.seed);
            let chunks: Vec<Result<Blob, Status>> = data
                .chunks(want.chunk.max(1) as usize)
                .map(|c| Ok(Blob { data: c.to_vec() }))
                .collect();
            let stream: BoxStream<Blob> = Box::pin(tonic::codegen::tokio_stream::iter(chunks));
            Ok(Response::new(stream))
        })
    }
}

impl<B> Service<h::Request<B>> for Blobs
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = h::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: h::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            Ok(match request.uri().path() {
                ECHO => {
                    let codec = tonic_prost::ProstCodec::<Echoed, Blob>::default();
                    tonic::server::Grpc::new(codec).unary(this, request).await
                }
                CHUNKS => {
                    let codec = tonic_prost::ProstCodec::<Blob, Want>::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    grpc.server_streaming(this, request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A relay, a server node and a client node, all online.
async fn pair(net: &TestNet) -> (Arc<Node>, Arc<Node>) {
    (Arc::new(net.node().await), Arc::new(net.node().await))
}

/// Serves `blobs` on `server` as service "blobs" to the callers in `allowed`, on a task
/// aborted when the handle drops.
fn serve_blobs(server: &Arc<Node>, blobs: &Blobs, allowed: Vec<NodeId>) -> AbortOnDrop {
    let (server, blobs) = (server.clone(), blobs.clone());
    AbortOnDrop(tokio::spawn(async move {
        let router = tonic::transport::Server::builder().add_service(blobs);
        let allow = move |peer, _: &str| allowed.contains(&peer);
        http::serve_tonic(&server, "blobs", router, allow)
            .await
            .unwrap();
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn grpc_client(
    client: &Arc<Node>,
    server: NodeId,
) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_static("http://blobs.nullport")
        .connect_with_connector(http::connector(client.clone(), server, "blobs"))
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn path(p: &'static str) -> h::uri::PathAndQuery {
    h::uri::PathAndQuery::from_static(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_call_through_the_relay_is_byte_exact_and_names_the_caller() {
    init_tracing();
    let net = TestNet::start().await;
    let (server, client) = pair(&net).await;
    let blobs = Blobs::default();
    let _serving = serve_blobs(&server, &blobs, vec![client.node_id()]);

    let mut grpc = grpc_client(&client, server.node_id()).await;
    for seed in [1, 2] {
        let data = pattern(MIB, seed);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<Blob, Echoed>::default();
        let request = Request::new(Blob { data: data.clone() });
        let echoed = grpc.unary(request, path(ECHO), codec).await.unwrap();
        let echoed = echoed.into_inner();
        assert_eq!(echoed.sha256, Sha256::digest(&data).to_vec());
        assert_eq!(Sha256::digest(&echoed.data), Sha256::digest(&data));
        assert_eq!(echoed.caller, client.node_id().to_string());
    }
    let expected = PeerIdentity {
        node_id: client.node_id(),
        service: "blobs".to_owned(),
    };
    assert_eq!(blobs.seen(), vec![expected.clone(), expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_streaming_through_the_relay_is_byte_exact() {
    init_tracing();
    let net = TestNet::start().await;
    let (server, client) = pair(&net).await;
    let blobs = Blobs::default();
    let _serving = serve_blobs(&server, &blobs, vec![client.node_id()]);

    let mut grpc = grpc_client(&client, server.node_id()).await;
    let (len, chunk) = (4 * MIB + 7, 64 * 1024 + 3);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Want, Blob>::default();
    let want = Want {
        len: len as u64,
        seed: 9,
        chunk: chunk as u64,
    };
    let response = grpc
        .server_streaming(Request::new(want), path(CHUNKS), codec)
        .await
        .unwrap();
    let mut stream = response.into_inner();
    let (mut received, mut messages) = (Vec::with_capacity(len), 0);
    while let Some(blob) = stream.message().await.unwrap() {
        received.extend_from_slice(&blob.data);
        messages += 1;
    }
    assert_eq!(messages, len.div_ceil(chunk));
    assert_eq!(received.len(), len);
    assert_eq!(Sha256::digest(&received), Sha256::digest(pattern(len, 9)));
    assert_eq!(
        blobs.seen(),
        vec![PeerIdentity {
            node_id: client.node_id(),
            service: "blobs".to_owned(),
        }]
    );
}

/// The node error inside a failed connection or call.
fn denial(e: &(dyn std::error::Error + 'static)) -> (NodeId, String, DenyReason) {
    match http::node_error(e) {
        Some(Error::Denied {
            peer,
            service,
            reason,
        }) => (*peer, service.clone(), *reason),
        other => panic!("expected Denied, got {other:?} from {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_caller_not_allowed_is_denied_and_no_handler_runs() {
    init_tracing();
    let net = TestNet::start().await;
    let (server, friend) = pair(&net).await;
    let stranger = Arc::new(net.node().await);
    let blobs = Blobs::default();
    let _serving = serve_blobs(&server, &blobs, vec![friend.node_id()]);
    let expected = (server.node_id(), "blobs".to_owned(), DenyReason::NotAllowed);

    // Connecting eagerly: the connection itself fails with the node's Denied.
    let e = tonic::transport::Endpoint::from_static("http://blobs.nullport")
        .connect_with_connector(http::connector(stranger.clone(), server.node_id(), "blobs"))
        .await
        .unwrap_err();
    assert_eq!(denial(&e), expected);

    // Lazily: the call fails with an Unavailable status that carries the Denied.
    let channel = tonic::transport::Endpoint::from_static("http://blobs.nullport")
        .connect_with_connector_lazy(http::connector(stranger.clone(), server.node_id(), "blobs"));
    let mut grpc = tonic::client::Grpc::new(channel);
    let codec = tonic_prost::ProstCodec::<Blob, Echoed>::default();
    let status = async {
        grpc.ready()
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        let request = Request::new(Blob {
            data: b"let me in".to_vec(),
        });
        grpc.unary(request, path(ECHO), codec).await
    }
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(denial(&status), expected);

    // Another service on the same node: not exposed.
    let e = stranger.dial(server.node_id(), "admin").await.unwrap_err();
    assert_eq!(
        denial(&e),
        (
            server.node_id(),
            "admin".to_owned(),
            DenyReason::UnknownService
        )
    );

    // The allowed caller still gets through, and is the only caller any handler saw.
    let mut grpc = grpc_client(&friend, server.node_id()).await;
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Blob, Echoed>::default();
    let request = Request::new(Blob { data: vec![7; 10] });
    let echoed = grpc.unary(request, path(ECHO), codec).await.unwrap();
    assert_eq!(echoed.into_inner().caller, friend.node_id().to_string());
    let seen: Vec<NodeId> = blobs.seen().iter().map(|p| p.node_id).collect();
    assert_eq!(seen, vec![friend.node_id()]);
}

/// An axum app answering with the caller it saw and the SHA-256 of the body, counting calls.
fn web_app(calls: Arc<AtomicUsize>) -> axum::Router {
    use axum::Extension;
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/whoami",
            get(|Extension(peer): Extension<PeerIdentity>| async move {
                format!("{} {}", peer.node_id, peer.service)
            }),
        )
        .route(
            "/sha256",
            post(
                |Extension(peer): Extension<PeerIdentity>, body: axum::body::Bytes| async move {
                    format!("{} {:x}", peer.node_id, Sha256::digest(&body))
                },
            ),
        )
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                calls.fetch_add(1, Ordering::SeqCst);
                next.run(request)
            },
        ))
}

/// Sends `request` over a new HTTP/2 connection on a channel to `web` on `server`.
async fn http2_call(
    client: &Node,
    server: NodeId,
    request: h::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(h::StatusCode, String), Error> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let channel = client.dial(server, "web").await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(channel))
            .await
            .unwrap();
    let driving = tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let answer = read_response(response).await;
    drop(sender);
    driving.await.unwrap().unwrap();
    Ok(answer)
}

/// Sends `request` over a new HTTP/1.1 connection on a channel to `web` on `server`.
async fn http1_call(
    client: &Node,
    server: NodeId,
    request: h::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(h::StatusCode, String), Error> {
    let channel = client.dial(server, "web").await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(channel))
            .await
            .unwrap();
    let driving = tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let answer = read_response(response).await;
    drop(sender);
    driving.await.unwrap().unwrap();
    Ok(answer)
}

async fn read_response(response: h::Response<hyper::body::Incoming>) -> (h::StatusCode, String) {
    use http_body_util::BodyExt;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_axum_router_served_from_a_node_sees_the_caller_and_strangers_are_denied() {
    init_tracing();
    let net = TestNet::start().await;
    let (server, client) = pair(&net).await;
    let stranger = net.node().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let serving = {
        let (server, app) = (server.clone(), web_app(calls.clone()));
        let allowed = client.node_id();
        AbortOnDrop(tokio::spawn(async move {
            http::serve_http(&server, "web", app, move |peer, _| peer == allowed)
                .await
                .unwrap();
        }))
    };

    let request = h::Request::get("/whoami")
        .header("host", "web.nullport")
        .body(Default::default())
        .unwrap();
    let (status, body) = http1_call(&client, server.node_id(), request)
        .await
        .unwrap();
    assert_eq!(status, h::StatusCode::OK);
    assert_eq!(body, format!("{} web", client.node_id()));

    let data = pattern(MIB, 3);
    let request = h::Request::post("/sha256")
        .header("host", "web.nullport")
        .body(http_body_util::Full::new(bytes::Bytes::from(data.clone())))
        .unwrap();
    let (status, body) = http1_call(&client, server.node_id(), request)
        .await
        .unwrap();
    assert_eq!(status, h::StatusCode::OK);
    assert_eq!(
        body,
        format!("{} {:x}", client.node_id(), Sha256::digest(&data))
    );

    // HTTP/2 on the same service (the server tells the versions apart by the first bytes).
    let request = h::Request::post("http://web.nullport/sha256")
        .body(http_body_util::Full::new(bytes::Bytes::from(data.clone())))
        .unwrap();
    let (status, body) = http2_call(&client, server.node_id(), request)
        .await
        .unwrap();
    assert_eq!(status, h::StatusCode::OK);
    assert_eq!(
        body,
        format!("{} {:x}", client.node_id(), Sha256::digest(&data))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // A caller the policy does not name is refused in the handshake: no HTTP byte, no handler.
    let request = h::Request::get("/whoami").body(Default::default()).unwrap();
    match http1_call(&stranger, server.node_id(), request).await {
        Err(Error::Denied {
            peer,
            service,
            reason: DenyReason::NotAllowed,
        }) => {
            assert_eq!((peer, service.as_str()), (server.node_id(), "web"));
        }
        other => panic!("expected Denied(NotAllowed), got {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "a handler ran for a stranger"
    );
    drop(serving);
}

/// The greeter example built as the `np-greeter` binary, run as two processes against a relay
/// of this test, checks its own output: the server saw the caller's NodeId, and a caller not
/// on `--allow` is refused with the precise reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_example_runs_as_separate_processes() {
    use nullport_keyring::{Protection, key_file};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::Command;
    const GREETER: &str = env!("CARGO_BIN_EXE_np-greeter");
    init_tracing();
    let net = TestNet::start().await;
    let relay = net.relay_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let caller_key = dir.path().join("caller.key");
    let caller = nullport_protocol::Identity::generate().unwrap();
    key_file::store(&caller_key, &caller, &Protection::InsecurePlaintext, false).unwrap();
    let caller_id = caller.node_id().to_string();
    let id = Command::new(GREETER)
        .args(["id", "--key"])
        .arg(&caller_key)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), caller_id);

    let mut server = Command::new(GREETER)
        .args(["serve", "--relay", &relay, "--allow", &caller_id])
        .arg("--key")
        .arg(dir.path().join("server.key"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the greeter server said nothing for 20 s"))
            .unwrap()
            .unwrap_or_default()
    };
    let first = next_line().await;
    let server_id = first
        .strip_prefix("serving greeter as ")
        .unwrap_or_else(|| panic!("server said {first:?}"))
        .to_owned();

    let call = |key: Option<&std::path::Path>| {
        let mut command = Command::new(GREETER);
        command.args([
            "call", "--relay", &relay, "--peer", &server_id, "--name", "Ada",
        ]);
        if let Some(key) = key {
            command.arg("--key").arg(key);
        }
        tokio::time::timeout(Duration::from_secs(30), command.output())
    };
    let out = call(Some(&caller_key)).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("calling as {caller_id}"),
            "reply: Hello, Ada!".to_owned(),
            format!("server saw {caller_id}"),
        ]
    );
    assert_eq!(next_line().await, format!("greeted {caller_id} (Ada)"));

    // A stranger (a fresh identity) is refused before the greeter runs.
    let out = call(None).await.unwrap().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "call failed: peer {server_id} refused service \"greeter\": not allowed"
        )),
        "{stderr}"
    );
    server.kill().await.unwrap();
    let rest = next_line().await;
    assert_eq!(rest, "", "the server greeted someone else: {rest}");
}
