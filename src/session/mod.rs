//! The signed-in session and the cookies that carry it.
//!
//! The session lives in an encrypted cookie (AES-256-GCM through the `cookie` crate's private jar; the key is
//! derived from `session.secret` with HKDF). The cookie's name is authenticated with it, so a value moved to
//! another cookie name does not decrypt. Anything that does not decrypt, does not parse or has expired is treated
//! as "signed out", never as an error.

pub mod attempt;
pub mod cookies;
pub mod redis_store;
pub mod refresh;
mod revocations;
mod secret_files;

/// For `logto-gate check`: reads `session.revocation_file` as a start would, without writing it; how many sessions
/// and users it still revokes.
pub fn check_revocation_file(path: &std::path::Path) -> Result<usize, String> {
    let list = revocations::read(path, now())?;
    Ok(list.sids.len() + list.subs.len() + list.signed_out.len())
}
pub mod store;

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use cookies::CookieCodec;
pub use store::{Current, Sessions};

/// What the gate keeps about a signed-in person: the identity claims it needs, expiry, and the refresh token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Claims kept for identity headers and `/_logto/userinfo`; always holds `sub` (the Logto user id).
    pub claims: Map<String, Value>,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Absolute end of the session (`session.lifetime` after sign-in), seconds since the epoch.
    pub exp: u64,
    /// Logto's refresh token, when one was issued (offline_access + prompt=consent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt: Option<String>,
    /// The access token, kept only when `upstream.pass_access_token` forwards it: the sign-in's or the
    /// organization's. With `logto.resources` the tokens are in [`Session::apis`] (a session from before them holds
    /// the first API's here until its next refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// When the access token obtained with the session expires, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_exp: Option<u64>,
    /// When the person signed in at Logto, on the gate's clock (seconds since the epoch), for rules with `max_age`:
    /// from the sign-in's ID token, [`signed_in_at`]. `None` when Logto did not say (it says when asked with
    /// `max_age`). Kept through refreshes: a refresh is no sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<u64>,
    /// Logto's session id (`sid` claim), for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Last request seen, seconds since the epoch (for `session.idle_timeout`).
    #[serde(default)]
    pub seen: u64,
    /// When to use the refresh token: some time before the access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_at: Option<u64>,
    /// Random, set at sign-in and kept through refreshes: names this session on the revocation list at sign-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The ID token as Logto signed it, kept only for `upstream.protected_app` (sent as `Logto-ID-Token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt: Option<String>,
    /// When that ID token expires, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt_exp: Option<u64>,
    /// With `logto.resources`: what Logto granted for each API resource, by its indicator (RFC 8707), from the
    /// refresh grant with `resource`. Rules naming `resources` read these permissions instead of `scope`, and
    /// `upstream.pass_access_token` sends the token of the API a request's rule names.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub apis: std::collections::BTreeMap<String, ApiGrant>,
    /// The identity headers rendered from `claims`, kept for the life of this value (never serialised).
    #[serde(skip)]
    pub rendered: Rendered,
}

/// What one API resource's access token granted a session.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ApiGrant {
    /// Its permissions (the token's `scope`), space-separated.
    #[serde(default)]
    pub scope: String,
    /// The token itself, kept only when `upstream.pass_access_token` forwards it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Identity header values rendered once from a session's claims, so the signed-in path does not rebuild them on
/// every request. Sessions are shared immutably (`Arc<Session>`); code that changes claims changes a clone, and a
/// clone starts with nothing rendered, so what is held here always matches the claims beside it.
#[derive(Default)]
pub struct Rendered(OnceLock<crate::identity::IdentityHeaders>);

impl Rendered {
    /// The headers for `claims` under `mapping`, rendered on first use.
    pub fn get_or_render(
        &self,
        mapping: &[(http::HeaderName, crate::identity::ClaimPath)],
        claims: &Map<String, Value>,
    ) -> &crate::identity::IdentityHeaders {
        self.0
            .get_or_init(|| crate::identity::IdentityHeaders::render(mapping, claims))
    }
}

impl Clone for Rendered {
    fn clone(&self) -> Self {
        Rendered::default()
    }
}

impl PartialEq for Rendered {
    /// A cache: never part of a session's value.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Rendered(..)"
        } else {
            "Rendered(-)"
        })
    }
}

impl Session {
    /// How the revocation list names this session: its serial, or (a session from before serials) its subject and
    /// sign-in time.
    pub fn revocation_name(&self) -> String {
        match &self.serial {
            Some(serial) => serial.clone(),
            None => format!("{}:{}", self.sub(), self.iat),
        }
    }

    pub fn is_live(&self, now: u64) -> bool {
        now < self.exp && !self.sub().is_empty()
    }

    /// True when the tokens are near expiry and a refresh token can renew them.
    /// Keeps `id_token` (expiring at `exp`) for the Protected App contract, and plans the refresh before it
    /// expires, so the app is never sent an expired one.
    pub fn keep_id_token(&mut self, id_token: &str, exp: u64, now: u64) {
        self.idt = Some(id_token.to_owned());
        self.idt_exp = Some(exp);
        let at = Session::refresh_time(now, exp.saturating_sub(now));
        self.refresh_at = Some(self.refresh_at.map_or(at, |r| r.min(at)));
    }

    /// The kept ID token while it is valid at `now` (none once expired: the app is never sent an expired one).
    pub fn live_id_token(&self, now: u64) -> Option<&str> {
        self.idt
            .as_deref()
            .filter(|_| self.idt_exp.is_some_and(|exp| now < exp))
    }

    pub fn needs_refresh(&self, now: u64) -> bool {
        self.rt.is_some() && self.refresh_at.is_some_and(|at| now >= at)
    }

    /// When to refresh tokens that expire in `expires_in` seconds from `now`: a minute early, or halfway for
    /// short-lived tokens, so requests in flight never carry an expired token.
    pub fn refresh_time(now: u64, expires_in: u64) -> u64 {
        now + expires_in - (expires_in / 2).min(60)
    }

    /// The subject (Logto user id).
    pub fn sub(&self) -> &str {
        self.claims.get("sub").and_then(Value::as_str).unwrap_or("")
    }

    /// What the rules' `requirements` are checked against for this session: its claims and, where they name
    /// `resources`, the permissions those APIs granted it ([`Session::apis`]) as its scopes.
    pub fn subject<'a>(&'a self, requirements: &crate::policy::Requirements) -> crate::policy::Subject<'a> {
        let mut subject = crate::policy::Subject::of(&self.claims);
        if !requirements.resources.is_empty() {
            let granted = requirements.resources.iter().filter_map(|r| self.apis.get(r));
            subject.api_scopes = Some(
                granted
                    .flat_map(|g| g.scope.split(' ').filter(|p| !p.is_empty()))
                    .collect(),
            );
        }
        subject
    }

    /// The identity as `/_logto/userinfo` shows it: the kept claims, the session's expiry, when the person signed in
    /// at Logto (`auth_time`, when Logto said) and, with
    /// `logto.resources`, each API's permissions (`api_scopes`; never a token).
    pub fn identity_json(&self) -> Value {
        let mut m = self.claims.clone();
        m.insert("session_expires_at".to_owned(), Value::from(self.exp));
        // When Logto says the person signed in, so that a page can ask for a recent sign-in before something
        // sensitive (`/_logto/sign-in?max_age=...`).
        if let Some(at) = self.auth {
            m.insert("auth_time".to_owned(), Value::from(at));
        }
        if !self.apis.is_empty() {
            let apis = self
                .apis
                .iter()
                .map(|(r, g)| (r.clone(), Value::from(g.scope.as_str())));
            m.insert("api_scopes".to_owned(), Value::Object(apis.collect()));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
impl Session {
    /// For unit tests: a session of `claims` from 0 to 10 seconds past the epoch, holding nothing else.
    pub(crate) fn of_claims(claims: Map<String, Value>) -> Session {
        Session {
            claims,
            iat: 0,
            exp: 10,
            rt: None,
            at: None,
            at_exp: None,
            auth: None,
            sid: None,
            seen: 0,
            refresh_at: None,
            serial: None,
            idt: None,
            idt_exp: None,
            apis: Default::default(),
            rendered: Rendered::default(),
        }
    }
}

/// When an ID token just received says the person signed in at Logto (its `auth_time`, OIDC Core §2), on the
/// gate's clock: `now` less how long before issuing the token Logto signed them in (`iat - auth_time`, both read
/// on Logto's clock, so the two clocks need not agree). `None` without `auth_time`, or with one after `iat` by more
/// than a minute (a time in milliseconds, say).
pub fn signed_in_at(claims: &serde_json::Map<String, serde_json::Value>, now: u64) -> Option<u64> {
    let auth_time = claims.get("auth_time")?.as_u64()?;
    let iat = claims.get("iat")?.as_u64()?;
    if auth_time > iat.saturating_add(60) {
        return None;
    }
    Some(now.saturating_sub(iat.saturating_sub(auth_time)))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sub: &str, email: &str) -> Session {
        let claims = match serde_json::json!({"sub": sub, "email": email, "picture": null}) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Session::of_claims(claims)
    }

    fn rendered(s: &Session) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        s.rendered
            .get_or_render(&crate::identity::default_headers(), &s.claims)
            .insert_into(&mut h);
        h
    }

    #[test]
    fn rendered_headers_follow_the_claims_of_each_value_and_never_a_stale_copy() {
        let first = session("u1", "a@example.com");
        let h = rendered(&first);
        assert_eq!(h.get("x-forwarded-user").unwrap(), "u1");
        assert_eq!(h.get("x-forwarded-email").unwrap(), "a@example.com");
        assert!(!h.contains_key("x-forwarded-picture"), "null claims send nothing");
        // A refresh changes a clone: the clone renders its own claims, the original keeps its rendering.
        let mut renewed = first.clone();
        renewed.claims.insert("email".into(), Value::from("b@example.com"));
        assert_eq!(rendered(&renewed).get("x-forwarded-email").unwrap(), "b@example.com");
        assert_eq!(rendered(&first).get("x-forwarded-email").unwrap(), "a@example.com");
        // The cache is no part of the session's value.
        assert_eq!(first.clone(), first);
        let json = serde_json::to_string(&first).unwrap();
        assert!(!json.contains("rendered"), "{json}");
    }
}
