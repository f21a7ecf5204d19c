//! The client connections one worker serves, and that worker's sweeper, which asks them to finish: a connection
//! on which no byte has moved for `server.idle_timeout`, and every connection when the server shuts down. Every
//! worker's connections are also counted in one [`OpenCount`], which the shutdown drain waits on.
//!
//! Asking is not always enough: a connection finishes gracefully only once its answers are out, and an HTTP/2 one
//! only after its client has answered the PING sent with the first GOAWAY (RFC 9113 §6.8). A client that stops
//! reading its answer, or never answers that PING, would hold the connection for good. So the sweeper also closes
//! a connection outright (its task drops it):
//! - one told to finish for being idle that then moves no byte for another `server.idle_timeout`, unless a request
//!   on it still waits for its answer to begin (an app slower than the timeout still answers, as before);
//! - an HTTP/2 one on which one header block (or a frame other than DATA) has been arriving for
//!   `server.header_read_timeout` ([`crate::http2`]): a request head trickled in, as an HTTP/1 one is cut off.
//!
//! One timer per worker instead of one per connection: a connection's task only checks a flag when it runs, so
//! nothing on the request path registers, polls or re-arms a timer or a shutdown watch, and an idle connection
//! holds no timer entry.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::AsyncWrite;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::activity::{Activity, ArrivalCheck, IdleCheck};

/// How many connections are open across all workers.
#[derive(Default)]
pub struct OpenCount {
    open: AtomicUsize,
    all_closed: Notify,
}

impl OpenCount {
    pub fn get(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A worker's open connections.
pub struct Connections {
    idle_timeout: Duration,
    header_read_timeout: Duration,
    count: Arc<OpenCount>,
    /// Connections this worker serves or has been handed and not registered yet: what the workers compare when
    /// one places a new connection ([`Connections::load`], [`crate::placement`]). Read by other workers, and shown
    /// as a metric.
    load: Arc<AtomicUsize>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// Set at shutdown: every connection registered from then on is told to finish at once.
    closing_all: bool,
}

struct Entry {
    activity: Arc<Activity>,
    signal: Arc<Signal>,
    idle: IdleCheck,
    arrival: ArrivalCheck,
    /// When the sweeper told the connection to finish for being idle.
    told_idle: Option<Instant>,
}

/// How the sweeper tells a connection to finish, or to close at once.
#[derive(Default)]
struct Signal {
    finish: AtomicBool,
    close: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self) {
        self.finish.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn close(&self) {
        self.close.store(true, Ordering::Release);
        self.raise();
    }
}

/// One connection's place among its worker's [`Connections`]; leaving it (drop) unregisters the connection.
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
    signal: Arc<Signal>,
    activity: Arc<Activity>,
}

impl Connections {
    /// A worker's connections, counted in `count` too, and in `load` with those handed to it.
    pub fn new(
        idle_timeout: Duration,
        header_read_timeout: Duration,
        count: Arc<OpenCount>,
        load: Arc<AtomicUsize>,
    ) -> Arc<Self> {
        Arc::new(Connections {
            idle_timeout,
            header_read_timeout,
            count,
            load,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many connections this worker serves, counting those handed to it and not registered yet.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// Counts a connection handed to this worker before it arrives ([`Connections::register_handed`]).
    pub fn expect_handed(&self) {
        self.load.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a connection another worker handed here (already counted by [`Connections::expect_handed`]).
    pub fn register_handed(self: &Arc<Self>) -> Registration {
        self.load.fetch_sub(1, Ordering::Relaxed);
        self.register()
    }

    /// Registers a new connection, whose byte counter is the registration's [`Registration::activity`].
    pub fn register(self: &Arc<Self>) -> Registration {
        self.load.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let signal = Arc::new(Signal::default());
        self.count.open.fetch_add(1, Ordering::AcqRel);
        let mut inner = self.lock();
        if inner.closing_all {
            signal.finish.store(true, Ordering::Release);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let idle = IdleCheck::new(&activity, self.idle_timeout);
        let entry = Entry {
            activity: Arc::clone(&activity),
            signal: Arc::clone(&signal),
            idle,
            arrival: ArrivalCheck::default(),
            told_idle: None,
        };
        inner.open.insert(id, entry);
        Registration {
            connections: Arc::clone(self),
            id,
            signal,
            activity,
        }
    }

    /// Tells every connection idle for the limit to finish, and closes those that are stuck (see the module docs).
    fn sweep_once(&self) {
        let limit = self.idle_timeout;
        for entry in self.lock().open.values_mut() {
            if entry.arrival.is_overdue(&entry.activity, self.header_read_timeout) {
                tracing::debug!(within = ?self.header_read_timeout, "an HTTP/2 header block did not arrive in time; closing");
                entry.signal.close();
                continue;
            }
            if entry.idle.quiet_for(&entry.activity) < limit {
                continue;
            }
            match entry.told_idle {
                None => {
                    entry.told_idle = Some(Instant::now());
                    entry.signal.raise();
                }
                // Told a limit ago or more, and quiet for the limit since whatever finishing wrote (a GOAWAY).
                Some(told) if told.elapsed() >= limit && entry.activity.waiting() == 0 => {
                    tracing::debug!(after = ?limit, "a connection told to finish has moved no byte since; closing");
                    entry.signal.close();
                }
                Some(_) => {}
            }
        }
    }

    /// Tells every connection, and every one registered later, to finish.
    fn finish_all(&self) {
        let mut inner = self.lock();
        inner.closing_all = true;
        for entry in inner.open.values() {
            entry.signal.raise();
        }
    }

    /// The number of registered connections.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// The sweeper: checks for idle and stuck connections at the idle check's interval (for the shorter of the two
    /// timeouts) until `stop` turns true (or its sender is gone), then tells every connection to finish and returns.
    pub async fn sweep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = IdleCheck::interval_for(self.idle_timeout.min(self.header_read_timeout));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep_once(),
                // Stopped, or the sender is gone (and the server with it).
                _ = stop.wait_for(|stopped| *stopped) => {
                    self.finish_all();
                    return;
                }
            }
        }
    }
}

impl Registration {
    /// The connection's byte counter, for [`crate::activity::ActivityIo`].
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Ready once the connection is to finish; registers the task to be woken for it. Check it each time the
    /// connection's task runs.
    pub fn poll_finish(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Register before looking, so a signal raised in between still wakes this task.
        self.signal.waker.register(cx.waker());
        if self.signal.finish.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the connection has been told to finish.
    pub fn finishing(&self) -> bool {
        self.signal.finish.load(Ordering::Acquire)
    }

    /// Whether the connection is to be closed at once, unfinished (see the module docs). The task is woken for it
    /// with the waker [`Registration::poll_finish`] or [`Registration::poll_closing`] registered last.
    pub fn closing(&self) -> bool {
        self.signal.close.load(Ordering::Acquire)
    }

    /// Ready once the connection is to be closed at once; registers the task to be woken for it.
    pub fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.signal.waker.register(cx.waker());
        if self.closing() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once the connection is to finish.
    pub fn finished(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_finish(cx))
    }
}

/// A writer whose waits fail once its connection is to close at once: a client that stopped reading its answer
/// (see the module docs). A write that does not wait costs nothing more.
pub struct UntilClosing<'a, W> {
    inner: &'a mut W,
    registration: &'a Registration,
}

impl<'a, W> UntilClosing<'a, W> {
    pub fn new(inner: &'a mut W, registration: &'a Registration) -> Self {
        UntilClosing { inner, registration }
    }

    /// `polled`, or the error that ends the connection when it waits and the connection is to close.
    fn unless_closing<T>(&self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_pending() && self.registration.poll_closing(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took in nothing of its answer for twice the idle timeout",
            )));
        }
        polled
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for UntilClosing<'_, W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_write(cx, buf);
        this.unless_closing(cx, polled)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs);
        this.unless_closing(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_flush(cx);
        this.unless_closing(cx, polled)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.inner).poll_shutdown(cx);
        this.unless_closing(cx, polled)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().open.remove(&self.id);
        self.connections.load.fetch_sub(1, Ordering::Relaxed);
        let count = &self.connections.count;
        if count.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            count.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's connections with this idle timeout (the header read timeout 30 s), counted nowhere else.
    fn with_idle(idle_timeout: Duration) -> Arc<Connections> {
        Connections::new(idle_timeout, Duration::from_secs(30), Arc::default(), Arc::default())
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_told_to_finish_busy_ones_are_not() {
        let connections = with_idle(Duration::from_secs(4));
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(Arc::clone(&connections).sweep(stop));
        let busy = connections.register();
        let idle = connections.register();
        let waiting = tokio::spawn(async move {
            idle.finished().await;
            idle
        });
        // Keep one connection busy across several limits; the other one stays quiet and is told to finish.
        for _ in 0..20 {
            busy.activity().touch();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(waiting.is_finished(), "the quiet connection was not told to finish");
        let waker = futures_util::task::noop_waker();
        assert!(busy.poll_finish(&mut Context::from_waker(&waker)).is_pending());
        drop(waiting.await.unwrap());
        assert_eq!(connections.len(), 1, "a dropped registration is removed");
    }

    /// Polls `registration` once, as its connection's task would; whether it is to close at once.
    fn closing_now(registration: &Registration) -> bool {
        let waker = futures_util::task::noop_waker();
        registration.poll_closing(&mut Context::from_waker(&waker)).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_still_quiet_a_limit_after_being_told_is_closed_unless_a_request_waits() {
        let limit = Duration::from_secs(4);
        let connections = with_idle(limit);
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(Arc::clone(&connections).sweep(stop));
        let (stuck, waiting) = (connections.register(), connections.register());
        let _request = crate::activity::Waiting::new(Arc::clone(waiting.activity()));
        tokio::time::sleep(limit + Duration::from_secs(2)).await;
        assert!(stuck.finishing() && waiting.finishing(), "both idle: told to finish");
        assert!(!closing_now(&stuck), "told, not closed yet");
        // What finishing writes (a GOAWAY) counts: the limit runs again from there.
        stuck.activity().touch();
        tokio::time::sleep(limit - Duration::from_secs(1)).await;
        assert!(!closing_now(&stuck), "quiet for less than the limit since the GOAWAY");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(closing_now(&stuck), "quiet for the limit after being told");
        tokio::time::sleep(limit * 4).await;
        assert!(!closing_now(&waiting), "a request waits for its answer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_block_arriving_for_the_header_read_timeout_closes_its_connection() {
        let within = Duration::from_secs(2);
        let connections = Connections::new(Duration::from_secs(60), within, Arc::default(), Arc::default());
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(Arc::clone(&connections).sweep(stop));
        let (slow, quick) = (connections.register(), connections.register());
        slow.activity().set_arriving(Some(1));
        // A block after block, each arriving for less than the timeout.
        for n in 1..=8 {
            quick.activity().set_arriving(Some(n));
            slow.activity().touch();
            tokio::time::sleep(within / 2).await;
        }
        assert!(closing_now(&slow), "one block arriving for four timeouts");
        assert!(!closing_now(&quick) && !quick.finishing(), "each block came in time");
        quick.activity().set_arriving(None);
        tokio::time::sleep(within * 4).await;
        assert!(!closing_now(&quick), "nothing arriving");
    }

    #[tokio::test]
    async fn shutdown_tells_every_connection_including_later_ones() {
        let connections = with_idle(Duration::from_secs(3600));
        let (stop_tx, stop) = watch::channel(false);
        let sweeper = tokio::spawn(Arc::clone(&connections).sweep(stop));
        let before = connections.register();
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), before.finished())
            .await
            .unwrap();
        sweeper.await.unwrap();
        let after = connections.register();
        tokio::time::timeout(Duration::from_secs(5), after.finished())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_gone_server_counts_as_shutdown() {
        let connections = with_idle(Duration::from_secs(3600));
        let (stop_tx, stop) = watch::channel(false);
        let registered = connections.register();
        tokio::spawn(Arc::clone(&connections).sweep(stop));
        drop(stop_tx);
        tokio::time::timeout(Duration::from_secs(5), registered.finished())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_open_count_spans_workers_and_says_when_all_closed() {
        let count = Arc::new(OpenCount::default());
        let first = Connections::new(
            Duration::from_secs(60),
            Duration::from_secs(30),
            Arc::clone(&count),
            Arc::default(),
        );
        let second = Connections::new(
            Duration::from_secs(60),
            Duration::from_secs(30),
            Arc::clone(&count),
            Arc::default(),
        );
        let (a, b) = (first.register(), second.register());
        assert_eq!(count.get(), 2);
        let waiting = tokio::spawn({
            let count = Arc::clone(&count);
            async move { count.all_closed().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one connection is still open");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(count.get(), 0);
    }
}
