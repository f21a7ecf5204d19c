//! Coarse deadlines for the request path: the header read timeout hyper applies to every request head
//! (`server.header_read_timeout`, through [`CoarseTimer`]) and the lean upstream client's response timeout
//! (`upstream.response_timeout`, through [`Deadline`]).
//!
//! tokio's timer is exact to the millisecond, and every request paid for it twice: a timer entry registered in the
//! runtime's wheel, polled, and removed again for the head and for the upstream response (hyper's boxed in a
//! `Box<dyn Sleep>` of its own). These timeouts are seconds long and only guard against slow or stuck peers, so
//! each worker keeps its pending deadlines in a slab instead, and one ticker task per worker ([`run`]) wakes those
//! that have passed. Registering a deadline is a slab insert; checking one compares it with the time of the last
//! tick (no clock reading); the ticker sleeps until the earliest deadline, and not at all while there is none.
//!
//! A deadline fires no earlier than its time and at most [`RESOLUTION`] after it (plus scheduling). On a thread
//! where no ticker runs (tests, or any runtime but a worker's), a deadline is an ordinary tokio sleep.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;
// tokio's clock: the same as std's in the gate, and pausable in tests.
use tokio::time::Instant;

/// The finest step the ticker takes: a deadline fires at most this long after its time.
pub const RESOLUTION: Duration = Duration::from_millis(100);

thread_local! {
    /// This thread's deadlines, while a ticker runs on it.
    static WHEEL: RefCell<Option<Wheel>> = const { RefCell::new(None) };
}

/// Distinguishes the wheels a thread has over time, so a deadline registered with one never touches another.
static WHEEL_IDS: AtomicU64 = AtomicU64::new(1);

struct Wheel {
    id: u64,
    /// The time as of the last tick; a deadline at or before it has passed.
    now: Instant,
    entries: Slab<Entry>,
    /// When the ticker looks next; `None` while it waits for a first deadline.
    next_tick: Option<Instant>,
    /// The ticker, to be woken when a deadline earlier than `next_tick` arrives.
    ticker: Option<Waker>,
    ticker_woken: bool,
}

struct Entry {
    at: Instant,
    waker: Waker,
}

/// Runs this thread's ticker: until dropped, deadlines on this thread are kept by it. Spawn it once per worker,
/// on the worker's (single-threaded) runtime.
pub async fn run() {
    let id = WHEEL_IDS.fetch_add(1, Ordering::Relaxed);
    WHEEL.with(|w| {
        *w.borrow_mut() = Some(Wheel {
            id,
            now: Instant::now(),
            entries: Slab::new(),
            next_tick: None,
            ticker: None,
            ticker_woken: false,
        })
    });
    // Dropping the ticker (its runtime ends) puts the thread back to tokio sleeps.
    struct Uninstall(u64);
    impl Drop for Uninstall {
        fn drop(&mut self) {
            let _ = WHEEL.try_with(|w| {
                if let Ok(mut w) = w.try_borrow_mut() {
                    if w.as_ref().is_some_and(|w| w.id == self.0) {
                        *w = None;
                    }
                }
            });
        }
    }
    let _uninstall = Uninstall(id);
    let mut sleep = Box::pin(tokio::time::sleep(RESOLUTION));
    let mut due = Vec::new();
    loop {
        let next = with_wheel(|w| w.tick(&mut due)).flatten();
        // Woken outside the borrow: a woken task may register a deadline as soon as it runs.
        for waker in due.drain(..) {
            waker.wake();
        }
        if let Some(next) = next {
            sleep.as_mut().reset(next);
        }
        std::future::poll_fn(|cx| {
            let woken = with_wheel(|w| {
                if std::mem::take(&mut w.ticker_woken) {
                    return true;
                }
                if !w.ticker.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                    w.ticker = Some(cx.waker().clone());
                }
                false
            });
            if woken == Some(true) {
                return Poll::Ready(());
            }
            match next {
                Some(_) => sleep.as_mut().poll(cx),
                None => Poll::Pending,
            }
        })
        .await;
    }
}

impl Wheel {
    /// Reads the clock, collects the wakers of the deadlines that have passed, and says when to look next.
    fn tick(&mut self, due: &mut Vec<Waker>) -> Option<Instant> {
        self.now = Instant::now();
        let mut earliest: Option<Instant> = None;
        for (_, entry) in self.entries.iter() {
            if entry.at <= self.now {
                due.push(entry.waker.clone());
            } else if earliest.is_none_or(|e| entry.at < e) {
                earliest = Some(entry.at);
            }
        }
        self.next_tick = earliest.map(|at| at.max(self.now + RESOLUTION));
        self.next_tick
    }

    fn wake_ticker(&mut self) {
        self.ticker_woken = true;
        if let Some(ticker) = self.ticker.take() {
            ticker.wake();
        }
    }
}

/// `f` on this thread's wheel; `None` when no ticker runs here.
fn with_wheel<R>(f: impl FnOnce(&mut Wheel) -> R) -> Option<R> {
    WHEEL
        .try_with(|w| w.try_borrow_mut().ok().and_then(|mut w| w.as_mut().map(f)))
        .ok()
        .flatten()
}

/// A future that resolves at (or up to [`RESOLUTION`] after) an instant; see the module docs.
pub struct Deadline {
    at: Instant,
    state: State,
}

enum State {
    /// Not polled yet, or polled and passed.
    Idle,
    /// Kept by this thread's wheel `wheel` under `key`.
    Registered { wheel: u64, key: usize },
    /// No ticker on this thread: an ordinary tokio sleep.
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl Deadline {
    /// A deadline at `at`; it registers with this thread's ticker when first polled.
    pub fn at(at: Instant) -> Self {
        Deadline { at, state: State::Idle }
    }

    /// Moves the deadline to `at` (keeping its registration).
    pub fn reset(&mut self, at: Instant) {
        self.at = at;
        if let State::Registered { wheel, key } = self.state {
            with_wheel(|w| {
                if w.id == wheel {
                    if let Some(entry) = w.entries.get_mut(key) {
                        entry.at = at;
                    }
                    if w.next_tick.is_none_or(|next| at < next) {
                        w.wake_ticker();
                    }
                }
            });
        }
        if let State::Tokio(sleep) = &mut self.state {
            sleep.as_mut().reset(at);
        }
    }

    fn unregister(&mut self) {
        if let State::Registered { wheel, key } = std::mem::replace(&mut self.state, State::Idle) {
            with_wheel(|w| {
                if w.id == wheel && w.entries.contains(key) {
                    w.entries.remove(key);
                }
            });
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let (at, registered) = match &mut this.state {
            State::Tokio(sleep) => return sleep.as_mut().poll(cx),
            State::Registered { wheel, key } => (this.at, Some((*wheel, *key))),
            State::Idle => (this.at, None),
        };
        // `Some(Some(_))`: kept by the wheel; `Some(None)`: passed; `None`: no ticker on this thread.
        let kept = with_wheel(|w| {
            if at <= w.now {
                return None;
            }
            if let Some(entry) = registered
                .filter(|&(wheel, _)| wheel == w.id)
                .and_then(|(_, key)| w.entries.get_mut(key))
            {
                if !entry.waker.will_wake(cx.waker()) {
                    entry.waker = cx.waker().clone();
                }
                return registered;
            }
            let key = w.entries.insert(Entry {
                at,
                waker: cx.waker().clone(),
            });
            if w.next_tick.is_none_or(|next| at < next) {
                w.wake_ticker();
            }
            Some((w.id, key))
        });
        match kept {
            Some(Some((wheel, key))) => {
                this.state = State::Registered { wheel, key };
                Poll::Pending
            }
            Some(None) => {
                this.unregister();
                Poll::Ready(())
            }
            None => {
                this.unregister();
                let mut sleep = Box::pin(tokio::time::sleep_until(at));
                let polled = sleep.as_mut().poll(cx);
                this.state = State::Tokio(sleep);
                polled
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The future `start` makes, or `Err(Elapsed)` once `deadline` passes first (like `tokio::time::timeout_at`,
/// coarsely). It takes a maker rather than the future so that the future is built in this one's state and held
/// once: an argument future would be kept as it was passed and again where it is pinned.
pub async fn timeout_at<F: Future>(deadline: Instant, start: impl FnOnce() -> F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(start());
    let mut deadline = Deadline::at(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(&mut deadline).poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// A [`timeout_at`] that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// hyper's timer (the HTTP/1 server's header read timeout) on [`Deadline`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseTimer;

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(Deadline::at(Instant::now() + duration)))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(Deadline::at(deadline.into())))
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            Some(ours) => ours.get_mut().0.reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A [`Deadline`] as hyper's `Sleep`.
struct HyperSleep(Deadline);

impl Future for HyperSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

#[cfg(test)]
mod tests;
