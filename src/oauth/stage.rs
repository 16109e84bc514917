//! The built-in OAuth stage (no policy needed): a legacy client logs in with a local user name
//! and password from `[oauth.users.NAME]`; the password is checked against its Argon2id hash,
//! and the login is rewritten to [`Credentials::OAuth`] (the upstream user, the account whose
//! token logs it in, optionally another upstream). A wrong password is refused with
//! `AUTHENTICATIONFAILED` before anything reaches the upstream or the token store. User names
//! the stage does not know pass on unchanged (or are refused: `oauth.refuse_unknown_users`).

use std::collections::HashMap;
use std::sync::Arc;

use super::config::OAuthConfig;
use super::password::Verifier;
use crate::phases::{LoginDecision, LoginRequest, Phases, SessionInfo, Verdict};
use crate::session::credentials::Credentials;

/// One local user, ready for the login path.
struct User {
    hash: Arc<str>,
    account: String,
    upstream_user: Vec<u8>,
    upstream: Option<String>,
}

/// The stage.
pub struct OAuthStage {
    users: HashMap<Vec<u8>, User>,
    verifier: Arc<Verifier>,
    refuse_unknown: bool,
}

impl OAuthStage {
    /// The stage for `config.users` (validated).
    pub fn new(config: &OAuthConfig) -> OAuthStage {
        let users = config
            .users
            .iter()
            .map(|(name, u)| {
                let user = User {
                    hash: u.password_hash.as_str().into(),
                    account: u.account.clone(),
                    upstream_user: u
                        .upstream_user
                        .as_deref()
                        .unwrap_or(name)
                        .as_bytes()
                        .to_vec(),
                    upstream: u.upstream.clone(),
                };
                (name.as_bytes().to_vec(), user)
            })
            .collect();
        OAuthStage {
            users,
            verifier: Arc::new(Verifier::new(
                std::time::Duration::from_secs(config.verify_cache_secs),
                config.max_parallel_verifications,
            )),
            refuse_unknown: config.refuse_unknown_users,
        }
    }

    fn rewrite(user: &User) -> LoginDecision {
        LoginDecision::Rewrite {
            upstream: user.upstream.clone(),
            credentials: Some(Credentials::OAuth {
                user: user.upstream_user.clone(),
                account: user.account.clone(),
            }),
        }
    }
}

fn refuse() -> LoginDecision {
    LoginDecision::Refuse {
        code: Some("AUTHENTICATIONFAILED".into()),
        text: "Authentication failed.".into(),
    }
}

impl Phases for OAuthStage {
    fn name(&self) -> &'static str {
        "oauth"
    }

    fn on_login(&self, _session: &SessionInfo, login: &LoginRequest<'_>) -> Verdict<LoginDecision> {
        let Some(name) = login.user else {
            return Verdict::Now(LoginDecision::Continue);
        };
        let Some(user) = self.users.get(name) else {
            if self.refuse_unknown {
                return Verdict::Now(refuse());
            }
            return Verdict::Now(LoginDecision::Continue);
        };
        // A local user logs in with a password only: a client's own token is not theirs to
        // relay, and nothing else may reach the upstream under this name.
        let Some(password) = login.credentials.password() else {
            return Verdict::Now(refuse());
        };
        if self
            .verifier
            .remembered(name, password.expose(), &user.hash)
        {
            return Verdict::Now(Self::rewrite(user));
        }
        let (verifier, password, hash) =
            (self.verifier.clone(), password.clone(), user.hash.clone());
        let name = name.to_vec();
        let decision = Self::rewrite(user);
        Verdict::Wait(Box::pin(async move {
            if verifier.verify(&name, password, hash).await {
                decision
            } else {
                tracing::info!("oauth: wrong local password");
                refuse()
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::config::{AccountConfig, GrantKind, UserConfig};
    use crate::secret::Secret;
    use crate::session::ListenerKind;

    #[tokio::test]
    async fn checks_the_password_and_rewrites() {
        let mut config = OAuthConfig::default();
        config.accounts.insert(
            "acct".into(),
            AccountConfig {
                grant: GrantKind::RefreshToken,
                token_endpoint: None,
                client_id: None,
                client_secret: None,
                scope: None,
            },
        );
        config.users.insert(
            "alice".into(),
            UserConfig {
                password_hash: crate::oauth::password::hash(b"pw").unwrap(),
                account: "acct".into(),
                upstream_user: Some("alice@example.com".into()),
                upstream: None,
            },
        );
        let stage = OAuthStage::new(&config);
        let info = SessionInfo::new(1, "127.0.0.1:1".parse().unwrap(), ListenerKind::Tls);
        let ask = |user: &'static [u8], pw: Option<&'static [u8]>| {
            let credentials = match pw {
                Some(p) => Credentials::Password {
                    authzid: Vec::new(),
                    user: user.to_vec(),
                    password: Secret::new(p.to_vec()),
                    login_command: true,
                },
                None => Credentials::Token {
                    mechanism: crate::session::credentials::TokenMechanism::Xoauth2,
                    user: Some(user.to_vec()),
                    message: Secret::new(Vec::new()),
                },
            };
            let request = LoginRequest {
                user: Some(user),
                mechanism: "LOGIN",
                upstream: "default",
                credentials: &credentials,
            };
            stage.on_login(&info, &request)
        };
        let resolve = |v: Verdict<LoginDecision>| async move {
            match v {
                Verdict::Now(d) => (d, true),
                Verdict::Wait(p) => (p.await, false),
            }
        };
        let (d, now) = resolve(ask(b"alice", Some(b"wrong"))).await;
        assert!(matches!(d, LoginDecision::Refuse { .. }) && !now);
        let (d, now) = resolve(ask(b"alice", Some(b"pw"))).await;
        let LoginDecision::Rewrite {
            credentials: Some(Credentials::OAuth { user, account }),
            ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(
            (user.as_slice(), account.as_str(), now),
            (&b"alice@example.com"[..], "acct", false)
        );
        // Warm: decided at once, without Argon2.
        let (d, now) = resolve(ask(b"alice", Some(b"pw"))).await;
        assert!(matches!(d, LoginDecision::Rewrite { .. }) && now);
        // A token login for a local user, and strangers.
        let (d, _) = resolve(ask(b"alice", None)).await;
        assert!(matches!(d, LoginDecision::Refuse { .. }));
        let (d, _) = resolve(ask(b"mallory", Some(b"pw"))).await;
        assert!(matches!(d, LoginDecision::Continue));
        config.refuse_unknown_users = true;
        let strict = OAuthStage::new(&config);
        let stranger = Credentials::Token {
            mechanism: crate::session::credentials::TokenMechanism::Xoauth2,
            user: Some(b"mallory".to_vec()),
            message: Secret::new(Vec::new()),
        };
        let request = LoginRequest {
            user: Some(b"mallory"),
            mechanism: "LOGIN",
            upstream: "default",
            credentials: &stranger,
        };
        let Verdict::Now(d) = strict.on_login(&info, &request) else {
            panic!("decided at once")
        };
        assert!(matches!(d, LoginDecision::Refuse { .. }));
    }
}
