//! One refresh per session at a time, and a grace window after it.
//!
//! Logto rotates a refresh token once it is past 70 % of its life and treats the reuse of a consumed one as theft
//! (it revokes the whole grant), so a refresh must reach Logto exactly once. Concurrent requests of one session
//! share a single refresh (single-flight, keyed by the session's refresh token or id and its refresh point);
//! requests that arrive shortly afterwards still carrying the pre-refresh cookie (another tab, a request in flight)
//! are served from the refreshed session for [`GRACE`] instead of refreshing again. A transient failure (Logto
//! unreachable) is not retried for [`RETRY_AFTER`], so an outage does not turn every request into a token request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Session;

/// How long a pre-refresh cookie is still answered with the refreshed session.
pub const GRACE: Duration = Duration::from_secs(60);

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
    inflight: HashMap<String, Arc<tokio::sync::OnceCell<Outcome>>>,
    recent: HashMap<String, (Outcome, Instant)>,
    failed: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct Refresher {
    state: Mutex<State>,
}

impl Refresher {
    /// Runs `work` for `key` unless a refresh for it is running (then waits for that one) or just finished
    /// (then returns its outcome).
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let cell = {
            let Ok(mut st) = self.state.lock() else {
                return Outcome::Unavailable;
            };
            let now = Instant::now();
            st.recent.retain(|_, (_, at)| now.duration_since(*at) < GRACE);
            st.failed.retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
            if let Some((outcome, _)) = st.recent.get(key) {
                return outcome.clone();
            }
            if st.failed.contains_key(key) {
                return Outcome::Unavailable;
            }
            st.inflight.entry(key.to_owned()).or_default().clone()
        };
        let outcome = cell.get_or_init(work).await.clone();
        if let Ok(mut st) = self.state.lock() {
            // Only the first caller to get here records the outcome; `recent` is filled before the in-flight entry
            // goes, so no caller can miss both and start a second refresh with a consumed token.
            if st.inflight.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                match &outcome {
                    Outcome::Unavailable => {
                        st.failed.insert(key.to_owned(), Instant::now());
                    }
                    done => {
                        st.recent.insert(key.to_owned(), (done.clone(), Instant::now()));
                    }
                }
                st.inflight.remove(key);
            }
        }
        outcome
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
            claims: serde_json::Map::new(),
            iat: 0,
            exp: 10,
            rt: Some("new".into()),
            at: None,
            at_exp: None,
            sid: None,
            seen: 0,
            refresh_at: None,
            serial: None,
            idt: None,
            idt_exp: None,
            rendered: Default::default(),
        }
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
                r.run("k", || async move {
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
        let late = r.run("k", || async { Outcome::Ended }).await;
        assert!(matches!(late, Outcome::Refreshed(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_are_not_retried_at_once() {
        let r = Refresher::default();
        assert!(matches!(
            r.run("k", || async { Outcome::Unavailable }).await,
            Outcome::Unavailable
        ));
        let second = r.run("k", || async { Outcome::Refreshed(session()) }).await;
        assert!(
            matches!(second, Outcome::Unavailable),
            "within RETRY_AFTER nothing is sent"
        );
    }
}
