//! Encrypted cookies: the session cookie and the per-attempt sign-in cookies (RFC 6265).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, CookieJar, Key};
use http::header::{HeaderMap, HeaderValue, COOKIE};

use super::attempt::{is_well_formed_state, SignInAttempt, ATTEMPT_TTL_SECS};
use crate::config::{Secret, SessionConfig};
use crate::routes::paths;

/// Browsers refuse cookies over 4096 bytes (name, value and attributes together); stay below with room to spare.
const MAX_COOKIE_BYTES: usize = 4000;

/// The sealed value is cut into chunks of this many bytes when one cookie cannot hold it.
const CHUNK_BYTES: usize = 3800;

/// At most this many chunks are read or written (about 30 KiB of session).
const MAX_CHUNKS: usize = 8;

/// Seals, opens, sets and clears the gate's own cookies.
pub struct CookieCodec {
    /// The first key seals; every key opens (secret rotation without signing anyone out). Replaced when
    /// `session.secret_files` change ([`CookieCodec::replace_keys`]).
    keys: RwLock<Vec<Key>>,
    /// How many times `keys` were replaced: what was opened with other keys is not to be taken as opened now.
    generation: AtomicU64,
    session_name: String,
    attempt_prefix: String,
    secure: bool,
    lifetime_secs: u64,
    /// `; Domain=<session.cookie_domain>`, or empty for host-only cookies.
    domain: String,
}

impl std::fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieCodec")
            .field("session_name", &self.session_name)
            .field("keys", &self.keys().len())
            .finish_non_exhaustive()
    }
}

/// What replacing the keys did ([`CookieCodec::replace_keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    /// The key that sealed until now opens nothing any more: every session it sealed is signed out.
    pub sealing_key_dropped: bool,
}

/// The session cookie as a request carried it: each copy of it that opened (usually one, see
/// [`CookieCodec::read_session_cookie`]) and the names of the cookies that carried it, each once (so a rewrite can
/// clear chunks it no longer needs).
#[derive(Debug, Clone)]
pub struct OpenedCookie {
    pub copies: Vec<OpenedCopy>,
    pub names_sent: Vec<String>,
    /// The request carried a copy this gate no longer writes, which writing the session again removes: a copy for
    /// the host alone (from before `session.cookie_domain` was set) beside the domain's.
    pub stale_copy: bool,
}

/// One opened copy of the session cookie: its value, and whether an older key (not the first) opened it.
#[derive(Debug, Clone)]
pub struct OpenedCopy {
    pub plaintext: String,
    pub opened_with_old_key: bool,
}

/// At most this many copies of a session cookie name are read, the last sent (the newest, RFC 6265 §5.4): a browser
/// holds a copy for the host and one for a domain, or two domains'; more are a client's doing, and each costs a
/// decryption.
const MAX_COPIES: usize = 3;

/// The cookie keys of `secrets`, derived with HKDF (`Key::derive_from`: each secret is at least 32 bytes).
fn derive_keys(secrets: &[Secret]) -> Vec<Key> {
    secrets
        .iter()
        .map(|s| Key::derive_from(s.expose().as_bytes()))
        .collect()
}

/// Decrypts a cookie value sealed for `name` with any of `keys`, naming the key (its index) that opened it; `None`
/// for anything tampered, truncated or foreign.
fn open_with(keys: &[Key], name: &str, value: &str) -> Option<(String, usize)> {
    let jar = CookieJar::new();
    keys.iter().enumerate().find_map(|(i, key)| {
        jar.private(key)
            .decrypt(Cookie::new(name.to_owned(), value.to_owned()))
            .map(|c| (c.value().to_owned(), i))
    })
}

/// The values of the cookie `name` among `pairs`, at most the last [`MAX_COPIES`], in the order sent.
fn last_copies<'a>(pairs: &[(&'a str, &'a str)], name: &str) -> Vec<&'a str> {
    let mut values: Vec<&str> = pairs.iter().filter(|(n, _)| *n == name).map(|(_, v)| *v).collect();
    let extra = values.len().saturating_sub(MAX_COPIES);
    values.drain(..extra);
    values
}

impl CookieCodec {
    /// Every secret has been validated to be at least 32 bytes, as `Key::derive_from` requires.
    pub fn new(config: &SessionConfig) -> Self {
        CookieCodec {
            keys: RwLock::new(derive_keys(&config.secrets)),
            generation: AtomicU64::new(0),
            session_name: config.cookie_name.clone(),
            attempt_prefix: attempt_prefix(&config.cookie_name),
            secure: config.secure_cookies,
            lifetime_secs: config.lifetime.as_secs(),
            domain: config
                .cookie_domain
                .as_ref()
                .map(|d| format!("; Domain={d}"))
                .unwrap_or_default(),
        }
    }

    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// The keys in use (the lock is held for one seal or one request's opening).
    fn keys(&self) -> RwLockReadGuard<'_, Vec<Key>> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many times the keys were replaced: a session opened before it changed must be opened again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Seals with the first of `secrets` and opens with each of them from now on (every one validated to be at least
    /// 32 bytes); `None`, and nothing changed, when they are the secrets in use.
    pub fn replace_keys(&self, secrets: &[Secret]) -> Option<Replaced> {
        let new = derive_keys(secrets);
        let mut keys = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = keys.len() == new.len() && keys.iter().zip(&new).all(|(a, b)| a.master() == b.master());
        if same || new.is_empty() {
            return None;
        }
        let kept = |key: &Key| new.iter().any(|n| n.master() == key.master());
        let replaced = Replaced {
            sealing_key_dropped: keys.first().is_some_and(|first| !kept(first)),
        };
        *keys = new;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Some(replaced)
    }

    /// Encrypts `plaintext` for the cookie `name` with the first key; the name is authenticated as associated data.
    fn seal(&self, name: &str, plaintext: String) -> Option<String> {
        let keys = self.keys();
        let key = keys.first()?;
        let mut jar = CookieJar::new();
        jar.private_mut(key).add(Cookie::new(name.to_owned(), plaintext));
        jar.get(name).map(|c| c.value().to_owned())
    }

    /// Decrypts a cookie value sealed for `name` with any key; `None` for anything tampered, truncated or foreign.
    /// The flag says an older key (not the first) opened it.
    fn open(&self, name: &str, value: &str) -> Option<(String, bool)> {
        open_with(&self.keys(), name, value).map(|(plaintext, key)| (plaintext, key > 0))
    }

    /// Seals a session kept outside any cookie (the Redis store) under `label`, where it is stored: as a cookie value
    /// is sealed (AES-256-GCM with the first key), with `label` authenticated as associated data, so the value opens
    /// under that label only and a copy put under another session's key opens nowhere. Labels hold a `:`, which no
    /// cookie name can (RFC 6265 §4.1.1: a name is a token), so no stored value opens as a cookie or the other way
    /// round.
    pub(crate) fn seal_stored(&self, label: &str, plaintext: String) -> Option<String> {
        debug_assert!(label.contains(':'));
        self.seal(label, plaintext)
    }

    /// Opens what [`CookieCodec::seal_stored`] sealed under `label`, with any key; `None` for anything tampered,
    /// sealed under another label, by a key no longer configured, or not sealed at all. The flag says an older key
    /// (not the first) opened it.
    pub(crate) fn open_stored(&self, label: &str, value: &str) -> Option<(String, bool)> {
        self.open(label, value)
    }

    fn chunk_name(&self, i: usize) -> String {
        format!("{}.{i}", self.session_name)
    }

    /// The session cookie's content, if the request carries one that opens: a single cookie `<name>`, or chunks
    /// `<name>.0`, `<name>.1`, ... joined in order. The seal covers the whole value, so reordered, mixed or
    /// missing chunks do not open.
    ///
    /// A browser may hold the session cookie twice under one name: for the gate's host and for a domain (set before
    /// and after `session.cookie_domain` changed), and sends both, the older first (RFC 6265 §5.4: same path, by
    /// creation time). Every copy that opens is returned, for the caller to take the one that stands; taking the
    /// first would keep a signed-out copy in front of a new sign-in's, a sign-in loop. Chunked copies are put
    /// together as the n-th of each chunk name, counted from the first and from the last (two copies may have
    /// different chunk counts).
    pub fn read_session_cookie(&self, headers: &HeaderMap) -> Option<OpenedCookie> {
        let pairs: Vec<(&str, &str)> = cookie_pairs(headers)
            .filter(|(n, _)| self.is_session_cookie(n))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let mut names_sent: Vec<String> = Vec::with_capacity(pairs.len());
        for (name, _) in &pairs {
            if !names_sent.iter().any(|n| n == name) {
                names_sent.push((*name).to_owned());
            }
        }
        let duplicated = names_sent.len() < pairs.len();
        let mut copies = Vec::new();
        let mut open = |value: &str| {
            if let Some((plaintext, old)) = self.open(&self.session_name, value) {
                copies.push(OpenedCopy {
                    plaintext,
                    opened_with_old_key: old,
                });
            }
        };
        for value in last_copies(&pairs, &self.session_name) {
            open(value);
        }
        if names_sent.iter().any(|n| *n != self.session_name) {
            for value in self.chunked_copies(&pairs) {
                open(&value);
            }
        }
        if copies.is_empty() {
            return None;
        }
        Some(OpenedCookie {
            copies,
            names_sent,
            stale_copy: duplicated && !self.domain.is_empty(),
        })
    }

    /// The chunked values among `pairs` (session cookie names only): chunk `i` of the k-th copy is the k-th
    /// `<name>.<i>`, counted from the first and, for copies of different lengths, from the last; a copy ends at
    /// its first missing chunk. One copy gives one value.
    fn chunked_copies(&self, pairs: &[(&str, &str)]) -> Vec<String> {
        let mut chunks: Vec<Vec<&str>> = Vec::new();
        for i in 0..MAX_CHUNKS {
            let name = self.chunk_name(i);
            let values = last_copies(pairs, &name);
            if values.is_empty() {
                break;
            }
            chunks.push(values);
        }
        let copies = chunks.iter().map(Vec::len).max().unwrap_or(0);
        let mut joined: Vec<String> = Vec::new();
        for k in 0..copies {
            for from_last in [false, true] {
                let mut value = String::new();
                for values in &chunks {
                    let at = if from_last {
                        values.len().checked_sub(k + 1)
                    } else {
                        (k < values.len()).then_some(k)
                    };
                    match at.and_then(|j| values.get(j)) {
                        Some(v) => value.push_str(v),
                        None => break,
                    }
                }
                if !value.is_empty() && !joined.contains(&value) {
                    joined.push(value);
                }
            }
        }
        joined
    }

    /// `Set-Cookie` headers carrying `plaintext` as the session cookie for `max_age` seconds: one cookie when it
    /// fits, numbered chunks when it does not, and removal of whatever `names_sent` holds that is no longer used.
    pub fn session_cookies(
        &self,
        plaintext: String,
        max_age: u64,
        names_sent: &[String],
    ) -> Result<Vec<HeaderValue>, String> {
        let sealed = self
            .seal(&self.session_name, plaintext)
            .ok_or("the session could not be sealed")?;
        let single = self.set_cookie(&self.session_name, &sealed, "/", max_age);
        let mut out = Vec::new();
        let mut used: Vec<String> = Vec::new();
        if single.len() <= MAX_COOKIE_BYTES {
            out.push(HeaderValue::from_str(&single).map_err(|e| e.to_string())?);
            used.push(self.session_name.clone());
        } else {
            let chunks: Vec<&str> = sealed
                .as_bytes()
                .chunks(CHUNK_BYTES)
                .map(|c| std::str::from_utf8(c).unwrap_or(""))
                .collect();
            if chunks.len() > MAX_CHUNKS {
                return Err(format!(
                    "the session needs {} cookies of {CHUNK_BYTES} bytes, more than the {MAX_CHUNKS} allowed",
                    chunks.len()
                ));
            }
            for (i, chunk) in chunks.iter().enumerate() {
                let name = self.chunk_name(i);
                out.push(
                    HeaderValue::from_str(&self.set_cookie(&name, chunk, "/", max_age)).map_err(|e| e.to_string())?,
                );
                used.push(name);
            }
        }
        for stale in names_sent.iter().filter(|n| !used.contains(n)) {
            out.push(self.clear_cookie(stale, "/"));
        }
        Ok(out)
    }

    /// `Set-Cookie` headers removing the copies of `names` set for the host alone (no `Domain`), which a gate with
    /// `session.cookie_domain` never writes but a browser keeps from before it was set; none without that key.
    pub fn clear_host_copies(&self, names: &[String]) -> Vec<HeaderValue> {
        if self.domain.is_empty() {
            return Vec::new();
        }
        names.iter().map(|n| self.clear_cookie_for(n, "/", "")).collect()
    }

    /// `Set-Cookie` headers that remove the session cookie and every chunk the request carried, with
    /// `session.cookie_domain` the host's copies too ([`CookieCodec::clear_host_copies`]).
    pub fn clear_session_cookies(&self, headers: &HeaderMap) -> Vec<HeaderValue> {
        let mut names: Vec<String> = cookie_pairs(headers)
            .map(|(n, _)| n)
            .filter(|n| self.is_session_cookie(n))
            .map(str::to_owned)
            .collect();
        if !names.contains(&self.session_name) {
            names.push(self.session_name.clone());
        }
        names.sort();
        names.dedup();
        let mut clear: Vec<HeaderValue> = names.iter().map(|n| self.clear_cookie(n, "/")).collect();
        clear.extend(self.clear_host_copies(&names));
        clear
    }

    /// `<name>` or `<name>.<digits>`.
    fn is_session_cookie(&self, name: &str) -> bool {
        self.is_session_name(name.as_bytes())
    }

    /// [`CookieCodec::is_session_cookie`] for a name as it came, text or not.
    fn is_session_name(&self, name: &[u8]) -> bool {
        let session = self.session_name.as_bytes();
        name == session
            || name
                .strip_prefix(session)
                .and_then(|rest| rest.strip_prefix(b"."))
                .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
    }

    fn attempt_cookie_name(&self, state: &str) -> String {
        // The state is 43 characters; 16 of them name the cookie, the whole is checked inside it.
        let short = state.get(..16).unwrap_or(state);
        format!("{}{}", self.attempt_prefix, short)
    }

    /// A new sign-in attempt returning to `return_to`: a random `state`, and the `nonce` and PKCE verifier
    /// derived from it with the sealing key (HMAC-SHA256, see `derive_secret`), so that its cookie need not carry
    /// them.
    pub fn new_attempt(&self, return_to: String, now: u64) -> Option<SignInAttempt> {
        let keys = self.keys();
        let key = keys.first()?;
        let mut random = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).ok()?;
        let state = URL_SAFE_NO_PAD.encode(random);
        Some(SignInAttempt {
            nonce: derive_secret(key, NONCE_LABEL, &state),
            pkce_verifier: derive_secret(key, VERIFIER_LABEL, &state),
            state,
            return_to,
            created: now,
            max_age: None,
        })
    }

    /// `Set-Cookie` for a new sign-in attempt, scoped to the callback path. It holds only the return path and the
    /// start time, sealed with the whole `state` as associated data: about 150 bytes a cookie, so that the many
    /// attempts of a browser restoring its tabs stay within the `Cookie` field a proxy in front accepts (nginx:
    /// 8 KiB a field) when one of them reaches the callback.
    pub fn attempt_cookie(&self, attempt: &SignInAttempt) -> Result<HeaderValue, String> {
        let name = self.attempt_cookie_name(&attempt.state);
        let held = HeldAttempt {
            return_to: attempt.return_to.clone(),
            created: attempt.created,
            max_age: attempt.max_age,
        };
        let json = serde_json::to_string(&held).map_err(|e| e.to_string())?;
        let sealed = self
            .seal(&sealed_attempt_name(&name, &attempt.state), json)
            .ok_or("the attempt could not be sealed")?;
        let header = self.set_cookie(&name, &sealed, paths::CALLBACK, ATTEMPT_TTL_SECS);
        HeaderValue::from_str(&header).map_err(|e| e.to_string())
    }

    /// The attempt that `state` names, if this browser started it, it is intact and it has not expired.
    /// The whole state is authenticated (the seal's associated data), not just the part in the cookie name. An
    /// attempt cookie of a release before derived secrets (the whole attempt inside, sealed for its name) still
    /// finishes, its state compared in constant time.
    pub fn read_attempt(&self, headers: &HeaderMap, state: &str, now: u64) -> Option<SignInAttempt> {
        if !is_well_formed_state(state) {
            return None;
        }
        let name = self.attempt_cookie_name(state);
        let sealed_name = sealed_attempt_name(&name, state);
        let keys = self.keys();
        cookie_pairs(headers)
            .filter(|(n, _)| *n == name)
            .find_map(|(_, value)| {
                let attempt = match open_with(&keys, &sealed_name, value) {
                    Some((json, key)) => {
                        let held: HeldAttempt = serde_json::from_str(&json).ok()?;
                        let key = keys.get(key)?;
                        SignInAttempt {
                            state: state.to_owned(),
                            nonce: derive_secret(key, NONCE_LABEL, state),
                            pkce_verifier: derive_secret(key, VERIFIER_LABEL, state),
                            return_to: held.return_to,
                            created: held.created,
                            max_age: held.max_age,
                        }
                    }
                    None => {
                        let (json, _) = open_with(&keys, &name, value)?;
                        let whole: SignInAttempt = serde_json::from_str(&json).ok()?;
                        let same = subtle::ConstantTimeEq::ct_eq(whole.state.as_bytes(), state.as_bytes());
                        bool::from(same).then_some(whole)?
                    }
                };
                attempt.is_fresh(now).then_some(attempt)
            })
    }

    /// Where a sign-out returns to (`/_logto/sign-out?redirect=...`), sealed for the `state` the gate sends to
    /// Logto's end-session endpoint, which hands it back to the signed-out page (OpenID Connect RP-Initiated Logout
    /// 1.0 §3). Sealed, so that the signed-out page follows only targets this gate chose in the last
    /// [`SIGN_OUT_RETURN_TTL_SECS`], and redirects nowhere for a link anyone else made.
    pub fn seal_sign_out_return(&self, to: &str, now: u64) -> Option<String> {
        self.seal(
            &self.sign_out_return_name(),
            format!("{} {to}", now + SIGN_OUT_RETURN_TTL_SECS),
        )
    }

    /// The target [`CookieCodec::seal_sign_out_return`] sealed into `state`, if it opens and has not expired.
    pub fn open_sign_out_return(&self, state: &str, now: u64) -> Option<String> {
        // A sealed target is at most about 2.8 KB (a 2 KB return path, base64); anything longer is not one.
        if state.len() > 4096 {
            return None;
        }
        let (plaintext, _) = self.open(&self.sign_out_return_name(), state)?;
        let (expires, to) = plaintext.split_once(' ')?;
        (now < expires.parse::<u64>().ok()?).then(|| to.to_owned())
    }

    /// What a sign-out's return is sealed for: no cookie has this name (a cookie name holds no space).
    fn sign_out_return_name(&self) -> String {
        format!("{} sign-out return", self.session_name)
    }

    /// `Set-Cookie` that removes the attempt cookie for `state`.
    pub fn clear_attempt_cookie(&self, state: &str) -> Option<HeaderValue> {
        is_well_formed_state(state).then(|| self.clear_cookie(&self.attempt_cookie_name(state), paths::CALLBACK))
    }

    /// True for every cookie name the gate owns; those never reach the upstream.
    pub fn is_gate_cookie(&self, name: &str) -> bool {
        self.is_gate_name(name.as_bytes())
    }

    /// [`CookieCodec::is_gate_cookie`] for a name as it came, text or not (a `Cookie` field may hold an app's
    /// cookie that is not).
    fn is_gate_name(&self, name: &[u8]) -> bool {
        self.is_session_name(name) || name.starts_with(self.attempt_prefix.as_bytes())
    }

    /// The name of the cookie a `Set-Cookie` value sets, when it is one the gate owns (RFC 6265 §5.2: the name
    /// is what stands before the first `=`, whitespace trimmed). The upstream must never set or clear those: an app
    /// bug (or a hostile app) would overwrite or end the gate's session.
    pub fn gate_cookie_set_by<'v>(&self, set_cookie: &'v [u8]) -> Option<&'v str> {
        let pair = set_cookie.split(|b| *b == b';').next().unwrap_or(set_cookie);
        let name = pair.split(|b| *b == b'=').next().filter(|_| pair.contains(&b'='))?;
        let name = std::str::from_utf8(name).ok()?.trim_matches([' ', '\t']);
        self.is_gate_cookie(name).then_some(name)
    }

    /// Removes the gate's cookies from the `Cookie` header(s) sent upstream, keeping the app's own cookies in
    /// their order. HTTP/2 clients may send several `Cookie` fields; they are joined with "; " (RFC 9113 §8.2.3).
    pub fn strip_gate_cookies(&self, headers: &mut HeaderMap) {
        let mut fields = headers.get_all(COOKIE).iter();
        let Some(first) = fields.next() else {
            return;
        };
        // The usual case, settled by the names alone: one field carrying nothing but the gate's cookies goes whole.
        // (The session cookie's value is kilobytes; it is not read here, not even checked to be text.)
        if fields.next().is_none() && self.only_gate_cookies(first.as_bytes()) {
            headers.remove(COOKIE);
            return;
        }
        // Split as bytes: an app's cookie may hold UTF-8 (or any byte a field value may), which goes on as it came;
        // `;` and `=` are never part of a UTF-8 character, and the gate's names are ASCII.
        let mut kept: Vec<u8> = Vec::new();
        let mut removed = false;
        for value in headers.get_all(COOKIE) {
            for pair in Pieces(value.as_bytes()) {
                let pair = pair.trim_ascii();
                if pair.is_empty() {
                    continue;
                }
                let name = pair_name(pair);
                if self.is_gate_name(name) {
                    removed = true;
                    continue;
                }
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair);
            }
        }
        let multiple = headers.get_all(COOKIE).iter().nth(1).is_some();
        if !removed && !multiple {
            return;
        }
        headers.remove(COOKIE);
        // The kept pairs are pieces of field values joined with "; ": a field value still.
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
            if !v.is_empty() {
                headers.insert(COOKIE, v);
            }
        }
    }

    /// True when `field` holds at least one cookie and every one is the gate's (by name; a piece without `=` is all
    /// name, as [`CookieCodec::strip_gate_cookies`] reads it).
    fn only_gate_cookies(&self, field: &[u8]) -> bool {
        let mut any = false;
        for piece in Pieces(field).map(<[u8]>::trim_ascii).filter(|p| !p.is_empty()) {
            if !self.is_gate_name(pair_name(piece)) {
                return false;
            }
            any = true;
        }
        any
    }

    fn set_cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        let domain = &self.domain;
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}{domain}")
    }

    fn clear_cookie(&self, name: &str, path: &str) -> HeaderValue {
        self.clear_cookie_for(name, path, &self.domain)
    }

    /// A `Set-Cookie` removing `name` at `path` for `domain` (`; Domain=...`, or empty for the host's copy).
    fn clear_cookie_for(&self, name: &str, path: &str, domain: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{name}=; Path={path}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax{secure}{domain}"
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("logto_gate=; Max-Age=0"))
    }
}

/// What an attempt cookie holds; the state is its associated data, the nonce and verifier are derived.
#[derive(serde::Serialize, serde::Deserialize)]
struct HeldAttempt {
    #[serde(rename = "r")]
    return_to: String,
    #[serde(rename = "c")]
    created: u64,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    max_age: Option<u64>,
}

/// How long a sign-out's sealed return target is followed: Logto's end-session page passes it on at once.
pub const SIGN_OUT_RETURN_TTL_SECS: u64 = 600;

const NONCE_LABEL: &str = "logto-gate sign-in nonce";
const VERIFIER_LABEL: &str = "logto-gate sign-in PKCE verifier";

/// The name an attempt cookie's value is sealed for: its own and the whole state, so the seal authenticates both.
fn sealed_attempt_name(name: &str, state: &str) -> String {
    format!("{name}:{state}")
}

/// A secret of an attempt, HMAC-SHA256 of `label` and `state` under the key's signing half (which seals nothing
/// else), base64url: 43 characters, as a PKCE verifier must be (RFC 7636 §4.1: 43 to 128 unreserved characters) and
/// unguessable without the key though `state` travels in URLs, as an OpenID Connect nonce must be.
fn derive_secret(key: &Key, label: &str, state: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.signing());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(label.as_bytes());
    ctx.update(&[0]);
    ctx.update(state.as_bytes());
    URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
}

/// The sign-in attempt cookies' name prefix: `<session cookie name>_signin_`. Their `Path` is the callback's, which
/// a `__Host-` cookie may not have (RFC 6265bis §4.1.3.2 allows `Path=/` only, and browsers drop the cookie): with a
/// `__Host-` session cookie they are named `__Secure-` instead, still `Secure` and, without `session.cookie_domain`
/// (which `__Host-` excludes), still host-only.
fn attempt_prefix(session_name: &str) -> String {
    let host = "__host-";
    match session_name.get(..host.len()) {
        Some(p) if p.eq_ignore_ascii_case(host) => format!("__Secure-{}_signin_", &session_name[host.len()..]),
        _ => format!("{session_name}_signin_"),
    }
}

/// The cookie name of a trimmed `Cookie` piece, as the gate compares it with its own: before its first `=`,
/// trimmed; the whole piece without one.
fn pair_name(pair: &[u8]) -> &[u8] {
    memchr::memchr(b'=', pair).map_or(pair, |eq| pair[..eq].trim_ascii())
}

/// The `;`-separated pieces of a `Cookie` field, found with `memchr` (a session cookie is kilobytes long).
struct Pieces<'a>(&'a [u8]);

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let rest = self.0;
        Some(match memchr::memchr(b';', rest) {
            Some(i) => {
                self.0 = &rest[i + 1..];
                &rest[..i]
            }
            None => {
                self.0 = &[];
                rest
            }
        })
    }
}

/// Every `name=value` pair of every `Cookie` field as bytes: trimmed and unquoted as [`cookie_pairs`] does, but
/// not checked to be text, and so only for comparing with values that were (a cookie read and opened before).
pub fn raw_cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|field| Pieces(field.as_bytes()))
        .filter_map(|pair| {
            let eq = memchr::memchr(b'=', pair)?;
            let mut value = pair[eq + 1..].trim_ascii();
            while let [b'"', rest @ ..] = value {
                value = rest;
            }
            while let [rest @ .., b'"'] = value {
                value = rest;
            }
            Some((pair[..eq].trim_ascii(), value))
        })
}

/// Every `name=value` pair of every `Cookie` header that is ASCII text, in order (RFC 6265 §5.4 syntax; values are
/// not decoded). A pair that is not (an app's cookie holding UTF-8, which browsers send as it was stored, RFC
/// 6265bis §5.6) is left out alone: the pairs around it in the same field are read, the gate's among them, which
/// are always ASCII. (`;` is never part of a UTF-8 character, so the split cannot cut one.)
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|field| Pieces(field.as_bytes()))
        .filter(|pair| pair.is_ascii())
        .filter_map(|pair| {
            let (n, v) = std::str::from_utf8(pair).ok()?.split_once('=')?;
            Some((n.trim(), v.trim().trim_matches('"')))
        })
}

#[cfg(test)]
mod tests;
