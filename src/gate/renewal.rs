//! Phase 2c: keeping a session's tokens fresh. A session near access-token expiry is renewed with its refresh token
//! exactly once, however many requests ask at the same moment and however many replicas serve them (see
//! [`crate::session::refresh`]); a refused refresh ends the session; an organization token is renewed with it.

use std::time::Duration;

use serde_json::Value;

use crate::identity;
use crate::metrics::RefreshResult;
use crate::oidc::RefreshError;
use crate::session::refresh;
use crate::session::store::SaveError;
use crate::session::{ApiGrant, Current, Session};

use super::Gate;

/// How long the cross-replica refresh lock lives if its holder dies.
const REFRESH_LOCK_TTL: Duration = Duration::from_secs(15);

/// How long a replica waits for another replica's refresh of the same session.
const REFRESH_WAIT: Duration = Duration::from_secs(5);

/// How long a request waits for its session's refresh before it is served with the session as it is. Logto is
/// asked with a 10 s timeout per call, and a refresh may make four (tokens, userinfo, an API resource's and an
/// organization's tokens): a Logto that accepts connections but does not answer would otherwise hold a signed-in
/// request that long.
const REFRESH_WAIT_IN_REQUEST: Duration = Duration::from_secs(5);

/// What phase 2c did to a session.
pub(super) enum Renewed {
    /// Nothing to write.
    Kept(Current),
    /// New tokens, or the cookie must be rewritten.
    Changed(Current),
    /// The grant is gone: signed out.
    Ended,
}

impl Gate {
    /// Phase 2c: renews tokens near expiry with the refresh token, once per session however many requests ask
    /// (see [`crate::session::refresh`]); also passes on a session that must be written again (old secret, idle
    /// tracking).
    pub(super) async fn renew(&self, current: Current, now: u64) -> Renewed {
        let Some(rt) = current
            .session
            .rt
            .clone()
            .filter(|_| current.session.needs_refresh(now))
        else {
            return if current.rewrite {
                Renewed::Changed(current)
            } else {
                Renewed::Kept(current)
            };
        };
        // A request waits for its session's refresh at most REFRESH_WAIT_IN_REQUEST; the refresh goes on, and a later
        // request gets its outcome.
        let outcome = tokio::time::timeout(REFRESH_WAIT_IN_REQUEST, self.refresh_due(&current, &rt, now))
            .await
            .unwrap_or_else(|_| {
                tracing::debug!(
                    sub = current.session.sub(),
                    "Logto has not answered the token refresh yet; serving the current session meanwhile"
                );
                refresh::Outcome::Unavailable
            });
        match outcome {
            refresh::Outcome::Refreshed(session) => Renewed::Changed(Current {
                session: std::sync::Arc::new(session),
                ..current
            }),
            refresh::Outcome::Ended => Renewed::Ended,
            refresh::Outcome::Unavailable if current.rewrite => Renewed::Changed(current),
            refresh::Outcome::Unavailable => Renewed::Kept(current),
        }
    }

    /// The refresh of `current` at its refresh point with its refresh token `rt`: once however many requests (and
    /// tunnel watches, [`super::watch`]) ask at the same moment ([`crate::session::refresh`]), and with Redis once
    /// across replicas ([`Gate::refresh_session`]). A session it ends is deleted from Redis.
    pub(super) async fn refresh_due(&self, current: &Current, rt: &str, now: u64) -> refresh::Outcome {
        // One refresh of this session at this refresh point. The refresh token alone cannot name it: Logto gives
        // a confidential client's token back unchanged until it is past 70 % of its life, so the session refreshed
        // a moment ago carries the same token when its own refresh point comes.
        let due = current.session.refresh_at;
        let key = match &current.id {
            Some(id) => format!("id:{id}:{due:?}"),
            None => refresh::key_for(&format!("{rt}\n{due:?}")),
        };
        let Some(gate) = self.me.upgrade() else {
            return refresh::Outcome::Unavailable;
        };
        let (current, token) = (current.clone(), rt.to_owned());
        // In a task of its own (see `Refresher::run`): it reaches its end whoever still waits for it.
        let work = || async move {
            let outcome = gate.refresh_session(&current, &token, now).await;
            gate.metrics.refresh(match outcome {
                refresh::Outcome::Refreshed(_) => RefreshResult::Refreshed,
                refresh::Outcome::Ended => RefreshResult::Ended,
                refresh::Outcome::Unavailable => RefreshResult::Failed,
            });
            if let refresh::Outcome::Ended = outcome {
                if let Err(e) = gate.sessions.forget(&current).await {
                    tracing::warn!(error = %e, "could not delete an ended session from Redis");
                }
            }
            outcome
        };
        self.refresher.run(&key, rt, work).await
    }

    /// One refresh of one session. With the Redis store a short lock makes it one refresh across all replicas:
    /// a replica that finds the lock taken waits (bounded) for the other's result instead of spending the token.
    pub(super) async fn refresh_session(&self, current: &Current, rt: &str, now: u64) -> refresh::Outcome {
        let (Some(id), Some(redis)) = (current.id.as_deref(), self.sessions.redis()) else {
            return self.refresh_at_logto(&current.session, rt, now).await;
        };
        let lock = redis.key("refresh-lock", id);
        let token = refresh::key_for(&format!("{now}:{id}:{:?}", std::thread::current().id()));
        // Stored by another replica's refresh: a rotated refresh token, or (one Logto gave back) new refresh point.
        let changed = |s: &Session| s.rt.as_deref() != Some(rt) || s.refresh_at != current.session.refresh_at;
        match redis.set_once(&lock, &token, REFRESH_LOCK_TTL).await {
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the refresh lock; serving the current session");
                refresh::Outcome::Unavailable
            }
            Ok(false) => {
                // Another replica is refreshing this session: wait for its result, bounded.
                let deadline = tokio::time::Instant::now() + REFRESH_WAIT;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    match self.sessions.reload(id).await {
                        Ok(Some(s)) if changed(&s) => return refresh::Outcome::Refreshed(s),
                        // Ended meanwhile (signed out, logged out over the back channel): so is this request.
                        Ok(None) => return refresh::Outcome::Ended,
                        _ => {}
                    }
                }
                tracing::warn!(
                    sub = current.session.sub(),
                    "another replica's refresh of this session did not finish in time; serving the current session"
                );
                refresh::Outcome::Unavailable
            }
            Ok(true) => {
                let outcome = match self.sessions.reload(id).await {
                    // Another replica finished just before the lock was free.
                    Ok(Some(s)) if changed(&s) => refresh::Outcome::Refreshed(s),
                    Ok(None) => refresh::Outcome::Ended,
                    _ => match self.refresh_at_logto(&current.session, rt, now).await {
                        refresh::Outcome::Refreshed(s) => self.store_refreshed(current, s, now).await,
                        other => other,
                    },
                };
                if let Err(e) = redis.delete_if(&lock, &token).await {
                    tracing::debug!(error = %e, "refresh lock not released; it expires by itself");
                }
                outcome
            }
        }
    }

    /// Writes a session refreshed under the Redis lock back for the other replicas, as last seen when it was read (a
    /// refresh is not the person's activity; a request that asked for it records its own). One that was ended while
    /// Logto answered (signed out, or logged out over the back channel: Logto keeps the grant through end-session,
    /// so the refresh succeeded) stays ended.
    async fn store_refreshed(&self, current: &Current, refreshed: Session, now: u64) -> refresh::Outcome {
        match self.sessions.save_refreshed(current, refreshed.clone(), now).await {
            Ok(_) => refresh::Outcome::Refreshed(refreshed),
            Err(SaveError::Gone) => {
                tracing::info!(
                    sub = refreshed.sub(),
                    "the session ended while its tokens were refreshed"
                );
                refresh::Outcome::Ended
            }
            Err(e) => {
                tracing::error!(
                    error = ?e,
                    "refreshed tokens could not be stored; the session ends at its next refresh"
                );
                refresh::Outcome::Refreshed(refreshed)
            }
        }
    }

    /// Sends the refresh token to Logto and builds the renewed session: new tokens, claims from the new ID token
    /// (and userinfo when the config reads claims only it has), the same absolute expiry.
    pub(super) async fn refresh_at_logto(&self, old: &Session, rt: &str, now: u64) -> refresh::Outcome {
        let tokens = match self.oidc.refresh(rt).await {
            Ok(t) => t,
            Err(RefreshError::Revoked(why)) => {
                tracing::info!(sub = old.sub(), reason = %why, "Logto refused the refresh token; the session ends");
                return refresh::Outcome::Ended;
            }
            Err(RefreshError::Unavailable(why) | RefreshError::Denied(why)) => {
                // In a Logto outage every active session fails here, each again at its next retry.
                match self.warnings.refresh.due() {
                    Some(times) => tracing::warn!(
                        sub = old.sub(),
                        reason = %why,
                        failed_refreshes = times,
                        "token refresh failed; serving the current session (failed_refreshes: since the last such \
                         line, for all sessions)"
                    ),
                    None => tracing::debug!(sub = old.sub(), reason = %why, "token refresh failed"),
                }
                return refresh::Outcome::Unavailable;
            }
        };
        let mut session = old.clone();
        // The refreshed ID token and its expiry, kept for the Protected App contract.
        let mut new_id_token = None;
        if let Some(id_token) = tokens.id_token.as_deref() {
            match self.oidc.verify_refreshed_id_token(id_token, old.sub(), now).await {
                Ok(mut claims) => {
                    if self.config.upstream.protected_app {
                        new_id_token = claims.get("exp").and_then(Value::as_u64).map(|exp| (id_token, exp));
                    }
                    if self.needs_userinfo(&claims) {
                        if let Some(loaded) = self.oidc.loaded() {
                            match self.oidc.userinfo(&loaded, &tokens.access_token, old.sub()).await {
                                Ok(extra) => {
                                    for (k, v) in extra {
                                        claims.entry(k).or_insert(v);
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "userinfo after refresh failed; keeping old claims")
                                }
                            }
                        }
                    }
                    // Claims the new tokens do not carry (extended ones when userinfo failed) are kept.
                    for (k, v) in &old.claims {
                        claims.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    if let Some(scope) = tokens.scope.clone() {
                        claims.insert("scope".to_owned(), Value::String(scope));
                    }
                    session.claims = identity::prune(&claims, &self.kept_claims);
                }
                Err(e) => tracing::warn!(error = ?e, "the refreshed ID token was refused; keeping the old claims"),
            }
        }
        // Logto rotates a refresh token only past 70 % of its life; before that it gives the same one back (or none).
        session.rt = tokens.refresh_token.clone().or_else(|| Some(rt.to_owned()));
        session.at = self.config.passes_access_tokens().then(|| tokens.access_token.clone());
        session.at_exp = tokens.expires_in.map(|s| now + s);
        session.refresh_at = tokens.expires_in.map(|s| Session::refresh_time(now, s));
        if let Some((id_token, exp)) = new_id_token {
            session.keep_id_token(id_token, exp, now);
        }
        match self.apply_resource_tokens(&mut session, now).await {
            Ok(()) => {}
            Err(RefreshError::Revoked(why)) => {
                tracing::info!(sub = session.sub(), reason = %why, "Logto refused the refresh token; the session ends");
                return refresh::Outcome::Ended;
            }
            Err(RefreshError::Denied(why)) => {
                // What the refused API granted is out of the session (`apply_resource_tokens`); the organization's
                // membership is still checked below.
                tracing::warn!(reason = %why, "an API resource's access token was refused; the session goes on without it");
            }
            Err(RefreshError::Unavailable(why)) => {
                // The opaque token's refresh went through (and may have rotated the refresh token): keep what it gave.
                tracing::warn!(reason = %why, "the API resource's access token was not renewed");
                return refresh::Outcome::Refreshed(session);
            }
        }
        if let Err(e) = self.apply_organization_token(&mut session, now).await {
            return match e {
                RefreshError::Unavailable(why) => {
                    tracing::warn!(reason = %why, "organization token not renewed; serving the refreshed session");
                    refresh::Outcome::Refreshed(session)
                }
                RefreshError::Revoked(why) | RefreshError::Denied(why) => {
                    tracing::info!(sub = session.sub(), reason = %why, "no organization token any more; the session ends");
                    refresh::Outcome::Ended
                }
            };
        }
        tracing::debug!(sub = session.sub(), "tokens refreshed");
        refresh::Outcome::Refreshed(session)
    }

    /// With `logto.resources`: gets each resource's JWT access token with the session's refresh token (the code
    /// exchange and refreshes go without `resource`, so userinfo accepts their access token; RFC 8707 §2.2) and
    /// records what each grants in [`Session::apis`]: its permissions, the token itself for
    /// `upstream.pass_access_token`, its expiry, and a rotated refresh token. The session's `scope` then holds every
    /// API's permissions besides its own (what `scopes` rules naming no API read). An API Logto refuses a token for
    /// (`invalid_target`: deleted in Logto) is dropped and the next one asked; while Logto cannot answer, the last
    /// grants stand and no more are asked. The first failure is returned.
    pub(super) async fn apply_resource_tokens(&self, session: &mut Session, now: u64) -> Result<(), RefreshError> {
        let resources = &self.config.logto.resources;
        if resources.is_empty() {
            return Ok(());
        }
        // The tokens live in `apis`; none of a resource no longer configured is kept.
        session.at = None;
        session.apis.retain(|r, _| resources.contains(r));
        let mut outcome = Ok(());
        for resource in resources {
            match self.apply_resource_token(session, resource, now).await {
                Ok(()) => {}
                Err(RefreshError::Denied(why)) => {
                    session.apis.remove(resource);
                    outcome = outcome.and(Err(RefreshError::Denied(why)));
                }
                Err(e) => {
                    outcome = outcome.and(Err(e));
                    break;
                }
            }
        }
        let granted: Vec<String> = session.apis.values().map(|g| g.scope.clone()).collect();
        for scope in granted {
            add_scopes(session, &scope);
        }
        outcome
    }

    /// One resource's token for [`Gate::apply_resource_tokens`].
    async fn apply_resource_token(&self, session: &mut Session, resource: &str, now: u64) -> Result<(), RefreshError> {
        let rt = session.rt.clone().ok_or_else(|| {
            RefreshError::Denied(
                "Logto issued no refresh token, which the API resource's access token is obtained with (keep \
                 consent in logto.prompt, or turn on the app's \"Always issue Refresh Token\" in Logto)"
                    .into(),
            )
        })?;
        let (tokens, claims) = self.oidc.resource_token(&rt, resource, session.sub(), now).await?;
        if let Some(next) = tokens.refresh_token.clone() {
            session.rt = Some(next);
        }
        let grant = ApiGrant {
            scope: claims.get("scope").and_then(Value::as_str).unwrap_or("").to_owned(),
            at: self.config.passes_access_tokens().then_some(tokens.access_token),
        };
        session.apis.insert(resource.to_owned(), grant);
        if let Some(ttl) = tokens.expires_in {
            let (at_exp, refresh_at) = (now + ttl, Session::refresh_time(now, ttl));
            session.at_exp = Some(session.at_exp.map_or(at_exp, |e| e.min(at_exp)));
            session.refresh_at = Some(session.refresh_at.map_or(refresh_at, |r| r.min(refresh_at)));
        }
        Ok(())
    }

    /// With `logto.organization_id`: gets an organization token with the session's refresh token and records what
    /// it grants (`organization_id`, its permissions added to `scope`), keeping a rotated refresh token. Logto
    /// issues one only to members, so a session that has one is a member's.
    pub(super) async fn apply_organization_token(&self, session: &mut Session, now: u64) -> Result<(), RefreshError> {
        let Some(org) = self.config.logto.organization_id.as_deref() else {
            return Ok(());
        };
        let rt = session.rt.clone().ok_or_else(|| {
            RefreshError::Denied(
                "Logto issued no refresh token, which the organization token is obtained with (keep consent in \
                 logto.prompt, or turn on the app's \"Always issue Refresh Token\" in Logto)"
                    .into(),
            )
        })?;
        let (tokens, claims) = self.oidc.organization_token(&rt, org, session.sub(), now).await?;
        if let Some(next) = tokens.refresh_token.clone() {
            session.rt = Some(next);
        }
        add_scopes(session, claims.get("scope").and_then(Value::as_str).unwrap_or(""));
        session
            .claims
            .insert("organization_id".into(), Value::String(org.to_owned()));
        if self.config.passes_access_tokens() && self.config.logto.resources.is_empty() {
            session.at = Some(tokens.access_token);
        }
        Ok(())
    }
}

/// Adds the space-separated `granted` scopes to the session's `scope` claim (each once).
fn add_scopes(session: &mut Session, granted: &str) {
    let mut scope: Vec<String> = session
        .claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split(' ').filter(|p| !p.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    for p in granted.split(' ').filter(|p| !p.is_empty()) {
        if !scope.iter().any(|have| have == p) {
            scope.push(p.to_owned());
        }
    }
    session.claims.insert("scope".into(), Value::String(scope.join(" ")));
}
