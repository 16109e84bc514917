//! Where tokens are kept: an encrypted local file ([`file`], the default, one replica) or Redis
//! ([`redis`], shared by replicas, with a refresh lock). Everything stored is sealed with
//! ChaCha20-Poly1305 (ring) under the configured 32-byte key, with the value's purpose and
//! account as associated data, so a value cannot be read without the key, altered without
//! detection, or moved to another account's slot. The key comes from the configuration or the
//! environment, or from a key file that must not sit beside the token file.

pub mod file;
pub mod redis;

use ring::aead::{CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::config::{OAuthConfig, StoreKind};
use super::error::OAuthError;
use crate::secret::Secret;

/// Store key length (ChaCha20-Poly1305).
pub const KEY_LEN: usize = 32;

/// Parses a base64 store key.
pub fn parse_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    use base64::Engine as _;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "not base64 (make one with `head -c 32 /dev/urandom | base64`)")?,
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(format!(
            "must be {KEY_LEN} bytes, base64 (got {})",
            bytes.len()
        ));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Base64 of a key (tests and tools).
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Seals and opens stored values.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// A sealer with `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Sealer {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key");
        Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// The key from the configuration: `oauth.key` (or its environment variable) or `key_file`.
    pub fn from_config(config: &OAuthConfig) -> Result<Sealer, OAuthError> {
        let text = match (&config.key, &config.key_file) {
            (Some(k), _) => Zeroizing::new(k.expose().to_string()),
            (None, Some(file)) => Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
                OAuthError::Store(format!("reading key file {}: {e}", file.display()))
            })?),
            (None, None) => return Err(OAuthError::Store("no store key configured".into())),
        };
        let key = parse_key(&text).map_err(OAuthError::Store)?;
        Ok(Sealer::new(&key))
    }

    /// `nonce || ciphertext || tag` of `plain`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .expect("sealing");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The plaintext of a sealed value; an error if it was altered, bound to another `aad` or
    /// sealed with another key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OAuthError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(OAuthError::Store("sealed value too short".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| OAuthError::Store("bad nonce".into()))?;
        let mut buf = Zeroizing::new(rest.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(aad), &mut buf)
            .map_err(|_| {
                OAuthError::Store("cannot decrypt (wrong key, or the data was altered)".into())
            })?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

/// An access token as shared between replicas.
#[derive(Debug, Clone)]
pub struct SharedToken {
    /// The token.
    pub token: Secret,
    /// Until when it may be used (Unix milliseconds), margin already taken off.
    pub usable_until_ms: u64,
}

/// The configured store.
pub enum Store {
    /// The encrypted file.
    File(file::FileStore),
    /// Redis (boxed: its client is large).
    Redis(Box<redis::RedisStore>),
}

impl Store {
    /// Opens the configured store (the file is read on demand; Redis is connected lazily).
    pub fn open(config: &OAuthConfig) -> Result<Store, OAuthError> {
        let sealer = Sealer::from_config(config)?;
        Ok(match config.store {
            StoreKind::File => Store::File(file::FileStore::new(config.store_file.clone(), sealer)),
            StoreKind::Redis => Store::Redis(Box::new(redis::RedisStore::new(config, sealer)?)),
        })
    }

    /// The stored refresh token of `account`.
    pub async fn refresh_token(&self, account: &str) -> Result<Option<Secret>, OAuthError> {
        match self {
            Store::File(f) => f.refresh_token(account).await,
            Store::Redis(r) => r.refresh_token(account).await,
        }
    }

    /// Stores `account`'s refresh token (a new one, or a rotated one as soon as it arrives).
    pub async fn put_refresh_token(&self, account: &str, token: &Secret) -> Result<(), OAuthError> {
        match self {
            Store::File(f) => f.put_refresh_token(account, token).await,
            Store::Redis(r) => r.put_refresh_token(account, token).await,
        }
    }

    /// The Redis store, when shared.
    pub fn shared(&self) -> Option<&redis::RedisStore> {
        match self {
            Store::File(_) => None,
            Store::Redis(r) => Some(r),
        }
    }
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let s = Sealer::new(&[9; KEY_LEN]);
        let sealed = s.seal(b"refresh|alice", b"secret-token");
        assert!(!sealed.windows(12).any(|w| w == b"secret-token"));
        assert_eq!(
            &s.open(b"refresh|alice", &sealed).unwrap()[..],
            b"secret-token"
        );
        // Another account's slot, a flipped bit, another key, a truncation: all refused.
        assert!(s.open(b"refresh|bob", &sealed).is_err());
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(s.open(b"refresh|alice", &bad).is_err(), "byte {i}");
        }
        assert!(
            Sealer::new(&[8; KEY_LEN])
                .open(b"refresh|alice", &sealed)
                .is_err()
        );
        assert!(s.open(b"refresh|alice", &sealed[..10]).is_err());
        // Fresh nonces: the same value seals differently every time.
        assert_ne!(sealed, s.seal(b"refresh|alice", b"secret-token"));
    }

    #[test]
    fn keys_parse() {
        let k = encode_key(&[1; KEY_LEN]);
        assert_eq!(*parse_key(&k).unwrap(), [1; KEY_LEN]);
        assert!(parse_key("c2hvcnQ=").is_err());
        assert!(parse_key("not base64!").is_err());
    }
}
