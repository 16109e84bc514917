//! The login itself, after the client's credentials are known: the brute-force check (wait out
//! the client's penalty, refuse without contacting the upstream when it has too many failures on
//! record), the stages' `on_login` (routing, rewriting, refusing), the upstream connect and login,
//! and the records the outcome leaves (a failure for the address and the user, or a success that
//! clears the user's).

use std::sync::Arc;
use std::time::Instant;

use super::{Preauth, Step, reply};
use crate::error::SessionError;
use crate::guard::PenaltyAnswer;
use crate::phases::{Event, LoginDecision, LoginRequest, LoginResult, Verdict};
use crate::proto::args::IdField;
use crate::proto::encode::{Encoded, quoted};
use crate::proto::response::{Status, after_tag, filter_capability_line, filter_capability_list};
use crate::session::credentials::Credentials;
use crate::session::printable;
use crate::session::wire::Wire;

impl Preauth<'_> {
    /// Counts a failed login: for this connection (`auth.max_failures`), and for the client's
    /// address and the user name across connections (the penalties).
    pub(super) fn record_failure(&mut self, user: Option<&[u8]>) {
        self.failures += 1;
        let config = &self.ctx.config.auth_penalty;
        self.ctx
            .guard
            .penalties
            .failed(config, self.client, user, Instant::now());
    }

    /// Waits out the client's penalty; refuses the login (answered, `Some(step)`) when the
    /// address or the user has too many failures on record. Nothing reaches the upstream then.
    async fn penalty(
        &mut self,
        tag: &[u8],
        user: Option<&[u8]>,
        client: &mut Wire,
    ) -> Result<Option<Step>, SessionError> {
        let ctx = self.ctx;
        let config = &ctx.config.auth_penalty;
        let admission = ctx.guard.penalties.admit(
            config,
            self.client,
            user.unwrap_or_default(),
            Instant::now(),
        );
        if !admission.wait.is_zero() {
            tracing::info!(
                wait_ms = admission.wait.as_millis() as u64,
                refuse = admission.refuse,
                user = %printable(user.unwrap_or_default()),
                "login delayed: failures on record"
            );
            let until = std::time::Instant::now() + admission.wait;
            client.hold_until(until, super::MAX_PREAUTH_MESSAGE).await?;
        }
        let refuse = admission.refuse
            || ctx.guard.penalties.over_threshold(
                config,
                self.client,
                user.unwrap_or_default(),
                Instant::now(),
            );
        if !refuse {
            return Ok(None);
        }
        ctx.stages.observe(&Event::LimitRejected {
            kind: "auth_penalty",
        });
        // The address keeps its count up while it keeps trying; the user's is left alone.
        self.failures += 1;
        ctx.guard
            .penalties
            .failed(config, self.client, None, Instant::now());
        let text = match config.refuse_with {
            PenaltyAnswer::Authenticationfailed => {
                "NO [AUTHENTICATIONFAILED] Authentication failed."
            }
            PenaltyAnswer::Unavailable => {
                "NO [UNAVAILABLE] Too many failed logins; try again later."
            }
        };
        tracing::info!(user = %printable(user.unwrap_or_default()), "login refused: too many failures on record");
        reply(client, Some(tag), text).await?;
        Ok(Some(self.after_failure(client).await?))
    }

    /// Closes the connection once `auth.max_failures` logins have failed.
    pub(super) async fn after_failure(&mut self, client: &mut Wire) -> Result<Step, SessionError> {
        if self.failures >= self.ctx.config.auth.max_failures {
            self.ctx.stages.observe(&Event::LimitRejected {
                kind: "auth_failures",
            });
            client
                .send(b"* BYE Too many authentication failures.\r\n")
                .await?;
            return Ok(Step::Close);
        }
        Ok(Step::Continue)
    }

    /// Asks the stages, connects to the chosen upstream and logs in there; relays the verdict
    /// to the client.
    pub(super) async fn login(
        &mut self,
        tag: &[u8],
        mechanism: &'static str,
        creds: Credentials,
        client: &mut Wire,
    ) -> Result<Step, SessionError> {
        let user = creds.user().map(<[u8]>::to_vec);
        let mut routed = None;
        let result = self
            .try_login(tag, mechanism, creds, client, &mut routed)
            .await;
        let outcome = match &result {
            Ok((_, outcome)) => *outcome,
            Err(_) => LoginResult::Error,
        };
        self.ctx.stages.observe(&Event::Login {
            info: self.info,
            user: user.as_deref(),
            upstream: routed.as_deref(),
            mechanism,
            result: outcome,
        });
        result.map(|(step, _)| step)
    }

    async fn try_login(
        &mut self,
        tag: &[u8],
        mechanism: &'static str,
        mut creds: Credentials,
        client: &mut Wire,
        routed: &mut Option<Arc<str>>,
    ) -> Result<(Step, LoginResult), SessionError> {
        let ctx = self.ctx;
        // The name the client logged in with: penalties count it, whatever a stage rewrites.
        let client_user: Option<Vec<u8>> = creds.user().map(<[u8]>::to_vec);
        if has_nul(&creds) {
            // Never valid, and a classic way to confuse the next parser: not sent anywhere.
            self.record_failure(client_user.as_deref());
            reply(
                client,
                Some(tag),
                "NO [AUTHENTICATIONFAILED] Authentication failed.",
            )
            .await?;
            let step = self.after_failure(client).await?;
            return Ok((step, LoginResult::Invalid));
        }
        if let Some(refused) = self.penalty(tag, client_user.as_deref(), client).await? {
            return Ok((refused, LoginResult::Denied));
        }
        let mut target = ctx.upstreams.default_upstream().clone();
        let request = LoginRequest {
            user: creds.user(),
            mechanism,
            upstream: &target.name,
            credentials: &creds,
        };
        let decision = match ctx.stages.on_login(self.info, &request) {
            Verdict::Now(d) => d,
            Verdict::Wait(pending) => pending.await,
        };
        match decision {
            LoginDecision::Continue => {}
            LoginDecision::Refuse { code, text } => {
                self.record_failure(client_user.as_deref());
                let code = code.map(|c| format!("[{c}] ")).unwrap_or_default();
                reply(client, Some(tag), &format!("NO {code}{text}")).await?;
                let step = self.after_failure(client).await?;
                return Ok((step, LoginResult::Denied));
            }
            LoginDecision::Rewrite {
                upstream,
                credentials,
            } => {
                if let Some(name) = upstream {
                    let Some(named) = ctx.upstreams.get(&name) else {
                        tracing::error!(upstream = %printable(name.as_bytes()), "login routed to an unknown upstream");
                        reply(client, Some(tag), "NO [UNAVAILABLE] Internal error.").await?;
                        return Ok((Step::Continue, LoginResult::Error));
                    };
                    target = named.clone();
                }
                if let Some(credentials) = credentials {
                    creds = credentials;
                }
            }
        }
        *routed = Some(target.name.clone());
        // OAuth injection: the access token first (no upstream connection for nothing when the
        // token endpoint is down or the grant revoked).
        let token = match &creds {
            Credentials::OAuth { account, .. } => match self.oauth_token(account).await {
                Ok(token) => Some(token),
                Err((text, result)) => {
                    reply(client, Some(tag), &text).await?;
                    return Ok((Step::Continue, result));
                }
            },
            _ => None,
        };
        let mut up = ctx.connect_upstream(&target).await?;
        let upstream_cfg = &target.config;
        if upstream_cfg.forward_client_address && up.has(b"ID") {
            // Dovecot (with the proxy in login_trusted_networks) then logs and rate-limits the
            // client's own address instead of the proxy's (RFC 2971 ID, Dovecot's x- fields).
            let id = format!(
                "ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\")\r\n",
                self.info.peer.ip().to_canonical(),
                self.info.peer.port()
            );
            let _ = up.command(id.as_bytes()).await?;
        }
        let verdict = match (&creds, token) {
            (Credentials::OAuth { user, account }, Some(token)) => {
                self.oauth_login(&mut up, &target, user, account, token)
                    .await?
            }
            _ => up.login(&creds, client).await?,
        };
        // Whose mailbox the upstream opened: the authorization identity when there is one (a
        // master user logs in as `authzid`), else the login name.
        let creds_user = match &creds {
            Credentials::Password { authzid, .. } if !authzid.is_empty() => Some(authzid.clone()),
            _ => creds.user().map(<[u8]>::to_vec),
        };
        drop(creds);
        if verdict.status != Status::Ok {
            self.record_failure(client_user.as_deref());
            tracing::info!(
                failures = self.failures,
                user = %printable(client_user.as_deref().unwrap_or_default()),
                upstream = %target.name,
                "upstream refused login"
            );
            let rest = after_tag(&verdict.line);
            client.send(&[tag, b" ", rest, b"\r\n"].concat()).await?;
            let step = self.after_failure(client).await?;
            return Ok((step, LoginResult::Refused));
        }
        up.learn_capabilities(&verdict.line).await?;
        if let Some(fields) = self.id.take().filter(|_| up.has(b"ID")) {
            // The client's identification, as it would have reached a direct server.
            let _ = up.command(&id_command(&fields)).await?;
        }
        let rest = after_tag(&verdict.line);
        let text = rest.get(3..).unwrap_or_default();
        let mut line = [tag, b" "].concat();
        if text.starts_with(b"[") {
            line.extend_from_slice(rest);
        } else {
            line.extend_from_slice(b"OK [CAPABILITY ");
            line.extend_from_slice(&filter_capability_list(&up.caps));
            line.extend_from_slice(b"] ");
            line.extend_from_slice(text);
        }
        line.extend_from_slice(b"\r\n");
        // The name the client used; the upstream's, when a stage rewrote it, beside it.
        self.info.upstream_user = creds_user
            .filter(|u| Some(u) != client_user.as_ref())
            .map(Arc::from);
        self.info.user = client_user.clone().map(Arc::from);
        self.info.upstream = Some(target.name.clone());
        let line = filter_capability_line(&line).unwrap_or(line);
        let line = ctx.stages.capability_line(self.info, &line).unwrap_or(line);
        // Counted as logged in before the client can know it is.
        self.ticket.logged_in();
        client.send(&line).await?;
        if let Some(user) = &client_user {
            ctx.guard.penalties.succeeded(user);
        }
        // Recorded once, on success: a span field recorded on every attempt would pile up.
        let span = tracing::Span::current();
        if let Some(user) = &client_user {
            span.record("user", tracing::field::display(printable(user)));
        }
        span.record("upstream", tracing::field::display(&target.name));
        tracing::info!("logged in");
        Ok((Step::LoggedIn(up), LoginResult::Ok))
    }
}

/// Whether a user name or password holds a NUL (no IMAP server has such a user).
fn has_nul(creds: &Credentials) -> bool {
    match creds {
        Credentials::Password {
            authzid,
            user,
            password,
            ..
        } => [&authzid[..], &user[..], password.expose()]
            .iter()
            .any(|b| b.contains(&0)),
        Credentials::Token { user, .. } => user.as_ref().is_some_and(|u| u.contains(&0)),
        Credentials::OAuth { user, .. } => user.contains(&0),
    }
}

/// `ID (...)` with the client's fields; fields that cannot be quoted are left out.
pub(super) fn id_command(fields: &[IdField]) -> Vec<u8> {
    let mut out = b"ID (".to_vec();
    let mut first = true;
    for (key, value) in fields {
        let Encoded::Quoted(k) = quoted(key) else {
            continue;
        };
        let v = match value.as_deref().map(quoted) {
            None => b"NIL".to_vec(),
            Some(Encoded::Quoted(v)) => v,
            Some(Encoded::Literal) => continue,
        };
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(&k);
        out.push(b' ');
        out.extend_from_slice(&v);
    }
    if first {
        return b"ID NIL\r\n".to_vec();
    }
    out.extend_from_slice(b")\r\n");
    out
}
