//! The context tables each phase is called with, and the reading of command arguments they
//! carry (mailbox names, message sets).
//!
//! Every phase's table has `session` (the id in the logs), `client` (address), `port`,
//! `listener` (`"tls"` or `"plain"`) and `tls`; after login also `user` and `upstream`. Text the
//! client chose is passed as Lua strings of its bytes, bounded ([`MAX_TEXT`]), so a pattern in a
//! script never runs over more than that.

use mlua::{Lua, Table, Value};

use super::vm::PasswordHandle;
use crate::phases::{Command, LoginRequest, SessionInfo, Summary};
use crate::proto::args::astring;
use crate::proto::command::CommandName;
use crate::session::ListenerKind;
use crate::session::credentials::Credentials;

/// Longest client text (mailbox name, user name, message set) passed to a script; a longer
/// mailbox name is unknown (`nil`) rather than cut.
pub const MAX_TEXT: usize = 4096;

/// The fields every phase gets.
fn base(lua: &Lua, info: &SessionInfo, fields: usize) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 8 + fields)?;
    // Ids stay far below 2^53.
    t.raw_set("session", info.id as i64)?;
    t.raw_set("client", info.peer.ip().to_canonical().to_string())?;
    t.raw_set("port", info.peer.port())?;
    t.raw_set(
        "listener",
        match info.listener {
            ListenerKind::Tls => "tls",
            ListenerKind::Plain => "plain",
        },
    )?;
    t.raw_set("tls", info.tls)?;
    if let Some(user) = &info.user {
        t.raw_set("user", bytes(lua, user)?)?;
    }
    if let Some(upstream) = &info.upstream {
        t.raw_set("upstream", &**upstream)?;
    }
    Ok(t)
}

/// A Lua string of client bytes, bounded.
fn bytes(lua: &Lua, b: &[u8]) -> mlua::Result<Value> {
    Ok(Value::String(
        lua.create_string(&b[..b.len().min(MAX_TEXT)])?,
    ))
}

/// `on_connect`'s table.
pub fn connect(lua: &Lua, info: &SessionInfo) -> mlua::Result<Table> {
    base(lua, info, 0)
}

/// `on_login`'s table: `user`, `password` (an opaque handle, absent for token logins),
/// `mechanism`, `upstream` (chosen so far).
pub fn login(lua: &Lua, info: &SessionInfo, login: &LoginRequest<'_>) -> mlua::Result<Table> {
    let t = base(lua, info, 4)?;
    if let Some(user) = login.user {
        t.raw_set("user", bytes(lua, user)?)?;
    }
    if let Credentials::Password { .. } = login.credentials {
        t.raw_set("password", PasswordHandle)?;
    }
    t.raw_set("mechanism", login.mechanism)?;
    t.raw_set("upstream", login.upstream)?;
    Ok(t)
}

/// `on_command`'s table: `tag`, `command` (upper case; the word as sent for commands the proxy
/// has no name for), `uid`, `state` (`"authenticated"` or `"selected"`), `selected` and
/// `read_only` when a mailbox is selected, and the arguments read (see [`Arguments`]).
pub fn command(
    lua: &Lua,
    info: &SessionInfo,
    cmd: &Command<'_>,
    args: &Arguments,
) -> mlua::Result<Table> {
    let t = base(lua, info, 10)?;
    t.raw_set("tag", bytes(lua, cmd.tag)?)?;
    match cmd.name {
        CommandName::Other => {
            let word = other_name(cmd.line);
            t.raw_set("command", lua.create_string(word.to_ascii_uppercase())?)?;
        }
        name => t.raw_set("command", upper(name))?,
    }
    t.raw_set("uid", cmd.uid)?;
    match &info.selected {
        Some(selected) => {
            t.raw_set("state", "selected")?;
            t.raw_set("selected", bytes(lua, &selected.name)?)?;
            t.raw_set("read_only", selected.read_only)?;
        }
        None => t.raw_set("state", "authenticated")?,
    }
    if let Some(Arg::Known(name)) = &args.mailbox {
        t.raw_set("mailbox", bytes(lua, name)?)?;
    }
    if let Some(Arg::Known(name)) = &args.new_name {
        t.raw_set("new_name", bytes(lua, name)?)?;
    }
    if let Some(set) = &args.set {
        t.raw_set("set", bytes(lua, set)?)?;
    }
    if args.unknown() {
        t.raw_set("literal", true)?;
    }
    Ok(t)
}

/// `on_capabilities`' table: `capabilities` (a list), `state` (`"preauth"` before login,
/// `"authenticated"` after).
pub fn capabilities(lua: &Lua, info: &SessionInfo, caps: &[Vec<u8>]) -> mlua::Result<Table> {
    let t = base(lua, info, 2)?;
    let list = lua.create_table_with_capacity(caps.len(), 0)?;
    for (i, c) in caps.iter().enumerate() {
        list.raw_seti(i + 1, lua.create_string(c)?)?;
    }
    t.raw_set("capabilities", list)?;
    t.raw_set(
        "state",
        if info.user.is_some() {
            "authenticated"
        } else {
            "preauth"
        },
    )?;
    Ok(t)
}

/// `on_close`'s table: `duration_ms`, `commands`, the byte counts, `ending`, `logged_in`.
pub fn close(lua: &Lua, s: &Summary<'_>) -> mlua::Result<Table> {
    let t = base(lua, s.info, 9)?;
    let ms = i64::try_from(s.duration.as_millis()).unwrap_or(i64::MAX);
    t.raw_set("duration_ms", ms)?;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    t.raw_set("commands", n(s.commands))?;
    t.raw_set("client_in", n(s.client_in))?;
    t.raw_set("client_out", n(s.client_out))?;
    t.raw_set("upstream_in", n(s.upstream_in))?;
    t.raw_set("upstream_out", n(s.upstream_out))?;
    t.raw_set("ending", s.ending)?;
    t.raw_set("logged_in", s.logged_in)?;
    Ok(t)
}

/// A command's name in upper case, as scripts compare it.
fn upper(name: CommandName) -> &'static str {
    // The wire names in the table are upper case.
    std::str::from_utf8(CommandName::ALL[name.index()].1).unwrap_or("OTHER")
}

/// The command word of a line the proxy has no name for (after the tag and any `UID`).
fn other_name(line: &[u8]) -> &[u8] {
    let mut words = line
        .split(|&c| c == b' ' || c == b'\r' || c == b'\n')
        .filter(|w| !w.is_empty())
        .skip(1);
    let first = words.next().unwrap_or_default();
    let word = if first.eq_ignore_ascii_case(b"UID") {
        words.next().unwrap_or_default()
    } else {
        first
    };
    &word[..word.len().min(64)]
}

/// A mailbox argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// Its decoded name (quoted-string escapes removed, a literal's bytes).
    Known(Vec<u8>),
    /// Sent as a literal the proxy did not hold, or not readable: never guessed.
    Unknown,
}

/// The arguments of a command that scripts and the mailbox rules look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arguments {
    /// The mailbox the command names: selected, examined, created, deleted, renamed, subscribed,
    /// asked the status of, appended to, copied or moved into.
    pub mailbox: Option<Arg>,
    /// RENAME's new name.
    pub new_name: Option<Arg>,
    /// The message set (FETCH, STORE, COPY, MOVE, UID EXPUNGE).
    pub set: Option<Vec<u8>>,
}

impl Arguments {
    /// Whether a mailbox argument could not be read.
    pub fn unknown(&self) -> bool {
        self.mailbox == Some(Arg::Unknown) || self.new_name == Some(Arg::Unknown)
    }

    /// The mailbox names read.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        [&self.mailbox, &self.new_name]
            .into_iter()
            .filter_map(|a| match a {
                Some(Arg::Known(n)) => Some(n.as_slice()),
                _ => None,
            })
    }
}

/// Whether a command names a mailbox in its arguments (what `whole_commands` asks for).
pub fn names_mailbox(name: CommandName, line: &[u8]) -> bool {
    match name {
        CommandName::Select
        | CommandName::Examine
        | CommandName::Create
        | CommandName::Delete
        | CommandName::Rename
        | CommandName::Subscribe
        | CommandName::Unsubscribe
        | CommandName::Status
        | CommandName::Append
        | CommandName::Copy
        | CommandName::Move
        | CommandName::GetQuotaRoot
        | CommandName::GetMetadata
        | CommandName::SetMetadata => true,
        CommandName::Other => acl_command(other_name(line)),
        _ => false,
    }
}

/// RFC 4314 commands, whose first argument is a mailbox.
fn acl_command(word: &[u8]) -> bool {
    [
        &b"GETACL"[..],
        b"SETACL",
        b"DELETEACL",
        b"LISTRIGHTS",
        b"MYRIGHTS",
    ]
    .iter()
    .any(|w| w.eq_ignore_ascii_case(word))
}

/// Reads the arguments of `cmd`: from the whole message when it was held (literals inline),
/// else from its first line (a literal there is [`Arg::Unknown`]).
pub fn arguments(cmd: &Command<'_>) -> Arguments {
    let Some(args) = cmd.arguments() else {
        return Arguments::default();
    };
    let mut out = Arguments::default();
    if !names_mailbox(cmd.name, cmd.line)
        && !matches!(
            cmd.name,
            CommandName::Fetch | CommandName::Store | CommandName::Expunge
        )
    {
        return out;
    }
    match cmd.name {
        CommandName::Rename => {
            let (rest, first) = mailbox(args);
            out.mailbox = Some(first);
            out.new_name = Some(match rest {
                Some(rest) => mailbox(rest).1,
                None => Arg::Unknown,
            });
        }
        CommandName::Copy | CommandName::Move => {
            let (rest, set) = word(args);
            out.set = set.map(<[u8]>::to_vec);
            out.mailbox = Some(match rest {
                Some(rest) => mailbox(rest).1,
                None => Arg::Unknown,
            });
        }
        CommandName::Fetch | CommandName::Store => out.set = word(args).1.map(<[u8]>::to_vec),
        CommandName::Expunge if cmd.uid => out.set = word(args).1.map(<[u8]>::to_vec),
        CommandName::Expunge => {}
        CommandName::GetMetadata => {
            // `GETMETADATA [(options)] mailbox entries`
            let args = skip_spaces(args);
            let args = match args.first() {
                Some(b'(') => match args.iter().position(|&c| c == b')') {
                    Some(close) => &args[close + 1..],
                    None => b"",
                },
                _ => args,
            };
            out.mailbox = Some(mailbox(args).1);
        }
        _ => out.mailbox = Some(mailbox(args).1),
    }
    out
}

/// Skips separating spaces.
fn skip_spaces(input: &[u8]) -> &[u8] {
    let n = input.iter().take_while(|&&c| c == b' ').count();
    &input[n..]
}

/// An atom-like word (a message set) and what follows it.
fn word(input: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let input = skip_spaces(input);
    let end = input
        .iter()
        .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
        .unwrap_or(input.len());
    if end == 0 {
        return (None, None);
    }
    let set = &input[..end.min(MAX_TEXT)];
    (Some(&input[end..]), Some(set))
}

/// A mailbox name and what follows it; `None` for the rest when the name was not read.
fn mailbox(input: &[u8]) -> (Option<&[u8]>, Arg) {
    match astring(skip_spaces(input)) {
        // A name is a whole token: `~{5}` or `x{5}` is not the atom `~` or `x`.
        Ok((rest, name))
            if rest.first().is_none_or(|c| b" \r\n".contains(c)) && name.len() <= MAX_TEXT =>
        {
            (Some(rest), Arg::Known(name))
        }
        _ => (None, Arg::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::command::parse_command_line;

    fn args_of(line: &[u8], message: Option<&[u8]>) -> Arguments {
        let head = parse_command_line(line).unwrap();
        arguments(&Command {
            tag: head.tag,
            name: head.name,
            uid: head.uid,
            line,
            message,
        })
    }

    fn known(n: &str) -> Option<Arg> {
        Some(Arg::Known(n.as_bytes().to_vec()))
    }

    #[test]
    fn reads_mailbox_names_and_sets() {
        assert_eq!(args_of(b"a SELECT INBOX\r\n", None).mailbox, known("INBOX"));
        assert_eq!(
            args_of(b"a select \"Folder With Spaces\" (CONDSTORE)\r\n", None).mailbox,
            known("Folder With Spaces")
        );
        let a = args_of(b"a UID MOVE 1:4 \"Arch\\\"ive\"\r\n", None);
        assert_eq!(
            (a.mailbox, a.set),
            (known("Arch\"ive"), Some(b"1:4".to_vec()))
        );
        let a = args_of(b"a RENAME Old New\r\n", None);
        assert_eq!((a.mailbox, a.new_name), (known("Old"), known("New")));
        assert_eq!(
            args_of(b"a GETMETADATA (DEPTH 1) Secret /private/x\r\n", None).mailbox,
            known("Secret")
        );
        assert_eq!(
            args_of(b"a MYRIGHTS Secret\r\n", None).mailbox,
            known("Secret")
        );
        assert_eq!(args_of(b"a NOOP\r\n", None), Arguments::default());
    }

    #[test]
    fn literals_are_read_only_when_held() {
        let a = args_of(b"a SELECT {6}\r\n", None);
        assert_eq!(a.mailbox, Some(Arg::Unknown));
        assert!(a.unknown());
        let a = args_of(b"a COPY 1 {6}\r\n", None);
        assert_eq!(a.mailbox, Some(Arg::Unknown));
        let whole = b"a SELECT {6+}\r\nSecret\r\n";
        assert_eq!(
            args_of(b"a SELECT {6+}\r\n", Some(whole)).mailbox,
            known("Secret")
        );
        let whole = b"a RENAME {3+}\r\nOld {6+}\r\nSecret\r\n";
        let a = args_of(b"a RENAME {3+}\r\n", Some(whole));
        assert_eq!((a.mailbox, a.new_name), (known("Old"), known("Secret")));
        assert_eq!(
            args_of(b"a APPEND {6}\r\n", None).mailbox,
            Some(Arg::Unknown)
        );
        assert_eq!(
            args_of(b"a SELECT x{6}\r\n", None).mailbox,
            Some(Arg::Unknown)
        );
    }

    #[test]
    fn names_commands_the_proxy_has_no_name_for() {
        assert_eq!(other_name(b"a uid xmove 1 x\r\n"), b"xmove");
        assert_eq!(other_name(b"a REPLACE 1 INBOX {3}\r\n"), b"REPLACE");
        assert_eq!(other_name(b"a\r\n"), b"");
    }
}
