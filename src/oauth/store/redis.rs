//! The Redis token store, shared by replicas. Keys (under `oauth.redis_prefix`, default
//! `imapgate:oauth:`), every value sealed with the store key and bound to its key's purpose and
//! account:
//!
//! ```text
//! PREFIX ACCOUNT :refresh   the refresh token (no expiry)
//! PREFIX ACCOUNT :access    "<usable-until ms>:<access token>", PX until it is no longer usable
//! PREFIX ACCOUNT :lock      a random owner id, SET NX PX lease: the replica refreshing now
//! PREFIX ACCOUNT :failure   "<label>:<reason>", PX failure_cache_secs: the last refresh failed
//! ```
//!
//! Single-flight across replicas: a replica that needs a token takes the lock (`SET NX PX`);
//! the others poll the access key until the new token appears (or the lock is gone or their
//! deadline passes). The lock is released only by its owner (compare-and-delete in Lua), and
//! expires by itself if the owner dies.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::Mutex;

use super::{Sealer, SharedToken, now_ms};
use crate::oauth::config::OAuthConfig;
use crate::oauth::error::OAuthError;
use crate::secret::Secret;

/// Deletes KEYS[1] if it still holds ARGV[1].
const UNLOCK: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// The Redis store.
pub struct RedisStore {
    client: Client,
    prefix: String,
    sealer: Sealer,
    timeout: Duration,
    /// One multiplexed connection, made on first use and again after an error.
    conn: Mutex<Option<MultiplexedConnection>>,
}

fn err(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::Store(format!("redis: {e}"))
}

impl RedisStore {
    /// A store for `config.redis_url` (connected on first use).
    pub fn new(config: &OAuthConfig, sealer: Sealer) -> Result<RedisStore, OAuthError> {
        let url = config.redis_url.as_deref().unwrap_or_default();
        Ok(RedisStore {
            client: Client::open(url).map_err(err)?,
            prefix: config.redis_prefix.clone(),
            sealer,
            timeout: Duration::from_millis(config.request_timeout_ms),
            conn: Mutex::new(None),
        })
    }

    fn key(&self, account: &str, what: &str) -> String {
        format!("{}{account}:{what}", self.prefix)
    }

    /// Runs one command on the shared connection, reconnecting once if it broke.
    async fn run(&self, cmd: &redis::Cmd) -> Result<Value, OAuthError> {
        let work = async {
            let mut last = None;
            for _ in 0..2 {
                let mut conn = {
                    let mut slot = self.conn.lock().await;
                    match slot.as_ref() {
                        Some(c) => c.clone(),
                        None => {
                            let config = AsyncConnectionConfig::new()
                                .set_connection_timeout(Some(self.timeout))
                                .set_response_timeout(Some(self.timeout));
                            let c = self
                                .client
                                .get_multiplexed_async_connection_with_config(&config)
                                .await
                                .map_err(err)?;
                            *slot = Some(c.clone());
                            c
                        }
                    }
                };
                match cmd.query_async::<Value>(&mut conn).await {
                    Ok(v) => return Ok(v),
                    Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                        *self.conn.lock().await = None;
                        last = Some(e);
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            Err(err(
                last.map_or_else(|| "no connection".into(), |e| e.to_string())
            ))
        };
        crate::timer::timeout(self.timeout, work)
            .await
            .map_err(|_| err("no answer in time"))?
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, OAuthError> {
        match self.run(redis::cmd("GET").arg(key)).await? {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            other => Err(err(format!("unexpected answer {other:?}"))),
        }
    }

    /// The stored refresh token of `account`.
    pub async fn refresh_token(&self, account: &str) -> Result<Option<Secret>, OAuthError> {
        let key = self.key(account, "refresh");
        let Some(sealed) = self.get(&key).await? else {
            return Ok(None);
        };
        let plain = self.sealer.open(key.as_bytes(), &sealed)?;
        Ok(Some(Secret::new(plain.to_vec())))
    }

    /// Stores `account`'s refresh token.
    pub async fn put_refresh_token(&self, account: &str, token: &Secret) -> Result<(), OAuthError> {
        let key = self.key(account, "refresh");
        let sealed = self.sealer.seal(key.as_bytes(), token.expose());
        self.run(redis::cmd("SET").arg(&key).arg(sealed)).await?;
        Ok(())
    }

    /// The access token another replica (or this one) shared, if still usable.
    pub async fn access_token(&self, account: &str) -> Result<Option<SharedToken>, OAuthError> {
        let key = self.key(account, "access");
        let Some(sealed) = self.get(&key).await? else {
            return Ok(None);
        };
        let plain = self.sealer.open(key.as_bytes(), &sealed)?;
        let colon = plain
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| err("malformed access entry"))?;
        let until: u64 = std::str::from_utf8(&plain[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("malformed access entry"))?;
        if until <= now_ms() {
            return Ok(None);
        }
        Ok(Some(SharedToken {
            token: Secret::new(plain[colon + 1..].to_vec()),
            usable_until_ms: until,
        }))
    }

    /// Shares an access token with the other replicas until it stops being usable.
    pub async fn put_access_token(
        &self,
        account: &str,
        token: &SharedToken,
    ) -> Result<(), OAuthError> {
        let ttl = token.usable_until_ms.saturating_sub(now_ms());
        if ttl == 0 {
            return Ok(());
        }
        let key = self.key(account, "access");
        let mut plain = zeroize::Zeroizing::new(format!("{}:", token.usable_until_ms).into_bytes());
        plain.extend_from_slice(token.token.expose());
        let sealed = self.sealer.seal(key.as_bytes(), &plain);
        self.run(redis::cmd("SET").arg(&key).arg(sealed).arg("PX").arg(ttl))
            .await?;
        Ok(())
    }

    /// Forgets a shared access token the upstream refused.
    pub async fn drop_access_token(&self, account: &str) -> Result<(), OAuthError> {
        self.run(redis::cmd("DEL").arg(self.key(account, "access")))
            .await?;
        Ok(())
    }

    /// Takes `account`'s refresh lock for `lease` unless another replica holds it.
    pub async fn try_lock(
        &self,
        account: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, OAuthError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let answer = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(account, "lock"))
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms),
            )
            .await?;
        Ok(!matches!(answer, Value::Nil))
    }

    /// Whether some replica holds `account`'s refresh lock.
    pub async fn locked(&self, account: &str) -> Result<bool, OAuthError> {
        Ok(self.get(&self.key(account, "lock")).await?.is_some())
    }

    /// Releases the lock if `owner` still holds it.
    pub async fn unlock(&self, account: &str, owner: &str) -> Result<(), OAuthError> {
        self.run(
            redis::cmd("EVAL")
                .arg(UNLOCK)
                .arg(1)
                .arg(self.key(account, "lock"))
                .arg(owner),
        )
        .await?;
        Ok(())
    }

    /// Records that a refresh failed, for the replicas waiting on it.
    pub async fn put_failure(
        &self,
        account: &str,
        label: &str,
        reason: &str,
        ttl: Duration,
    ) -> Result<(), OAuthError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Ok(());
        }
        let value = format!("{label}:{reason}");
        self.run(
            redis::cmd("SET")
                .arg(self.key(account, "failure"))
                .arg(value)
                .arg("PX")
                .arg(ttl_ms),
        )
        .await?;
        Ok(())
    }

    /// The failure another replica recorded, if recent: `(label, reason)`.
    pub async fn failure(&self, account: &str) -> Result<Option<(String, String)>, OAuthError> {
        let Some(v) = self.get(&self.key(account, "failure")).await? else {
            return Ok(None);
        };
        let v = String::from_utf8_lossy(&v).into_owned();
        let (label, reason) = v.split_once(':').unwrap_or((v.as_str(), ""));
        Ok(Some((label.to_string(), reason.to_string())))
    }

    /// Forgets a recorded failure (after a success, or a new enrolment).
    pub async fn clear_failure(&self, account: &str) -> Result<(), OAuthError> {
        self.run(redis::cmd("DEL").arg(self.key(account, "failure")))
            .await?;
        Ok(())
    }
}
