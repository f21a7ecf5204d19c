//! Request bodies hyper's server reads (a chunked body on HTTP/1, any body on HTTP/2), cut off when the client stops
//! sending them, as the HTTP/1 front does for a body by length ([`crate::http1::server`]).
//!
//! Contract: once the body's reader has waited `server.idle_timeout` for the next frame and none came, the body
//! fails for its reader ([`BodyStalled`]) and its request is marked stalled; the pipeline answers that failure 408,
//! which is logged and counted, and the service then sends nothing ([`BodyStalled`] as its error): hyper's HTTP/1
//! server closes the connection without an answer (the front's behaviour, and nginx's on `client_body_timeout`),
//! and its HTTP/2 server resets the stream (`CANCEL`, RFC 9113 §7). Only time the reader
//! spends waiting counts: while it takes no frame (an upstream not reading its request yet, a request refused
//! before its body) the client is not stalling, and any frame starts the wait anew. Without this, a body that stops
//! coming held its request, its connection and (when proxied) an upstream exchange until
//! `upstream.response_timeout`, and the back-channel logout endpoint, which has no upstream, for ever: the idle
//! sweeper's graceful close never ends a request under way.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::deadlines::Deadline;
use crate::http1::BoxError;

/// A request body from hyper's server; bodiless requests carry no pacing state.
pub struct PacedBody {
    inner: Incoming,
    pace: Option<Box<Pace>>,
}

struct Pace {
    /// `server.idle_timeout`.
    within: Duration,
    /// Runs while the reader waits for a frame.
    waiting: Option<Deadline>,
    stalled: Stalled,
}

/// Whether a request's body was cut off for stalling; the service asks it before answering.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stalled(Arc<AtomicBool>);

impl Stalled {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a stalled body gives its reader (here, and from the HTTP/1 front's bodies), which the gate answers as
/// [`crate::error::ClientError::BodyStalled`] (408, logged and counted), and the service's answer to such a
/// request: none (see the module docs). Its source is HTTP/2's `CANCEL` (RFC 9113 §7: the stream is no longer
/// needed), the code hyper's HTTP/2 server resets the stream with.
#[derive(Debug, thiserror::Error)]
#[error("the client stopped sending the request body")]
pub(crate) struct BodyStalled(#[source] h2::Error);

impl BodyStalled {
    pub(crate) fn new() -> Self {
        BodyStalled(h2::Error::from(h2::Reason::CANCEL))
    }

    /// Whether `error`, or an error it wraps, is a stalled body's.
    pub(crate) fn is_in(error: &(dyn std::error::Error + 'static)) -> bool {
        std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<BodyStalled>())
    }
}

impl PacedBody {
    /// `inner`, failing once its reader has waited `within` for a frame; the returned flag says whether it did. A
    /// body already at its end needs neither.
    pub(crate) fn new(inner: Incoming, within: Duration) -> (PacedBody, Option<Stalled>) {
        if inner.is_end_stream() {
            return (PacedBody { inner, pace: None }, None);
        }
        let stalled = Stalled::default();
        let pace = Box::new(Pace {
            within,
            waiting: None,
            stalled: stalled.clone(),
        });
        (
            PacedBody {
                inner,
                pace: Some(pace),
            },
            Some(stalled),
        )
    }
}

impl fmt::Debug for PacedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacedBody")
            .field("inner", &self.inner)
            .field("within", &self.pace.as_ref().map(|p| p.within))
            .finish()
    }
}

impl http_body::Body for PacedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(pace) = this.pace.as_deref_mut() else {
            return polled.map_err(Into::into);
        };
        if polled.is_ready() {
            pace.waiting = None;
            return polled.map_err(Into::into);
        }
        if pace.stalled.get() {
            return Poll::Ready(Some(Err(BodyStalled::new().into())));
        }
        if pace.waiting.is_none() {
            // A timeout too long to be a time (centuries) waits for ever.
            let Some(at) = Instant::now().checked_add(pace.within) else {
                return Poll::Pending;
            };
            pace.waiting = Some(Deadline::at(at));
        }
        if let Some(deadline) = pace.waiting.as_mut() {
            std::task::ready!(Pin::new(deadline).poll(cx));
        }
        tracing::debug!(within = ?pace.within, "a request body stopped coming; dropping the request");
        pace.waiting = None;
        pace.stalled.0.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(BodyStalled::new().into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
