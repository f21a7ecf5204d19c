//! Request bodies hyper's server reads (a chunked body on HTTP/1, any body on HTTP/2), cut off when the client stops
//! sending them, as the HTTP/1 front does for a body by length ([`crate::http1::server`]).
//!
//! Contract: once the body's reader has waited `server.idle_timeout` for the next frame and none came, the body
//! fails for its reader ([`BodyStalled`]) and its request is marked stalled; the pipeline answers that failure 408,
//! which is logged and counted, and the service then sends nothing ([`NotAnswered`] as its error): hyper's HTTP/1
//! server closes the connection without an answer (the front's behaviour, and nginx's on `client_body_timeout`),
//! and its HTTP/2 server resets the stream (`CANCEL`, RFC 9113 §7). Only time the reader
//! spends waiting counts: while it takes no frame (an upstream not reading its request yet, a request refused
//! before its body) the client is not stalling, and any frame starts the wait anew. Without this, a body that stops
//! coming held its request, its connection and (when proxied) an upstream exchange until
//! `upstream.response_timeout`, and the back-channel logout endpoint, which has no upstream, for ever: the idle
//! sweeper's graceful close never ends a request under way.
//!
//! A client that goes away in the middle of its body (its connection closed, reset or failed; on HTTP/2 its stream
//! reset or its connection gone) is treated the same way: the body fails for its reader ([`ClientGone`]), the
//! pipeline answers that failure 499 (nginx's "client closed request", as the HTTP/1 front logs a hang-up
//! mid-body), which is logged and counted, and the service sends nothing. A malformed body (a bad chunk size) is
//! not a hang-up: it fails as hyper reported it, and is answered 400.

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
    /// Whether the body stalled: its reader sees [`BodyStalled`] from then on.
    stalled: bool,
    unanswered: Unanswered,
}

/// Whether a request's body was cut off (it stalled, or its client went away), so that its request gets no answer;
/// the service asks it before answering.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unanswered(Arc<AtomicBool>);

impl Unanswered {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
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

/// The service's error for a request whose body was cut off ([`Unanswered`]): hyper's HTTP/1 server closes the
/// connection without an answer, its HTTP/2 server resets the stream with the source's code, `CANCEL` (RFC 9113 §7).
#[derive(Debug, thiserror::Error)]
#[error("the request's body was cut off; it gets no answer")]
pub(crate) struct NotAnswered(#[source] h2::Error);

impl NotAnswered {
    pub(crate) fn new() -> Self {
        NotAnswered(h2::Error::from(h2::Reason::CANCEL))
    }
}

/// What a body whose client went away in the middle of it gives its reader, which the gate answers as
/// [`crate::error::ClientError::WentAway`] (499, logged and counted); the service then sends nothing, as for a stalled
/// body. Its source is the error hyper's server reported.
#[derive(Debug, thiserror::Error)]
#[error("the client went away in the middle of the request body")]
pub(crate) struct ClientGone(#[source] BoxError);

impl ClientGone {
    /// Whether `error`, or an error it wraps, is a gone client's.
    pub(crate) fn is_in(error: &(dyn std::error::Error + 'static)) -> bool {
        std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<ClientGone>())
    }

    /// Whether an error of hyper's server reading a request body says the client went away: on HTTP/1 the
    /// connection's end before the body's (hyper reports `UnexpectedEof`), a reset or an abort; on HTTP/2 a failed
    /// connection, or a stream reset or a connection ended (`GOAWAY`) by the client. Malformed framing (hyper's
    /// `InvalidInput` and `InvalidData` for a bad chunk) and errors of the gate's own making are not.
    fn means_gone(error: &(dyn std::error::Error + 'static)) -> bool {
        std::iter::successors(Some(error), |e| e.source()).any(|e| {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::NotConnected
                );
            }
            e.downcast_ref::<h2::Error>()
                .is_some_and(|h2| h2.is_io() || (h2.is_remote() && (h2.is_reset() || h2.is_go_away())))
        })
    }
}

impl PacedBody {
    /// `inner`, failing once its reader has waited `within` for a frame or when its client goes away; the returned
    /// flag says whether it did. A body already at its end needs neither.
    pub(crate) fn new(inner: Incoming, within: Duration) -> (PacedBody, Option<Unanswered>) {
        if inner.is_end_stream() {
            return (PacedBody { inner, pace: None }, None);
        }
        let unanswered = Unanswered::default();
        let pace = Box::new(Pace {
            within,
            waiting: None,
            stalled: false,
            unanswered: unanswered.clone(),
        });
        (
            PacedBody {
                inner,
                pace: Some(pace),
            },
            Some(unanswered),
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
        if let Poll::Ready(Some(Err(e))) = polled {
            pace.waiting = None;
            if !ClientGone::means_gone(&e) {
                return Poll::Ready(Some(Err(e.into())));
            }
            tracing::debug!(error = %e, "a request's client went away in the middle of its body; dropping the request");
            pace.unanswered.set();
            return Poll::Ready(Some(Err(ClientGone(e.into()).into())));
        }
        if polled.is_ready() {
            pace.waiting = None;
            return polled.map_err(Into::into);
        }
        if pace.stalled {
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
        pace.stalled = true;
        pace.unanswered.set();
        Poll::Ready(Some(Err(BodyStalled::new().into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps another, as hyper's body errors wrap the I/O error under them.
    #[derive(Debug, thiserror::Error)]
    #[error("error reading a body from connection")]
    struct Wrapped(#[source] Box<dyn std::error::Error + Send + Sync>);

    fn wrapped_io(kind: std::io::ErrorKind) -> Wrapped {
        Wrapped(Box::new(std::io::Error::new(kind, "under")))
    }

    #[test]
    fn a_hang_up_mid_body_is_a_gone_client_and_malformed_framing_is_not() {
        for kind in [
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionAborted,
            std::io::ErrorKind::BrokenPipe,
        ] {
            assert!(ClientGone::means_gone(&wrapped_io(kind)), "{kind:?}");
        }
        // hyper's chunked decoder reports a bad chunk size line or extension as `InvalidInput` or `InvalidData`.
        for kind in [std::io::ErrorKind::InvalidInput, std::io::ErrorKind::InvalidData] {
            assert!(!ClientGone::means_gone(&wrapped_io(kind)), "{kind:?}");
        }
        // A reset the gate's own side makes (a library error, not the client's) is not a hang-up.
        assert!(!ClientGone::means_gone(&Wrapped(Box::new(h2::Error::from(
            h2::Reason::PROTOCOL_ERROR
        )))));
        assert!(!ClientGone::means_gone(&BodyStalled::new()));
        let gone = ClientGone(Box::new(wrapped_io(std::io::ErrorKind::UnexpectedEof)));
        assert!(ClientGone::is_in(&Wrapped(Box::new(gone))));
        assert!(!ClientGone::is_in(&wrapped_io(std::io::ErrorKind::UnexpectedEof)));
    }
}
