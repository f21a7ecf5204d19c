//! Byte-move counting for idle detection: client connections (`server.idle_timeout`) and spliced protocol upgrades
//! (WebSocket tunnels) are closed when no byte has moved either way for that long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// tokio's clock: the same as std's in the gate, and pausable in tests.
use tokio::time::Instant;

use crate::observed::{Observed, Observer};

/// Whether a connection moves bytes: a counter bumped on every read and write (no clock read per I/O), which the
/// connection's timer compares between its ticks.
pub struct Activity {
    moved: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            moved: AtomicU64::new(0),
        }
    }
    pub fn touch(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
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
        let moved = activity.count();
        if moved != self.last {
            (self.last, self.quiet_since) = (moved, Instant::now());
            return false;
        }
        self.quiet_since.elapsed() >= self.limit
    }
}
