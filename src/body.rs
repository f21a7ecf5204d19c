//! The one body type used everywhere, so handlers never fight body types. Request and response bodies are passed
//! through as this type, streaming, never buffered.
//!
//! Proxied bodies (hyper's `Incoming`, on both sides; the HTTP/1 front's request bodies) are held as they are (a
//! request body hyper's server reads with its stall bound);
//! only the gate's own small bodies (pages, JSON) go through a box. The signed-in path therefore allocates no box per request for either body.
//!
//! A response from the own HTTP/1 client keeps the upstream's fields in its body until they are written
//! ([`crate::http1`]); [`retain_response_fields`] and [`into_response_map`] are how the rest of the gate reaches
//! them, whichever client fetched the response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::Response;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

pub(crate) mod paced;

/// Errors a body stream can end with.
pub use crate::http1::BoxError;

/// A streaming body: one received by hyper and passed through, or any other, boxed.
#[derive(Debug)]
pub enum Body {
    /// No body at all: a bodiless request read by the HTTP/1 front ([`crate::http1::server`]), or an empty answer.
    Empty,
    /// A response body read by hyper's client.
    Incoming(Incoming),
    /// A request body read by hyper's server, cut off when it stalls ([`paced`]).
    Paced(paced::PacedBody),
    /// A request body read by the HTTP/1 front ([`crate::http1::request_body`]).
    Received(crate::http1::request_body::RequestBody),
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

/// A response body received by hyper's client, passed on unboxed.
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
            Body::Paced(b) => Pin::new(b).poll_frame(cx),
            Body::Received(b) => Pin::new(b).poll_frame(cx),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Incoming(b) => b.is_end_stream(),
            Body::Paced(b) => b.is_end_stream(),
            Body::Received(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Incoming(b) => b.size_hint(),
            Body::Paced(b) => b.size_hint(),
            Body::Received(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}

/// `resp` with its upstream fields, if a body of the own HTTP/1 client still holds them, moved into its map (before the
/// fields already there), for hyper's servers.
pub(crate) fn into_response_map(mut resp: Response<Body>) -> Response<Body> {
    if let Body::Upstream(body) = resp.body_mut() {
        let fields = body.take_fields();
        if !fields.is_empty() {
            let map = std::mem::take(resp.headers_mut());
            *resp.headers_mut() = fields.into_map(map);
        }
    }
    resp
}

/// Keeps only the upstream response fields of `resp` for which `keep(name, value)` says so, wherever they are: in
/// the body of an answer from the own client (until it is written), and in the response's map. Gate code edits
/// upstream response fields through this alone, so that a rule works the same on both client paths.
pub(crate) fn retain_response_fields(resp: &mut Response<Body>, mut keep: impl FnMut(&HeaderName, &[u8]) -> bool) {
    if let Body::Upstream(upstream) = resp.body_mut() {
        upstream.fields_mut().retain(&mut keep);
    }
    let headers = resp.headers_mut();
    // Asked once per field, in order (so that `keep` may log what it drops).
    let verdicts: Vec<bool> = headers
        .iter()
        .map(|(name, value)| keep(name, value.as_bytes()))
        .collect();
    if verdicts.iter().all(|&kept| kept) {
        return;
    }
    // `iter` and `into_iter` walk the fields in the same order; `into_iter` names a field only when its name
    // changes.
    let mut name = None;
    for ((next, value), kept) in std::mem::take(headers).into_iter().zip(verdicts) {
        if let Some(next) = next {
            name = Some(next);
        }
        if let (Some(name), true) = (&name, kept) {
            headers.append(name.clone(), value);
        }
    }
}
