//! Byte-move counting for idle detection: client connections (`server.idle_timeout`) and spliced protocol upgrades
//! (WebSocket tunnels) are closed when no byte has moved either way for that long.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
pub struct ActivityIo<T> {
    pub inner: T,
    pub activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
        (self.limit / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
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
