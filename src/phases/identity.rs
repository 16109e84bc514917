//! Who and where a session is, as stages see it: [`SessionInfo`], the selected mailbox, the
//! enabled extensions, and the sets stages subscribe with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::proto::command::CommandName;
use crate::session::ListenerKind;

/// A tiny bitflags: a `Copy` newtype over an integer with named constants and set operations.
macro_rules! bitflags_lite {
    ($(#[$doc:meta])* $name:ident : $int:ty { $($(#[$fdoc:meta])* $flag:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
        pub struct $name(pub $int);
        #[allow(missing_docs)]
        impl $name {
            /// No flag.
            pub const NONE: $name = $name(0);
            $($(#[$fdoc])* pub const $flag: $name = $name($value);)*
            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0 && other.0 != 0
            }
            /// Whether any flag of `other` is set.
            pub const fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }
            /// Both sets.
            pub const fn union(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }
            /// Sets the flags of `other`.
            pub fn insert(&mut self, other: $name) {
                self.0 |= other.0;
            }
        }
        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, other: $name) -> $name {
                self.union(other)
            }
        }
    };
}

bitflags_lite! {
    /// Extensions the client enabled (RFC 5161 ENABLE, or implicitly as RFC 7162 §3.1 says).
    Enabled: u8 {
        /// `CONDSTORE`
        CONDSTORE = 1,
        /// `QRESYNC`
        QRESYNC = 2,
        /// `UTF8=ACCEPT` (RFC 6855)
        UTF8_ACCEPT = 4,
        /// `IMAP4rev2`
        IMAP4REV2 = 8,
    }
}

/// Kinds of server messages a stage wants to see whole (see [`Phases::subscriptions`](super::Phases::subscriptions)): the
/// classification of `proto::message`, so a stage parses what it subscribed to with the same
/// module.
pub use crate::proto::message::Kinds;

/// The selected mailbox, as learned from the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The mailbox name as the client sent it, decoded (quoted-string escapes removed, a
    /// literal's bytes); modified UTF-7 or UTF-8 as on the wire.
    pub name: Vec<u8>,
    /// `[UIDVALIDITY n]` from the SELECT/EXAMINE answer.
    pub uidvalidity: Option<u32>,
    /// EXAMINE, or `[READ-ONLY]` in the answer.
    pub read_only: bool,
}

/// Who and where a session is: what stages may base decisions on.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Session id (as in the logs).
    pub id: u64,
    /// The client's address (from the PROXY header when there is one).
    pub peer: SocketAddr,
    /// Which listener accepted the connection.
    pub listener: ListenerKind,
    /// Whether the client connection is encrypted now.
    pub tls: bool,
    /// When the connection was accepted.
    pub started: Instant,
    /// The logged-in user (as the client named it), once logged in.
    pub user: Option<Arc<[u8]>>,
    /// The account logged in upstream, when a stage rewrote it (a master user's target, an
    /// OAuth mailbox); `None` when it is `user`. Whose mail this is: what a cache keys on.
    pub upstream_user: Option<Arc<[u8]>>,
    /// The upstream the session was routed to, once logged in.
    pub upstream: Option<Arc<str>>,
    /// The selected mailbox, if any.
    pub selected: Option<Selected>,
    /// Extensions enabled in this session.
    pub enabled: Enabled,
    /// Commands relayed upstream and not answered yet, as of the command `on_command` is
    /// deciding (set just before each call): a stage that must know a command's answers are its
    /// own (nothing pipelined before it, not even a command an earlier stage decided on) reads
    /// it here.
    pub in_flight: usize,
    /// Commands the client started since login, the one `on_command` is deciding included: a
    /// stage shown only some commands ([`Phases::commands`](super::Phases::commands)) tells
    /// from it whether others started since it last looked.
    pub commands: u64,
}

impl SessionInfo {
    /// A new session's facts, before login.
    pub fn new(id: u64, peer: SocketAddr, listener: ListenerKind) -> SessionInfo {
        SessionInfo {
            id,
            peer,
            listener,
            tls: listener == ListenerKind::Tls,
            started: Instant::now(),
            user: None,
            upstream_user: None,
            upstream: None,
            selected: None,
            enabled: Enabled::NONE,
            in_flight: 0,
            commands: 0,
        }
    }
}

/// A set of commands (see [`Phases::whole_commands`](super::Phases::whole_commands)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommandSet(u64);

impl CommandSet {
    /// No command.
    pub const NONE: CommandSet = CommandSet(0);

    /// Every command.
    pub const ALL: CommandSet = CommandSet((1 << CommandName::ALL.len()) - 1);

    /// These commands.
    pub const fn of(names: &[CommandName]) -> CommandSet {
        let mut bits = 0;
        let mut i = 0;
        while i < names.len() {
            bits |= 1 << names[i].index();
            i += 1;
        }
        CommandSet(bits)
    }

    /// Whether `name` is in the set.
    pub const fn contains(self, name: CommandName) -> bool {
        self.0 & (1 << name.index()) != 0
    }

    /// Both sets.
    pub const fn union(self, other: CommandSet) -> CommandSet {
        CommandSet(self.0 | other.0)
    }
}
