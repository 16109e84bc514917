//! The encrypted token file: `IMAPGATE-TOKENS-1\n` then one sealed JSON document
//! (`{"accounts": {"NAME": {"refresh_token": "...", "updated_ms": N}}}`). Read whenever a refresh
//! token is needed (rare), so `imapgate oauth enroll` can add an account while the proxy runs.
//! Writes are read-modify-write under an exclusive `flock` on `FILE.lock`, through a temporary
//! file that is synced and renamed over the old one: a crash leaves the old file or the new one,
//! never half of either. Files are created owner-only (0600).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Sealer;
use crate::oauth::error::OAuthError;
use crate::secret::Secret;

/// The first bytes of a token file (also its associated data).
const MAGIC: &[u8] = b"IMAPGATE-TOKENS-1\n";

#[derive(Default, Serialize, Deserialize)]
struct Document {
    accounts: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    refresh_token: String,
    updated_ms: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.refresh_token);
    }
}

/// The token file.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    sealer: Sealer,
}

impl FileStore {
    /// The store at `path` (created on the first write).
    pub fn new(path: PathBuf, sealer: Sealer) -> FileStore {
        FileStore {
            inner: Arc::new(Inner { path, sealer }),
        }
    }

    /// The stored refresh token of `account`.
    pub async fn refresh_token(&self, account: &str) -> Result<Option<Secret>, OAuthError> {
        let inner = self.inner.clone();
        let account = account.to_string();
        blocking(move || {
            let doc = inner.read()?;
            Ok(doc
                .accounts
                .get(&account)
                .map(|e| Secret::new(e.refresh_token.as_bytes().to_vec())))
        })
        .await
    }

    /// Stores `account`'s refresh token.
    pub async fn put_refresh_token(&self, account: &str, token: &Secret) -> Result<(), OAuthError> {
        let inner = self.inner.clone();
        let account = account.to_string();
        let token = token.clone();
        blocking(move || inner.update(&account, &token)).await
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OAuthError> + Send + 'static,
) -> Result<T, OAuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OAuthError::Store(format!("store task: {e}")))?
}

impl Inner {
    fn fail(&self, what: &str, e: impl std::fmt::Display) -> OAuthError {
        OAuthError::Store(format!("{what} {}: {e}", self.path.display()))
    }

    /// The document (empty when there is no file yet).
    fn read(&self) -> Result<Document, OAuthError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Document::default()),
            Err(e) => return Err(self.fail("reading", e)),
        };
        let sealed = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| self.fail("reading", "not an imapgate token file"))?;
        let plain = self
            .sealer
            .open(MAGIC, sealed)
            .map_err(|e| self.fail("opening", e))?;
        serde_json::from_slice(&plain).map_err(|e| self.fail("parsing", e))
    }

    /// Sets one account's token, under the lock, atomically.
    fn update(&self, account: &str, token: &Secret) -> Result<(), OAuthError> {
        let token = std::str::from_utf8(token.expose())
            .map_err(|_| OAuthError::Store("refresh token is not text".into()))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.fail("creating the directory of", e))?;
        }
        let lock_path = with_suffix(&self.path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| self.fail("locking", e))?;
        flock(&lock).map_err(|e| self.fail("locking", e))?;
        let mut doc = self.read()?;
        doc.accounts.insert(
            account.to_string(),
            Entry {
                refresh_token: token.to_string(),
                updated_ms: super::now_ms(),
            },
        );
        let plain = Zeroizing::new(serde_json::to_vec(&doc).map_err(|e| self.fail("writing", e))?);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.sealer.seal(MAGIC, &plain));
        let tmp = with_suffix(&self.path, ".tmp");
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.fail("writing", e))?;
        f.write_all(&out)
            .and_then(|()| f.sync_all())
            .map_err(|e| self.fail("writing", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.fail("replacing", e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // The lock goes with the file handle.
        drop(lock);
        Ok(())
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn flock(f: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_owner_only_and_tamper_detection() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let store = FileStore::new(path.clone(), Sealer::new(&[3; 32]));
        assert!(store.refresh_token("alice").await.unwrap().is_none());
        store
            .put_refresh_token("alice", &Secret::new(b"rt-alice-1".to_vec()))
            .await
            .unwrap();
        store
            .put_refresh_token("bob", &Secret::new(b"rt-bob".to_vec()))
            .await
            .unwrap();
        store
            .put_refresh_token("alice", &Secret::new(b"rt-alice-2".to_vec()))
            .await
            .unwrap();
        let got = store.refresh_token("alice").await.unwrap().unwrap();
        assert_eq!(got.expose(), b"rt-alice-2");
        assert_eq!(
            store.refresh_token("bob").await.unwrap().unwrap().expose(),
            b"rt-bob"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"rt-bob"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // Another key cannot read it; a flipped byte is detected.
        let other = FileStore::new(path.clone(), Sealer::new(&[4; 32]));
        assert!(other.refresh_token("alice").await.is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(store.refresh_token("alice").await.is_err());
    }
}
