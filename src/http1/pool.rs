//! One pool of idle upstream connections per worker for the own client ([`super::client`]), with the probe that
//! decides whether a pooled connection may carry another request, and the reaper that closes expired ones.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::names::Scratch;
use super::stream::Stream;

/// Reads start at this size and double, while each read fills its buffer, up to [`MAX_READ`].
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// Idle connections kept per worker.
const MAX_IDLE: usize = 1024;
/// How often a worker's idle connections are checked for having been closed or having expired.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// One worker's idle upstream connections, most recently used last. Aligned so that no other worker's data shares
/// a cache line with its lock, taken on every request.
#[repr(align(128))]
pub(crate) struct Pool {
    idle_timeout: Duration,
    inner: Mutex<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    idle: Vec<Idle>,
    reaping: bool,
    /// Until when no connection is reused: the upstream was caught sending bytes nobody asked for.
    distrusted_until: Option<Instant>,
}

/// How long a worker opens a new connection for every request after its upstream sent bytes unasked on a
/// connection between responses (a buggy app appending to a response). Such bytes that land while the next request
/// is under way cannot be told from its answer; without reuse there is no next request on that connection.
const DISTRUST_FOR: Duration = Duration::from_secs(60);

/// What a pooled connection shows between responses.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Nothing to read: reusable.
    Quiet,
    /// The upstream closed it (or it failed).
    Closed,
    /// Bytes nobody asked for.
    Unasked,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// An upstream connection and its read buffer (empty between responses).
pub(crate) struct Conn {
    pub(super) io: Stream,
    pub(super) buf: BytesMut,
    read_size: usize,
    /// Kept between the connection's responses, so that reading a head allocates and clears nothing.
    pub(super) scratch: Scratch,
}

impl Conn {
    pub(super) fn new(io: Stream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
            scratch: Scratch::default(),
        }
    }

    /// Reads what the socket has into the buffer: `Ok(0)` at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        // A read that filled the room suggests a large body: read more at once next time.
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// What the connection shows between responses: nothing to read (reusable), its close or a reset, or bytes
    /// sent unasked (the upstream sends nothing between responses; a buggy one that appends bytes after a complete
    /// response would have them read as the next request's answer, someone else's).
    /// Asked of the kernel with a non-blocking `MSG_PEEK` on every check, not of the runtime's record of readiness,
    /// which is only as fresh as the last time the worker polled its event loop. Bytes that arrive after this
    /// check, while the next request is under way, cannot be told from its answer.
    fn probe(&self) -> Probe {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&self.io).peek(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Probe::Quiet,
            Ok(0) | Err(_) => Probe::Closed,
            Ok(_) => Probe::Unasked,
        }
    }
}

impl Pool {
    /// How many connections are idle in the pool.
    #[cfg(test)]
    pub(super) fn idle_len(&self) -> usize {
        self.lock().idle.len()
    }

    pub(super) fn new(idle_timeout: Duration) -> Self {
        Pool {
            idle_timeout,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolInner> {
        // Nothing under this lock can panic halfway; a poisoned pool is still a consistent list.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest idle connection that is neither expired nor closed; none while the upstream is distrusted.
    pub(super) fn take(&self, now: Instant) -> Option<Box<Conn>> {
        let mut inner = self.lock();
        if inner.distrusted_until.is_some_and(|until| now < until) {
            inner.idle.clear();
            return None;
        }
        // Expired or closed ones met on the way are dropped (closed); the reaper sees to the rest.
        while let Some(idle) = inner.idle.pop() {
            if now.saturating_duration_since(idle.since) >= self.idle_timeout {
                continue;
            }
            match idle.conn.probe() {
                Probe::Quiet => return Some(idle.conn),
                Probe::Closed => {}
                Probe::Unasked => {
                    Self::distrust(&mut inner, now);
                    return None;
                }
            }
        }
        None
    }

    /// The upstream sent bytes unasked: no connection is reused for [`DISTRUST_FOR`].
    fn distrust(inner: &mut PoolInner, now: Instant) {
        if inner.distrusted_until.is_none_or(|until| until <= now) {
            tracing::warn!(
                for_ = ?DISTRUST_FOR,
                "the upstream sent bytes nobody asked for on a kept-alive connection; not reusing its connections"
            );
        }
        inner.distrusted_until = Some(now + DISTRUST_FOR);
        inner.idle.clear();
    }

    /// Called when a complete response left bytes over on its connection (which is then closed).
    pub(super) fn leftover_seen(&self) {
        Self::distrust(&mut self.lock(), Instant::now());
    }

    pub(super) fn put(self: Arc<Self>, mut conn: Box<Conn>, since: Instant) {
        // A large body grew the buffer: an idle connection keeps only a small one.
        if conn.buf.capacity() > 2 * FIRST_READ {
            conn.buf = BytesMut::new();
        }
        conn.read_size = FIRST_READ;
        let mut inner = self.lock();
        if inner.idle.len() >= MAX_IDLE || inner.distrusted_until.is_some_and(|until| Instant::now() < until) {
            return;
        }
        inner.idle.push(Idle { conn, since });
        if !inner.reaping {
            inner.reaping = true;
            drop(inner);
            tokio::spawn(reap(Arc::downgrade(&self)));
        }
    }

    pub(super) fn clear(&self) {
        self.lock().idle.clear();
    }
}

/// Closes a worker's idle connections that the upstream has closed or that have been idle too long, every
/// [`REAP_EVERY`], until none is left (the next one pooled starts it again). Runs on the pool's worker, so its
/// connections are only ever touched from their own thread.
async fn reap(pool: std::sync::Weak<Pool>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut inner = pool.lock();
        let mut unasked = false;
        inner.idle.retain(|idle| {
            let probe = idle.conn.probe();
            unasked |= probe == Probe::Unasked;
            idle.since.elapsed() < pool.idle_timeout && probe == Probe::Quiet
        });
        if unasked {
            Pool::distrust(&mut inner, Instant::now());
        }
        if inner.idle.is_empty() {
            inner.reaping = false;
            return;
        }
    }
}
