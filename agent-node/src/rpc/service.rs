//! A service's typed methods: how each call shape's glue reads requests, runs the handler
//! and writes responses over one call's frames.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use nullport_protocol::rpc::Shape;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{CallContext, Requests, Responses};
use super::error::RpcError;
use super::wire::{CallIo, Inbound};
use super::{decode, encode};

/// A handler's outcome: `Some(bytes)` is a last response, sent with the STATUS in one write.
pub(crate) type Outcome = Result<Option<Vec<u8>>, RpcError>;
type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(CallContext, CallIo) -> BoxFuture + Send + Sync>;

pub(crate) struct Method {
    pub(crate) shape: Shape,
    pub(crate) handler: Handler,
}

/// A named set of typed methods.
pub struct RpcService {
    pub(crate) name: String,
    pub(crate) methods: HashMap<String, Method>,
}

impl std::fmt::Debug for RpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcService")
            .field("name", &self.name)
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Reads the single request of a unary or server-streaming call.
async fn single<Req: DeserializeOwned>(io: &mut CallIo) -> Result<Req, RpcError> {
    let request = match io.recv().await {
        Inbound::Message(body) => decode::<Req>(body.bytes(), "request")?,
        Inbound::Lost(e) => return Err(e),
        _ => return Err(RpcError::invalid_argument("call without a request")),
    };
    match io.recv().await {
        Inbound::End => Ok(request),
        Inbound::Lost(e) => Err(e),
        _ => Err(RpcError::invalid_argument("more than one request")),
    }
}

impl RpcService {
    /// A service named `name` (the service callers dial), with no methods yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            methods: HashMap::new(),
        }
    }

    fn add(mut self, method: &str, shape: Shape, handler: Handler) -> Self {
        self.methods
            .insert(method.to_owned(), Method { shape, handler });
        self
    }

    /// A method taking one request and returning one response.
    pub fn unary<Req, Resp, F, Fut>(self, method: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            method,
            Shape::Unary,
            Arc::new(move |ctx, mut io| {
                let f = f.clone();
                Box::pin(async move {
                    let request = single::<Req>(&mut io).await?;
                    let response = f(ctx, request).await?;
                    encode(&response).map(Some)
                })
            }),
        )
    }

    /// A method taking one request and sending a stream of responses.
    pub fn server_stream<Req, Resp, F, Fut>(self, method: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req, Responses<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            method,
            Shape::ServerStream,
            Arc::new(move |ctx, mut io| {
                let f = f.clone();
                Box::pin(async move {
                    let request = single::<Req>(&mut io).await?;
                    let responses = Responses {
                        tx: io.tx.clone(),
                        _types: PhantomData,
                    };
                    f(ctx, request, responses).await.map(|()| None)
                })
            }),
        )
    }

    /// A method reading a stream of requests and returning one response.
    pub fn client_stream<Req, Resp, F, Fut>(self, method: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Requests<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            method,
            Shape::ClientStream,
            Arc::new(move |ctx, io| {
                let f = f.clone();
                Box::pin(async move {
                    let requests = Requests {
                        io,
                        done: false,
                        _types: PhantomData,
                    };
                    let response = f(ctx, requests).await?;
                    encode(&response).map(Some)
                })
            }),
        )
    }

    /// A method with streams both ways.
    pub fn bidi<Req, Resp, F, Fut>(self, method: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Requests<Req>, Responses<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            method,
            Shape::Bidi,
            Arc::new(move |ctx, io| {
                let f = f.clone();
                Box::pin(async move {
                    let responses = Responses {
                        tx: io.tx.clone(),
                        _types: PhantomData,
                    };
                    let requests = Requests {
                        io,
                        done: false,
                        _types: PhantomData,
                    };
                    f(ctx, requests, responses).await.map(|()| None)
                })
            }),
        )
    }
}

/// Resolves to `Err(())` instead of unwinding when the wrapped future panics, so one failing
/// handler answers its call with an error and leaves the others running.
pub(crate) struct CatchUnwind<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}
