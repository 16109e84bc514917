//! The policy as a stage: each phase of the seam calls the script's function of that name (when
//! it defines one) and maps the decision onto the seam's; hidden-mailbox rules are applied here,
//! without calling the script.

use std::borrow::Cow;
use std::sync::Arc;

use super::Policy;
use super::context::{self, Arg, Arguments};
use super::decision::{self, Creds, Deny, MasterForm, PasswordFrom};
use super::hide::Rules;
use super::vm::{Failure, FailureKind, Phase, Script};
use crate::config::Config;
use crate::phases::{
    Command, CommandDecision, CommandSet, ConnectDecision, Kinds, LoginDecision, LoginRequest,
    Phases, ResponseDecision, ResponseMessage, SessionInfo, Summary, Verdict,
};
use crate::proto::command::CommandName;
use crate::proto::response::Status;
use crate::secret::Secret;
use crate::session::credentials::Credentials;

/// The commands held whole for scripts that read mailbox names (APPEND never is).
const MAILBOX_COMMANDS: CommandSet = CommandSet::of(&[
    CommandName::Select,
    CommandName::Examine,
    CommandName::Create,
    CommandName::Delete,
    CommandName::Rename,
    CommandName::Subscribe,
    CommandName::Unsubscribe,
    CommandName::Status,
    CommandName::Copy,
    CommandName::Move,
    CommandName::GetQuotaRoot,
    CommandName::GetMetadata,
    CommandName::SetMetadata,
]);

/// The answer to a command the policy could not decide on.
fn failed_command() -> CommandDecision {
    CommandDecision::Refuse {
        status: Status::No,
        code: Some("UNAVAILABLE".into()),
        text: "Refused: the access policy failed.".into(),
    }
}

/// A refusal as the seam's command decision.
fn refuse(deny: Deny) -> CommandDecision {
    CommandDecision::Refuse {
        status: Status::No,
        code: Some(Cow::Borrowed(deny.code)),
        text: deny.reason.into(),
    }
}

/// The refusal of a command naming a hidden mailbox, as Dovecot answers for one that does not
/// exist.
fn nonexistent() -> CommandDecision {
    CommandDecision::Refuse {
        status: Status::No,
        code: Some("NONEXISTENT".into()),
        text: "Mailbox doesn't exist.".into(),
    }
}

impl Policy {
    /// Whether a script may hide mailboxes (only `on_login` can say so).
    fn may_hide(&self) -> bool {
        self.script.defines(Phase::Login)
    }

    /// Applies hidden-mailbox rules to a command's arguments; `Some` refuses it.
    fn hidden(rules: &Rules, cmd: &Command<'_>, args: &Arguments) -> Option<CommandDecision> {
        if args.unknown() {
            // A name the proxy could not read (a literal it did not hold) may be a hidden one.
            return Some(CommandDecision::Refuse {
                status: Status::No,
                code: Some("CANNOT".into()),
                text: "Send the mailbox name as a quoted string.".into(),
            });
        }
        let creates = matches!(cmd.name, CommandName::Create);
        if let Some(Arg::Known(name)) = &args.mailbox {
            if rules.hides(name) {
                return Some(if creates {
                    CommandDecision::Refuse {
                        status: Status::No,
                        code: Some("CANNOT".into()),
                        text: "Mailbox name not allowed.".into(),
                    }
                } else {
                    nonexistent()
                });
            }
        }
        if let Some(Arg::Known(name)) = &args.new_name {
            if rules.hides(name) {
                return Some(CommandDecision::Refuse {
                    status: Status::No,
                    code: Some("CANNOT".into()),
                    text: "Mailbox name not allowed.".into(),
                });
            }
        }
        None
    }

    /// The credentials a login decision asks for.
    fn credentials(&self, login: &LoginRequest<'_>, creds: Creds) -> Result<Credentials, String> {
        let client_user = || -> Result<Vec<u8>, String> {
            login
                .user
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "the login has no user name to keep".to_string())
        };
        let password = |from: PasswordFrom| -> Result<Secret, String> {
            match from {
                PasswordFrom::Client => match login.credentials {
                    Credentials::Password { password, .. } => Ok(password.clone()),
                    _ => Err("ctx.password: this login has no password".into()),
                },
                PasswordFrom::Secret(name) => self
                    .config
                    .secrets
                    .get(&name)
                    .map(|s| Secret::new(s.as_bytes().to_vec()))
                    .ok_or_else(|| format!("no secret {name:?} in [policy.secrets]")),
                PasswordFrom::Text(text) => Ok(Secret::new(text.into_bytes())),
            }
        };
        let login_command = matches!(
            login.credentials,
            Credentials::Password {
                login_command: true,
                ..
            }
        );
        Ok(match creds {
            Creds::Password {
                user,
                password: from,
            } => Credentials::Password {
                authzid: Vec::new(),
                user: match user {
                    Some(u) => u.into_bytes(),
                    None => client_user()?,
                },
                password: password(from)?,
                login_command,
            },
            Creds::Master {
                master,
                user,
                password: from,
                form,
                separator,
            } => {
                let user = match user {
                    Some(u) => u.into_bytes(),
                    None => client_user()?,
                };
                match form {
                    MasterForm::Plain => Credentials::Password {
                        authzid: user,
                        user: master.into_bytes(),
                        password: password(from)?,
                        login_command: false,
                    },
                    MasterForm::Dovecot => Credentials::Password {
                        authzid: Vec::new(),
                        user: [user, separator.into_bytes(), master.into_bytes()].concat(),
                        password: password(from)?,
                        login_command: true,
                    },
                }
            }
            Creds::OAuth { account, user } => Credentials::OAuth {
                user: match user {
                    Some(u) => u.into_bytes(),
                    None => client_user()?,
                },
                account,
            },
        })
    }

    /// `on_login` with the script's decision read.
    /// `on_login` with the script's decision read, and the hash the client's password must
    /// match for it to stand.
    fn login(
        &self,
        session: &SessionInfo,
        login: &LoginRequest<'_>,
    ) -> Result<(LoginDecision, Option<String>), Failure> {
        let outcome = self.script.call(
            Phase::Login,
            |lua| context::login(lua, session, login),
            |_, v| decision::login(v),
        )?;
        let bad = |message: String| Failure {
            kind: FailureKind::BadReturn,
            location: None,
            message,
        };
        self.audit(session, Phase::Login, outcome.audit);
        if let Some(deny) = outcome.deny {
            return Ok((
                LoginDecision::Refuse {
                    code: Some(Cow::Borrowed(deny.code)),
                    text: deny.reason.into(),
                },
                None,
            ));
        }
        if let Some(name) = &outcome.upstream {
            if !self.upstreams.iter().any(|u| u == name) {
                return Err(bad(format!("no upstream named {name:?}")));
            }
        }
        let credentials = match outcome.creds {
            Some(c) => Some(self.credentials(login, c).map_err(bad)?),
            None => None,
        };
        self.set_rules(session.id, outcome.hide);
        let hash = outcome.password_hash;
        if outcome.upstream.is_none() && credentials.is_none() {
            return Ok((LoginDecision::Continue, hash));
        }
        Ok((
            LoginDecision::Rewrite {
                upstream: outcome.upstream,
                credentials,
            },
            hash,
        ))
    }

    /// `decision`, if the client's password matches `phc` (Argon2id, checked off the async
    /// workers; a recent success with the same password is remembered); otherwise a refusal.
    /// A login without a password (a bearer token) cannot match.
    fn checked(
        &self,
        login: &LoginRequest<'_>,
        decision: LoginDecision,
        phc: String,
    ) -> Verdict<LoginDecision> {
        let refused = || LoginDecision::Refuse {
            code: Some(Cow::Borrowed("AUTHENTICATIONFAILED")),
            text: "Authentication failed.".into(),
        };
        let (Some(password), Some(user)) = (login.credentials.password(), login.user) else {
            return Verdict::Now(refused());
        };
        let verifier = self.shared.verifier.clone();
        if verifier.remembered(user, password.expose(), &phc) {
            return Verdict::Now(decision);
        }
        let (user, password, phc) = (user.to_vec(), password.clone(), Arc::<str>::from(phc));
        Verdict::Wait(Box::pin(async move {
            if verifier.verify(&user, password, phc).await {
                decision
            } else {
                refused()
            }
        }))
    }

    /// `on_command` with the script's decision read.
    fn command(
        &self,
        session: &SessionInfo,
        cmd: &Command<'_>,
        args: &Arguments,
    ) -> Result<CommandDecision, Failure> {
        let outcome = self.script.call(
            Phase::Command,
            |lua| context::command(lua, session, cmd, args),
            |_, v| decision::command(v),
        )?;
        self.audit(session, Phase::Command, outcome.audit);
        if let Some(deny) = outcome.deny {
            return Ok(refuse(deny));
        }
        if outcome.examine && cmd.name == CommandName::Select {
            return Ok(CommandDecision::Rewrite(as_examine(cmd)));
        }
        Ok(CommandDecision::Forward)
    }
}

/// The command (its whole message when held) with `SELECT` replaced by `EXAMINE`.
fn as_examine(cmd: &Command<'_>) -> Vec<u8> {
    let whole = cmd.message.unwrap_or(cmd.line);
    // `tag SP SELECT ...`: the name starts after the tag and its space.
    let at = cmd.tag.len() + 1;
    let name_len = b"SELECT".len();
    let mut out = Vec::with_capacity(whole.len() + 1);
    out.extend_from_slice(&whole[..at]);
    out.extend_from_slice(b"EXAMINE");
    out.extend_from_slice(&whole[at + name_len..]);
    out
}

impl Phases for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn on_connect(&self, session: &SessionInfo) -> Verdict<ConnectDecision> {
        if !self.script.defines(Phase::Connect) {
            return Verdict::Now(ConnectDecision::Allow);
        }
        let result = self.script.call(
            Phase::Connect,
            |lua| context::connect(lua, session),
            |_, v| decision::connect(v),
        );
        Verdict::Now(match result {
            Ok(outcome) => {
                self.audit(session, Phase::Connect, outcome.audit);
                match outcome.deny {
                    Some(deny) => ConnectDecision::Refuse(deny.reason.into()),
                    None => ConnectDecision::Allow,
                }
            }
            Err(failure) => {
                self.failed(Phase::Connect, session, &failure);
                ConnectDecision::Refuse("Service unavailable.".into())
            }
        })
    }

    fn on_login(&self, session: &SessionInfo, login: &LoginRequest<'_>) -> Verdict<LoginDecision> {
        if !self.script.defines(Phase::Login) {
            return Verdict::Now(LoginDecision::Continue);
        }
        Verdict::Now(match self.login(session, login) {
            Ok((d, None)) => d,
            Ok((d, Some(phc))) => return self.checked(login, d, phc),
            Err(failure) => {
                self.failed(Phase::Login, session, &failure);
                // No rules of an earlier attempt survive a failed one.
                self.set_rules(session.id, None);
                LoginDecision::Refuse {
                    code: Some("UNAVAILABLE".into()),
                    text: "Login refused: the access policy failed.".into(),
                }
            }
        })
    }

    fn whole_commands(&self) -> CommandSet {
        if self.script.defines(Phase::Command) || self.may_hide() {
            MAILBOX_COMMANDS
        } else {
            CommandSet::NONE
        }
    }

    fn on_command(&self, session: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        let scripted = self.script.defines(Phase::Command);
        let rules = if self.may_hide() && context::names_mailbox(cmd.name, cmd.line) {
            self.rules(session.id)
        } else {
            None
        };
        if !scripted && rules.is_none() {
            return Verdict::Now(CommandDecision::Forward);
        }
        let args = context::arguments(cmd);
        if let Some(rules) = rules {
            if let Some(refused) = Policy::hidden(&rules, cmd, &args) {
                return Verdict::Now(refused);
            }
        }
        if !scripted {
            return Verdict::Now(CommandDecision::Forward);
        }
        Verdict::Now(match self.command(session, cmd, &args) {
            Ok(d) => d,
            Err(failure) => {
                self.failed(Phase::Command, session, &failure);
                failed_command()
            }
        })
    }

    fn subscriptions(&self) -> Kinds {
        if self.may_hide() {
            Kinds::LIST | Kinds::LSUB | Kinds::STATUS
        } else {
            Kinds::NONE
        }
    }

    fn on_response(&self, session: &SessionInfo, msg: &ResponseMessage<'_>) -> ResponseDecision {
        let Some(rules) = self.rules(session.id) else {
            return ResponseDecision::Forward;
        };
        if rules.hides_response(msg) {
            ResponseDecision::Drop
        } else {
            ResponseDecision::Forward
        }
    }

    fn edits_capabilities(&self) -> bool {
        self.script.defines(Phase::Capabilities)
    }

    fn on_capabilities(&self, session: &SessionInfo, caps: &mut Vec<Vec<u8>>) {
        let result = self.script.call(
            Phase::Capabilities,
            |lua| context::capabilities(lua, session, caps),
            |_, v| decision::capabilities(v),
        );
        match result {
            Ok(outcome) => outcome.apply(caps),
            // The list stays as the server and the proxy made it.
            Err(failure) => self.failed(Phase::Capabilities, session, &failure),
        }
    }

    fn on_close(&self, summary: &Summary<'_>) {
        self.set_rules(summary.info.id, None);
        if !self.script.defines(Phase::Close) {
            return;
        }
        let result = self.script.call(
            Phase::Close,
            |lua| context::close(lua, summary),
            |_, v| decision::close(v),
        );
        match result {
            Ok(fields) => self.audit(summary.info, Phase::Close, fields),
            Err(failure) => self.failed(Phase::Close, summary.info, &failure),
        }
    }

    fn reload(&self, config: &Config) -> Option<Arc<dyn Phases>> {
        let Some(file) = &config.policy.file else {
            tracing::warn!("reload: [policy] file removed; the policy stays until a restart");
            return None;
        };
        if let Err(e) = config.policy.validate() {
            tracing::error!(error = %e, "reload: policy settings refused; the running script stays");
            return None;
        }
        match Script::load(file, config.policy.budget()) {
            Ok(script) => {
                let policy = Policy::with(script, config, self.shared.clone());
                tracing::info!(
                    file = %file.display(),
                    phases = ?policy.defined(),
                    "reload: policy loaded for new sessions"
                );
                Some(Arc::new(policy))
            }
            Err(failure) => {
                tracing::error!(
                    file = %file.display(),
                    kind = failure.kind.label(),
                    at = failure.location.as_deref().unwrap_or("-"),
                    error = %failure.message,
                    "reload: policy script refused; the running script stays"
                );
                None
            }
        }
    }
}
