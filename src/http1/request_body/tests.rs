use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

use http_body::Body as _;

/// A waker that counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Count {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether the front may put a piece in, asked with `waker`.
fn room(feeder: &Feeder, waker: &Waker) -> Poll<Room> {
    feeder.poll_room(&mut Context::from_waker(waker))
}

/// Whether the reader has asked for the body, asked with `waker`.
fn wanted(feeder: &Feeder, waker: &Waker) -> Poll<Room> {
    feeder.poll_wanted(&mut Context::from_waker(waker))
}

fn waker() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    (Arc::clone(&count), Waker::from(Arc::clone(&count)))
}

fn poll(body: &mut RequestBody, waker: &Waker) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    std::pin::Pin::new(body).poll_frame(&mut Context::from_waker(waker))
}

fn data(polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>) -> Bytes {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().expect("data"),
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn pieces_pass_one_at_a_time_and_each_side_wakes_the_other() {
    let (mut feeder, mut body) = channel(Some(6));
    let (front_wakes, front) = waker();
    let (reader_wakes, reader) = waker();
    assert_eq!(body.size_hint().exact(), Some(6));
    assert!(!body.is_end_stream());

    // Nothing yet: the reader waits, and is woken by the first piece.
    assert!(poll(&mut body, &reader).is_pending());
    assert_eq!(room(&feeder, &front), Poll::Ready(Room::Free));
    feeder.put(Bytes::from_static(b"abc"));
    assert_eq!(reader_wakes.get(), 1);

    // The slot is full: the front may not read more until the piece is taken, which wakes it.
    assert!(room(&feeder, &front).is_pending());
    assert_eq!(data(poll(&mut body, &reader)), "abc");
    assert_eq!(front_wakes.get(), 1);
    assert_eq!(body.size_hint().exact(), Some(3));

    assert_eq!(room(&feeder, &front), Poll::Ready(Room::Free));
    feeder.put(Bytes::from_static(b"def"));
    assert_eq!(data(poll(&mut body, &reader)), "def");
    assert!(body.is_end_stream());
    assert!(matches!(poll(&mut body, &reader), Poll::Ready(None)));
    // A whole body dropped by its front stays whole.
    feeder.finish();
    drop(feeder);
    assert!(matches!(poll(&mut body, &reader), Poll::Ready(None)));
}

#[test]
fn a_chunked_body_ends_when_the_front_read_its_last_chunk_and_the_reader_took_every_piece() {
    let (mut feeder, mut body) = channel(None);
    let (front_wakes, front) = waker();
    let (reader_wakes, reader) = waker();
    assert_eq!(body.size_hint().exact(), None);
    assert!(!body.is_end_stream());
    assert!(poll(&mut body, &reader).is_pending());
    feeder.put(Bytes::from_static(b"abc"));
    assert!(room(&feeder, &front).is_pending());
    assert_eq!(data(poll(&mut body, &reader)), "abc");
    assert_eq!(front_wakes.get(), 1);
    // The last piece, then the end: the piece is taken first.
    assert_eq!(room(&feeder, &front), Poll::Ready(Room::Free));
    feeder.put(Bytes::from_static(b"de"));
    feeder.finish();
    assert_eq!(data(poll(&mut body, &reader)), "de");
    assert!(matches!(poll(&mut body, &reader), Poll::Ready(None)));
    // Finished and then dropped: still whole; a reader waiting for the end is woken by it.
    drop(feeder);
    assert!(matches!(poll(&mut body, &reader), Poll::Ready(None)));

    let (mut feeder, mut body) = channel(None);
    assert!(poll(&mut body, &reader).is_pending());
    let before = reader_wakes.get();
    feeder.finish();
    assert_eq!(reader_wakes.get(), before + 1);
    assert!(matches!(poll(&mut body, &reader), Poll::Ready(None)));

    // Dropped before its last chunk: an error, never an end.
    let (mut feeder, mut body) = channel(None);
    feeder.put(Bytes::from_static(b"abc"));
    drop(feeder);
    assert_eq!(data(poll(&mut body, &reader)), "abc");
    assert!(matches!(poll(&mut body, &reader), Poll::Ready(Some(Err(_)))));
}

#[test]
fn a_body_the_front_stops_fails_and_is_never_short_but_whole() {
    // Failed on purpose (an answer came first): the piece already put is still taken, then the error.
    let (mut feeder, mut body) = channel(Some(10));
    let (_, w) = waker();
    feeder.put(Bytes::from_static(b"abcd"));
    feeder.fail("the answer came first");
    assert_eq!(data(poll(&mut body, &w)), "abcd");
    match poll(&mut body, &w) {
        Poll::Ready(Some(Err(e))) => assert_eq!(e.to_string(), "the answer came first"),
        other => panic!("expected the error, got {other:?}"),
    }
    assert!(!body.is_end_stream());

    // The front gone before the end (its request dropped): the reader, waiting elsewhere, is woken with an error.
    let (feeder, mut body) = channel(Some(10));
    let (reader_wakes, reader) = waker();
    assert!(poll(&mut body, &reader).is_pending());
    drop(feeder);
    assert_eq!(reader_wakes.get(), 1);
    assert!(matches!(poll(&mut body, &reader), Poll::Ready(Some(Err(_)))));
}

#[test]
fn a_body_the_client_stopped_sending_fails_as_stalled() {
    // The reader, waiting, is woken with the stalled body's error (which the gate answers 408), not another one;
    // a failure after it does not change it, and one before it is kept.
    let (mut feeder, mut body) = channel(None);
    let (reader_wakes, reader) = waker();
    assert!(poll(&mut body, &reader).is_pending());
    feeder.stall();
    feeder.fail("later");
    assert_eq!(reader_wakes.get(), 1);
    match poll(&mut body, &reader) {
        Poll::Ready(Some(Err(e))) => assert!(crate::body::paced::BodyStalled::is_in(&*e), "{e}"),
        other => panic!("expected the error, got {other:?}"),
    }
    let (mut feeder, mut body) = channel(Some(10));
    feeder.fail("the answer came first");
    feeder.stall();
    match poll(&mut body, &reader) {
        Poll::Ready(Some(Err(e))) => assert_eq!(e.to_string(), "the answer came first"),
        other => panic!("expected the error, got {other:?}"),
    }
}

#[test]
fn a_reader_that_lets_go_frees_the_front() {
    let (mut feeder, body) = channel(Some(10));
    let (front_wakes, front) = waker();
    feeder.put(Bytes::from_static(b"abcd"));
    assert!(room(&feeder, &front).is_pending());
    drop(body);
    assert_eq!(front_wakes.get(), 1, "the front waiting for room is woken");
    assert_eq!(room(&feeder, &front), Poll::Ready(Room::Unread));
}

#[test]
fn the_front_learns_when_the_reader_first_wants_the_body() {
    let (feeder, mut body) = channel(Some(5));
    let (front_wakes, front) = waker();
    let (_, reader) = waker();
    assert!(wanted(&feeder, &front).is_pending());
    assert!(poll(&mut body, &reader).is_pending());
    assert_eq!(front_wakes.get(), 1, "the front waiting for it is woken");
    assert_eq!(wanted(&feeder, &front), Poll::Ready(Room::Free));
    drop(body);
    assert_eq!(wanted(&feeder, &front), Poll::Ready(Room::Unread));
}
