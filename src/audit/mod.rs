//! The audit log: the [`Audit`] stage, which writes one JSON line per login attempt and per
//! command that changes or removes mail or mailboxes (APPEND, STORE, COPY, MOVE, EXPUNGE, CLOSE,
//! CREATE, DELETE, RENAME, and their UID forms) to a file or stderr.
//!
//! It owns the `[audit]` configuration, the record format ([`record`]), the reading of the
//! arguments it records ([`parse`]) and the writer thread ([`writer`]). It works purely from the
//! phase seam: `observe(Event::Login)` for logins; `on_command` notes a command it audits (and
//! always forwards it at once, never delaying the relay), `on_tagged` writes the record with the
//! result, `on_close` writes what was still in flight. It never sees a password, token or SASL
//! message (the login event carries none) and keeps nothing of a command but its message set
//! and mailbox names; literal bytes (APPEND's message) never reach it.
//!
//! It also writes the events a policy script asks for (`audit = ...` in a decision), as
//! `"audit":"policy"` records, through [`crate::policy::EventSink`].
//!
//! Not installed unless `[audit] file` (or `--audit-log`) is set, so it costs nothing otherwise.
//! Sessions format a record and queue it without waiting; a full queue drops the record and
//! counts it (see [`writer`]).

pub mod parse;
pub mod record;
pub mod writer;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::phases::{
    Command, CommandDecision, CommandSet, Completion, Event, Outcome, Phases, SessionInfo,
    SessionMap, Summary, Verdict,
};
use crate::proto::command::CommandName;
use parse::{AUDITED, Arg, Arguments};
use record::{CommandRecord, LoginRecord, Mailbox};
use writer::{Target, Writer};

/// The `[audit]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where the JSON lines go: a file (appended to, created owner-only), or `-` for stderr.
    /// Unset: no audit log and no audit stage.
    pub file: Option<PathBuf>,
    /// Records that may wait for the writer; beyond that they are dropped and counted, so a
    /// slow disk never stalls a session.
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            queue: 8192,
        }
    }
}

/// Starting the audit log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened for appending.
    #[error("cannot open the audit log {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(std::io::Error),
    /// A counter could not be defined or registered.
    #[error("audit counters: {0}")]
    Prometheus(#[from] prometheus::Error),
}

/// An audited command between `on_command` and its answer.
#[derive(Debug)]
struct Noted {
    /// The client's tag, to match the completion.
    tag: Box<[u8]>,
    /// Which command.
    name: CommandName,
    /// `UID` prefix.
    uid: bool,
    /// Its arguments as recorded.
    args: Arguments,
    /// For commands on the selected mailbox: which one, as of when it was sent, refreshed when
    /// a SELECT, EXAMINE, CLOSE or UNSELECT sent before it completes (the server runs it after
    /// those). Kept here because a CLOSE has unselected the mailbox by its own completion.
    selected: Option<Box<[u8]>>,
}

/// The audit stage.
#[derive(Debug)]
pub struct Audit {
    /// The queue to the writer thread.
    writer: Writer,
    /// Audited commands in flight, per session id, in the order they were sent.
    pending: SessionMap<Vec<Noted>>,
}

impl Audit {
    /// Opens the log `config.file` names and starts its writer; `None` when it names none.
    pub fn start(config: &AuditConfig) -> Result<Option<Audit>, AuditError> {
        let Some(path) = &config.file else {
            return Ok(None);
        };
        let writer = Writer::start(Target::from_path(path), config.queue)?;
        Ok(Some(Audit::with_writer(writer)))
    }

    /// The stage over a started writer.
    fn with_writer(writer: Writer) -> Audit {
        Audit {
            writer,
            pending: SessionMap::default(),
        }
    }

    /// Registers `imapgate_audit_records_dropped_total` and `imapgate_audit_write_errors_total`
    /// (with the metrics stage's registry).
    pub fn register(&self, registry: &prometheus::Registry) -> Result<(), AuditError> {
        for c in self.writer.counters() {
            registry.register(Box::new(c))?;
        }
        Ok(())
    }

    /// Reopens the file (after log rotation; e.g. on SIGHUP).
    pub fn reopen(&self) {
        self.writer.reopen();
    }

    /// Waits up to `timeout` for every queued record to be written (at shutdown).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.writer.flush(timeout)
    }

    /// Records dropped so far because the writer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.writer.dropped()
    }

    /// Queues the record of a completed (or abandoned) command.
    fn write(
        &self,
        session: &SessionInfo,
        noted: &Noted,
        result: Outcome,
        done: Option<&Completion<'_>>,
    ) {
        let mailbox = if parse::on_selected(noted.name) {
            Some(match &noted.selected {
                Some(name) => Mailbox::Known(name),
                None => Mailbox::Unknown,
            })
        } else {
            noted.args.mailbox.as_ref().map(mailbox_of)
        };
        let record = CommandRecord {
            time: SystemTime::now(),
            session: session.id,
            client: session.peer,
            user: session.user.as_deref(),
            upstream: session.upstream.as_deref(),
            command: noted.name,
            uid: noted.uid,
            mailbox,
            destination: noted.args.destination.as_ref().map(mailbox_of),
            set: noted.args.set.as_deref(),
            result,
            local: done.is_some_and(|d| d.local),
            elapsed_ms: done.map_or(0, |d| {
                u64::try_from(d.elapsed().as_millis()).unwrap_or(u64::MAX)
            }),
        };
        self.writer.send(record.to_line());
    }
}

/// The commands whose completion changes the selected mailbox.
const RESELECTS: CommandSet = CommandSet::of(&[
    CommandName::Select,
    CommandName::Examine,
    CommandName::Close,
    CommandName::Unselect,
]);

/// The selected mailbox's name, for a command that acts on it.
fn selected_name(session: &SessionInfo, name: CommandName) -> Option<Box<[u8]>> {
    if !parse::on_selected(name) {
        return None;
    }
    session.selected.as_ref().map(|s| s.name.as_slice().into())
}

/// A parsed argument as the record shows it.
fn mailbox_of(arg: &Arg) -> Mailbox<'_> {
    match arg {
        Arg::Known(name) => Mailbox::Known(name),
        Arg::Unknown => Mailbox::Unknown,
    }
}

/// The arguments of `cmd` the audit records: from the whole message when a stage had it held
/// (literals inline), else from the first line.
fn arguments(cmd: &Command<'_>) -> Arguments {
    match cmd.arguments() {
        Some(args) => parse::parse(cmd.name, cmd.uid, args),
        None => Arguments::default(),
    }
}

impl crate::policy::EventSink for Audit {
    fn policy_event(
        &self,
        session: &SessionInfo,
        phase: &'static str,
        fields: &[(String, String)],
    ) {
        let record = record::PolicyRecord {
            time: SystemTime::now(),
            session: session.id,
            client: session.peer,
            user: session.user.as_deref(),
            upstream: session.upstream.as_deref(),
            phase,
            fields,
        };
        self.writer.send(record.to_line());
    }
}

impl Phases for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn on_command(&self, session: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        if AUDITED.contains(cmd.name) {
            let noted = Noted {
                tag: cmd.tag.into(),
                name: cmd.name,
                uid: cmd.uid,
                args: arguments(cmd),
                selected: selected_name(session, cmd.name),
            };
            self.pending
                .shard(session.id)
                .entry(session.id)
                .or_default()
                .push(noted);
        }
        Verdict::Now(CommandDecision::Forward)
    }

    fn on_tagged(&self, session: &SessionInfo, done: &Completion<'_>) {
        let audited = AUDITED.contains(done.name);
        let reselects = RESELECTS.contains(done.name);
        if !audited && !reselects {
            return;
        }
        let noted = {
            let mut shard = self.pending.shard(session.id);
            let Some(list) = shard.get_mut(&session.id) else {
                return;
            };
            let found = list.iter().position(|n| {
                audited && *n.tag == *done.tag && n.name == done.name && n.uid == done.uid
            });
            let noted = found.map(|i| list.remove(i));
            if reselects {
                // The commands still in flight were sent after this one: they act on what is
                // selected now.
                for n in list.iter_mut() {
                    n.selected = selected_name(session, n.name);
                }
            }
            if list.is_empty() {
                shard.remove(&session.id);
            }
            noted
        };
        // A command another stage decided on before this one saw it is not in the table.
        if let Some(noted) = noted {
            self.write(session, &noted, done.outcome, Some(done));
        }
    }

    fn on_close(&self, summary: &Summary<'_>) {
        if !summary.logged_in {
            // Commands are only noted after login.
            return;
        }
        let left = self.pending.remove(summary.info.id);
        for noted in left.iter().flatten() {
            self.write(summary.info, noted, Outcome::None, None);
        }
    }

    fn observe(&self, event: &Event<'_>) {
        if let Event::Reload { .. } = event {
            // SIGHUP is also what log rotation sends.
            self.reopen();
            return;
        }
        if let Event::Login {
            info,
            user,
            upstream,
            mechanism,
            result,
        } = *event
        {
            let record = LoginRecord {
                time: SystemTime::now(),
                session: info.id,
                client: info.peer,
                listener: info.listener,
                tls: info.tls,
                user,
                mechanism,
                upstream,
                result,
            };
            self.writer.send(record.to_line());
        }
    }
}

#[cfg(test)]
mod tests;
