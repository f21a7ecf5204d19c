//! A request body the HTTP/1 front ([`super::server`]) reads itself: one delimited by a single `Content-Length`
//! (RFC 9112 §6.2, §6.3 item 6) or chunked (a single `Transfer-Encoding: chunked`, §7.1), handed to the gate's
//! pipeline as [`RequestBody`] while the front reads it (and, when chunked, decodes it).
//!
//! The two halves share one slot. The front ([`Feeder`]) reads the body off the connection and puts it in the slot
//! a piece at a time; whoever reads the request body (the gate's own endpoints, or hyper's client sending it
//! upstream, in a task of its own) takes each piece out. The front reads nothing more while the slot is full, so a
//! request body in flight holds at most one piece (one read, [`BODY_READ`] bytes at most) besides what the socket
//! holds: the client waits for the upstream, not the gate's memory.
//!
//! A body ends in one of three ways: whole (its length, or its last chunk, read and taken); failed, when the front
//! stops before its end (the client hung up in the middle, its chunked framing was malformed, the answer came first
//! and the rest is not wanted any more, or the client stopped sending it: [`Feeder::stall`]); or unread, when its
//! reader lets it go first, after which the front takes nothing more from the connection for it (see
//! [`Feeder::poll_room`]). The reader of a failed body sees an error, never a short body passed off as whole.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::BoxError;
use crate::body::paced::BodyStalled;

/// The most body bytes the front reads at once, and so the largest piece in the slot (hyper's server reads a body
/// into its read buffer, which the gate limits to about as much).
pub(crate) const BODY_READ: usize = 16 * 1024;

/// A body of `length` bytes (more than 0), or chunked (`None`: its end is known once the front reads its last
/// chunk): the front's half and the pipeline's.
pub(crate) fn channel(length: Option<u64>) -> (Feeder, RequestBody) {
    let shared = Arc::new(Shared::default());
    (
        Feeder {
            shared: Arc::clone(&shared),
            done: false,
        },
        RequestBody { shared, left: length },
    )
}

/// What the two halves share.
#[derive(Debug, Default)]
struct Shared(Mutex<Slot>);

#[derive(Debug, Default)]
struct Slot {
    /// A piece put in by the front and not yet taken.
    piece: Option<Bytes>,
    /// Why the body stopped before its end, once it has.
    failed: Option<&'static str>,
    /// It stopped because the client stopped sending it ([`Feeder::stall`]).
    stalled: bool,
    /// The front has put the body's last piece (it read the end of a chunked body).
    ended: bool,
    /// The reader has let the body go.
    unread: bool,
    /// The reader has asked for the body (`Expect: 100-continue` waits for it, [`Feeder::poll_wanted`]).
    wanted: bool,
    /// Woken when a piece arrives or the body fails.
    reader: Option<Waker>,
    /// Woken when the slot is free again or the reader lets go.
    feeder: Option<Waker>,
}

impl Shared {
    /// The slot; a panic elsewhere while it was held leaves nothing half-done in it (every change is one field).
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps `cx`'s waker in `waker` (unless it is the one already there), to be woken by the other half.
fn register(waker: &mut Option<Waker>, cx: &Context<'_>) {
    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *waker = Some(cx.waker().clone());
    }
}

/// Wakes the task kept in `waker`, if any.
fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// The front's half: puts the body in the slot as it reads it (the front keeps track of where the body ends).
#[derive(Debug)]
pub(crate) struct Feeder {
    shared: Arc<Shared>,
    /// The front has read the body to its end ([`Feeder::finish`]).
    done: bool,
}

/// Whether the front may put a piece in the slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Room {
    Free,
    /// The reader has let the body go: nobody takes what is put.
    Unread,
}

impl Feeder {
    /// Whether a piece can go in now; `Pending` while the last one waits to be taken (the task is woken when it is
    /// taken, or when the reader lets the body go).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Room> {
        self.poll_until(cx, |slot| slot.piece.is_none())
    }

    /// Whether the reader has asked for the body yet; `Pending` until it does (the task is woken then) or lets it
    /// go. For `Expect: 100-continue` (RFC 9110 §10.1.1): the client sends the body only once told to, and is told
    /// only when the body is wanted, not when a request is refused before it is read.
    pub(crate) fn poll_wanted(&self, cx: &mut Context<'_>) -> Poll<Room> {
        self.poll_until(cx, |slot| slot.wanted)
    }

    /// `Unread` once the reader has let the body go, `Free` once `ready` says so, else `Pending` (the task woken
    /// when the reader next takes, asks or lets go).
    fn poll_until(&self, cx: &mut Context<'_>, ready: fn(&Slot) -> bool) -> Poll<Room> {
        let mut slot = self.shared.lock();
        if slot.unread {
            return Poll::Ready(Room::Unread);
        }
        if ready(&slot) {
            return Poll::Ready(Room::Free);
        }
        register(&mut slot.feeder, cx);
        Poll::Pending
    }

    /// Puts the next `piece` of the body in the slot, which [`Feeder::poll_room`] said is free; a body by length
    /// is never given more than its length in all.
    pub(crate) fn put(&mut self, piece: Bytes) {
        let mut slot = self.shared.lock();
        slot.piece = Some(piece);
        wake(&mut slot.reader);
    }

    /// The body has been read to its end: a chunked body's reader sees it end once it has taken the last piece.
    pub(crate) fn finish(&mut self) {
        self.done = true;
        let mut slot = self.shared.lock();
        slot.ended = true;
        wake(&mut slot.reader);
    }

    /// Ends the body before its end, for `why`; its reader sees an error.
    pub(crate) fn fail(&mut self, why: &'static str) {
        self.end_early(why, false);
    }

    /// Ends the body before its end because the client stopped sending it; its reader sees [`BodyStalled`], which
    /// the gate answers as a timeout (408, logged; nothing is sent).
    pub(crate) fn stall(&mut self) {
        self.end_early("the client stopped sending the request body", true);
    }

    fn end_early(&mut self, why: &'static str, stalled: bool) {
        let mut slot = self.shared.lock();
        if slot.failed.is_none() {
            (slot.failed, slot.stalled) = (Some(why), stalled);
        }
        wake(&mut slot.reader);
    }
}

impl Drop for Feeder {
    /// A front that goes before the body's end (its request was dropped) fails the body, so that a reader elsewhere
    /// (an upstream request still sending it) stops too.
    fn drop(&mut self) {
        if !self.done {
            self.fail("the client's connection ended before the request body did");
        }
    }
}

/// The pipeline's half: the request body, as the front reads it.
#[derive(Debug)]
pub struct RequestBody {
    shared: Arc<Shared>,
    /// Body bytes not yet taken, when its length is known from the start; `None` for a chunked body.
    left: Option<u64>,
}

/// The error of a body the front stopped before its end.
#[derive(Debug)]
struct Failed(&'static str);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Failed {}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == Some(0) {
            return Poll::Ready(None);
        }
        let mut slot = self.shared.lock();
        if let Some(piece) = slot.piece.take() {
            wake(&mut slot.feeder);
            drop(slot);
            if let Some(left) = self.left.as_mut() {
                *left -= (piece.len() as u64).min(*left);
            }
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if slot.stalled {
            return Poll::Ready(Some(Err(Box::new(BodyStalled::new()))));
        }
        if let Some(why) = slot.failed {
            return Poll::Ready(Some(Err(Box::new(Failed(why)))));
        }
        if slot.ended {
            return Poll::Ready(None);
        }
        if !slot.wanted {
            slot.wanted = true;
            wake(&mut slot.feeder);
        }
        register(&mut slot.reader, cx);
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.left == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.left.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for RequestBody {
    /// Tells the front that nobody will take the rest.
    fn drop(&mut self) {
        let mut slot = self.shared.lock();
        slot.unread = true;
        slot.piece = None;
        wake(&mut slot.feeder);
    }
}

#[cfg(test)]
mod tests;
