//! The client connections one worker serves, and that worker's sweeper, which asks them to finish: a connection
//! on which no byte has moved for `server.idle_timeout`, and every connection when the server shuts down. Every
//! worker's connections are also counted in one [`OpenCount`], which the shutdown drain waits on.
//!
//! One timer per worker instead of one per connection: a connection's task only checks a flag when it runs, so
//! nothing on the request path registers, polls or re-arms a timer or a shutdown watch, and an idle connection
//! holds no timer entry.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::{watch, Notify};

use crate::activity::{Activity, IdleCheck};

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
}

/// How the sweeper tells a connection to finish.
#[derive(Default)]
struct Signal {
    finish: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self) {
        self.finish.store(true, Ordering::Release);
        self.waker.wake();
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
    pub fn new(idle_timeout: Duration, count: Arc<OpenCount>, load: Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(Connections {
            idle_timeout,
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
        };
        inner.open.insert(id, entry);
        Registration {
            connections: Arc::clone(self),
            id,
            signal,
            activity,
        }
    }

    /// Tells every connection idle for the limit to finish.
    fn finish_idle(&self) {
        for entry in self.lock().open.values_mut() {
            if entry.idle.is_idle(&entry.activity) {
                entry.signal.raise();
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

    /// The sweeper: checks for idle connections at the idle check's interval until `stop` turns true (or its
    /// sender is gone), then tells every connection to finish and returns.
    pub async fn sweep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = IdleCheck::interval_for(self.idle_timeout);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.finish_idle(),
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

    /// Resolves once the connection is to finish.
    pub fn finished(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_finish(cx))
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

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_told_to_finish_busy_ones_are_not() {
        let connections = Connections::new(Duration::from_secs(4), Arc::default(), Arc::default());
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

    #[tokio::test]
    async fn shutdown_tells_every_connection_including_later_ones() {
        let connections = Connections::new(Duration::from_secs(3600), Arc::default(), Arc::default());
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
        let connections = Connections::new(Duration::from_secs(3600), Arc::default(), Arc::default());
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
        let first = Connections::new(Duration::from_secs(60), Arc::clone(&count), Arc::default());
        let second = Connections::new(Duration::from_secs(60), Arc::clone(&count), Arc::default());
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
