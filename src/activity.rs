//! Byte-move counting for idle detection: client connections (`server.idle_timeout`) and spliced protocol upgrades
//! (WebSocket tunnels) are closed when no byte has moved either way for that long. A client connection's counter
//! also says what its sweeper ([`crate::connections`]) needs besides: how many of its requests wait for their
//! answer, and which HTTP/2 header block is still arriving ([`crate::http2`]).

use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// tokio's clock: the same as std's in the gate, and pausable in tests.
use tokio::time::Instant;

use crate::observed::{Observed, Observer};

/// Whether a connection moves bytes: a counter bumped on every read and write (no clock read per I/O), which the
/// connection's timer compares between its ticks.
pub struct Activity {
    moved: AtomicU64,
    /// Requests on the connection whose answer has not begun ([`Waiting`]).
    waiting: AtomicU32,
    /// `(n << 1) | 1` while the connection's n-th HTTP/2 header block (or a frame other than DATA) is arriving, 0
    /// when none is ([`Activity::set_arriving`]).
    arriving: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            moved: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            arriving: AtomicU64::new(0),
        }
    }
    pub fn touch(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// How many of the connection's requests wait for their answer to begin (the gate's pipeline, the app).
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Says that the connection's `n`-th header block (`Some(n)`, n counting from 1) is arriving, or that none is.
    pub fn set_arriving(&self, block: Option<u64>) {
        let value = block.map_or(0, |n| (n << 1) | 1);
        self.arriving.store(value, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn arriving(&self) -> u64 {
        self.arriving.load(Ordering::Relaxed)
    }
}

/// One request of a connection waiting for its answer to begin, for as long as this lives: a connection quiet after
/// being told to finish is closed outright only while none is ([`crate::connections`]).
pub struct Waiting<A: Deref<Target = Activity>>(A);

impl<A: Deref<Target = Activity>> Waiting<A> {
    pub fn new(activity: A) -> Self {
        activity.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(activity)
    }
}

impl<A: Deref<Target = Activity>> Drop for Waiting<A> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records activity whenever bytes move.
pub type ActivityIo<T> = Observed<T, Arc<Activity>>;

impl Observer for Arc<Activity> {
    fn read(&mut self, _bytes: &[u8]) {
        self.touch();
    }
    fn wrote(&mut self, _n: usize) {
        self.touch();
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// Watches an [`Activity`] at a tick: says when it has been quiet for `limit`.
pub struct IdleCheck {
    last: u64,
    quiet_since: Instant,
    limit: Duration,
}

impl IdleCheck {
    pub fn new(activity: &Activity, limit: Duration) -> Self {
        IdleCheck {
            last: activity.count(),
            quiet_since: Instant::now(),
            limit,
        }
    }

    /// How often to call [`IdleCheck::is_idle`]: a quarter of the limit, between 250 ms and 5 s.
    pub fn interval(&self) -> Duration {
        Self::interval_for(self.limit)
    }

    /// [`IdleCheck::interval`] for a check with this `limit`.
    pub fn interval_for(limit: Duration) -> Duration {
        (limit / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// True once no byte has moved for the limit (seen at the granularity of the calls).
    pub fn is_idle(&mut self, activity: &Activity) -> bool {
        self.quiet_for(activity) >= self.limit
    }

    /// How long no byte has moved (seen at the granularity of the calls).
    pub fn quiet_for(&mut self, activity: &Activity) -> Duration {
        let moved = activity.count();
        if moved != self.last {
            (self.last, self.quiet_since) = (moved, Instant::now());
            return Duration::ZERO;
        }
        self.quiet_since.elapsed()
    }
}

/// Watches [`Activity::set_arriving`] at a tick: says when the same header block has been arriving for a limit
/// (`server.header_read_timeout`, the same for all of a worker's connections, so not kept here).
#[derive(Default)]
pub struct ArrivalCheck {
    seen: u64,
    /// When `seen` was first seen; `None` before anything has arrived.
    since: Option<Instant>,
}

impl ArrivalCheck {
    /// True once one header block has been arriving for `limit` (seen at the granularity of the calls).
    pub fn is_overdue(&mut self, activity: &Activity, limit: Duration) -> bool {
        let arriving = activity.arriving.load(Ordering::Relaxed);
        if arriving != self.seen {
            (self.seen, self.since) = (arriving, Some(Instant::now()));
            return false;
        }
        arriving != 0 && self.since.is_some_and(|since| since.elapsed() >= limit)
    }
}
