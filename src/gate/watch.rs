//! The watch of a WebSocket tunnel a session opened: what the tunnel waits on to close, so that it lives no longer
//! than the session, its grant at Logto and, with Redis, the rule that admitted it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::metrics::GrantCheckResult;
use crate::oidc::IntrospectionError;
use crate::policy::Requirements;
use crate::session::refresh::Outcome;
use crate::session::store::Current;
use crate::session::{self, Session};

use super::Gate;

/// After a grant check Logto could not answer, the next one comes this soon, twice as late after each further one
/// (never later than `session.tunnel_grant_check_interval`): a Logto coming back from an outage is not met by every
/// tunnel at once, every minute.
const GRANT_CHECK_RETRY: Duration = Duration::from_secs(60);

/// Completes once the session `current` (found on the request that opened a tunnel) no longer stands, asked every
/// `session.tunnel_check_interval`:
/// - signed out, logged out by Logto's back channel, past its lifetime, or with Redis idle for
///   `session.idle_timeout` ([`crate::session::store::Sessions::standing`]);
/// - or its grant is gone at Logto: an admin suspended or deleted the user, or revoked the grant, none of which
///   Logto announces over the back channel. A request learns it when its session's refresh is refused; a tunnel
///   makes no requests, so once the session is past its refresh point the watch asks Logto itself:
///   - with Redis it refreshes the stored session as a request would (once across replicas, the result stored for
///     them all, [`Gate::refresh_due`]); a refusal ends the session and the tunnel. A session its requests keep
///     refreshing costs the tunnel nothing.
///   - with the cookie store it cannot (the browser's cookie would keep a refresh token Logto may have rotated
///     away), so it introspects the refresh token (RFC 7662, which spends nothing) at most every
///     `session.tunnel_grant_check_interval`; an inactive answer ends the tunnel, as it is once Logto suspends or
///     deletes the user (both delete the user's tokens first). Introspection does not look the user up, so a user
///     deleted by a Logto older than 1.42, which kept the tokens, keeps this store's tunnels until the session's
///     lifetime.
/// - or its sign-in at Logto is older than the `max_age` of a rule that admitted the tunnel (`admitted`);
/// - with Redis, once the stored session's claims (refreshed by the watch or by any replica's request) no longer
///   meet `admitted`, the requirements of the rules that admitted the tunnel: a role or organization taken away in
///   Logto closes it at the session's next refresh, as it refuses its requests from then on. A cookie session's
///   claims never change under its tunnel.
///
/// A check that fails (Redis or Logto unreachable) keeps the tunnel open, with a warning: an outage must not cut
/// every tunnel at once; Logto is asked again after [`GRANT_CHECK_RETRY`], doubling. Between checks the watch holds
/// its state and a timer, and no strong reference to the gate (it is gone only as the process ends, and with it the
/// tunnel); a check's own state (a Redis or Logto request's) is boxed for the check's duration only.
pub(super) async fn until_ended(gate: Weak<Gate>, current: Current, admitted: Vec<Arc<Requirements>>) {
    let Some(every) = gate.upgrade().map(|g| g.config.session.tunnel_check_interval) else {
        return;
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = Watch {
        current,
        admitted,
        next_grant_check: 0,
        failed_checks: 0,
    };
    loop {
        ticks.tick().await;
        let Some(gate) = gate.upgrade() else {
            return;
        };
        if Box::pin(watch.ended(&gate, session::now())).await {
            return;
        }
    }
}

/// What a tunnel's watch keeps between checks.
struct Watch {
    current: Current,
    admitted: Vec<Arc<Requirements>>,
    /// Seconds since the epoch before which Logto is not asked about the grant again (`u64::MAX`: never, it cannot
    /// say).
    next_grant_check: u64,
    /// Grant checks Logto could not answer since the last one it did.
    failed_checks: u32,
}

impl Watch {
    /// One check at `now`: whether the tunnel must close.
    async fn ended(&mut self, gate: &Gate, now: u64) -> bool {
        let standing = match gate.sessions.standing(&self.current, now).await {
            Ok(Some(standing)) => standing,
            Ok(None) => return true,
            Err(e) => {
                if let Some(times) = gate.warnings.tunnel_standing.due() {
                    tracing::warn!(
                        error = %e,
                        failed_checks = times,
                        "could not check whether WebSocket tunnels' sessions still stand (failed_checks: since the \
                         last such line, for all tunnels); they stay open"
                    );
                }
                return false;
            }
        };
        // A rule's `max_age` holds for as long as the tunnel lasts: once the session's sign-in at Logto is older,
        // its requests are sent to sign in again, and its tunnel closes.
        if let Some(max_age) = self.admitted.iter().filter_map(|r| r.max_age).min() {
            if standing.auth.is_none_or(|at| now.saturating_sub(at) > max_age) {
                tracing::info!(
                    sub = standing.sub(),
                    max_age,
                    "the session's sign-in is older than the max_age of the rule that admitted its WebSocket tunnel; \
                     it closes"
                );
                return true;
            }
        }
        if gate.sessions.uses_redis_store() {
            self.stored_session_ended(gate, standing, now).await
        } else {
            self.cookie_grant_ended(gate, &standing, now).await
        }
    }

    /// With Redis: refreshes the stored session once it is past its refresh point, then holds its claims to the
    /// rules that admitted the tunnel.
    async fn stored_session_ended(&mut self, gate: &Gate, stored: Arc<Session>, now: u64) -> bool {
        let mut session = stored;
        if let Some(rt) = session
            .rt
            .clone()
            .filter(|_| self.asks_at(now) && session.needs_refresh(now))
        {
            let due = Current {
                session: Arc::clone(&session),
                rewrite: false,
                ..self.current.clone()
            };
            match gate.refresh_due(&due, &rt, now).await {
                Outcome::Refreshed(refreshed) => {
                    gate.metrics.grant_check(GrantCheckResult::Standing);
                    // The refreshed session's own refresh point says when to ask next.
                    self.answered(0);
                    session = Arc::new(refreshed);
                }
                Outcome::Ended => {
                    gate.metrics.grant_check(GrantCheckResult::Ended);
                    tracing::info!(
                        sub = session.sub(),
                        "Logto refused the session's refresh (a suspended or deleted user, a revoked grant); its \
                         WebSocket tunnel closes"
                    );
                    return true;
                }
                // Logged by the refresh.
                Outcome::Unavailable => {
                    gate.metrics.grant_check(GrantCheckResult::Failed);
                    self.unanswered(gate, now);
                }
            }
        }
        let unmet = self.admitted.iter().find_map(|r| r.check(&session.subject(r)).err());
        if let Some(unmet) = unmet {
            tracing::info!(
                sub = session.sub(),
                required = %unmet,
                "the session's user no longer meets the rule that admitted its WebSocket tunnel; it closes"
            );
            return true;
        }
        false
    }

    /// With the cookie store: introspects the session's refresh token once it is past its refresh point, at most
    /// every `session.tunnel_grant_check_interval`.
    async fn cookie_grant_ended(&mut self, gate: &Gate, session: &Session, now: u64) -> bool {
        let Some(rt) = session
            .rt
            .as_deref()
            .filter(|_| self.asks_at(now) && session.needs_refresh(now))
        else {
            return false;
        };
        match Box::pin(gate.oidc.grant_stands(rt, session.sub())).await {
            Ok(true) => {
                gate.metrics.grant_check(GrantCheckResult::Standing);
                self.answered(now.saturating_add(gate.config.session.tunnel_grant_check_interval.as_secs()));
                false
            }
            Ok(false) => {
                gate.metrics.grant_check(GrantCheckResult::Ended);
                tracing::info!(
                    sub = session.sub(),
                    "Logto says the session's grant no longer stands (a suspended user or a revoked grant); its \
                     WebSocket tunnel closes"
                );
                true
            }
            Err(IntrospectionError::Unsupported) => {
                gate.metrics.grant_check(GrantCheckResult::Failed);
                self.next_grant_check = u64::MAX;
                false
            }
            Err(IntrospectionError::Failed(e)) => {
                gate.metrics.grant_check(GrantCheckResult::Failed);
                if let Some(times) = gate.warnings.tunnel_grant.due() {
                    tracing::warn!(
                        error = %e,
                        failed_checks = times,
                        "could not ask Logto whether WebSocket tunnels' grants still stand (failed_checks: since the \
                         last such line, for all tunnels); they stay open"
                    );
                }
                self.unanswered(gate, now);
                false
            }
        }
    }

    /// Whether Logto may be asked about the grant at `now`.
    fn asks_at(&self, now: u64) -> bool {
        now >= self.next_grant_check
    }

    /// Logto answered: it is asked again from `next_check` on, and the next failure is retried after
    /// [`GRANT_CHECK_RETRY`] again.
    fn answered(&mut self, next_check: u64) {
        self.failed_checks = 0;
        self.next_grant_check = next_check;
    }

    /// Logto could not answer at `now`: asked again after [`retry_after`].
    fn unanswered(&mut self, gate: &Gate, now: u64) {
        self.failed_checks = self.failed_checks.saturating_add(1);
        let wait = retry_after(self.failed_checks, gate.config.session.tunnel_grant_check_interval);
        self.next_grant_check = now.saturating_add(wait.as_secs());
    }
}

/// When to ask again after `failed` grant checks in a row went unanswered ([`GRANT_CHECK_RETRY`]).
fn retry_after(failed: u32, grant_every: Duration) -> Duration {
    let doubled = GRANT_CHECK_RETRY.saturating_mul(1 << failed.saturating_sub(1).min(16));
    grant_every.min(doubled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanswered_grant_checks_are_retried_ever_later_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=8).map(|n| retry_after(n, hour).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(retry_after(u32::MAX, hour), hour);
        // An interval under the first retry is kept (tests, operators who ask often).
        assert_eq!(retry_after(1, Duration::from_secs(5)), Duration::from_secs(5));
    }
}
