//! The one body type used everywhere, so handlers never fight body types. Request and response bodies are passed
//! through as this type, streaming, never buffered.
//!
//! Proxied bodies (hyper's `Incoming`, on both sides) are held as they are; only the gate's own small bodies (pages,
//! JSON) go through a box. The signed-in path therefore allocates no box per request for either body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// Errors a body stream can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A streaming body: one received by hyper and passed through, or any other, boxed.
#[derive(Debug)]
pub enum Body {
    /// No body at all: a bodiless request read by the HTTP/1 front ([`crate::http1::server`]), or an empty answer.
    Empty,
    Incoming(Incoming),
    /// A response body read by the lean upstream client ([`crate::http1::client`]).
    Upstream(crate::http1::body::ResponseBody),
    Boxed(BoxBody<Bytes, BoxError>),
}

pub fn empty() -> Body {
    Body::Empty
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Boxed(Full::new(bytes.into()).map_err(|never| match never {}).boxed())
}

/// A body received by hyper (the client's request body, the upstream's response body), passed on unboxed.
pub fn incoming(body: Incoming) -> Body {
    Body::Incoming(body)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every variant is Unpin.
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Incoming(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Incoming(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}
