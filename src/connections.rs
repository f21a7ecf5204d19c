//! The client connections one worker serves, and that worker's sweeper, which asks them to finish: a connection
//! on which no byte has moved for `server.idle_timeout`, and every connection when the server shuts down. Every
//! worker's connections are also counted in one [`OpenCount`], which the shutdown drain waits on and which holds
//! them to `server.max_connections`.
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
//! When a worker has accepted a connection and `server.max_connections` leaves no place for it, or the process
//! runs out of descriptors, the worker accepts nothing more and makes room ([`Connections::make_room`]): it asks
//! idle connections (no request waiting for its answer), on every worker and the longest quiet first, to finish,
//! as nginx reuses its idle keep-alive connections when it runs short. Clients that hold connections open without
//! using them then cannot keep new ones out for a timeout.
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

/// Descriptors kept for the gate's own use (listeners, event loops, Redis, files read) when `server.max_connections`
/// is derived from the open-file limit ([`default_max`]).
const RESERVED_FILES: u64 = 128;

/// How many idle connections one worker asks to finish at a time to make room (nginx drains up to 32).
const ROOM_BATCH: usize = 32;

/// How long a connection must have been quiet to be asked to make room: one that has just been answered (its
/// client may be sending the next request) or just been accepted (its first request may be on its way) is not idle.
const ROOM_MIN_QUIET: Duration = Duration::from_secs(1);

/// How long a worker waits for the connections it asked to make room to close before it asks more, while half of
/// them or more are still open (an HTTP/2 connection finishes after its streams, which may take long).
const ROOM_PATIENCE: Duration = Duration::from_secs(1);

/// `server.max_connections` when unset, for a process allowed `open_files` descriptors: half of what is left after
/// [`RESERVED_FILES`], since every client connection may need one to the app besides; at least 1.
pub fn default_max(open_files: u64) -> usize {
    let half = open_files.saturating_sub(RESERVED_FILES) / 2;
    usize::try_from(half).unwrap_or(usize::MAX).max(1)
}

/// The process's open-file limit (the soft one, which `main` raises to the hard one); `u64::MAX` when it cannot be
/// read.
pub fn open_files() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

/// How many connections are open across all workers, against `server.max_connections`. WebSocket tunnels outlive
/// their connection's registration; the caller counts them and passes the count to [`OpenCount::reserve`].
pub struct OpenCount {
    open: AtomicUsize,
    max: usize,
    all_closed: Notify,
    /// Woken whenever a connection closes, for workers waiting for room.
    one_closed: Notify,
}

impl OpenCount {
    /// No connection open yet, at most `max` at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(OpenCount {
            open: AtomicUsize::new(0),
            max,
            all_closed: Notify::new(),
            one_closed: Notify::new(),
        })
    }

    pub fn get(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// `server.max_connections`.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more connection, while the open ones and `tunnels` together are fewer than the maximum.
    pub fn reserve(self: &Arc<Self>, tunnels: usize) -> Option<Place> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open.saturating_add(tunnels) < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| Place(Arc::clone(self)))
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

    /// Resolves when a connection closes after this is called (before it is awaited, too).
    pub fn one_closed(&self) -> impl Future<Output = ()> + '_ {
        self.one_closed.notified()
    }
}

/// One connection's place in the [`OpenCount`], until it closes.
pub struct Place(Arc<OpenCount>);

impl Drop for Place {
    fn drop(&mut self) {
        let count = &self.0;
        if count.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            count.all_closed.notify_waiters();
        }
        count.one_closed.notify_waiters();
    }
}

/// A worker's open connections.
pub struct Connections {
    idle_timeout: Duration,
    header_read_timeout: Duration,
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
    /// Connections asked to finish to make room and still open, and when room was last made.
    room_asked: usize,
    room_asked_at: Option<Instant>,
}

struct Entry {
    activity: Arc<Activity>,
    signal: Arc<Signal>,
    idle: IdleCheck,
    arrival: ArrivalCheck,
    /// When the sweeper told the connection to finish for being idle.
    told_idle: Option<Instant>,
    /// Asked to finish to make room ([`Connections::make_room`]).
    for_room: bool,
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
    /// Dropped after the registration's own drop has removed the connection from its worker's map.
    _place: Place,
}

impl Connections {
    /// A worker's connections, counted in `load` with those handed to it.
    pub fn new(idle_timeout: Duration, header_read_timeout: Duration, load: Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(Connections {
            idle_timeout,
            header_read_timeout,
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

    /// Takes back [`Connections::expect_handed`] for a connection that will not arrive.
    pub fn cancel_handed(&self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }

    /// Registers a connection another worker handed here (already counted by [`Connections::expect_handed`]) in
    /// its `place`.
    pub fn register_handed(self: &Arc<Self>, place: Place) -> Registration {
        self.load.fetch_sub(1, Ordering::Relaxed);
        self.register(place)
    }

    /// Registers a new connection in its `place`; its byte counter is the registration's
    /// [`Registration::activity`].
    pub fn register(self: &Arc<Self>, place: Place) -> Registration {
        self.load.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let signal = Arc::new(Signal::default());
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
            for_room: false,
        };
        inner.open.insert(id, entry);
        Registration {
            connections: Arc::clone(self),
            id,
            signal,
            activity,
            _place: place,
        }
    }

    /// Makes room for new connections: asks up to [`ROOM_BATCH`] of this worker's idle connections to finish, the
    /// longest quiet first, and returns how many it asked. Idle: quiet for [`ROOM_MIN_QUIET`] at least, no request
    /// on it waiting for its answer to begin, not told to finish already; one that waits for its next request (or
    /// its first) closes at once, one still sending an answer after it. Asks none while half a batch or more of
    /// those asked before are still open, for up to [`ROOM_PATIENCE`].
    pub fn make_room(&self) -> usize {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.room_asked >= ROOM_BATCH / 2 && inner.room_asked_at.is_some_and(|at| at.elapsed() < ROOM_PATIENCE) {
            return 0;
        }
        let mut idle: Vec<(Duration, u64)> = inner
            .open
            .iter_mut()
            .filter(|(_, entry)| !entry.signal.finish.load(Ordering::Acquire) && entry.activity.waiting() == 0)
            .map(|(id, entry)| (entry.idle.quiet_for(&entry.activity), *id))
            .filter(|(quiet, _)| *quiet >= ROOM_MIN_QUIET)
            .collect();
        if idle.len() > ROOM_BATCH {
            idle.select_nth_unstable_by(ROOM_BATCH - 1, |a, b| b.0.cmp(&a.0));
            idle.truncate(ROOM_BATCH);
        }
        for (_, id) in &idle {
            if let Some(entry) = inner.open.get_mut(id) {
                entry.for_room = true;
                entry.signal.raise();
            }
        }
        if !idle.is_empty() {
            inner.room_asked += idle.len();
            inner.room_asked_at = Some(Instant::now());
        }
        idle.len()
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

    /// Resolves once the connection is to finish (the tests' form of [`Registration::poll_finish`]).
    #[cfg(test)]
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
        {
            let mut inner = self.connections.lock();
            if inner.open.remove(&self.id).is_some_and(|entry| entry.for_room) {
                inner.room_asked = inner.room_asked.saturating_sub(1);
            }
        }
        self.connections.load.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl Place {
    /// A place in a count of its own, without a maximum (unit tests of connections).
    pub fn unbounded() -> Place {
        OpenCount::new(usize::MAX)
            .reserve(0)
            .unwrap_or_else(|| unreachable!("an unbounded count has room"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's connections with this idle timeout (the header read timeout 30 s), counted nowhere else.
    fn with_idle(idle_timeout: Duration) -> Arc<Connections> {
        Connections::new(idle_timeout, Duration::from_secs(30), Arc::default())
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_told_to_finish_busy_ones_are_not() {
        let connections = with_idle(Duration::from_secs(4));
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(Arc::clone(&connections).sweep(stop));
        let busy = connections.register(Place::unbounded());
        let idle = connections.register(Place::unbounded());
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
        let (stuck, waiting) = (
            connections.register(Place::unbounded()),
            connections.register(Place::unbounded()),
        );
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
        let connections = Connections::new(Duration::from_secs(60), within, Arc::default());
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(Arc::clone(&connections).sweep(stop));
        let (slow, quick) = (
            connections.register(Place::unbounded()),
            connections.register(Place::unbounded()),
        );
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
        let before = connections.register(Place::unbounded());
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), before.finished())
            .await
            .unwrap();
        sweeper.await.unwrap();
        let after = connections.register(Place::unbounded());
        tokio::time::timeout(Duration::from_secs(5), after.finished())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_gone_server_counts_as_shutdown() {
        let connections = with_idle(Duration::from_secs(3600));
        let (stop_tx, stop) = watch::channel(false);
        let registered = connections.register(Place::unbounded());
        tokio::spawn(Arc::clone(&connections).sweep(stop));
        drop(stop_tx);
        tokio::time::timeout(Duration::from_secs(5), registered.finished())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_open_count_spans_workers_and_says_when_all_closed() {
        let count = OpenCount::new(10);
        let first = with_idle(Duration::from_secs(60));
        let second = with_idle(Duration::from_secs(60));
        let a = first.register(count.reserve(0).unwrap());
        let b = second.register(count.reserve(0).unwrap());
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

    #[test]
    fn the_open_count_holds_the_maximum_tunnels_included() {
        let count = OpenCount::new(3);
        let (a, b) = (count.reserve(0).unwrap(), count.reserve(0).unwrap());
        assert!(
            count.reserve(1).is_none(),
            "two connections and a tunnel fill three places"
        );
        let c = count.reserve(0).unwrap();
        assert!(count.reserve(0).is_none(), "full");
        assert_eq!(count.get(), 3);
        drop(b);
        assert!(count.reserve(0).is_some(), "a place freed");
        drop((a, c));
        assert_eq!(count.get(), 0);
        assert_eq!(default_max(20_000), 9_936);
        assert_eq!(default_max(64), 1, "at least one");
    }

    #[tokio::test]
    async fn a_closing_connection_wakes_a_worker_waiting_for_room() {
        let count = OpenCount::new(1);
        let place = count.reserve(0).unwrap();
        let freed = count.one_closed();
        drop(place);
        tokio::time::timeout(Duration::from_secs(5), freed).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn making_room_asks_the_longest_quiet_idle_connections_first() {
        let connections = with_idle(Duration::from_secs(3600));
        let oldest = connections.register(Place::unbounded());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let waiting = connections.register(Place::unbounded());
        let _request = crate::activity::Waiting::new(Arc::clone(waiting.activity()));
        let newer: Vec<Registration> = (0..ROOM_BATCH)
            .map(|_| connections.register(Place::unbounded()))
            .collect();
        tokio::time::sleep(ROOM_MIN_QUIET).await;
        let just_accepted = connections.register(Place::unbounded());
        // A connection that moves bytes now is not idle either.
        newer[0].activity().touch();
        assert_eq!(connections.make_room(), ROOM_BATCH, "a batch at a time");
        assert!(oldest.finishing(), "the longest quiet goes first");
        assert!(!waiting.finishing(), "a request waits for its answer on it");
        assert!(!newer[0].finishing(), "it just moved bytes");
        assert!(!just_accepted.finishing(), "its first request may be on its way");
        assert!(newer[1..].iter().all(Registration::finishing));
        assert_eq!(connections.make_room(), 0, "those asked are still open");
        drop(oldest);
        drop(newer);
        assert_eq!(
            connections.make_room(),
            0,
            "nothing idle is left: the other one waits for its answer"
        );
        assert!(!waiting.finishing());
    }
}
