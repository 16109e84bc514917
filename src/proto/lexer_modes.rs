//! How much of its line each command has the server read (`client_read_args` counts in
//! Dovecot 2.3.19.1's `src/imap/cmd-*.c`), which decides where a literal can be announced: the
//! lexer's [`Mode`] a command starts in.

use super::{Dialect, Mode};
use crate::proto::command::CommandName;

/// The mode a command starts in, from Dovecot 2.3.19.1's command table (imap-commands.c) and
/// the argument count each `cmd_*` function passes to `client_read_args`.
pub(super) fn mode_of(dialect: Dialect, uid: bool, known: CommandName, name: &[u8]) -> Mode {
    if dialect == Dialect::Imap {
        // The commands the proxy knows by name, without comparing names again.
        use CommandName as C;
        let mode = match (uid, known) {
            (true, C::Fetch | C::Search | C::Sort | C::Store | C::Thread) => Some(Mode::All),
            (true, C::Copy | C::Move) => Some(Mode::First(2)),
            (true, C::Expunge) => Some(Mode::First(1)),
            (true, C::Other) => None,
            (true, _) => Some(Mode::Skip),
            (false, C::Enable | C::Examine | C::Fetch | C::GetMetadata | C::Id | C::List) => {
                Some(Mode::All)
            }
            (false, C::Lsub | C::Search | C::Select | C::Sort | C::Store | C::Thread) => {
                Some(Mode::All)
            }
            (false, C::Create | C::Delete | C::Subscribe | C::Unsubscribe) => Some(Mode::First(1)),
            (false, C::Copy | C::Move | C::Rename | C::SetMetadata | C::Status) => {
                Some(Mode::First(2))
            }
            (false, C::Append) => Some(Mode::AppendMailbox),
            (false, C::Other) => None,
            (false, _) => Some(Mode::Skip),
        };
        if let Some(mode) = mode {
            return mode;
        }
    }
    mode_by_name(dialect, uid, name)
}

/// [`mode_of`] for names the proxy has no [`CommandName`] for, from the full table.
pub(super) fn mode_by_name(dialect: Dialect, uid: bool, name: &[u8]) -> Mode {
    const ALL: &[&str] = &[
        "CANCELUPDATE",
        "ENABLE",
        "EXAMINE",
        "FETCH",
        "GENURLAUTH",
        "GETMETADATA",
        "ID",
        "LIST",
        "LSUB",
        "NOTIFY",
        "RESETKEY",
        "SEARCH",
        "SELECT",
        "SORT",
        "STORE",
        "THREAD",
        "URLFETCH",
        "X-STATE",
        "XLIST",
    ];
    const ONE: &[&str] = &["CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "X-CANCEL"];
    const TWO: &[&str] = &["COPY", "MOVE", "RENAME", "SETMETADATA", "STATUS"];
    const UID_ALL: &[&str] = &["FETCH", "SEARCH", "SORT", "STORE", "THREAD"];
    let is = |list: &[&str]| list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name));
    match dialect {
        Dialect::Login => Mode::All,
        Dialect::Imap if uid && is(UID_ALL) => Mode::All,
        Dialect::Imap if uid && is(&["COPY", "MOVE"]) => Mode::First(2),
        Dialect::Imap if uid && is(&["EXPUNGE"]) => Mode::First(1),
        Dialect::Imap if uid => Mode::Skip,
        Dialect::Imap if is(ALL) => Mode::All,
        Dialect::Imap if is(ONE) => Mode::First(1),
        Dialect::Imap if is(TWO) => Mode::First(2),
        Dialect::Imap if is(&["APPEND"]) => Mode::AppendMailbox,
        Dialect::Imap => Mode::Skip,
    }
}
