//! The one body type used everywhere: a boxed stream of `Bytes`, so handlers never fight body types.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Errors a body stream can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A streaming body, boxed. Request and response bodies are passed through as this type, never buffered.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Boxes any body whose errors convert into [`BoxError`] (hyper's `Incoming` on both sides).
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}
