//! Redis for a fleet of gates: session data (the cookie then holds only an opaque id), the back-channel
//! revocation list and `jti` replay cache, and the short locks that make a refresh happen once across replicas.
//!
//! The connection is made on first use and kept by redis-rs's connection manager, which reconnects by itself once
//! a command finds the connection broken. A command that fails that way is sent once more, on the new connection:
//! a replica that sat idle through an outage answers its first request after Redis is back instead of failing it
//! (and losing, say, a user's sign-in). Every command is bounded in time; when Redis cannot be reached the caller
//! gets [`StoreError`] and answers 503, and the next request tries again.

use std::sync::RwLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

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

pub struct RedisStore {
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    connecting: tokio::sync::Mutex<()>,
    prefix: String,
}

impl RedisStore {
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("session.redis_url: {e}"))?;
        Ok(RedisStore {
            client,
            conn: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            prefix: prefix.to_owned(),
        })
    }

    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.conn.read().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.conn.read().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let c = tokio::time::timeout(TIMEOUT * 2, self.client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| StoreError("connecting took too long".into()))??;
        if let Ok(mut g) = self.conn.write() {
            *g = Some(c.clone());
        }
        Ok(c)
    }

    /// Runs one command with a deadline, whatever the connection manager is doing.
    async fn bounded<T>(&self, fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError("no answer in time".into())),
        }
    }

    /// Runs `command` on the connection, and once more when the connection turned out broken (Redis restarted, a
    /// failover, the connection killed while this replica was idle): the manager reconnects on that error, and
    /// the second try waits for the new connection. Each try is bounded; commands are idempotent or atomic, and a
    /// broken connection never delivered the first.
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let c = self.conn().await?;
        match tokio::time::timeout(TIMEOUT, command(c.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                tracing::debug!(error = %e, "the Redis connection was broken; trying once more on a new one");
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(StoreError("no answer in time".into())),
        }
        self.bounded(command(c)).await
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
        let mut pipe = redis::pipe();
        pipe.atomic().set_ex(key, value, ttl.max(1)).ignore();
        for (index, member) in indexes {
            pipe.sadd(index, member)
                .ignore()
                .expire(index, ttl.max(1) as i64)
                .ignore();
        }
        let pipe = &pipe;
        self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
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
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        let script = &script;
        self.run(|mut c| async move { script.key(key).arg(value).invoke_async::<i64>(&mut c).await })
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
