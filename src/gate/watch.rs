//! The watch of a WebSocket tunnel a session opened: what the tunnel waits on to close, so that it lives no longer
//! than the session and its grant at Logto.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{GrantCheckResult, Metrics};
use crate::oidc::{IntrospectionError, Oidc};
use crate::session::store::{Current, Sessions};
use crate::session::{self, Session};

/// After a grant check Logto could not answer, the next one comes this soon, twice as late after each further one
/// (never later than the regular interval): a Logto coming back from an outage is not met by every tunnel at once,
/// every minute.
const GRANT_CHECK_RETRY: Duration = Duration::from_secs(60);

/// Completes once the session `current` (found on the request that opened a tunnel) no longer stands, asked every
/// `every`:
/// - signed out, logged out by Logto's back channel, or past its lifetime ([`Sessions::standing`]);
/// - or its grant is gone at Logto. Once the session is past its refresh point, where a request would have spent
///   the refresh token and learnt its fate, the refresh token is introspected instead (RFC 7662, which spends
///   nothing), at most every `grant_every`; an inactive answer ends the tunnel. That is how a tunnel learns that an
///   admin suspended the user (Logto then deletes the user's refresh tokens and calls no back channel) or revoked
///   the grant. With Redis, a session its requests refresh (on any replica) moves its refresh point and costs no
///   introspection; a cookie session's tunnel knows only the cookie it was opened with.
///
/// A check that fails (Redis or Logto unreachable) keeps the tunnel open, with a warning: an outage must not cut
/// every tunnel at once. Between checks it holds its arguments and a timer: a check's own state (a Redis or Logto
/// request's) is boxed for the check's duration only, not kept with every quiet tunnel.
pub(super) async fn until_ended(
    sessions: Arc<Sessions>,
    oidc: Arc<Oidc>,
    metrics: Arc<Metrics>,
    current: Current,
    every: Duration,
    grant_every: Duration,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Seconds since the epoch before which the grant is not asked about again (`u64::MAX`: never, Logto cannot say).
    let mut next_grant_check = 0u64;
    // Grant checks Logto could not answer since the last one it did.
    let mut failed_checks = 0u32;
    loop {
        ticks.tick().await;
        let now = session::now();
        let standing = match Box::pin(sessions.standing(&current, now)).await {
            Ok(Some(standing)) => standing,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "could not check whether a WebSocket tunnel's session still stands; it stays open"
                );
                continue;
            }
        };
        if now < next_grant_check || !standing.needs_refresh(now) {
            continue;
        }
        let Some(rt) = standing.rt.as_deref() else {
            continue;
        };
        let answer = match Box::pin(oidc.grant_stands(rt, standing.sub())).await {
            // Spent by another replica's refresh meanwhile, not revoked: the next tick looks at the stored session.
            Ok(false) if Box::pin(refreshed_meanwhile(&sessions, &current, &standing)).await => {
                next_grant_check = 0;
                continue;
            }
            answer => answer,
        };
        metrics.grant_check(match answer {
            Ok(true) => GrantCheckResult::Standing,
            Ok(false) => GrantCheckResult::Ended,
            Err(_) => GrantCheckResult::Failed,
        });
        next_grant_check = match answer {
            Ok(true) => {
                failed_checks = 0;
                now.saturating_add(grant_every.as_secs())
            }
            Ok(false) => {
                tracing::info!(
                    sub = standing.sub(),
                    "Logto says the session's grant no longer stands (a suspended user or a revoked grant); its \
                     WebSocket tunnel closes"
                );
                return;
            }
            Err(IntrospectionError::Unsupported) => u64::MAX,
            Err(IntrospectionError::Failed(e)) => {
                tracing::warn!(
                    error = %e,
                    "could not ask Logto whether a WebSocket tunnel's grant still stands; it stays open"
                );
                failed_checks = failed_checks.saturating_add(1);
                now.saturating_add(retry_after(failed_checks, grant_every).as_secs())
            }
        };
    }
}

/// When to ask again after `failed` grant checks in a row went unanswered ([`GRANT_CHECK_RETRY`]).
fn retry_after(failed: u32, grant_every: Duration) -> Duration {
    let doubled = GRANT_CHECK_RETRY.saturating_mul(1 << failed.saturating_sub(1).min(16));
    grant_every.min(doubled)
}

/// Whether the session stored now holds another refresh token than `asked` did: with Redis, another replica's
/// refresh may have rotated the token between reading the session and introspecting it, and the one asked about
/// was then spent, not revoked. A session that ended meanwhile was not refreshed; a failed read counts as refreshed
/// (the next tick asks again).
async fn refreshed_meanwhile(sessions: &Sessions, current: &Current, asked: &Session) -> bool {
    match sessions.standing(current, session::now()).await {
        Ok(Some(stored)) => stored.rt != asked.rt,
        Ok(None) => false,
        Err(_) => true,
    }
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
