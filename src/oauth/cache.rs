//! The token service: access tokens per account, cached in memory until shortly before they
//! expire, and obtained once per account however many sessions need one at that moment
//! (single-flight: the first session requests, the others wait for its answer and share it,
//! success or failure). With Redis the same holds across replicas (see [`store::redis`]).
//!
//! The warm path (a cached token still usable) is a map lookup and a read lock: no I/O.
//!
//! [`store::redis`]: super::store::redis

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts};
use ring::rand::SecureRandom as _;
use std::time::Instant;

use super::config::{GrantKind, OAuthConfig, Resolved};
use super::error::OAuthError;
use super::store::redis::RedisStore;
use super::store::{SharedToken, Store, now_ms};
use super::token::TokenClient;
use crate::secret::Secret;

/// Lifetime assumed when the server does not say (`expires_in` absent).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// How often a replica waiting for another's refresh looks for the result.
const SHARED_POLL: Duration = Duration::from_millis(20);

/// An access token handed to a login.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The token.
    pub token: Secret,
    /// From the cache (it may have been revoked since): a refusal upstream is worth one retry
    /// with a new token. `false` when it was just obtained.
    pub cached: bool,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    /// Local clock: until when it is used.
    until: Instant,
    /// The same as Unix milliseconds (shared with other replicas).
    until_ms: u64,
}

impl Cached {
    fn new(token: Secret, expires_in: Option<Duration>, margin: Duration) -> Cached {
        let usable = usable_for(expires_in.unwrap_or(DEFAULT_LIFETIME), margin);
        Cached {
            token,
            until: Instant::now() + usable,
            until_ms: now_ms() + u64::try_from(usable.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn from_shared(shared: SharedToken) -> Cached {
        let left = Duration::from_millis(shared.usable_until_ms.saturating_sub(now_ms()));
        Cached {
            token: shared.token,
            until: Instant::now() + left,
            until_ms: shared.usable_until_ms,
        }
    }
}

/// How long a token living `lifetime` is used: until `margin` before it expires, but at least
/// half its life (a short-lived token would otherwise never be used).
pub fn usable_for(lifetime: Duration, margin: Duration) -> Duration {
    lifetime.saturating_sub(margin.min(lifetime / 2))
}

/// One account's state.
#[derive(Default)]
struct Slot {
    cached: RwLock<Option<Cached>>,
    /// Held by the one session obtaining a token; the others queue on it.
    flight: tokio::sync::Mutex<Flight>,
}

#[derive(Default)]
struct Flight {
    /// The last attempt's failure and when: shared with the sessions that waited for it.
    failure: Option<(Instant, OAuthError)>,
    /// A rotated refresh token the store could not take (used until it can).
    unsaved_refresh: Option<Secret>,
}

impl Slot {
    fn usable(&self) -> Option<Secret> {
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|c| c.until > Instant::now())
            .map(|c| c.token.clone())
    }
}

/// Counters for `/metrics`.
struct Stats {
    requests: IntCounterVec,
    cache_hits: IntCounter,
}

/// Access tokens for the configured accounts.
pub struct TokenService {
    config: OAuthConfig,
    client: TokenClient,
    store: Store,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// This process's id as a Redis lock owner.
    owner: String,
    stats: Stats,
}

impl TokenService {
    /// A service for `config` (validated), talking through `client`, keeping tokens in `store`.
    pub fn new(config: OAuthConfig, client: TokenClient, store: Store) -> TokenService {
        let mut id = [0u8; 12];
        let _ = ring::rand::SystemRandom::new().fill(&mut id);
        let owner = id.iter().map(|b| format!("{b:02x}")).collect();
        let requests = IntCounterVec::new(
            Opts::new(
                "imapgate_oauth_token_requests_total",
                "Requests to the token endpoint, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let cache_hits = IntCounter::new(
            "imapgate_oauth_token_cache_hits_total",
            "Logins served a cached access token",
        )
        .expect("valid metric");
        TokenService {
            config,
            client,
            store,
            slots: Mutex::new(HashMap::new()),
            owner,
            stats: Stats {
                requests,
                cache_hits,
            },
        }
    }

    /// Registers the counters.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.stats.requests.clone()))?;
        registry.register(Box::new(self.stats.cache_hits.clone()))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    fn slot(&self, account: &str) -> Result<Arc<Slot>, OAuthError> {
        if !self.config.accounts.contains_key(account) {
            return Err(OAuthError::UnknownAccount);
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(slots.entry(account.to_string()).or_default().clone())
    }

    /// A usable access token for `account`: cached, or obtained (once for everyone waiting).
    /// Bounded by `oauth.request_timeout_ms` (waiting for someone else's request included).
    pub async fn token(&self, account: &str) -> Result<AccessToken, OAuthError> {
        let slot = self.slot(account)?;
        if let Some(token) = slot.usable() {
            self.stats.cache_hits.inc();
            return Ok(AccessToken {
                token,
                cached: true,
            });
        }
        let deadline = Instant::now() + self.timeout();
        let mut flight = crate::timer::timeout_at(deadline, slot.flight.lock())
            .await
            .map_err(|_| {
                OAuthError::Unavailable("another session's token request did not finish".into())
            })?;
        // Whoever held the flight before may have just obtained one, or just failed.
        if let Some(token) = slot.usable() {
            return Ok(AccessToken {
                token,
                cached: false,
            });
        }
        let failure_ttl = Duration::from_secs(self.config.failure_cache_secs);
        if let Some((at, e)) = &flight.failure {
            if at.elapsed() < failure_ttl {
                return Err(e.clone());
            }
        }
        let resolved = self
            .config
            .resolve(account)
            .ok_or(OAuthError::UnknownAccount)?;
        let result = match self.store.shared() {
            None => self.request(account, &resolved, &mut flight).await,
            Some(redis) => {
                self.shared_request(redis, account, &resolved, &mut flight, deadline)
                    .await
            }
        };
        match result {
            Ok(cached) => {
                flight.failure = None;
                let token = cached.token.clone();
                *slot.cached.write().unwrap_or_else(|e| e.into_inner()) = Some(cached);
                Ok(AccessToken {
                    token,
                    cached: false,
                })
            }
            Err(e) => {
                // Not enrolled is a local fact, read again next time (an enrolment while the
                // proxy runs takes effect at once); the others spare the token endpoint.
                if !matches!(e, OAuthError::NotEnrolled) {
                    flight.failure = Some((Instant::now(), e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Forgets `token` for `account` (the upstream refused it: revoked before it expired).
    pub async fn invalidate(&self, account: &str, token: &Secret) {
        let Ok(slot) = self.slot(account) else {
            return;
        };
        {
            let mut cached = slot.cached.write().unwrap_or_else(|e| e.into_inner());
            if cached.as_ref().is_some_and(|c| c.token == *token) {
                *cached = None;
            }
        }
        if let Some(redis) = self.store.shared() {
            if let Err(e) = redis.drop_access_token(account).await {
                tracing::warn!(account, error = %e, "oauth: could not drop the shared token");
            }
        }
    }

    /// One token request for `account`; a refresh token that comes back is stored at once.
    async fn request(
        &self,
        account: &str,
        resolved: &Resolved,
        flight: &mut Flight,
    ) -> Result<Cached, OAuthError> {
        let refresh = match resolved.grant {
            GrantKind::ClientCredentials => None,
            GrantKind::RefreshToken => match flight.unsaved_refresh.clone() {
                Some(rt) => Some(rt),
                None => Some(
                    self.store
                        .refresh_token(account)
                        .await?
                        .ok_or(OAuthError::NotEnrolled)?,
                ),
            },
        };
        let started = std::time::Instant::now();
        let result = self.client.fetch(resolved, refresh.as_ref()).await;
        let label = result.as_ref().err().map_or("ok", OAuthError::label);
        self.stats.requests.with_label_values(&[label]).inc();
        let tokens = result?;
        tracing::info!(
            account,
            grant = ?resolved.grant,
            ms = started.elapsed().as_millis() as u64,
            expires_in = tokens.expires_in.map(|d| d.as_secs()),
            rotated = tokens.refresh_token.is_some() && tokens.refresh_token != refresh,
            "oauth: access token obtained"
        );
        if let Some(new) = &tokens.refresh_token {
            if Some(new) != refresh.as_ref() {
                // A rotated refresh token: the old one may already be dead. Stored before the
                // access token is used.
                match self.store.put_refresh_token(account, new).await {
                    Ok(()) => flight.unsaved_refresh = None,
                    Err(e) => {
                        tracing::error!(account, error = %e, "oauth: rotated refresh token not stored; kept in memory");
                        flight.unsaved_refresh = Some(new.clone());
                    }
                }
            }
        }
        let margin = Duration::from_secs(self.config.refresh_margin_secs);
        Ok(Cached::new(tokens.access_token, tokens.expires_in, margin))
    }

    /// [`Self::request`] across replicas: the lock holder requests, the others read its result.
    async fn shared_request(
        &self,
        redis: &RedisStore,
        account: &str,
        resolved: &Resolved,
        flight: &mut Flight,
        deadline: Instant,
    ) -> Result<Cached, OAuthError> {
        let lease = Duration::from_millis(self.config.lock_lease_ms);
        let failure_ttl = Duration::from_secs(self.config.failure_cache_secs);
        loop {
            if let Some(shared) = redis.access_token(account).await? {
                return Ok(Cached::from_shared(shared));
            }
            if let Some((label, reason)) = redis.failure(account).await? {
                return Err(from_label(&label, reason));
            }
            if redis.try_lock(account, &self.owner, lease).await? {
                let result = async {
                    // Another replica may have finished between the look and the lock.
                    if let Some(shared) = redis.access_token(account).await? {
                        return Ok(Cached::from_shared(shared));
                    }
                    let result = self.request(account, resolved, flight).await;
                    match &result {
                        Ok(c) => {
                            let shared = SharedToken {
                                token: c.token.clone(),
                                usable_until_ms: c.until_ms,
                            };
                            if let Err(e) = redis.put_access_token(account, &shared).await {
                                tracing::warn!(account, error = %e, "oauth: token not shared");
                            }
                        }
                        Err(e) => {
                            let reason = e.to_string();
                            let _ = redis
                                .put_failure(account, e.label(), &reason, failure_ttl)
                                .await;
                        }
                    }
                    result
                }
                .await;
                if let Err(e) = redis.unlock(account, &self.owner).await {
                    tracing::warn!(account, error = %e, "oauth: refresh lock not released (it expires)");
                }
                return result;
            }
            if Instant::now() + SHARED_POLL >= deadline {
                return Err(OAuthError::Unavailable(
                    "another replica's token request did not finish in time".into(),
                ));
            }
            crate::timer::sleep(SHARED_POLL).await;
        }
    }
}

/// The error another replica recorded under `label`.
fn from_label(label: &str, reason: String) -> OAuthError {
    match label {
        "invalid_grant" => OAuthError::InvalidGrant(reason),
        "not_enrolled" => OAuthError::NotEnrolled,
        "refused" => OAuthError::Refused(reason),
        "store" => OAuthError::Store(reason),
        _ => OAuthError::Unavailable(reason),
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
