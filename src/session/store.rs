//! Where sessions live and how a request's session is found, written back, ended and revoked.
//!
//! - `session.store = "cookie"` (default): the session is the encrypted cookie (chunked when large). Nothing to
//!   run. Sign-out and back-channel logout keep a revocation list: in Redis when `session.redis_url` is set
//!   (shared by every replica), otherwise in memory (per replica; kept across restarts in `session.revocation_file`,
//!   see `session::revocations`).
//! - `session.store = "redis"`: the cookie holds only a random id, sealed like any gate cookie; the session lives
//!   under `<prefix>session:<id>` with a TTL, sealed with the session secret and bound to that key
//!   (`CookieCodec::seal_stored`), indexed by Logto `sid` and `sub` so back-channel logout can delete
//!   every matching session for every replica at once.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::header::{HeaderMap, HeaderValue};
use ring::rand::SecureRandom;

use super::redis_store::{RedisStore, StoreError};
use super::revocations::{MemoryRevocations, RevocationFile};
use super::{CookieCodec, Session};
use crate::config::{SessionConfig, StoreKind};

/// A session found on a request, with what is needed to write it back.
#[derive(Debug, Clone)]
pub struct Current {
    pub session: Arc<Session>,
    /// The Redis id (Redis store only).
    pub id: Option<String>,
    /// Cookie names the request carried for the session (to clear stale chunks).
    pub names_sent: Arc<[String]>,
    /// The cookie must be written again: opened with an old secret, idle tracking is due, or a stale copy of it
    /// came along.
    pub rewrite: bool,
    /// The request carried a copy of the session cookie set for the host alone, which this gate, writing for
    /// `session.cookie_domain`, no longer writes: writing the session removes it.
    pub stale_copy: bool,
}

/// Decrypted cookie sessions by their exact cookie value, so a busy session is opened once, not on every request.
/// The value is immutable (a refresh produces a new one), so an entry never goes stale; revocation and expiry are
/// still checked on every request. One cache per worker thread, so workers never wait for each other's lock; this
/// many entries in all.
const OPENED_CACHE_MAX: usize = 10_000;

/// One worker's opened sessions.
/// Keyed by the cookie's value as bytes: a lookup compares what a request carries with values that were read as
/// text and opened before, so the request's need not be checked to be text first.
type OpenedCache = HashMap<Box<[u8]>, Opened, SuffixHash>;

/// How many trailing bytes of a cookie value [`SuffixHash`] hashes.
const HASHED_SUFFIX: usize = 32;

/// Hashes only the last [`HASHED_SUFFIX`] bytes of a key, with SipHash under a per-process random key; keys
/// still compare in full. A sealed cookie ends in its AEAD tag, random per cookie and not choosable by a client,
/// and only cookies that decrypted are stored, so the suffix spreads keys as well as the whole value does, for a
/// tenth of the hashing.
#[derive(Clone, Default)]
struct SuffixHash(RandomState);

impl BuildHasher for SuffixHash {
    type Hasher = SuffixHasher;
    fn build_hasher(&self) -> SuffixHasher {
        SuffixHasher(self.0.build_hasher())
    }
}

struct SuffixHasher(DefaultHasher);

impl Hasher for SuffixHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(HASHED_SUFFIX)..]);
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// One worker's cache, alone on its cache lines: its lock is taken on every request, and sharing a line with the
/// next worker's would move that line between their cores each time.
#[derive(Default)]
#[repr(align(128))]
struct WorkerCache(Mutex<OpenedCache>);

#[derive(Clone)]
struct Opened {
    session: Arc<Session>,
    old_key: bool,
    /// The keys' generation before it was opened ([`CookieCodec::generation`]): once they are replaced, the cookie
    /// must open with the new ones (a key taken away no longer opens anything).
    generation: u64,
}

pub struct Sessions {
    codec: CookieCodec,
    /// `names_sent` of a session carried in one cookie under the usual name (shared, not rebuilt per request).
    single_name: Arc<[String]>,
    /// Indexed by worker ([`crate::worker::index`]).
    opened: Box<[WorkerCache]>,
    /// Entries per worker's cache.
    opened_max: usize,
    kind: StoreKind,
    redis: Option<Arc<RedisStore>>,
    /// The revocation list of the cookie store without Redis.
    memory: Mutex<MemoryRevocations>,
    /// Where `memory` is kept across restarts (`session.revocation_file`).
    memory_file: Option<RevocationFile>,
    /// Whether `memory` holds any revoked session or subject: read by every request without taking the lock (a
    /// lock every worker takes per request moves its cache line from core to core each time).
    revocations: std::sync::atomic::AtomicBool,
    idle_timeout: Option<u64>,
    lifetime: u64,
    rng: ring::rand::SystemRandom,
}

impl Sessions {
    /// Sessions for `workers` worker threads.
    pub fn new(config: &SessionConfig, workers: usize) -> Result<Self, String> {
        let redis = if config.uses_redis() {
            Some(Arc::new(RedisStore::new(config)?))
        } else {
            None
        };
        let codec = CookieCodec::new(config);
        let (memory_file, memory) = match &config.revocation_file {
            Some(path) => {
                let (file, list) = RevocationFile::open(path, super::now())?;
                (Some(file), list)
            }
            None => (None, MemoryRevocations::default()),
        };
        let revoked = memory.revokes_any();
        Ok(Sessions {
            single_name: Arc::from([codec.session_name().to_owned()]),
            codec,
            opened: (0..workers.max(1)).map(|_| WorkerCache::default()).collect(),
            opened_max: (OPENED_CACHE_MAX / workers.max(1)).max(256),
            kind: config.store,
            redis,
            memory: Mutex::new(memory),
            memory_file,
            revocations: std::sync::atomic::AtomicBool::new(revoked),
            idle_timeout: config.idle_timeout.map(|d| d.as_secs()),
            lifetime: config.lifetime.as_secs(),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// This worker's cache of opened sessions.
    fn opened_cache(&self) -> &Mutex<OpenedCache> {
        &self.opened[crate::worker::index() % self.opened.len()].0
    }

    pub fn codec(&self) -> &CookieCodec {
        &self.codec
    }

    pub fn redis(&self) -> Option<&Arc<RedisStore>> {
        self.redis.as_ref()
    }

    pub fn uses_redis_store(&self) -> bool {
        self.kind == StoreKind::Redis
    }

    /// The live session of a request, if any. Errors only when Redis is needed and unreachable.
    pub async fn load(&self, headers: &HeaderMap, now: u64) -> Result<Option<Current>, StoreError> {
        if self.kind == StoreKind::Cookie {
            if let Some(hit) = self.cached(headers, now).await? {
                return Ok(Some(hit));
            }
        }
        // Read before opening: keys replaced in between leave an entry that is never used.
        let generation = self.codec.generation();
        let Some((found, names_sent, stale_copy)) = self.found(headers, now).await? else {
            return Ok(None);
        };
        // Usually one copy; of several (a browser holding the cookie for the host and for a domain), the one that
        // stands, the latest sign-in or refresh if more than one does.
        let Some(best) = found
            .into_iter()
            .reduce(|a, b| if newer(&b.session, &a.session) { b } else { a })
        else {
            return Ok(None);
        };
        let session = Arc::new(best.session);
        if self.kind == StoreKind::Cookie {
            if let Some(raw) = self.single_cookie_value(headers) {
                if let Ok(mut cache) = self.opened_cache().lock() {
                    if cache.len() >= self.opened_max {
                        cache.retain(|_, o| o.session.is_live(now));
                        if cache.len() >= self.opened_max {
                            cache.clear();
                        }
                    }
                    let entry = Opened {
                        session: Arc::clone(&session),
                        old_key: best.old_key,
                        generation,
                    };
                    cache.insert(raw.into(), entry);
                }
            }
        }
        Ok(Some(Current {
            session,
            id: best.id,
            names_sent,
            rewrite: best.rewrite || stale_copy,
            stale_copy,
        }))
    }

    /// Every session a request carries that stands: usually one, several when the browser holds the session cookie
    /// more than once ([`CookieCodec::read_session_cookie`]). Sign-out ends them all, so that no copy it did not
    /// read signs the person in again.
    pub async fn load_every(&self, headers: &HeaderMap, now: u64) -> Result<Vec<Current>, StoreError> {
        let Some((found, names_sent, stale_copy)) = self.found(headers, now).await? else {
            return Ok(Vec::new());
        };
        Ok(found
            .into_iter()
            .map(|f| Current {
                session: Arc::new(f.session),
                id: f.id,
                names_sent: Arc::clone(&names_sent),
                rewrite: f.rewrite || stale_copy,
                stale_copy,
            })
            .collect())
    }

    /// The copies of the session cookie a request carries that stand (opened, stored, admitted), with the names
    /// that carried them and whether a stale copy came along; `None` without any that opens.
    async fn found(
        &self,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Option<(Vec<Found>, Arc<[String]>, bool)>, StoreError> {
        let Some(opened) = self.codec.read_session_cookie(headers) else {
            return Ok(None);
        };
        let mut found = Vec::with_capacity(opened.copies.len());
        for copy in opened.copies {
            let Some((session, id, stored_with_old_key)) = self.stored(copy.plaintext).await? else {
                continue;
            };
            let old_key = copy.opened_with_old_key || stored_with_old_key;
            let Some(rewrite) = self.admit(&session, old_key, now).await? else {
                continue;
            };
            found.push(Found {
                session,
                id,
                rewrite,
                old_key,
            });
        }
        Ok(Some((found, opened.names_sent.into(), opened.stale_copy)))
    }

    /// The session a cookie value stands for: the value itself (cookie store), or the session Redis keeps under
    /// it, with whether an older secret sealed it there; `None` when it is not one (or Redis no longer has it, or
    /// what Redis has does not open under its key).
    async fn stored(&self, plaintext: String) -> Result<Option<(Session, Option<String>, bool)>, StoreError> {
        Ok(match (self.kind, &self.redis) {
            (StoreKind::Redis, Some(redis)) => {
                let key = redis.key("session", &plaintext);
                Box::pin(redis.get(&key))
                    .await?
                    .and_then(|sealed| self.open_stored(&key, &sealed))
                    .map(|(s, old_key)| (s, Some(plaintext), old_key))
            }
            _ => serde_json::from_str::<Session>(&plaintext)
                .ok()
                .map(|s| (s, None, false)),
        })
    }

    /// A session as Redis keeps it under `key`: sealed with the session secret and bound to that key
    /// ([`CookieCodec::seal_stored`]), so that whoever reads Redis learns no token or claim, and whoever can write
    /// it can neither make a session nor move one to another browser's key.
    fn seal_stored(&self, key: &str, session: &Session) -> Result<String, SaveError> {
        let json = serde_json::to_string(session).map_err(|e| SaveError::Internal(e.to_string()))?;
        self.codec
            .seal_stored(key, json)
            .ok_or_else(|| SaveError::Internal("no session secret to seal with".to_owned()))
    }

    /// Opens what [`Sessions::seal_stored`] stored under `key`; the flag says an older secret sealed it.
    fn open_stored(&self, key: &str, sealed: &str) -> Option<(Session, bool)> {
        let (json, old_key) = self.codec.open_stored(key, sealed)?;
        serde_json::from_str::<Session>(&json).ok().map(|s| (s, old_key))
    }

    /// Whether a session found on a request still counts: live, not idle too long, not revoked (cookie store;
    /// the Redis store deletes revoked sessions). `Some(rewrite)`: it counts, and whether its cookie must be written
    /// again (opened with an old secret, or idle tracking due).
    async fn admit(&self, session: &Session, old_key: bool, now: u64) -> Result<Option<bool>, StoreError> {
        if !session.is_live(now) {
            return Ok(None);
        }
        let mut rewrite = old_key;
        if let Some(idle) = self.idle_timeout {
            if now.saturating_sub(session.seen) >= idle {
                return Ok(None);
            }
            // Record activity at a coarse grain so an active session stays alive without a write per request.
            rewrite |= now.saturating_sub(session.seen) >= (idle / 4).clamp(1, 60);
        }
        if self.kind == StoreKind::Cookie && self.is_revoked(session).await? {
            return Ok(None);
        }
        Ok(Some(rewrite))
    }

    /// The value of the one session cookie, when the request carries exactly one and no chunks (as bytes: see
    /// [`OpenedCache`]).
    fn single_cookie_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        let name = self.codec.session_name().as_bytes();
        let mut found = None;
        for (n, value) in super::cookies::raw_cookie_pairs(headers) {
            if n == name {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            } else if n.starts_with(name) && n.get(name.len()) == Some(&b'.') {
                return None;
            }
        }
        found
    }

    /// A cookie session opened before: the same checks as a fresh one, without decrypting and parsing again.
    async fn cached(&self, headers: &HeaderMap, now: u64) -> Result<Option<Current>, StoreError> {
        let Some(raw) = self.single_cookie_value(headers) else {
            return Ok(None);
        };
        let Some(hit) = self.opened_cache().lock().ok().and_then(|c| c.get(raw).cloned()) else {
            return Ok(None);
        };
        if hit.generation != self.codec.generation() {
            return Ok(None);
        }
        let session = hit.session;
        let Some(rewrite) = self.admit(&session, hit.old_key, now).await? else {
            return Ok(None);
        };
        Ok(Some(Current {
            session,
            id: None,
            names_sent: Arc::clone(&self.single_name),
            rewrite,
            stale_copy: false,
        }))
    }

    /// Stores `session` (new, or replacing `current`), seen at `now` (a request of the person's), and returns the
    /// `Set-Cookie` headers to send. With the Redis store, replacing a session that is gone fails with
    /// [`SaveError::Gone`] and writes nothing.
    pub async fn save(
        &self,
        current: Option<&Current>,
        mut session: Session,
        now: u64,
    ) -> Result<Vec<HeaderValue>, SaveError> {
        session.seen = now;
        self.store(current, session, now).await
    }

    /// Stores `session`, refreshed at `now` for `current` without a request of the person's (under the Redis lock,
    /// for a request that then saves it as seen itself, or for a WebSocket tunnel's watch): its `seen` is kept, so a
    /// refresh never counts as activity for `session.idle_timeout`.
    pub async fn save_refreshed(
        &self,
        current: &Current,
        session: Session,
        now: u64,
    ) -> Result<Vec<HeaderValue>, SaveError> {
        self.store(Some(current), session, now).await
    }

    async fn store(
        &self,
        current: Option<&Current>,
        session: Session,
        now: u64,
    ) -> Result<Vec<HeaderValue>, SaveError> {
        let max_age = session.exp.saturating_sub(now);
        let names_sent = current.map(|c| &c.names_sent[..]).unwrap_or(&[]);
        let mut cookies = match (self.kind, &self.redis) {
            (StoreKind::Redis, Some(redis)) => {
                let existing = current.and_then(|c| c.id.clone());
                let id = match &existing {
                    Some(id) => id.clone(),
                    None => self.new_id().map_err(SaveError::Internal)?,
                };
                // Kept until it would be idle too long (never less than a second: Redis refuses an expiry of 0).
                let ttl = match self.idle_timeout {
                    Some(idle) => max_age
                        .min(idle.saturating_sub(now.saturating_sub(session.seen)))
                        .max(1),
                    None => max_age,
                };
                let key = redis.key("session", &id);
                let sealed = self.seal_stored(&key, &session)?;
                let mut indexes = vec![(redis.key("sub", session.sub()), id.clone())];
                if let Some(sid) = &session.sid {
                    indexes.push((redis.key("sid", sid), id.clone()));
                }
                if existing.is_some() {
                    // A session ended while this request held it (sign-out, back-channel logout) stays ended.
                    if !redis
                        .put_existing(&key, &sealed, ttl, &indexes)
                        .await
                        .map_err(SaveError::Store)?
                    {
                        return Err(SaveError::Gone);
                    }
                } else {
                    redis
                        .put(&key, &sealed, ttl, &indexes)
                        .await
                        .map_err(SaveError::Store)?;
                }
                // The cookie only changes when it is new or must be resealed with the current secret.
                if current.is_some_and(|c| c.id.is_some() && !c.rewrite) {
                    return Ok(Vec::new());
                }
                self.codec
                    .session_cookies(id, max_age, names_sent)
                    .map_err(SaveError::Internal)?
            }
            _ => {
                let json = serde_json::to_string(&session).map_err(|e| SaveError::Internal(e.to_string()))?;
                let cookies = self
                    .codec
                    .session_cookies(json, max_age, names_sent)
                    .map_err(SaveError::Internal)?;
                if cookies.len() > 1 && names_sent.len() <= 1 {
                    warn_large(&session);
                }
                cookies
            }
        };
        if current.is_some_and(|c| c.stale_copy) {
            cookies.extend(self.codec.clear_host_copies(names_sent));
        }
        Ok(cookies)
    }

    /// Ends the request's session (sign-out): deletes it from Redis and returns headers clearing every cookie.
    pub async fn destroy(&self, headers: &HeaderMap) -> Vec<HeaderValue> {
        if let (StoreKind::Redis, Some(redis)) = (self.kind, &self.redis) {
            if let Some(opened) = self.codec.read_session_cookie(headers) {
                // Every copy the browser held (usually one) is this browser's session.
                let keys: Vec<String> = opened
                    .copies
                    .iter()
                    .map(|c| redis.key("session", &c.plaintext))
                    .collect();
                if let Err(e) = redis.delete(&keys).await {
                    tracing::warn!(error = %e, "could not delete the session from Redis at sign-out");
                }
            }
        }
        self.codec.clear_session_cookies(headers)
    }

    /// Deletes a session from Redis (after its grant was revoked); nothing to do for cookie sessions.
    pub async fn forget(&self, current: &Current) -> Result<(), StoreError> {
        match (&self.redis, &current.id) {
            (Some(redis), Some(id)) => redis.delete(&[redis.key("session", id)]).await,
            _ => Ok(()),
        }
    }

    /// `current`, found on a request long ago, as it stands now (for a WebSocket tunnel it opened), or `None` once
    /// it ended: past its lifetime, signed out or logged out (the revocation list), or with the Redis store no
    /// longer stored (sign-out and back-channel logout delete it, on any replica; Redis lets it expire once idle
    /// for `session.idle_timeout`). With Redis the answer is the stored session, with any other replica's refresh.
    /// Inactivity is not asked of a cookie session: its cookie here is the one the tunnel was opened with, and the
    /// person's later requests are recorded only in the browser's.
    pub async fn standing(&self, current: &Current, now: u64) -> Result<Option<Arc<Session>>, StoreError> {
        let session = match (self.kind, &current.id) {
            (StoreKind::Redis, Some(id)) => match self.reload(id).await? {
                Some(stored) => Arc::new(stored),
                None => return Ok(None),
            },
            _ => Arc::clone(&current.session),
        };
        if !session.is_live(now) || (self.kind == StoreKind::Cookie && self.is_revoked(&session).await?) {
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Reads the session stored under `id` again (Redis store), to see another replica's refresh.
    pub async fn reload(&self, id: &str) -> Result<Option<Session>, StoreError> {
        match &self.redis {
            Some(redis) => {
                let key = redis.key("session", id);
                Ok(redis
                    .get(&key)
                    .await?
                    .and_then(|sealed| self.open_stored(&key, &sealed))
                    .map(|(session, _)| session))
            }
            None => Ok(None),
        }
    }

    /// Back-channel logout: ends every session with Logto session id `sid`, or, with only `sub`, every session of
    /// that user issued up to `logout_at`, in either store (on the revocation list that cut-off only moves later,
    /// whatever order the logout tokens come in). Entries of the in-memory list past `now` are dropped on the way.
    pub async fn revoke(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
        logout_at: u64,
        now: u64,
    ) -> Result<usize, StoreError> {
        let until = logout_at + self.lifetime;
        match (self.kind, &self.redis) {
            (StoreKind::Redis, Some(redis)) => {
                let (index, by_sub) = match (sid, sub) {
                    (Some(sid), _) => (redis.key("sid", sid), false),
                    (None, Some(sub)) => (redis.key("sub", sub), true),
                    (None, None) => return Ok(0),
                };
                let ids = redis.members(&index).await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let keys: Vec<String> = ids.iter().map(|id| redis.key("session", id)).collect();
                if !by_sub {
                    let ended = ids.len();
                    redis.delete(&[keys, vec![index]].concat()).await?;
                    return Ok(ended);
                }
                // With only the subject, as on the revocation list: sessions signed in after the logout are new ones
                // and stay. One that no longer parses goes too, and one already gone (expired) leaves the index.
                let stored = redis.get_many(&keys).await?;
                let (ended_ids, ended_keys): (Vec<&String>, Vec<String>) = ids
                    .iter()
                    .zip(keys)
                    .zip(stored)
                    .filter(|((_, key), sealed)| {
                        sealed
                            .as_deref()
                            .is_none_or(|v| self.open_stored(key, v).is_none_or(|(s, _)| s.iat <= logout_at))
                    })
                    .map(|(pair, _)| pair)
                    .unzip();
                redis.delete(&ended_keys).await?;
                redis.remove_members(&index, &ended_ids).await?;
                Ok(ended_keys.len())
            }
            (_, Some(redis)) => {
                let ttl = Duration::from_secs(self.lifetime.max(1));
                if let Some(sid) = sid {
                    redis
                        .put(&redis.key("revoked-sid", sid), "1", ttl.as_secs(), &[])
                        .await?;
                }
                if let (None, Some(sub)) = (sid, sub) {
                    redis
                        .raise_to(&redis.key("revoked-sub", sub), logout_at, ttl.as_secs())
                        .await?;
                }
                Ok(1)
            }
            _ => {
                if let Ok(mut m) = self.memory.lock() {
                    m.drop_past(now);
                    if let Some(sid) = sid {
                        m.sids.insert(sid.to_owned(), until);
                    }
                    if let (None, Some(sub)) = (sid, sub) {
                        // The cut-off only moves later: an earlier logout delivered late must not bring back the
                        // sessions a later one ended.
                        let entry = m.subs.entry(sub.to_owned()).or_insert((logout_at, until));
                        *entry = (entry.0.max(logout_at), entry.1.max(until));
                    }
                    self.revocations
                        .store(m.revokes_any(), std::sync::atomic::Ordering::Release);
                }
                self.save_memory().await;
                Ok(1)
            }
        }
    }

    /// Ends `current` for good, as a sign-out does without its cookies: deleted from Redis (Redis store) or put
    /// on the revocation list (cookie store, see [`Sessions::revoke_signed_out`]). A new sign-in ends the session
    /// the browser had, so a copy of the old cookie does not outlive it (session renewal on authentication).
    pub async fn end(&self, current: &Current, now: u64) -> Result<(), StoreError> {
        match self.kind {
            StoreKind::Redis => self.forget(current).await,
            StoreKind::Cookie => self.revoke_signed_out(&current.session, now).await,
        }
    }

    /// Sign-out with the cookie store: this one session (by its random serial, which a refresh keeps, so every
    /// copy of its cookie, refreshed or not) is refused from now on, until it would have
    /// expired anyway; on every replica through Redis when `session.redis_url` is set, otherwise on this one. A
    /// new sign-in of the same person is a new session. With the Redis store the session is deleted instead.
    pub async fn revoke_signed_out(&self, s: &Session, now: u64) -> Result<(), StoreError> {
        if self.kind != StoreKind::Cookie {
            return Ok(());
        }
        match &self.redis {
            Some(redis) => {
                let ttl = s.exp.saturating_sub(now).max(1);
                redis.put(&signed_out_key(redis, s), "1", ttl, &[]).await
            }
            None => {
                if let Ok(mut m) = self.memory.lock() {
                    m.drop_past(now);
                    m.signed_out.insert(s.revocation_name(), s.exp);
                    self.revocations.store(true, std::sync::atomic::Ordering::Release);
                }
                self.save_memory().await;
                Ok(())
            }
        }
    }

    /// Writes the in-memory revocation list to `session.revocation_file`, when set. The `jti`s seen go with the
    /// next revocation: a replayed logout token can only end again what its first delivery ended.
    async fn save_memory(&self) {
        if let Some(file) = &self.memory_file {
            file.save(&self.memory).await;
        }
    }

    async fn is_revoked(&self, s: &Session) -> Result<bool, StoreError> {
        match &self.redis {
            Some(redis) => {
                let mut keys = vec![redis.key("revoked-sub", s.sub()), signed_out_key(redis, s)];
                if let Some(sid) = &s.sid {
                    keys.push(redis.key("revoked-sid", sid));
                }
                let values = Box::pin(redis.get_many(&keys)).await?;
                let sub_logout = values.first().cloned().flatten().and_then(|v| v.parse::<u64>().ok());
                let signed_out = values.get(1).is_some_and(Option::is_some);
                let sid_revoked = values.get(2).is_some_and(Option::is_some);
                Ok(signed_out || sid_revoked || sub_logout.is_some_and(|at| s.iat <= at))
            }
            // Usually nothing is revoked: no lock is taken then.
            None if !self.revocations.load(std::sync::atomic::Ordering::Acquire) => Ok(false),
            None => Ok(self.memory.lock().is_ok_and(|m| {
                (!m.sids.is_empty() && s.sid.as_ref().is_some_and(|sid| m.sids.contains_key(sid)))
                    || (!m.subs.is_empty() && m.subs.get(s.sub()).is_some_and(|(at, _)| s.iat <= *at))
                    || (!m.signed_out.is_empty() && m.signed_out.contains_key(&s.revocation_name()))
            })),
        }
    }

    /// Records a back-channel logout token's `jti`; false when it was seen before (a replay).
    pub async fn first_use_of_jti(&self, jti: &str, keep_for: Duration, now: u64) -> Result<bool, StoreError> {
        match &self.redis {
            Some(redis) => redis.set_once(&redis.key("jti", jti), "1", keep_for).await,
            None => {
                let Ok(mut m) = self.memory.lock() else {
                    return Ok(false);
                };
                m.drop_past(now);
                self.revocations
                    .store(m.revokes_any(), std::sync::atomic::Ordering::Release);
                Ok(m.jtis.insert(jti.to_owned(), now + keep_for.as_secs()).is_none())
            }
        }
    }

    /// A random serial for a new session (96 bits, base64url): names it on the revocation list at sign-out.
    pub fn new_serial(&self) -> Option<String> {
        let mut bytes = [0u8; 12];
        self.rng.fill(&mut bytes).ok()?;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    fn new_id(&self) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| "no randomness for a session id".to_owned())?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Ready when Redis (if configured) answers.
    pub async fn ready(&self) -> Result<(), StoreError> {
        match &self.redis {
            Some(r) => r.ping().await,
            None => Ok(()),
        }
    }
}

/// Why a session could not be written.
#[derive(Debug)]
pub enum SaveError {
    Store(StoreError),
    Internal(String),
    /// The Redis store no longer holds the session: it was ended (signed out, logged out over the back channel)
    /// after this request read it. The request is signed out.
    Gone,
}

/// A copy of the session cookie that stands, as a request carried it.
struct Found {
    session: Session,
    /// The Redis id (Redis store only).
    id: Option<String>,
    /// The cookie must be written again (an old secret opened it, or idle tracking is due).
    rewrite: bool,
    /// An older secret opened it.
    old_key: bool,
}

/// Whether `a` is a later state of the person's sign-in than `b`: signed in later, else refreshed later, else seen
/// later.
fn newer(a: &Session, b: &Session) -> bool {
    (a.iat, a.at_exp, a.seen) > (b.iat, b.at_exp, b.seen)
}

/// Names the claims that make a session need several cookies, biggest first.
fn warn_large(session: &Session) {
    let mut sizes: Vec<(String, usize)> = session
        .claims
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string().len()))
        .collect();
    sizes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let biggest: Vec<String> = sizes.iter().take(3).map(|(k, n)| format!("{k} ({n} bytes)")).collect();
    tracing::warn!(
        claims = %biggest.join(", "),
        "the session is larger than one cookie and is split into chunks; map fewer or smaller claims, \
         or use session.store = \"redis\""
    );
}

/// The Redis key that marks one signed-out cookie session (see [`Sessions::revoke_signed_out`]).
fn signed_out_key(redis: &RedisStore, s: &Session) -> String {
    redis.key("signed-out", &s.revocation_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hashed_by_suffix_still_compare_in_full() {
        let mut cache: HashMap<Box<str>, u32, SuffixHash> = HashMap::default();
        let tail = "T".repeat(HASHED_SUFFIX);
        // Same last 32 bytes, different heads: the same hash, still two entries.
        cache.insert(format!("a{tail}").into(), 1);
        cache.insert(format!("bb{tail}").into(), 2);
        cache.insert("short".into(), 3);
        assert_eq!(cache.get(format!("a{tail}").as_str()), Some(&1));
        assert_eq!(cache.get(format!("bb{tail}").as_str()), Some(&2));
        assert_eq!(cache.get("short"), Some(&3));
        assert_eq!(cache.get(tail.as_str()), None);
        let build = SuffixHash::default();
        assert_eq!(build.hash_one(format!("a{tail}")), build.hash_one(format!("bb{tail}")));
        assert_ne!(build.hash_one(format!("{tail}a")), build.hash_one(format!("{tail}b")));
    }
}
