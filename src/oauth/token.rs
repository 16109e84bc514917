//! The token endpoint's requests (RFC 6749 §6 refresh, §4.4 client credentials; RFC 8628 device
//! authorization and polling) and how their answers map to [`OAuthError`].

use std::time::Duration;

use serde::Deserialize;

use super::config::{ClientAuth, GrantKind, Resolved};
use super::error::OAuthError;
use super::http::{HttpClient, HttpResponse};
use crate::secret::Secret;

/// The device-code grant's `grant_type`.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A successful token response.
#[derive(Debug)]
pub struct Tokens {
    /// The access token.
    pub access_token: Secret,
    /// Its lifetime as the server said (`expires_in`), if it did.
    pub expires_in: Option<Duration>,
    /// A refresh token, when the server issued one (a new one replaces the stored one: rotation).
    pub refresh_token: Option<Secret>,
}

/// A device authorization answer (RFC 8628 §3.2).
#[derive(Debug, Deserialize)]
pub struct DeviceAuthorization {
    /// The code the client polls with.
    pub device_code: String,
    /// The code the person types.
    pub user_code: String,
    /// Where the person goes (`verification_url` is Google's spelling).
    #[serde(alias = "verification_url")]
    pub verification_uri: String,
    /// The same with the code filled in, when offered.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds the codes live.
    pub expires_in: u64,
    /// Seconds between polls, when the server says.
    #[serde(default)]
    pub interval: Option<u64>,
}

/// One poll of a device code.
#[derive(Debug)]
pub enum DevicePoll {
    /// Not approved yet.
    Pending,
    /// Poll more slowly (add 5 s to the interval).
    SlowDown,
    /// Approved.
    Done(Tokens),
    /// Denied or expired: give up.
    Failed(String),
}

#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Talks to token endpoints.
#[derive(Clone)]
pub struct TokenClient {
    http: HttpClient,
    client_auth: ClientAuth,
}

impl TokenClient {
    /// A client sending client credentials the `client_auth` way.
    pub fn new(http: HttpClient, client_auth: ClientAuth) -> TokenClient {
        TokenClient { http, client_auth }
    }

    /// A new access token for `account`: the refresh-token grant with `refresh_token`, or the
    /// client-credentials grant.
    pub async fn fetch(
        &self,
        account: &Resolved,
        refresh_token: Option<&Secret>,
    ) -> Result<Tokens, OAuthError> {
        let mut form: Vec<(&str, &str)> = Vec::new();
        match account.grant {
            GrantKind::RefreshToken => {
                let rt = refresh_token.ok_or(OAuthError::NotEnrolled)?;
                let rt = std::str::from_utf8(rt.expose())
                    .map_err(|_| OAuthError::Store("refresh token is not text".into()))?;
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", rt));
            }
            GrantKind::ClientCredentials => form.push(("grant_type", "client_credentials")),
        }
        if !account.scope.is_empty() {
            form.push(("scope", &account.scope));
        }
        let response = self.post(&account.token_endpoint, account, form).await?;
        parse_tokens(&response)
    }

    /// Starts the device flow at `endpoint`.
    pub async fn device_authorize(
        &self,
        endpoint: &str,
        account: &Resolved,
    ) -> Result<DeviceAuthorization, OAuthError> {
        let mut form = vec![];
        if !account.scope.is_empty() {
            form.push(("scope", account.scope.as_str()));
        }
        let response = self.post(endpoint, account, form).await?;
        if response.status != 200 {
            return Err(error_of(&response));
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| OAuthError::Unavailable(format!("unreadable device authorization: {e}")))
    }

    /// Polls a device code once.
    pub async fn device_poll(
        &self,
        account: &Resolved,
        device_code: &str,
    ) -> Result<DevicePoll, OAuthError> {
        let form = vec![
            ("grant_type", DEVICE_CODE_GRANT),
            ("device_code", device_code),
        ];
        let response = self.post(&account.token_endpoint, account, form).await?;
        if response.status == 200 {
            return parse_tokens(&response).map(DevicePoll::Done);
        }
        match serde_json::from_slice::<RawError>(&response.body) {
            Ok(e) if e.error == "authorization_pending" => Ok(DevicePoll::Pending),
            Ok(e) if e.error == "slow_down" => Ok(DevicePoll::SlowDown),
            Ok(e) if e.error == "access_denied" || e.error == "expired_token" => {
                Ok(DevicePoll::Failed(describe(&e)))
            }
            _ => Err(error_of(&response)),
        }
    }

    /// Posts `form` with the account's client credentials.
    async fn post(
        &self,
        url: &str,
        account: &Resolved,
        mut form: Vec<(&str, &str)>,
    ) -> Result<HttpResponse, OAuthError> {
        let secret = account.client_secret.as_ref().map(|s| s.expose());
        let basic = match (self.client_auth, secret) {
            (ClientAuth::Basic, Some(secret)) => Some((account.client_id.as_str(), secret)),
            (ClientAuth::Post, Some(secret)) => {
                form.push(("client_id", &account.client_id));
                form.push(("client_secret", secret));
                None
            }
            (_, None) => {
                form.push(("client_id", &account.client_id));
                None
            }
        };
        self.http.post_form(url, basic, &form).await
    }
}

fn parse_tokens(response: &HttpResponse) -> Result<Tokens, OAuthError> {
    if response.status != 200 {
        return Err(error_of(response));
    }
    let raw: RawTokens = serde_json::from_slice(&response.body)
        .map_err(|e| OAuthError::Unavailable(format!("unreadable token response: {e}")))?;
    // Some servers send expires_in as a string.
    let expires_in = raw.expires_in.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    if raw.access_token.is_empty() {
        return Err(OAuthError::Unavailable("empty access token".into()));
    }
    Ok(Tokens {
        access_token: Secret::new(raw.access_token.into_bytes()),
        expires_in: expires_in.map(Duration::from_secs),
        refresh_token: raw
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(|t| Secret::new(t.into_bytes())),
    })
}

fn describe(e: &RawError) -> String {
    match &e.error_description {
        Some(d) => format!("{} ({})", e.error, d.chars().take(200).collect::<String>()),
        None => e.error.clone(),
    }
}

/// The error an unsuccessful answer stands for.
fn error_of(response: &HttpResponse) -> OAuthError {
    let status = response.status;
    match serde_json::from_slice::<RawError>(&response.body) {
        Ok(e) if (400..500).contains(&status) && e.error == "invalid_grant" => {
            OAuthError::InvalidGrant(describe(&e))
        }
        Ok(e) if (400..500).contains(&status) && status != 429 => {
            OAuthError::Refused(format!("HTTP {status}: {}", describe(&e)))
        }
        Ok(e) => OAuthError::Unavailable(format!("HTTP {status}: {}", describe(&e))),
        Err(_) => OAuthError::Unavailable(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            body: Zeroizing::new(body.as_bytes().to_vec()),
        }
    }

    #[test]
    fn maps_answers() {
        let t = parse_tokens(&response(
            200,
            r#"{"access_token":"at","expires_in":"3599","refresh_token":"rt","token_type":"Bearer"}"#,
        ))
        .unwrap();
        assert_eq!(t.access_token.expose(), b"at");
        assert_eq!(t.expires_in, Some(Duration::from_secs(3599)));
        assert_eq!(t.refresh_token.unwrap().expose(), b"rt");
        let e = |s, b| parse_tokens(&response(s, b)).unwrap_err();
        assert!(matches!(
            e(400, r#"{"error":"invalid_grant"}"#),
            OAuthError::InvalidGrant(_)
        ));
        assert!(matches!(
            e(401, r#"{"error":"invalid_client"}"#),
            OAuthError::Refused(_)
        ));
        assert!(matches!(e(503, "busy"), OAuthError::Unavailable(_)));
        assert!(matches!(
            e(429, r#"{"error":"slow"}"#),
            OAuthError::Unavailable(_)
        ));
        assert!(matches!(e(200, "{}"), OAuthError::Unavailable(_)));
    }
}
