//! Redis for a fleet of gates: session data (the cookie then holds only an opaque id), the back-channel
//! revocation list and `jti` replay cache, and the short locks that make a refresh happen once across replicas.
//!
//! Three ways to reach it (`session.redis_mode`): one server, through redis-rs's connection manager; Redis
//! Sentinel, whose sentinels name the current master (asked again whenever a connection to the one named before
//! breaks or turns read-only, as after a failover); and Redis Cluster, through redis-rs's cluster connection,
//! with every key of the gate under one hash tag so multi-key commands (several keys read at once, a session and
//! its indexes written together) stay on one slot.
//!
//! The connection is made on first use. A command that finds it broken (Redis restarted, a failover, the
//! connection killed while this replica was idle) is sent once more on a fresh one: a replica that sat idle
//! through an outage answers its first request after Redis is back instead of failing it (and losing, say, a
//! user's sign-in). Every command is bounded in time; when Redis cannot be reached the caller gets
//! [`StoreError`] and answers 503, and the next request tries again.

use std::sync::RwLock;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::AsyncCommands;

use crate::config::{RedisMode, SessionConfig};

/// How long connecting, or any single command, may take.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis is unreachable: {0}")]
pub struct StoreError(pub String);

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError(e.to_string())
    }
}

// The store's Lua scripts, each hashed (SHA-1, for EVALSHA) once per process rather than on every call.

/// Sets `KEYS[1]` to `ARGV[1]` for `ARGV[2]` seconds (only if it exists when `ARGV[3]` is `XX`), then adds `ARGV[i + 2]`
/// to each index set `KEYS[i]` with the same lifetime; 0 when nothing was set.
static SET_INDEXED: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local set \
         if ARGV[3] == 'XX' then set = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'XX') \
         else set = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end \
         if not set then return 0 end \
         for i = 2, #KEYS do \
           redis.call('SADD', KEYS[i], ARGV[i + 2]) \
           redis.call('EXPIRE', KEYS[i], ARGV[2]) \
         end \
         return 1",
    )
});

/// Deletes `KEYS[1]` only if it holds `ARGV[1]`.
static DELETE_IF: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

/// Sets `KEYS[1]` to the number `ARGV[1]` for `ARGV[2]` seconds unless it holds one at least as large.
static RAISE_TO: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local cur = tonumber(redis.call('GET', KEYS[1])) \
         if cur == nil or cur < tonumber(ARGV[1]) then \
           redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end \
         return 0",
    )
});

/// How the store finds its server(s).
enum Backend {
    Standalone(redis::Client),
    Sentinel {
        sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    },
    Cluster(redis::cluster::ClusterClient),
}

/// A connection of any backend, usable by every command.
#[derive(Clone)]
pub enum Conn {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisStore {
    backend: Backend,
    conn: RwLock<Option<Conn>>,
    connecting: tokio::sync::Mutex<()>,
    prefix: String,
}

/// Errors after which the connection is dropped and the command sent once more on a fresh one: the connection
/// broke, or (after a Sentinel failover) the server it reaches is no longer the master.
fn is_stale_connection(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
}

impl RedisStore {
    pub fn new(config: &SessionConfig) -> Result<Self, String> {
        let backend = match config.redis_mode {
            RedisMode::Standalone => {
                let url = config.redis_url.as_deref().unwrap_or_default();
                Backend::Standalone(redis::Client::open(url).map_err(|e| format!("session.redis_url: {e}"))?)
            }
            RedisMode::Sentinel => {
                let master = config.redis_sentinel_master.clone().unwrap_or_default();
                let sentinel = redis::sentinel::SentinelClient::build(
                    config.redis_urls.clone(),
                    master,
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| format!("session.redis_urls: {e}"))?;
                Backend::Sentinel {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                }
            }
            RedisMode::Cluster => Backend::Cluster(
                redis::cluster::ClusterClient::builder(config.redis_urls.clone())
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .build()
                    .map_err(|e| format!("session.redis_urls: {e}"))?,
            ),
        };
        // One hash tag for every key in a cluster (`{logto-gate:}session:…`), so multi-key commands stay on one slot.
        let prefix = match config.redis_mode {
            RedisMode::Cluster => format!("{{{}}}", config.redis_key_prefix),
            _ => config.redis_key_prefix.clone(),
        };
        Ok(RedisStore {
            backend,
            conn: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            prefix,
        })
    }

    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.conn.read().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.conn.read().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        let c = tokio::time::timeout(TIMEOUT * 2, self.connect())
            .await
            .map_err(|_| StoreError("connecting took too long".into()))??;
        if let Ok(mut g) = self.conn.write() {
            *g = Some(c.clone());
        }
        Ok(c)
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        match &self.backend {
            Backend::Standalone(client) => Ok(Conn::Manager(client.get_connection_manager_with_config(config).await?)),
            Backend::Sentinel { sentinel } => {
                // Ask the sentinels which server is the master now.
                let client = sentinel.lock().await.async_get_client().await?;
                Ok(Conn::Manager(client.get_connection_manager_with_config(config).await?))
            }
            Backend::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }

    /// Forgets the connection, so the next command makes a fresh one (and, with Sentinel, asks for the master).
    fn forget_connection(&self) {
        if let Ok(mut g) = self.conn.write() {
            *g = None;
        }
    }

    /// Runs one command with a deadline, whatever the connection manager is doing.
    async fn bounded<T>(&self, fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError("no answer in time".into())),
        }
    }

    /// Runs `command` on the connection, and once more on a fresh one when the connection turned out stale (Redis
    /// restarted, a failover, the connection killed while this replica was idle). Each try is bounded; commands are idempotent or atomic, and a
    /// broken connection never delivered the first.
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let c = self.conn().await?;
        match tokio::time::timeout(TIMEOUT, command(c)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if is_stale_connection(&e) => {
                tracing::debug!(error = %e, "the Redis connection is stale; trying once more on a new one");
                self.forget_connection();
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(StoreError("no answer in time".into())),
        }
        let c = self.conn().await.inspect_err(|_| self.forget_connection())?;
        let result = self.bounded(command(c)).await;
        if result.is_err() {
            self.forget_connection();
        }
        result
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(|mut c| async move { c.get::<_, Option<String>>(key).await })
            .await
    }

    /// `SET key value EX ttl`, plus the id added to each index set (kept for the same time).
    pub async fn put(&self, key: &str, value: &str, ttl: u64, indexes: &[(String, String)]) -> Result<(), StoreError> {
        self.set_indexed(key, value, ttl, indexes, false).await.map(|_| ())
    }

    /// [`RedisStore::put`] for a key that must still exist (`SET ... XX`). False when the key is gone (deleted by a
    /// sign-out or a back-channel logout since it was read): nothing is written, so a session ended meanwhile is
    /// never written back.
    pub async fn put_existing(
        &self,
        key: &str,
        value: &str,
        ttl: u64,
        indexes: &[(String, String)],
    ) -> Result<bool, StoreError> {
        self.set_indexed(key, value, ttl, indexes, true).await
    }

    /// One atomic step: `SET key value EX ttl` (`XX` with `only_existing`) and, only when the key was set, each
    /// `(index, member)` added to its set with the same time to live. True when the key was set.
    async fn set_indexed(
        &self,
        key: &str,
        value: &str,
        ttl: u64,
        indexes: &[(String, String)],
        only_existing: bool,
    ) -> Result<bool, StoreError> {
        let mut invocation = SET_INDEXED.prepare_invoke();
        invocation
            .key(key)
            .arg(value)
            .arg(ttl.max(1))
            .arg(if only_existing { "XX" } else { "" });
        for (index, member) in indexes {
            invocation.key(index).arg(member);
        }
        let invocation = &invocation;
        let set: i64 = self
            .run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
            .await?;
        Ok(set == 1)
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.run(|mut c| async move { c.del::<_, ()>(keys).await }).await
    }

    pub async fn members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.run(|mut c| async move { c.smembers::<_, Vec<String>>(key).await })
            .await
    }

    /// `SREM key member...`: takes `members` out of the set at `key`.
    pub async fn remove_members(&self, key: &str, members: &[&String]) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        self.run(|mut c| async move { c.srem::<_, _, ()>(key, members).await })
            .await
    }

    /// `SET key value NX EX ttl`: true when this call created the key (a lock taken, a `jti` first seen).
    pub async fn set_once(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis().max(1) as u64));
        let r: Option<String> = self
            .run(|mut c| {
                let opts = opts.clone();
                async move { c.set_options(key, value, opts).await }
            })
            .await?;
        Ok(r.is_some())
    }

    /// Deletes `key` only if it still holds `value` (releasing a lock this replica took, never another's).
    pub async fn delete_if(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.run(|mut c| async move { DELETE_IF.key(key).arg(value).invoke_async::<i64>(&mut c).await })
            .await
            .map(|_| ())
    }

    /// Sets `key` to `value` (a number) for `ttl` seconds unless it already holds a number at least as large, in
    /// one atomic step: a cut-off time that only moves later, whichever replica writes first.
    pub async fn raise_to(&self, key: &str, value: u64, ttl: u64) -> Result<(), StoreError> {
        self.run(|mut c| async move {
            RAISE_TO
                .key(key)
                .arg(value)
                .arg(ttl.max(1))
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Values of several keys in one round trip.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.run(|mut c| async move {
            redis::cmd("MGET")
                .arg(keys)
                .query_async::<Vec<Option<String>>>(&mut c)
                .await
        })
        .await
    }
}
