//! Which connection worker the current thread is.
//!
//! The gate serves connections on `server.workers` threads, each with its own single-threaded runtime
//! ([`crate::server`]), so a request, its upstream connection and their wakeups stay on one thread. State that is
//! cheaper per thread than shared (the upstream connection pool) is indexed by [`index`].

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker index; 0 on threads that are not workers.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the current thread as worker `i` (called once, when a worker thread starts).
pub(crate) fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// The default worker count: the CPUs this process may use (cgroup limits included), at least 1.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
