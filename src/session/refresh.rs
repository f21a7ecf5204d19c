//! One refresh per session at a time, and a grace window after it.
//!
//! Logto rotates a refresh token once it is past 70 % of its life and treats the reuse of a consumed one as theft
//! (it revokes the whole grant), so a refresh must reach Logto exactly once. Concurrent requests of one session
//! share a single refresh (single-flight, keyed by the session's refresh token or id and its refresh point);
//! requests that arrive shortly afterwards still carrying the pre-refresh cookie (another tab, a request in flight)
//! are served from the refreshed session for [`GRACE`] instead of refreshing again. A transient failure (Logto
//! unreachable) is not retried for [`RETRY_AFTER`], so an outage does not turn every request into a token request.
//! A refresh runs in a task of its own, so that it reaches its end (and its outcome its session) even when nobody
//! waits for it any more.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::Session;

/// How long a pre-refresh cookie is still answered with the refreshed session, when Logto gave the refresh token
/// back (the usual case): the cookie's token is still good, so a later request may send it to Logto again.
pub const GRACE: Duration = Duration::from_secs(60);

/// The same for a refresh that rotated the refresh token (Logto does past 70 % of its life, and revokes the grant
/// when the old one comes again), or that ended after every request waiting for it had stopped waiting: with the
/// cookie store the refreshed session reaches the browser only in an answer to one of its requests, and one lost on
/// the way (a tab closed, a connection cut) leaves the browser with the spent token. An hour covers a tab left alone
/// for the life of Logto's access tokens; a browser back later than that sends the spent token again. A session's
/// token rotates once in ten days or so, so few outcomes are kept this long.
pub const UNCLAIMED_GRACE: Duration = Duration::from_secs(3600);

/// After a failed attempt (Logto unreachable), how long before the next one.
pub const RETRY_AFTER: Duration = Duration::from_secs(15);

/// What a refresh came to.
#[derive(Debug, Clone)]
// Built once per token refresh (rare), and moved once: boxing the session would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// New tokens; the session to use from now on.
    Refreshed(Session),
    /// The grant is gone (revoked, expired, reused): the session is over.
    Ended,
    /// Logto could not be asked; keep serving the current session and try later.
    Unavailable,
}

#[derive(Default)]
struct State {
    /// Refreshes running, each in a task of its own; its outcome is sent once it ends.
    inflight: HashMap<String, watch::Receiver<Option<Outcome>>>,
    /// Finished refreshes, with when each stops being handed out.
    recent: HashMap<String, (Outcome, Instant)>,
    failed: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct Refresher {
    shared: Arc<Shared>,
}

/// What a refresh's task shares with its callers.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Told when the last running refresh ends ([`Refresher::idle`]).
    idle: Notify,
}

impl Refresher {
    /// The outcome of the refresh `key` names, which spends the refresh token `spent`: the one just finished, the
    /// one running (waited for), or `work`, started now. `work` runs in a task of its own, to its end whoever waits
    /// for it: a caller that stops waiting (its request timed out or its client went away) leaves it running, since
    /// Logto may have rotated the refresh token by then and only this refresh holds the new one. Its outcome is
    /// handed out for [`GRACE`] after it ends, and for [`UNCLAIMED_GRACE`] when it rotated `spent` away or nobody
    /// was waiting for it any more (the browser's next request, with the old cookie, may be the only one left to
    /// carry it).
    pub async fn run<F, Fut>(&self, key: &str, spent: &str, work: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let mut rx = {
            let Ok(mut st) = self.shared.state.lock() else {
                return Outcome::Unavailable;
            };
            let now = Instant::now();
            st.recent.retain(|_, (_, until)| now < *until);
            st.failed.retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
            if let Some((outcome, _)) = st.recent.get(key) {
                return outcome.clone();
            }
            if st.failed.contains_key(key) {
                return Outcome::Unavailable;
            }
            match st.inflight.get(key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    st.inflight.insert(key.to_owned(), rx.clone());
                    let running = Running {
                        shared: Arc::clone(&self.shared),
                        key: key.to_owned(),
                        spent: key_for(spent),
                    };
                    let task = finish(running, work(), tx);
                    tokio::spawn(tracing::Instrument::in_current_span(task));
                    rx
                }
            }
        };
        // A task that ended without an outcome (see `Running`) has closed the channel.
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or(Outcome::Unavailable)
    }

    /// Resolves once no refresh is running: a gate that stops waits for them (within its shutdown timeout), since
    /// a refresh cut off after Logto rotated the refresh token loses the new one.
    pub async fn idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a refresh ending in between is not missed.
            notified.as_mut().enable();
            if self.shared.state.lock().map_or(true, |st| st.inflight.is_empty()) {
                return;
            }
            notified.await;
        }
    }
}

/// Runs one refresh and records its outcome before its in-flight entry goes (`Running`) and it is sent: a caller
/// finds the one or the other, so none can start a second refresh with a consumed token.
async fn finish(running: Running, work: impl Future<Output = Outcome>, tx: watch::Sender<Option<Outcome>>) {
    let outcome = work.await;
    if let Ok(mut st) = running.shared.state.lock() {
        // The in-flight entry holds one receiver; any other is a caller still waiting.
        let claimed = tx.receiver_count() > 1;
        let now = Instant::now();
        match &outcome {
            Outcome::Unavailable => {
                st.failed.insert(running.key.clone(), now);
            }
            done => {
                let rotated = match done {
                    Outcome::Refreshed(s) => s.rt.as_deref().map(key_for).as_deref() != Some(running.spent.as_str()),
                    _ => false,
                };
                let keep = if claimed && !rotated { GRACE } else { UNCLAIMED_GRACE };
                st.recent.insert(running.key.clone(), (done.clone(), now + keep));
            }
        }
    }
    drop(running);
    tx.send_replace(Some(outcome));
}

/// A refresh's in-flight entry, removed when its task ends, with an outcome or without one (its runtime shut down,
/// or it panicked): the waiting callers then see the channel closed, and the next caller starts afresh instead of
/// waiting on an entry nothing will answer. The last one tells [`Refresher::idle`].
struct Running {
    shared: Arc<Shared>,
    key: String,
    /// [`key_for`] of the refresh token the refresh spends: whether Logto rotated it away.
    spent: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.inflight.remove(&self.key);
        if st.inflight.is_empty() {
            self.shared.idle.notify_waiters();
        }
    }
}

/// A single-flight key made from `secret` (a refresh token with its refresh point): a digest, so tokens are not
/// kept in memory longer than needed.
pub fn key_for(secret: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn session() -> Session {
        Session {
            rt: Some("new".into()),
            ..Session::of_claims(serde_json::Map::new())
        }
    }

    /// Until when the finished refresh `key` is handed out.
    fn kept_until(r: &Refresher, key: &str) -> Option<Instant> {
        r.shared.state.lock().unwrap().recent.get(key).map(|(_, until)| *until)
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh_and_late_ones_get_its_result() {
        let r = Arc::new(Refresher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (r, calls, mut rx) = (r.clone(), calls.clone(), release_rx.clone());
            tasks.push(tokio::spawn(async move {
                r.run("k", "new", || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _ = rx.wait_for(|go| *go).await;
                    Outcome::Refreshed(session())
                })
                .await
            }));
        }
        tokio::task::yield_now().await;
        let _ = release_tx.send(true);
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Outcome::Refreshed(_)));
        }
        // A late caller with the same (consumed) token gets the refreshed session without a new call.
        let late = r.run("k", "new", || async { Outcome::Ended }).await;
        assert!(matches!(late, Outcome::Refreshed(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A caller that stops waiting (its request timed out, its client went away) leaves the refresh running: its
    /// outcome is recorded and handed to the next caller, for longer than [`GRACE`] since nobody took it.
    #[tokio::test]
    async fn a_refresh_nobody_waits_for_any_more_ends_and_is_handed_out() {
        let r = Refresher::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let (release_tx, mut release_rx) = tokio::sync::watch::channel(false);
        let counted = calls.clone();
        let waiting = r.run("k", "new", move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = release_rx.wait_for(|go| *go).await;
            Outcome::Refreshed(session())
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting).await.is_err(),
            "held"
        );
        let _ = release_tx.send(true);
        for _ in 0..1000 {
            if r.shared.state.lock().unwrap().inflight.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let until = kept_until(&r, "k");
        assert!(
            until.is_some_and(|until| until > Instant::now() + GRACE),
            "kept past GRACE: {until:?}"
        );
        let late = r.run("k", "new", || async { Outcome::Ended }).await;
        assert!(matches!(late, Outcome::Refreshed(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn idle_waits_for_running_refreshes_only() {
        let r = Refresher::default();
        r.idle().await;
        let (release_tx, mut release_rx) = tokio::sync::watch::channel(false);
        let waiting = r.run("k", "new", move || async move {
            let _ = release_rx.wait_for(|go| *go).await;
            Outcome::Ended
        });
        assert!(tokio::time::timeout(Duration::from_millis(20), waiting).await.is_err());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), r.idle()).await.is_err(),
            "a refresh is running"
        );
        let _ = release_tx.send(true);
        tokio::time::timeout(Duration::from_secs(5), r.idle())
            .await
            .expect("idle once it ended");
    }

    /// A refresh whose task ends without an outcome (here it panics) leaves nothing behind, even with nobody
    /// waiting for it: a stopping gate does not wait for it, and the next caller starts afresh.
    #[tokio::test]
    async fn a_refresh_ending_without_an_outcome_leaves_no_entry() {
        let r = Refresher::default();
        let (release_tx, mut release_rx) = tokio::sync::watch::channel(false);
        let failing = r.run("k", "new", move || async move {
            let _ = release_rx.wait_for(|go| *go).await;
            panic!("a refresh that fails its own way")
        });
        // Its caller stops waiting first, as a request that timed out does: nobody is left to clean up but the task.
        assert!(tokio::time::timeout(Duration::from_millis(20), failing).await.is_err());
        let _ = release_tx.send(true);
        tokio::time::timeout(Duration::from_secs(5), r.idle())
            .await
            .expect("nothing left running");
        let second = r.run("k", "new", || async { Outcome::Refreshed(session()) }).await;
        assert!(matches!(second, Outcome::Refreshed(_)), "started afresh");
    }

    #[tokio::test]
    async fn failures_are_not_retried_at_once() {
        let r = Refresher::default();
        assert!(matches!(
            r.run("k", "new", || async { Outcome::Unavailable }).await,
            Outcome::Unavailable
        ));
        let second = r.run("k", "new", || async { Outcome::Refreshed(session()) }).await;
        assert!(
            matches!(second, Outcome::Unavailable),
            "within RETRY_AFTER nothing is sent"
        );
    }

    /// A refresh its caller took is handed out again for [`GRACE`] when Logto gave the refresh token back, and for
    /// [`UNCLAIMED_GRACE`] when it rotated it: an answer lost on the way leaves the browser with the spent token,
    /// which Logto would answer by revoking the grant.
    #[tokio::test]
    async fn a_rotated_refresh_is_handed_out_for_longer() {
        for (spent, longer) in [("new", false), ("old", true)] {
            let r = Refresher::default();
            let taken = r.run("k", spent, || async { Outcome::Refreshed(session()) }).await;
            assert!(matches!(taken, Outcome::Refreshed(_)));
            let until = kept_until(&r, "k").unwrap();
            assert_eq!(until > Instant::now() + GRACE, longer, "spent {spent}");
        }
    }
}
