//! Which commands the audit records, and the arguments it keeps of them: the message set and
//! the mailbox names, read with the pre-login argument parsers of [`crate::proto::args`].
//!
//! ```text
//! create  = "CREATE" SP mailbox [create-params]      delete = "DELETE" SP mailbox
//! rename  = "RENAME" SP mailbox SP mailbox           append = "APPEND" SP mailbox ...
//! store   = ["UID" SP] "STORE" SP sequence-set ...   expunge = "EXPUNGE" / "UID EXPUNGE" SP set
//! copy    = ["UID" SP] ("COPY" / "MOVE") SP sequence-set SP mailbox
//! close   = "CLOSE"                                  ; expunges the selected mailbox
//! mailbox = astring                                  ; quoted, atom, or a literal
//! ```
//!
//! The stage usually sees only a command's first line: a mailbox sent as a literal (`{5}`) is
//! then [`Arg::Unknown`], as is everything after it, never a guess. When another stage asked
//! for the command whole, its literals are inline and are read. Flags, dates and message
//! content are never kept.

use nom::bytes::complete::{take_while, take_while1};
use nom::{IResult, Parser};

use super::record::{MAX_NAME, MAX_SET};
use crate::phases::CommandSet;
use crate::proto::args::astring;
use crate::proto::command::CommandName;

/// The commands that change or remove mail or mailboxes.
pub const AUDITED: CommandSet = CommandSet::of(&[
    CommandName::Append,
    CommandName::Store,
    CommandName::Copy,
    CommandName::Move,
    CommandName::Expunge,
    CommandName::Close,
    CommandName::Create,
    CommandName::Delete,
    CommandName::Rename,
]);

/// Whether the command acts on the selected mailbox (recorded as its `mailbox`).
pub fn on_selected(name: CommandName) -> bool {
    matches!(
        name,
        CommandName::Store
            | CommandName::Copy
            | CommandName::Move
            | CommandName::Expunge
            | CommandName::Close
    )
}

/// A mailbox argument as read from the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// Its decoded name (at most [`MAX_NAME`] + 1 bytes kept, so a cut still shows).
    Known(Box<[u8]>),
    /// Sent as a literal the stage did not see, or not readable.
    Unknown,
}

/// What the audit keeps of a command's arguments until its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arguments {
    /// The message set (at most [`MAX_SET`] + 1 bytes kept).
    pub set: Option<Box<[u8]>>,
    /// The mailbox named first: created, deleted, appended to, renamed.
    pub mailbox: Option<Arg>,
    /// The mailbox named second: COPY/MOVE destination, RENAME's new name.
    pub destination: Option<Arg>,
}

/// Reads the arguments the audit records from `args` (what follows the command name: the first
/// line without its line ending, or the whole command with literals inline).
pub fn parse(name: CommandName, uid: bool, args: &[u8]) -> Arguments {
    let mut out = Arguments::default();
    match name {
        CommandName::Create | CommandName::Delete | CommandName::Append => {
            out.mailbox = Some(mailbox(args).1);
        }
        CommandName::Rename => {
            let (rest, first) = mailbox(args);
            out.destination = Some(match rest {
                Some(rest) => mailbox(rest).1,
                None => Arg::Unknown,
            });
            out.mailbox = Some(first);
        }
        CommandName::Copy | CommandName::Move => {
            let (rest, set) = sequence_set(args);
            out.set = set;
            out.destination = Some(match rest {
                Some(rest) => mailbox(rest).1,
                None => Arg::Unknown,
            });
        }
        CommandName::Store => out.set = sequence_set(args).1,
        CommandName::Expunge if uid => out.set = sequence_set(args).1,
        _ => {}
    }
    out
}

/// Skips the separating spaces (Dovecot accepts any number).
fn spaces(input: &[u8]) -> &[u8] {
    let r: IResult<&[u8], &[u8]> = take_while(|c| c == b' ').parse(input);
    r.map_or(input, |(rest, _)| rest)
}

/// A mailbox name and what follows it; `None` for the rest when the name was not read (nothing
/// after an unseen literal can be placed).
fn mailbox(input: &[u8]) -> (Option<&[u8]>, Arg) {
    match astring(spaces(input)) {
        // A name is a whole token: `~{5}` or `x{5}` is not the atom `~` or `x`.
        Ok((rest, mut name)) if rest.first().is_none_or(|c| b" \r\n".contains(c)) => {
            name.truncate(MAX_NAME + 1);
            (Some(rest), Arg::Known(name.into_boxed_slice()))
        }
        _ => (None, Arg::Unknown),
    }
}

/// A sequence set (`1:4,7`, `5:*`, `$`) and what follows it: the token up to the next space,
/// as sent (a malformed one is recorded as it is; the server judges it).
fn sequence_set(input: &[u8]) -> (Option<&[u8]>, Option<Box<[u8]>>) {
    let r: IResult<&[u8], &[u8]> = take_while1(|c: u8| c.is_ascii_graphic()).parse(spaces(input));
    match r {
        Ok((rest, set)) => (Some(rest), Some(set[..set.len().min(MAX_SET + 1)].into())),
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(s: &str) -> Option<Arg> {
        Some(Arg::Known(s.as_bytes().into()))
    }

    fn set(s: &str) -> Option<Box<[u8]>> {
        Some(s.as_bytes().into())
    }

    #[test]
    fn mailbox_commands() {
        use CommandName::*;
        let p = parse(Create, false, b"\"Audit \\\"Q\\\" \xc3\xbc\"");
        assert_eq!(p.mailbox, known("Audit \"Q\" ü"));
        assert_eq!((p.set, p.destination), (None, None));
        assert_eq!(parse(Delete, false, b"Trash").mailbox, known("Trash"));
        // The literal's bytes are not on the first line: unknown, not "{5}".
        assert_eq!(parse(Delete, false, b"{5}").mailbox, Some(Arg::Unknown));
        assert_eq!(parse(Delete, false, b"~{5+}").mailbox, Some(Arg::Unknown));
        // With the literal inline (a whole command), it is read.
        assert_eq!(
            parse(Delete, false, b"{5+}\r\nTrash").mailbox,
            known("Trash")
        );
        // APPEND: the mailbox only; flags, date and the message are not kept.
        let p = parse(
            Append,
            false,
            b"Sent (\\Seen) \"1-Jan-2025 00:00:00 +0000\" {310}",
        );
        assert_eq!(
            p,
            Arguments {
                mailbox: known("Sent"),
                ..Arguments::default()
            }
        );
        let p = parse(Rename, false, b"Old  \"New Name\"");
        assert_eq!(
            (p.mailbox, p.destination),
            (known("Old"), known("New Name"))
        );
        let p = parse(Rename, false, b"Old {8}");
        assert_eq!(
            (p.mailbox, p.destination),
            (known("Old"), Some(Arg::Unknown))
        );
        let p = parse(Rename, false, b"{3}");
        assert_eq!(
            (p.mailbox, p.destination),
            (Some(Arg::Unknown), Some(Arg::Unknown))
        );
        assert_eq!(parse(Create, false, b"").mailbox, Some(Arg::Unknown));
    }

    #[test]
    fn message_set_commands() {
        use CommandName::*;
        let p = parse(Copy, true, b"1:4,7 Archive");
        assert_eq!((p.set, p.destination), (set("1:4,7"), known("Archive")));
        assert_eq!(p.mailbox, None);
        let p = parse(Move, false, b"$ {7}");
        assert_eq!((p.set, p.destination), (set("$"), Some(Arg::Unknown)));
        let p = parse(Store, true, b"1:* +FLAGS.SILENT (\\Deleted)");
        assert_eq!(
            p,
            Arguments {
                set: set("1:*"),
                ..Arguments::default()
            }
        );
        assert_eq!(parse(Expunge, true, b"3:5").set, set("3:5"));
        assert_eq!(parse(Expunge, false, b"").set, None);
        assert_eq!(parse(Close, false, b""), Arguments::default());
        let long = "1,".repeat(1000);
        assert_eq!(
            parse(Store, false, long.as_bytes()).set.unwrap().len(),
            MAX_SET + 1
        );
    }

    #[test]
    fn audited_commands() {
        for name in [CommandName::Fetch, CommandName::Select, CommandName::Login] {
            assert!(!AUDITED.contains(name));
        }
        for name in [
            CommandName::Expunge,
            CommandName::Rename,
            CommandName::Append,
        ] {
            assert!(AUDITED.contains(name));
        }
    }
}
