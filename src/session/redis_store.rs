//! Redis for a fleet of gates: session data (the cookie then holds only an opaque id), the back-channel
//! revocation list and `jti` replay cache, and the short locks that make a refresh happen once across replicas.
//!
//! The connection is made on first use and kept by redis-rs's connection manager, which reconnects by itself.
//! Every command is bounded in time; when Redis cannot be reached the caller gets [`StoreError`] and answers 503,
//! and the next request tries again, so the gate recovers on its own when Redis returns.

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

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut c))
            .await
            .map(|_| ())
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        self.bounded(c.get::<_, Option<String>>(key)).await
    }

    /// `SET key value EX ttl`, plus the id added to each index set (kept for the same time).
    pub async fn put(&self, key: &str, value: &str, ttl: u64, indexes: &[(String, String)]) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.atomic().set_ex(key, value, ttl.max(1)).ignore();
        for (index, member) in indexes {
            pipe.sadd(index, member)
                .ignore()
                .expire(index, ttl.max(1) as i64)
                .ignore();
        }
        self.bounded(pipe.query_async::<()>(&mut c)).await
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        self.bounded(c.del::<_, ()>(keys)).await
    }

    pub async fn members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        self.bounded(c.smembers::<_, Vec<String>>(key)).await
    }

    /// `SET key value NX EX ttl`: true when this call created the key (a lock taken, a `jti` first seen).
    pub async fn set_once(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis().max(1) as u64));
        let r: Option<String> = self.bounded(c.set_options(key, value, opts)).await?;
        Ok(r.is_some())
    }

    /// Deletes `key` only if it still holds `value` (releasing a lock this replica took, never another's).
    pub async fn delete_if(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        self.bounded(script.key(key).arg(value).invoke_async::<i64>(&mut c))
            .await
            .map(|_| ())
    }

    /// Values of several keys in one round trip.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let mut c = self.conn().await?;
        self.bounded(redis::cmd("MGET").arg(keys).query_async::<Vec<Option<String>>>(&mut c))
            .await
    }
}
