//! The session's protocol state after login, followed from the exchange without I/O: which
//! commands are in flight (by tag), whether a mailbox is selected, whether the client is idling,
//! and what the proxy must answer itself instead of relaying.

use std::collections::VecDeque;

use crate::proto::args::astring;
use crate::proto::command::{CommandLine, CommandName};
use crate::proto::response::Status;

/// Where the session stands (RFC 9051 §3). The not-authenticated state belongs to the pre-login
/// dialogue, which the proxy conducts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Logged in, no mailbox selected.
    Authenticated,
    /// A mailbox is selected.
    Selected {
        /// The mailbox name as the client sent it (modified UTF-7 or UTF-8), if it was given as
        /// an atom or quoted string (a literal name is not kept).
        mailbox: Option<Vec<u8>>,
        /// True after EXAMINE.
        read_only: bool,
    },
    /// LOGOUT was sent or the server said BYE.
    Logout,
}

/// A command relayed upstream and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    /// The client's tag.
    tag: Box<[u8]>,
    /// Which command.
    name: CommandName,
    /// For SELECT / EXAMINE: the mailbox.
    mailbox: Option<Vec<u8>>,
}

/// What to do with a client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it upstream.
    Relay,
    /// Do not relay; answer with this tagged status and text instead.
    Answer(&'static str),
}

/// Follows the session's state from the commands and responses that pass.
#[derive(Debug)]
pub struct Tracker {
    /// The current state.
    pub state: State,
    /// Commands in flight, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Tag of an IDLE in progress (from the command until its tagged completion).
    idle: Option<Box<[u8]>>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: State::Authenticated,
            in_flight: VecDeque::new(),
            idle: None,
        }
    }
}

impl Tracker {
    /// Decides on a client command and, if relayed, records it as in flight.
    pub fn on_command(&mut self, cmd: &CommandLine<'_>) -> Verdict {
        match cmd.name {
            CommandName::Compress => {
                return Verdict::Answer("BAD COMPRESS is not available through this proxy.");
            }
            CommandName::Starttls => {
                return Verdict::Answer("BAD STARTTLS is only valid before login.");
            }
            CommandName::Login | CommandName::Authenticate => {
                return Verdict::Answer("BAD Already logged in.");
            }
            _ => {}
        }
        let mailbox = match cmd.name {
            CommandName::Select | CommandName::Examine => astring(cmd.args).ok().map(|(_, m)| m),
            _ => None,
        };
        if cmd.name == CommandName::Idle {
            self.idle = Some(cmd.tag.into());
        }
        if cmd.name == CommandName::Logout {
            self.state = State::Logout;
        }
        // Bounded by the relay, which stops reading the client at its pipelining limit.
        self.in_flight.push_back(InFlight {
            tag: cmd.tag.into(),
            name: cmd.name,
            mailbox,
        });
        Verdict::Relay
    }

    /// Records a tagged completion from the server; returns the completed command, if known.
    pub fn on_tagged(&mut self, tag: &[u8], status: Status) -> Option<CommandName> {
        let at = self.in_flight.iter().position(|c| &*c.tag == tag)?;
        let done = self.in_flight.remove(at)?;
        if self.idle.as_deref() == Some(tag) {
            self.idle = None;
        }
        match (done.name, status) {
            (CommandName::Select | CommandName::Examine, Status::Ok) => {
                self.state = State::Selected {
                    mailbox: done.mailbox,
                    read_only: done.name == CommandName::Examine,
                };
            }
            // A failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2).
            (CommandName::Select | CommandName::Examine, _) if self.state != State::Logout => {
                self.state = State::Authenticated;
            }
            (CommandName::Close | CommandName::Unselect, Status::Ok) => {
                self.state = State::Authenticated;
            }
            _ => {}
        }
        Some(done.name)
    }

    /// The server said BYE.
    pub fn on_bye(&mut self) {
        self.state = State::Logout;
    }

    /// The tag of the most recent command in flight (the one a `+` or a refused literal concerns).
    pub fn newest_tag(&self) -> Option<&[u8]> {
        self.in_flight.back().map(|c| &*c.tag)
    }

    /// Gives back the memory of a deep pipeline once it has drained.
    pub fn compact(&mut self) {
        if self.in_flight.is_empty() && self.in_flight.capacity() > 16 {
            self.in_flight = VecDeque::new();
        }
    }

    /// Commands in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the client is in IDLE.
    pub fn idling(&self) -> bool {
        self.idle.is_some()
    }

    /// True when nothing but an IDLE waits for the server: a good moment to end the session.
    pub fn quiescent(&self) -> bool {
        self.in_flight.iter().all(|c| c.name == CommandName::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::command::parse_command_line;

    fn cmd(t: &mut Tracker, line: &[u8]) -> Verdict {
        t.on_command(&parse_command_line(line).unwrap())
    }

    #[test]
    fn follows_select_close_and_pipelining() {
        let mut t = Tracker::default();
        assert_eq!(cmd(&mut t, b"a SELECT INBOX\r\n"), Verdict::Relay);
        assert_eq!(cmd(&mut t, b"b FETCH 1 FLAGS\r\n"), Verdict::Relay);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.on_tagged(b"a", Status::Ok), Some(CommandName::Select));
        assert_eq!(
            t.state,
            State::Selected {
                mailbox: Some(b"INBOX".to_vec()),
                read_only: false
            }
        );
        assert_eq!(t.on_tagged(b"zz", Status::Ok), None);
        cmd(&mut t, b"c EXAMINE \"Other box\"\r\n");
        t.on_tagged(b"c", Status::No);
        assert_eq!(t.state, State::Authenticated);
        t.on_tagged(b"b", Status::Ok);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn idle_and_local_answers() {
        let mut t = Tracker::default();
        cmd(&mut t, b"i IDLE\r\n");
        assert!(t.idling() && t.quiescent());
        t.on_tagged(b"i", Status::Ok);
        assert!(!t.idling());
        assert!(matches!(
            cmd(&mut t, b"z COMPRESS DEFLATE\r\n"),
            Verdict::Answer(_)
        ));
        assert!(matches!(
            cmd(&mut t, b"z LOGIN a b\r\n"),
            Verdict::Answer(_)
        ));
        assert_eq!(t.in_flight(), 0);
    }
}
