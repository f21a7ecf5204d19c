//! Encrypted cookies: the session cookie and the per-attempt sign-in cookies (RFC 6265).

use cookie::{Cookie, CookieJar, Key};
use http::header::{HeaderMap, HeaderValue, COOKIE};

use super::attempt::{is_well_formed_state, SignInAttempt, ATTEMPT_TTL_SECS};
use super::Session;
use crate::config::SessionConfig;
use crate::gate::paths;

/// Browsers refuse cookies over 4096 bytes (name, value and attributes together).
const MAX_COOKIE_BYTES: usize = 4096;

/// Seals, opens, sets and clears the gate's own cookies.
pub struct CookieCodec {
    key: Key,
    session_name: String,
    attempt_prefix: String,
    secure: bool,
    lifetime_secs: u64,
}

impl std::fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieCodec")
            .field("session_name", &self.session_name)
            .finish_non_exhaustive()
    }
}

impl CookieCodec {
    /// `config.secret` has been validated to be at least 32 bytes, as `Key::derive_from` requires.
    pub fn new(config: &SessionConfig) -> Self {
        CookieCodec {
            key: Key::derive_from(config.secret.expose().as_bytes()),
            session_name: config.cookie_name.clone(),
            attempt_prefix: format!("{}_signin_", config.cookie_name),
            secure: config.secure_cookies,
            lifetime_secs: config.lifetime.as_secs(),
        }
    }

    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// Encrypts `plaintext` for the cookie `name`; the name is authenticated as associated data.
    fn seal(&self, name: &str, plaintext: String) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key).add(Cookie::new(name.to_owned(), plaintext));
        jar.get(name).map(|c| c.value().to_owned())
    }

    /// Decrypts a cookie value sealed for `name`; `None` for anything tampered, truncated or foreign.
    fn open(&self, name: &str, value: &str) -> Option<String> {
        let jar = CookieJar::new();
        jar.private(&self.key)
            .decrypt(Cookie::new(name.to_owned(), value.to_owned()))
            .map(|c| c.value().to_owned())
    }

    /// The live session carried by the request, if any. Tampered, expired or unreadable cookies give `None`.
    pub fn read_session(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        // With duplicated session cookies (e.g. one set for a parent domain) take the first that opens.
        cookie_pairs(headers)
            .filter(|(name, _)| *name == self.session_name)
            .find_map(|(_, value)| {
                let json = self.open(&self.session_name, value)?;
                let session: Session = serde_json::from_str(&json).ok()?;
                session.is_live(now).then_some(session)
            })
    }

    /// `Set-Cookie` for a session. Fails when the session cannot be serialised or sealed.
    pub fn session_cookie(&self, session: &Session, now: u64) -> Result<HeaderValue, String> {
        let json = serde_json::to_string(session).map_err(|e| e.to_string())?;
        let sealed = self
            .seal(&self.session_name, json)
            .ok_or("the session could not be sealed")?;
        let max_age = session.exp.saturating_sub(now);
        let header = self.set_cookie(&self.session_name, &sealed, "/", max_age);
        if header.len() > MAX_COOKIE_BYTES {
            let names: Vec<&String> = session.claims.keys().collect();
            tracing::warn!(
                bytes = header.len(),
                claims = ?names,
                "the session cookie is larger than browsers accept; map fewer claims in [headers]"
            );
        }
        HeaderValue::from_str(&header).map_err(|e| e.to_string())
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_session_cookie(&self) -> HeaderValue {
        self.clear_cookie(&self.session_name, "/")
    }

    fn attempt_cookie_name(&self, state: &str) -> String {
        // The state is 43 characters; 16 of them name the cookie, the whole is checked inside it.
        let short = state.get(..16).unwrap_or(state);
        format!("{}{}", self.attempt_prefix, short)
    }

    /// `Set-Cookie` for a new sign-in attempt, scoped to the callback path.
    pub fn attempt_cookie(&self, attempt: &SignInAttempt) -> Result<HeaderValue, String> {
        let name = self.attempt_cookie_name(&attempt.state);
        let json = serde_json::to_string(attempt).map_err(|e| e.to_string())?;
        let sealed = self.seal(&name, json).ok_or("the attempt could not be sealed")?;
        let header = self.set_cookie(&name, &sealed, paths::CALLBACK, ATTEMPT_TTL_SECS);
        HeaderValue::from_str(&header).map_err(|e| e.to_string())
    }

    /// The attempt that `state` names, if this browser started it, it is intact and it has not expired.
    /// The whole state is compared in constant time, not just the part in the cookie name.
    pub fn read_attempt(&self, headers: &HeaderMap, state: &str, now: u64) -> Option<SignInAttempt> {
        if !is_well_formed_state(state) {
            return None;
        }
        let name = self.attempt_cookie_name(state);
        cookie_pairs(headers)
            .filter(|(n, _)| *n == name)
            .find_map(|(_, value)| {
                let json = self.open(&name, value)?;
                let attempt: SignInAttempt = serde_json::from_str(&json).ok()?;
                let same = subtle::ConstantTimeEq::ct_eq(attempt.state.as_bytes(), state.as_bytes());
                (bool::from(same) && attempt.is_fresh(now)).then_some(attempt)
            })
    }

    /// `Set-Cookie` that removes the attempt cookie for `state`.
    pub fn clear_attempt_cookie(&self, state: &str) -> Option<HeaderValue> {
        is_well_formed_state(state).then(|| self.clear_cookie(&self.attempt_cookie_name(state), paths::CALLBACK))
    }

    /// True for every cookie name the gate owns; those never reach the upstream.
    pub fn is_gate_cookie(&self, name: &str) -> bool {
        name == self.session_name || name.starts_with(&self.attempt_prefix)
    }

    /// Removes the gate's cookies from the `Cookie` header(s) sent upstream, keeping the app's own cookies in
    /// their order. HTTP/2 clients may send several `Cookie` fields; they are joined with "; " (RFC 9113 §8.2.3).
    pub fn strip_gate_cookies(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(COOKIE) {
            return;
        }
        let mut kept = String::new();
        let mut removed = false;
        for value in headers.get_all(COOKIE) {
            let Ok(text) = value.to_str() else {
                // Not visible ASCII: cannot be split safely; drop the whole field rather than leak a gate cookie.
                removed = true;
                continue;
            };
            for pair in text.split(';') {
                let pair = pair.trim();
                if pair.is_empty() {
                    continue;
                }
                let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
                if self.is_gate_cookie(name) {
                    removed = true;
                    continue;
                }
                if !kept.is_empty() {
                    kept.push_str("; ");
                }
                kept.push_str(pair);
            }
        }
        let multiple = headers.get_all(COOKIE).iter().nth(1).is_some();
        if !removed && !multiple {
            return;
        }
        headers.remove(COOKIE);
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&kept) {
                headers.insert(COOKIE, v);
            }
        }
    }

    fn set_cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }

    fn clear_cookie(&self, name: &str, path: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{name}=; Path={path}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax{secure}"
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("logto_gate=; Max-Age=0"))
    }
}

/// Every `name=value` pair of every `Cookie` header, in order (RFC 6265 §5.4 syntax; values are not decoded).
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            Some((n.trim(), v.trim().trim_matches('"')))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::time::Duration;

    fn codec(secret: &str) -> CookieCodec {
        CookieCodec::new(&SessionConfig {
            secret: Secret::new(secret.to_owned()),
            cookie_name: "logto_gate".to_owned(),
            lifetime: Duration::from_secs(3600),
            secure_cookies: true,
        })
    }

    fn session() -> Session {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "u1".into());
        Session {
            claims,
            iat: 100,
            exp: 10_000,
            rt: Some("rt".into()),
            at: None,
            at_exp: None,
            sid: None,
        }
    }

    fn request_with(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    fn value_of(set_cookie: &HeaderValue) -> String {
        let s = set_cookie.to_str().unwrap();
        let first = s.split(';').next().unwrap();
        first.split_once('=').unwrap().1.to_owned()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn session_round_trips_and_is_httponly_lax_secure() {
        let c = codec(SECRET);
        let set = c.session_cookie(&session(), 200).unwrap();
        let text = set.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax") && text.contains("Secure"));
        assert!(text.contains("Max-Age=9800"));
        let read = c.read_session(&request_with(&format!("a=b; logto_gate={}", value_of(&set))), 200);
        assert_eq!(read, Some(session()));
    }

    #[test]
    fn tampered_truncated_foreign_or_expired_cookies_read_as_signed_out() {
        let c = codec(SECRET);
        let v = value_of(&c.session_cookie(&session(), 200).unwrap());
        let mut flipped = v.clone().into_bytes();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [flipped.as_str(), &v[..v.len() - 4], "", "garbage", "%%%"] {
            assert!(c
                .read_session(&request_with(&format!("logto_gate={bad}")), 200)
                .is_none());
        }
        let other = codec("another-secret-another-secret-another");
        assert!(other
            .read_session(&request_with(&format!("logto_gate={v}")), 200)
            .is_none());
        assert!(c
            .read_session(&request_with(&format!("logto_gate={v}")), 10_000)
            .is_none());
    }

    #[test]
    fn a_value_moved_to_another_cookie_name_does_not_open() {
        let c = codec(SECRET);
        let state = "s".repeat(43);
        let attempt = SignInAttempt {
            state: state.clone(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/".into(),
            created: 100,
        };
        let attempt_value = value_of(&c.attempt_cookie(&attempt).unwrap());
        assert!(c
            .read_session(&request_with(&format!("logto_gate={attempt_value}")), 200)
            .is_none());
        let name = c.attempt_cookie_name(&state);
        assert_eq!(
            c.read_attempt(&request_with(&format!("{name}={attempt_value}")), &state, 200),
            Some(attempt)
        );
        // Another state sharing the first 16 characters does not match the attempt inside.
        let forged = format!("{}{}", &state[..16], "x".repeat(27));
        assert!(c
            .read_attempt(&request_with(&format!("{name}={attempt_value}")), &forged, 200)
            .is_none());
        // Expired.
        assert!(c
            .read_attempt(&request_with(&format!("{name}={attempt_value}")), &state, 100 + 601)
            .is_none());
    }

    #[test]
    fn gate_cookies_are_stripped_and_app_cookies_kept() {
        let c = codec(SECRET);
        let mut h = request_with("app=1; logto_gate=secret; logto_gate_signin_abc=x; other=2");
        h.append(COOKIE, HeaderValue::from_static("third=3"));
        c.strip_gate_cookies(&mut h);
        assert_eq!(h.get(COOKIE).unwrap(), "app=1; other=2; third=3");
        let mut only_gate = request_with("logto_gate=secret");
        c.strip_gate_cookies(&mut only_gate);
        assert!(only_gate.get(COOKIE).is_none());
    }
}
