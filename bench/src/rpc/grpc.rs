//! The gRPC service `np-bench rpc` calls, written by hand like the greeter example (no
//! `protoc`): `service Echo { rpc Echo(Blob) returns (Blob); }`, served the same way over
//! nullport and over TCP.

use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http as h};
use tonic::{Request, Response, Status};

/// `bench.Blob`: bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    /// The payload.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// The one method's path.
const ECHO: &str = "/bench.Echo/Echo";

/// The server side: answers every `Echo` with the bytes it was sent.
#[derive(Debug, Clone, Default)]
pub struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "bench.Echo";
}

struct EchoMethod;

impl tonic::server::UnaryService<Blob> for EchoMethod {
    type Response = Blob;
    type Future = BoxFuture<Response<Blob>, Status>;

    fn call(&mut self, request: Request<Blob>) -> Self::Future {
        Box::pin(async move { Ok(Response::new(request.into_inner())) })
    }
}

impl<B> Service<h::Request<B>> for EchoServer
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
        if request.uri().path() != ECHO {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(EchoMethod, request).await)
        })
    }
}

/// The client side, over any tonic channel (cheap to clone; clones share the connection).
#[derive(Debug, Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl EchoClient {
    /// A client on `channel`.
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// One `Echo` call: sends `data`, returns what came back.
    pub async fn echo(&mut self, data: Vec<u8>) -> Result<Vec<u8>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Blob, Blob>::default();
        let reply = self
            .grpc
            .unary(
                Request::new(Blob { data }),
                h::uri::PathAndQuery::from_static(ECHO),
                codec,
            )
            .await?;
        Ok(reply.into_inner().data)
    }
}
