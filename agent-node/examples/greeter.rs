//! A gRPC greeter over nullport: one node serves a tonic service, another calls it through a
//! relay, and the server answers with the caller's NodeId as the end-to-end handshake proved
//! it. The protobuf messages and the tonic glue are written by hand (no `protoc`).
//!
//! ```sh
//! nullport-relay init --key relay.key --insecure-plaintext-key --public 127.0.0.1
//! nullport-relay run --key relay.key --listen 127.0.0.1:7443 --open &
//! RELAY=$(nullport-relay id --key relay.key --public 127.0.0.1)
//! cargo build -p nullport-node --features http --example greeter
//! GREETER=target/debug/examples/greeter
//! $GREETER serve --relay $RELAY --key server.key --allow $($GREETER id --key caller.key) &
//! $GREETER call --relay $RELAY --key caller.key --peer <the NodeId serve printed> --name Ada
//! ```
//!
//! `serve` prints `serving greeter as <NodeId>`, then `greeted <caller NodeId> (<name>)` per
//! call; `call` prints `calling as <NodeId>`, the reply, and `server saw <NodeId>`; `id`
//! prints a key file's NodeId. A `--key` file that does not exist is created (unencrypted,
//! mode 0600); an encrypted one is opened with `$NULLPORT_PASSPHRASE`. Without `--allow`,
//! `serve` admits every caller; a caller not allowed fails with `greeter: call failed: peer
//! <NodeId> refused service "greeter": not allowed`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nullport_node::http::{self, PeerIdentity};
use nullport_node::{Node, NodeConfig, RelayAddr};
use nullport_protocol::{Identity, NodeId};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http as h};
use tonic::{Request, Response, Status};

/// `greeter.HelloRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `greeter.HelloReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
    /// The caller's NodeId, as the server saw it.
    #[prost(string, tag = "2")]
    pub caller: String,
}

const SAY_HELLO: &str = "/greeter.Greeter/SayHello";

/// The server side of `service Greeter { rpc SayHello(HelloRequest) returns (HelloReply); }`.
#[derive(Clone, Default)]
struct GreeterServer;

impl tonic::server::NamedService for GreeterServer {
    const NAME: &'static str = "greeter.Greeter";
}

/// The one method's handler.
async fn say_hello(request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
    let Some(PeerIdentity { node_id, .. }) = http::peer(&request).cloned() else {
        return Err(Status::unauthenticated("not called over nullport"));
    };
    let name = request.into_inner().name;
    println!("greeted {node_id} ({name})");
    Ok(Response::new(HelloReply {
        message: format!("Hello, {name}!"),
        caller: node_id.to_string(),
    }))
}

struct SayHello;

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<Response<HelloReply>, Status>;

    fn call(&mut self, request: Request<HelloRequest>) -> Self::Future {
        Box::pin(say_hello(request))
    }
}

impl<B> Service<h::Request<B>> for GreeterServer
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
        if request.uri().path() != SAY_HELLO {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(SayHello, request).await)
        })
    }
}

/// Calls `SayHello` on a tonic channel.
async fn call_say_hello(
    channel: tonic::transport::Channel,
    name: String,
) -> Result<HelloReply, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let path = h::uri::PathAndQuery::from_static(SAY_HELLO);
    let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
    let reply = grpc
        .unary(Request::new(HelloRequest { name }), path, codec)
        .await?;
    Ok(reply.into_inner())
}

/// The identity in `key` (created if missing), or a fresh one.
fn identity(key: Option<&str>) -> Result<Identity, Box<dyn std::error::Error>> {
    use nullport_keyring::{Protection, key_file};
    let Some(key) = key else {
        return Ok(Identity::generate()?);
    };
    let path = Path::new(key);
    if !path.exists() {
        let identity = Identity::generate()?;
        key_file::store(path, &identity, &Protection::InsecurePlaintext, false)?;
        return Ok(identity);
    }
    let passphrase = std::env::var("NULLPORT_PASSPHRASE").ok();
    Ok(key_file::load(path, passphrase.as_deref())?)
}

async fn start(relay: &str, key: Option<&str>) -> Result<Arc<Node>, Box<dyn std::error::Error>> {
    let relay: RelayAddr = relay.parse()?;
    let node = Node::start(NodeConfig::new(Arc::new(identity(key)?), relay)).await?;
    node.wait_online(Duration::from_secs(10)).await?;
    Ok(Arc::new(node))
}

/// `--flag value` pairs after the subcommand (flags may repeat).
fn flags(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    args.chunks(2)
        .map(|pair| match pair {
            [flag, value] if flag.starts_with("--") => Ok((flag.as_str(), value.as_str())),
            _ => Err(format!("expected --flag value, got {pair:?}")),
        })
        .collect()
}

fn one<'a>(flags: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|(f, _)| *f == name)
        .map(|(_, v)| *v)
}

const USAGE: &str = "usage: greeter serve --relay RELAY [--key FILE] [--allow NODEID]...\n       \
                     greeter call --relay RELAY --peer NODEID [--key FILE] [--name NAME]\n       \
                     greeter id --key FILE";

#[tokio::main]
async fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()).await {
        eprintln!("greeter: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    let flags = flags(rest)?;
    let relay = one(&flags, "--relay").ok_or(USAGE);
    let key = one(&flags, "--key");
    match command.as_str() {
        "id" => {
            println!("{}", identity(Some(key.ok_or(USAGE)?))?.node_id());
            Ok(())
        }
        "serve" => {
            let allowed = flags
                .iter()
                .filter(|(f, _)| *f == "--allow")
                .map(|(_, v)| v.parse::<NodeId>())
                .collect::<Result<Vec<_>, _>>()?;
            let node = start(relay?, key).await?;
            println!("serving greeter as {}", node.node_id());
            let router = tonic::transport::Server::builder().add_service(GreeterServer);
            let allow = move |peer, _: &str| allowed.is_empty() || allowed.contains(&peer);
            tokio::select! {
                served = http::serve_tonic(&node, "greeter", router, allow) => served?,
                _ = tokio::signal::ctrl_c() => node.close().await,
            }
            Ok(())
        }
        "call" => {
            let peer: NodeId = one(&flags, "--peer").ok_or(USAGE)?.parse()?;
            let name = one(&flags, "--name").unwrap_or("world").to_owned();
            let node = start(relay?, key).await?;
            println!("calling as {}", node.node_id());
            let reply: Result<HelloReply, Box<dyn std::error::Error>> = async {
                let channel = tonic::transport::Endpoint::from_static("http://greeter.nullport")
                    .connect_with_connector(http::connector(node.clone(), peer, "greeter"))
                    .await?;
                Ok(call_say_hello(channel, name).await?)
            }
            .await;
            let outcome = match reply {
                Ok(reply) => {
                    println!("reply: {}", reply.message);
                    println!("server saw {}", reply.caller);
                    Ok(())
                }
                // The node's own error, when there is one, says why (refused, offline, ...).
                Err(e) => Err(match http::node_error(&*e) {
                    Some(cause) => format!("call failed: {cause}"),
                    None => format!("call failed: {e}"),
                }
                .into()),
            };
            node.close().await;
            outcome
        }
        _ => Err(USAGE.into()),
    }
}
