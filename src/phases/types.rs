//! What the decision phases are given and what they decide, and what the observation phases
//! are told about commands and sessions.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::{Kinds, SessionInfo};
use crate::error::Side;
use crate::proto::command::CommandName;
use crate::proto::response::Status;
use crate::session::credentials::Credentials;

/// A decision that will be ready later.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A decision now, or one to wait for.
pub enum Verdict<T> {
    /// Decided.
    Now(T),
    /// Decided when the future completes; the session keeps serving the other direction.
    Wait(Pending<T>),
}

impl<T> From<T> for Verdict<T> {
    fn from(decision: T) -> Self {
        Verdict::Now(decision)
    }
}

/// What `on_connect` decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConnectDecision {
    /// Serve the connection.
    #[default]
    Allow,
    /// Close it with `* BYE` and this text.
    Refuse(Cow<'static, str>),
}

/// A login the client asked for, before the proxy connects upstream.
#[derive(Debug)]
pub struct LoginRequest<'a> {
    /// The user name the client gave (absent for a token whose user could not be read).
    pub user: Option<&'a [u8]>,
    /// `LOGIN`, `PLAIN`, `XOAUTH2`, ...
    pub mechanism: &'static str,
    /// The upstream chosen so far (`default` unless an earlier stage routed elsewhere).
    pub upstream: &'a str,
    /// What the client logged in with (a stage may hand the password on in a rewrite; it never
    /// logs or shows it).
    pub credentials: &'a Credentials,
}

/// What `on_login` decides.
#[derive(Debug, Default)]
pub enum LoginDecision {
    /// Log in as asked.
    #[default]
    Continue,
    /// Route to another upstream and/or log in upstream with other credentials.
    Rewrite {
        /// The named upstream to use (`[upstreams.NAME]`).
        upstream: Option<String>,
        /// Credentials to log in upstream with instead of the client's.
        credentials: Option<Credentials>,
    },
    /// Refuse: the client gets `tag NO [code] text` and no upstream is contacted.
    Refuse {
        /// Response code, e.g. `AUTHENTICATIONFAILED`.
        code: Option<Cow<'static, str>>,
        /// Human-readable text.
        text: Cow<'static, str>,
    },
}

/// A client command as the relay sees it when it starts.
#[derive(Debug)]
pub struct Command<'a> {
    /// The client's tag.
    pub tag: &'a [u8],
    /// Which command (a fixed set; anything else is `Other`).
    pub name: CommandName,
    /// Prefixed with `UID`.
    pub uid: bool,
    /// The command's first line as received, with its line ending (literal bytes follow it on
    /// the wire when it ends with an announcement).
    pub line: &'a [u8],
    /// The whole command, literals inline, when a stage asked for this command whole
    /// ([`Phases::whole_commands`](super::Phases::whole_commands)) and its first line announced a literal; `None` otherwise
    /// (then `line` is all of it, or the literals were not held: see `whole_commands`).
    pub message: Option<&'a [u8]>,
}

impl<'a> Command<'a> {
    /// The arguments after the command name: from the whole message when it was held
    /// (literals inline, up to its end), else from the first line (with its line ending; a
    /// literal there is only announced). `None` when the line does not parse as a command.
    pub fn arguments(&self) -> Option<&'a [u8]> {
        let whole = self.message.unwrap_or(self.line);
        let first_end = memchr::memchr(b'\n', whole).map_or(whole.len(), |i| i + 1);
        let head = crate::proto::command::parse_command_line(&whole[..first_end])?;
        if self.message.is_none() {
            return Some(head.args);
        }
        // `head.args` is a slice of `whole`: the rest of the message from there.
        let at = (head.args.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        whole.get(at..)
    }
}

/// What `on_command` decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CommandDecision {
    /// Relay it upstream unchanged.
    #[default]
    Forward,
    /// Do not relay; answer `tag NO|BAD [code] text` (its literals are not read upstream).
    Refuse {
        /// `No` or `Bad` (`Ok` is taken as `No`).
        status: Status,
        /// Response code without brackets (`NOPERM`, `CANNOT`, ...).
        code: Option<Cow<'static, str>>,
        /// Human-readable text.
        text: Cow<'static, str>,
    },
    /// Do not relay; answer with these untagged lines (each with CRLF) and `tag OK text`.
    Answer {
        /// Untagged responses, complete lines.
        untagged: Vec<u8>,
        /// Text of the tagged OK.
        text: Cow<'static, str>,
    },
    /// Relay this first line instead (with its line ending). If the original line announced a
    /// literal, the replacement must announce the same one, and it must keep the tag; otherwise
    /// the command is refused. The proxy follows the command as rewritten (a SELECT made an
    /// EXAMINE is an EXAMINE). For a command held whole (`Command::message`), this replaces the
    /// whole message, literals inline.
    Rewrite(Vec<u8>),
}

/// What `on_response` decides about a whole untagged message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResponseDecision {
    /// Pass it on unchanged.
    #[default]
    Forward,
    /// Do not pass it on.
    Drop,
    /// Pass on these bytes instead (whole message, literals inline).
    Rewrite(Vec<u8>),
}

/// A whole untagged server message, assembled for stages that subscribed to its kind.
#[derive(Debug)]
pub struct ResponseMessage<'a> {
    /// Its kind.
    pub kind: Kinds,
    /// The message: its lines with their line endings and any literal bytes inline, exactly as
    /// the server sent them (empty when `streamed`).
    pub bytes: &'a [u8],
    /// The message already went to the client, because a FETCH literal in it was too large to
    /// hold (it streamed): the stage observes it, and any decision but `Forward` is ignored.
    pub streamed: bool,
    /// The parse view of the message (`proto::message`), when the core assembled it; large
    /// FETCH literals are [`LiteralBody::Streamed`](crate::proto::message::LiteralBody), unless
    /// a stage asked for them ([`Phases::keeps_fetch_bodies`](super::Phases::keeps_fetch_bodies))
    /// and the message fits in what it asked for (or `limits.max_assembled`).
    pub assembled: Option<&'a crate::proto::message::Assembled<'a>>,
}

impl ResponseMessage<'_> {
    /// Runs `f` on the message as [`proto::message`](crate::proto::message) sees it (lines and
    /// literals delimited as the framer does, every literal kept), for its parsers:
    /// `msg.with_assembled(|m| parse_list(m).map(|l| l.mailbox.bytes.into_owned()))`. `None`
    /// when the bytes are not one whole message (a stage's rewrite gone wrong).
    pub fn with_assembled<R>(
        &self,
        f: impl FnOnce(&crate::proto::message::Assembled<'_>) -> R,
    ) -> Option<R> {
        if let Some(assembled) = self.assembled {
            return Some(f(assembled));
        }
        use crate::proto::framer::{Direction, Framer, Limits};
        use crate::proto::message::{AssembleLimits, for_each_message};
        let mut framer = Framer::new(Direction::ServerToClient, Limits::default());
        let limits = AssembleLimits {
            max_bytes: self.bytes.len(),
            keep_literal: u64::MAX,
        };
        let (mut f, mut out, mut messages) = (Some(f), None, 0);
        for_each_message(&mut framer, limits, &[self.bytes], |m| {
            messages += 1;
            if let Some(f) = f.take() {
                out = Some(f(m));
            }
        })
        .ok()?;
        (messages == 1 && framer.at_message_boundary())
            .then_some(out)
            .flatten()
    }
}

/// How a command ended, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Tagged `OK`.
    Ok,
    /// Tagged `NO`.
    No,
    /// Tagged `BAD`.
    Bad,
    /// The session ended with a `BYE` before the command completed.
    Bye,
    /// No answer: the session ended otherwise (client gone, upstream cut).
    None,
}

impl Outcome {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::No => "no",
            Outcome::Bad => "bad",
            Outcome::Bye => "bye",
            Outcome::None => "none",
        }
    }

    /// From a tagged status.
    pub fn from_status(status: Status) -> Outcome {
        match status {
            Status::Ok => Outcome::Ok,
            Status::No => Outcome::No,
            Status::Bad => Outcome::Bad,
        }
    }
}

/// A command's completion.
#[derive(Debug)]
pub struct Completion<'a> {
    /// The client's tag (empty for an untagged answer of the proxy's).
    pub tag: &'a [u8],
    /// Which command (`Other` for lines the proxy could not classify).
    pub name: CommandName,
    /// Prefixed with `UID`.
    pub uid: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// The response code's text (inside the brackets), if the tagged line had one.
    pub code: Option<&'a [u8]>,
    /// When the command's first byte arrived.
    pub started: Instant,
    /// When its tagged answer arrived ([`Completion::elapsed`] is the difference, worked out
    /// only for the stages that ask).
    pub at: Instant,
    /// Answered by the proxy (a stage or the proxy's own rules), not by the upstream.
    pub local: bool,
}

impl Completion<'_> {
    /// From the command's first byte to its tagged answer.
    pub fn elapsed(&self) -> Duration {
        self.at.saturating_duration_since(self.started)
    }
}

/// How a session ended, for `on_close`.
#[derive(Debug)]
pub struct Summary<'a> {
    /// Who and where.
    pub info: &'a SessionInfo,
    /// From accept to close.
    pub duration: Duration,
    /// Commands the client sent after login.
    pub commands: u64,
    /// Bytes read from the client.
    pub client_in: u64,
    /// Bytes written to the client.
    pub client_out: u64,
    /// Bytes read from the upstream.
    pub upstream_in: u64,
    /// Bytes written to the upstream.
    pub upstream_out: u64,
    /// How it ended (`logout`, `client closed`, `shutdown`, an error's description).
    pub ending: &'a str,
    /// Which side ended it abnormally, if any.
    pub error_side: Option<Side>,
    /// Whether the client was in IDLE at the end.
    pub idling: bool,
    /// Whether it had logged in.
    pub logged_in: bool,
}
