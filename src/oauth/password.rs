//! Local passwords: Argon2id PHC strings (`imapgate hash-password`), checked off the async
//! workers (`spawn_blocking`, at most `oauth.max_parallel_verifications` at once, since each
//! costs tens of milliseconds and ~19 MiB by design).
//!
//! A successful check is remembered for `oauth.verify_cache_secs` in memory, keyed by the user,
//! the hash it matched and HMAC-SHA256 of the password under a key drawn at start-up (never
//! stored, never the same in two processes): a warm login costs one HMAC, and the cache holds
//! nothing that would let anyone test password guesses offline. Failures are not cached (each
//! wrong guess pays the full cost, and the proxy's login penalties apply).

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::hmac;
use ring::rand::SystemRandom;
use tokio::sync::Semaphore;

use crate::secret::Secret;

/// Argon2id parameters of new hashes: RFC 9106's second recommendation scaled to OWASP's
/// minimum (m = 19 MiB, t = 2, p = 1): ~20–40 ms per check on a server core.
pub fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters")
}

/// The PHC string of `password` with a fresh random salt.
pub fn hash(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes)
        .map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&bytes)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
    Ok(argon.hash_password(password, &salt)?.to_string())
}

/// Whether `password` matches `phc` (parameters come from the string).
pub fn verify_now(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

type Key = (Vec<u8>, [u8; 32]);

/// Checks local passwords, remembering successes briefly.
pub struct Verifier {
    cache: Option<moka::sync::Cache<Key, Arc<str>>>,
    mac: hmac::Key,
    permits: Arc<Semaphore>,
}

impl Verifier {
    /// A verifier remembering successes for `ttl` (none: never) and running at most `parallel`
    /// checks at once (0: one per core).
    pub fn new(ttl: Duration, parallel: usize) -> Verifier {
        let parallel = if parallel == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            parallel
        };
        Verifier {
            cache: (!ttl.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build()
            }),
            mac: hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
                .expect("system randomness"),
            permits: Arc::new(Semaphore::new(parallel)),
        }
    }

    fn key(&self, user: &[u8], password: &[u8]) -> Key {
        let tag = hmac::sign(&self.mac, password);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(tag.as_ref());
        (user.to_vec(), digest)
    }

    /// Whether `user` recently logged in with this password against this hash (no Argon2).
    pub fn remembered(&self, user: &[u8], password: &[u8], phc: &str) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        cache
            .get(&self.key(user, password))
            .is_some_and(|h| &*h == phc)
    }

    /// Checks `password` against `phc` on a blocking thread; remembers a success.
    pub async fn verify(self: &Arc<Self>, user: &[u8], password: Secret, phc: Arc<str>) -> bool {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        // Checked again: a login with the same password may have finished while this one
        // waited for a permit (many sessions of one user arriving at once).
        if self.remembered(user, password.expose(), &phc) {
            return true;
        }
        let key = self.key(user, password.expose());
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let ok = verify_now(password.expose(), &phc);
            if ok {
                if let Some(cache) = &this.cache {
                    cache.insert(key, phc);
                }
            }
            ok
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_successes_are_remembered() {
        let phc = hash(b"local pw").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_now(b"local pw", &phc));
        assert!(!verify_now(b"local pw!", &phc));
        assert!(!verify_now(b"local pw", "garbage"));

        let v = Arc::new(Verifier::new(Duration::from_secs(60), 0));
        let phc: Arc<str> = phc.into();
        assert!(!v.remembered(b"alice", b"local pw", &phc));
        assert!(
            !v.verify(b"alice", Secret::new(b"wrong".to_vec()), phc.clone())
                .await
        );
        assert!(!v.remembered(b"alice", b"wrong", &phc));
        assert!(
            v.verify(b"alice", Secret::new(b"local pw".to_vec()), phc.clone())
                .await
        );
        assert!(v.remembered(b"alice", b"local pw", &phc));
        // Another user, another password, or a changed hash: not remembered.
        assert!(!v.remembered(b"bob", b"local pw", &phc));
        assert!(!v.remembered(b"alice", b"local pw2", &phc));
        assert!(!v.remembered(b"alice", b"local pw", "$argon2id$other"));

        let off = Arc::new(Verifier::new(Duration::ZERO, 1));
        assert!(
            off.verify(b"alice", Secret::new(b"local pw".to_vec()), phc.clone())
                .await
        );
        assert!(!off.remembered(b"alice", b"local pw", &phc));
    }
}
