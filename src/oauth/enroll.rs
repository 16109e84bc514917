//! `imapgate oauth enroll ACCOUNT`: the first refresh token of an account, by the device
//! authorization grant (RFC 8628). The proxy asks for a device code, a person opens the
//! verification URI (on any device), types the user code and signs in; meanwhile the proxy polls
//! the token endpoint and stores the refresh token it finally gets. Also `import` (a refresh
//! token obtained elsewhere, from stdin).

use std::time::Duration;

use super::config::{GrantKind, OAuthConfig};
use super::error::OAuthError;
use super::store::Store;
use super::token::{DeviceAuthorization, DevicePoll};
use crate::secret::Secret;

/// Enrolment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The account is not configured, or not for the refresh-token grant.
    #[error("{0}")]
    Account(String),
    /// No `oauth.device_authorization_endpoint`.
    #[error("oauth.device_authorization_endpoint is not configured")]
    NoDeviceEndpoint,
    /// The person denied, or the code expired.
    #[error("not approved: {0}")]
    NotApproved(String),
    /// The server issued no refresh token (ask for `offline_access`, or the provider's
    /// equivalent, in `oauth.scope`).
    #[error("the authorization server issued no refresh token (is offline_access in the scope?)")]
    NoRefreshToken,
    /// A request or the store failed.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

/// Runs the device flow for `account` and stores the refresh token. `show` is told the codes
/// once (to print them); `min_interval` replaces the RFC's 5 s default poll interval when the
/// server names none.
pub async fn enroll(
    config: &OAuthConfig,
    account: &str,
    min_interval: Option<Duration>,
    show: impl FnOnce(&DeviceAuthorization),
) -> Result<(), EnrollError> {
    let resolved = check_account(config, account)?;
    let endpoint = config
        .device_authorization_endpoint
        .as_deref()
        .ok_or(EnrollError::NoDeviceEndpoint)?;
    let client = super::token_client(config)?;
    let store = Store::open(config)?;
    let device = client.device_authorize(endpoint, &resolved).await?;
    show(&device);
    let mut interval = match device.interval {
        Some(secs) => Duration::from_secs(secs),
        None => min_interval.unwrap_or(Duration::from_secs(5)),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(device.expires_in.max(1));
    loop {
        if std::time::Instant::now() + interval > deadline {
            return Err(EnrollError::NotApproved("the code expired".into()));
        }
        crate::timer::sleep(interval).await;
        match client.device_poll(&resolved, &device.device_code).await {
            Ok(DevicePoll::Pending) => {}
            Ok(DevicePoll::SlowDown) => interval += Duration::from_secs(5),
            Ok(DevicePoll::Failed(why)) => return Err(EnrollError::NotApproved(why)),
            Ok(DevicePoll::Done(tokens)) => {
                let refresh = tokens.refresh_token.ok_or(EnrollError::NoRefreshToken)?;
                return store_token(&store, account, &refresh).await;
            }
            // A transient failure while polling: keep polling until the code expires.
            Err(OAuthError::Unavailable(why)) => {
                tracing::warn!(error = %why, "polling the token endpoint failed; retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Stores a refresh token obtained elsewhere for `account`.
pub async fn import(
    config: &OAuthConfig,
    account: &str,
    refresh: &Secret,
) -> Result<(), EnrollError> {
    check_account(config, account)?;
    if refresh.is_empty() {
        return Err(EnrollError::Account("empty refresh token".into()));
    }
    let store = Store::open(config)?;
    store_token(&store, account, refresh).await
}

fn check_account(
    config: &OAuthConfig,
    account: &str,
) -> Result<super::config::Resolved, EnrollError> {
    let resolved = config
        .resolve(account)
        .ok_or_else(|| EnrollError::Account(format!("no [oauth.accounts.{account}]")))?;
    if resolved.grant != GrantKind::RefreshToken {
        return Err(EnrollError::Account(format!(
            "account {account:?} uses the client-credentials grant: nothing to enroll"
        )));
    }
    Ok(resolved)
}

async fn store_token(store: &Store, account: &str, refresh: &Secret) -> Result<(), EnrollError> {
    store.put_refresh_token(account, refresh).await?;
    if let Some(redis) = store.shared() {
        // A new grant: forget a recorded failure and the old grant's access token.
        redis.clear_failure(account).await?;
        redis.drop_access_token(account).await?;
    }
    Ok(())
}
