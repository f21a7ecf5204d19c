//! Which worker serves a new connection ([`choose`]).
//!
//! Every worker accepts from the same listening socket, and whichever wakes first takes the connection; it then
//! hands it to the worker chosen here (once, before any byte is read), where it stays for its whole life.
//!
//! - A connection that starts with a TLS handshake goes to the worker serving the fewest connections: handshakes and
//!   record encryption cost enough CPU that a burst of them (a load balancer opening its pool, a browser opening six)
//!   would saturate one worker while the others idle.
//! - A plain connection goes to the first worker (by index) that spent less than [`SPILL_AT`] of the recent past
//!   running tasks ([`Busy`]), and to the one serving the fewest when every worker is that busy. Requests that meet
//!   on one thread share its wakeups: one `epoll_wait` returns the work of many connections, and the thread sleeps
//!   and wakes less often per request than two would. On a small machine that the gate shares with its upstream,
//!   spreading a light load over every worker costs more CPU per request than serving it on one. The threads around
//!   the gate do not share in this: one thread's writes reach the clients and the upstream one at a time, so they
//!   look for work more often per request than behind two (`bench/run.sh --perf`; docs/performance.md).
//!
//! A connection never moves, so a burst of plain connections that arrives while every worker is idle lands on the
//! first worker, however much it then asks for. `server.max_requests_per_connection` bounds how long that lasts:
//! an HTTP/1 client reconnects after that many requests, and its new connection goes where there is room.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::RuntimeMetrics;

/// A worker busy for more than this share (per mille) of the recent past takes no new plain connection while
/// another worker is below it.
pub(crate) const SPILL_AT: u32 = 900;

/// The shortest stretch of time a busy share is measured over; looks closer together than this see the last share.
const WINDOW: Duration = Duration::from_millis(50);

/// What a new connection starts with, as far as choosing its worker goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Plain TCP: HTTP/1.1, or HTTP/2 with prior knowledge.
    Plain,
    /// A TLS handshake first.
    Tls,
}

/// The index of the worker (of `workers`) to serve a new connection of `kind` (see the module docs), given each
/// one's `connections` (those it serves or has been handed and not yet taken up) and its `busy` share of the recent
/// past, per mille ([`Busy::recent`]), asked only as far as needed. `own`, the worker that accepted the connection,
/// wins ties among the least loaded, so that nothing is handed over for nothing.
pub(crate) fn choose(
    workers: usize,
    own: usize,
    kind: Kind,
    connections: impl Fn(usize) -> usize,
    busy: impl Fn(usize) -> u32,
) -> usize {
    let own = own.min(workers.saturating_sub(1));
    if workers < 2 {
        return own;
    }
    if kind == Kind::Plain {
        if let Some(first) = (0..workers).find(|&i| busy(i) < SPILL_AT) {
            return first;
        }
    }
    let (mut least, mut fewest) = (own, connections(own));
    for i in 0..workers {
        let n = connections(i);
        if n < fewest {
            (least, fewest) = (i, n);
        }
    }
    least
}

/// How busy one worker has been lately, read from its runtime's counters (time spent running tasks) by whichever
/// worker is placing a connection.
pub(crate) struct Busy {
    metrics: RuntimeMetrics,
    last: Mutex<Sample>,
}

struct Sample {
    at: Instant,
    /// The runtime's busy time at `at`.
    total: Duration,
    /// The share measured up to `at`, per mille.
    share: u32,
}

impl Busy {
    /// Watches the single-threaded runtime whose counters are `metrics`.
    pub(crate) fn new(metrics: RuntimeMetrics) -> Self {
        let total = metrics.worker_total_busy_duration(0);
        Busy {
            metrics,
            last: Mutex::new(Sample {
                at: Instant::now(),
                total,
                share: 0,
            }),
        }
    }

    /// The share of time (per mille) the worker spent running tasks since the previous look at least [`WINDOW`]
    /// before `now` (from then on, looks within `WINDOW` return the same share). The runtime adds to its count when
    /// its worker pauses to look for I/O, so the share trails the truth by at most one such stretch of work.
    pub(crate) fn recent(&self, now: Instant) -> u32 {
        // Nothing under this lock can panic; a poisoned sample is still a sample.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(last.at);
        if elapsed >= WINDOW {
            let total = self.metrics.worker_total_busy_duration(0);
            last.share = share(total.saturating_sub(last.total), elapsed);
            last.at = now;
            last.total = total;
        }
        last.share
    }
}

/// `busy` as a share of `elapsed`, per mille, at most 1000.
fn share(busy: Duration, elapsed: Duration) -> u32 {
    let per_mille = busy.as_micros().saturating_mul(1000) / elapsed.as_micros().max(1);
    u32::try_from(per_mille.min(1000)).unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker serving `.0` connections, `.1` per mille busy.
    fn load(connections: usize, busy: u32) -> (usize, u32) {
        (connections, busy)
    }

    fn pick(loads: &[(usize, u32)], own: usize, kind: Kind) -> usize {
        choose(loads.len(), own, kind, |i| loads[i].0, |i| loads[i].1)
    }

    #[test]
    fn plain_connections_fill_the_first_worker_with_room() {
        let idle = [load(40, 100), load(0, 0)];
        assert_eq!(
            pick(&idle, 1, Kind::Plain),
            0,
            "the first worker has room, however many it serves"
        );
        let first_busy = [load(40, 950), load(3, 200), load(0, 0)];
        assert_eq!(pick(&first_busy, 0, Kind::Plain), 1);
        let just_below = [load(40, SPILL_AT - 1), load(0, 0)];
        assert_eq!(pick(&just_below, 1, Kind::Plain), 0);
    }

    #[test]
    fn when_every_worker_is_busy_plain_connections_go_to_the_fewest() {
        let all_busy = [load(40, 990), load(12, 950), load(30, SPILL_AT)];
        assert_eq!(pick(&all_busy, 0, Kind::Plain), 1);
    }

    #[test]
    fn tls_connections_go_to_the_fewest_whatever_the_business() {
        let loads = [load(10, 0), load(4, 800), load(7, 0)];
        assert_eq!(pick(&loads, 0, Kind::Tls), 1);
    }

    #[test]
    fn the_accepting_worker_wins_ties() {
        let even = [load(5, 990), load(5, 990), load(5, 990)];
        assert_eq!(pick(&even, 2, Kind::Plain), 2);
        assert_eq!(pick(&even, 1, Kind::Tls), 1);
        // An index past the end (no such worker) cannot be chosen.
        assert_eq!(pick(&even, 7, Kind::Tls), 2);
        assert_eq!(pick(&[load(0, 0)], 0, Kind::Tls), 0);
    }

    #[test]
    fn a_share_is_per_mille_and_capped() {
        assert_eq!(share(Duration::from_millis(25), Duration::from_millis(100)), 250);
        assert_eq!(share(Duration::from_millis(300), Duration::from_millis(100)), 1000);
        assert_eq!(share(Duration::ZERO, Duration::ZERO), 0);
        assert_eq!(share(Duration::MAX, Duration::from_nanos(1)), 1000);
    }

    #[test]
    fn an_idle_runtime_is_not_busy_and_a_busy_one_is() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let busy = Busy::new(runtime.metrics());
        let start = Instant::now();
        // Idle: nothing ran in the window.
        assert_eq!(busy.recent(start + WINDOW), 0);
        // Busy: a task spins for a whole window, then the runtime looks for I/O (and adds to its count).
        runtime.block_on(async {
            tokio::spawn(async {
                let until = Instant::now() + WINDOW * 2;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
            .await
            .unwrap();
        });
        let share = busy.recent(Instant::now());
        assert!(
            share >= 500,
            "a runtime that spun most of the window reads as {share} per mille"
        );
        // Looks within the window see the same share.
        assert_eq!(busy.recent(Instant::now()), share);
    }
}
