//! The login path's OAuth injection: a login rewritten to [`Credentials::OAuth`] gets an access
//! token from the token service (cached, or obtained once for everyone waiting), and the
//! upstream login is XOAUTH2 or OAUTHBEARER (the upstream's `oauth_mechanism`) with it. A token
//! the upstream refuses that came from the cache (revoked since) is dropped and the login tried
//! once more with a new one. Failures never lead to a password upstream: the token endpoint down
//! or slow is `NO [UNAVAILABLE]`, a revoked grant `NO [AUTHENTICATIONFAILED]` with a log line
//! naming the account.
//!
//! [`Credentials::OAuth`]: crate::session::credentials::Credentials::OAuth

use std::sync::Arc;

use super::Preauth;
use crate::config::split_host_port;
use crate::error::SessionError;
use crate::oauth::{AccessToken, OAuthError, TokenService};
use crate::phases::LoginResult;
use crate::proto::response::Status;
use crate::upstream::{Reply, Upstream};
use crate::upstreams::NamedUpstream;

impl Preauth<'_> {
    /// An access token for `account`, or the tagged answer's text (after the tag) and the
    /// login result when there is none.
    pub(super) async fn oauth_token(
        &mut self,
        account: &str,
    ) -> Result<AccessToken, (String, LoginResult)> {
        let Some(service) = self.ctx.oauth.as_ref() else {
            tracing::error!(
                account,
                "oauth: login rewritten to an OAuth account, but [oauth] is not configured"
            );
            return Err((
                "NO [UNAVAILABLE] Internal error.".into(),
                LoginResult::Error,
            ));
        };
        match token_of(service, account).await {
            Ok(token) => Ok(token),
            Err(e) => Err(answer(account, &e)),
        }
    }

    /// Logs in at `up` as `user` with `token`, retrying once with a new token when a cached one
    /// is refused.
    pub(super) async fn oauth_login(
        &mut self,
        up: &mut Upstream,
        target: &NamedUpstream,
        user: &[u8],
        account: &str,
        token: AccessToken,
    ) -> Result<Reply, SessionError> {
        let mechanism = target.config.oauth_mechanism;
        let (host, port) = split_host_port(&target.config.address).unwrap_or(("", 0));
        let host = target.config.server_name.as_deref().unwrap_or(host);
        let message =
            crate::oauth::sasl::message(mechanism, user, token.token.expose(), host, port);
        let verdict = up.login_token(mechanism, &message).await?;
        drop(message);
        if verdict.status == Status::Ok || !token.cached {
            return Ok(verdict);
        }
        let Some(service) = self.ctx.oauth.as_ref() else {
            return Ok(verdict);
        };
        tracing::info!(
            account,
            "oauth: cached token refused upstream; getting a new one"
        );
        let (stale, svc, acct) = (token.token.clone(), service.clone(), account.to_owned());
        crate::timer::offload(async move { svc.invalidate(&acct, &stale).await }).await;
        let fresh = match token_of(service, account).await {
            Ok(fresh) => fresh,
            Err(e) => {
                // A revoked grant shows here first: the cached token dies with it.
                let (text, _) = answer(account, &e);
                return Ok(Reply {
                    status: Status::No,
                    line: format!("ig {text}\r\n").into_bytes(),
                    untagged: Vec::new(),
                });
            }
        };
        let message =
            crate::oauth::sasl::message(mechanism, user, fresh.token.expose(), host, port);
        up.login_token(mechanism, &message).await
    }
}

/// An access token for `account` from `service`, worked out on the main runtime: the service's
/// HTTP client and Redis store arm tokio timers, which a session thread has none of
/// (src/timer.rs).
async fn token_of(service: &Arc<TokenService>, account: &str) -> Result<AccessToken, OAuthError> {
    let (service, account) = (service.clone(), account.to_owned());
    crate::timer::offload(async move { service.token(&account).await }).await
}

/// The client's answer (after the tag) and the login result for a token failure, logged with
/// the account's name.
fn answer(account: &str, e: &OAuthError) -> (String, LoginResult) {
    let (code, text) = e.answer();
    let result = match e {
        OAuthError::InvalidGrant(_) | OAuthError::NotEnrolled => {
            tracing::warn!(
                account,
                error = %e,
                "oauth: grant not usable for account {account}; enroll it again (imapgate oauth enroll {account})"
            );
            LoginResult::Refused
        }
        _ => {
            tracing::warn!(account, cause = e.label(), error = %e, "oauth: no access token");
            LoginResult::Error
        }
    };
    (format!("NO [{code}] {text}"), result)
}
