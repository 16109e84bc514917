//! Classifies a client command from the first line of its message.
//!
//! ```text
//! command     = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF
//! tag         = 1*<any ASTRING-CHAR except "+">
//! uid         = "UID" SP (copy / move / fetch / search / store / uid-expunge)
//! ```
//!
//! Only the tag and the command name are parsed (plus `UID`), by the lexer's rules (Dovecot's), which
//! is all the relay needs to track state; the arguments stay as bytes. Lines that are not commands (an IDLE `DONE`, a SASL
//! response, garbage) classify as `None` and are forwarded for the server to judge.

/// The commands the proxy tells apart. Everything else is `Other` and is relayed untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    /// `CAPABILITY`
    Capability,
    /// `NOOP`
    Noop,
    /// `LOGOUT`
    Logout,
    /// `STARTTLS`
    Starttls,
    /// `AUTHENTICATE`
    Authenticate,
    /// `LOGIN`
    Login,
    /// `ID` (RFC 2971)
    Id,
    /// `ENABLE` (RFC 5161)
    Enable,
    /// `SELECT`
    Select,
    /// `EXAMINE`
    Examine,
    /// `CLOSE`
    Close,
    /// `UNSELECT` (RFC 3691)
    Unselect,
    /// `IDLE` (RFC 2177)
    Idle,
    /// `COMPRESS` (RFC 4978)
    Compress,
    /// `APPEND`
    Append,
    /// `FETCH`
    Fetch,
    /// `STORE`
    Store,
    /// `SEARCH`
    Search,
    /// `COPY`
    Copy,
    /// `MOVE` (RFC 6851)
    Move,
    /// `EXPUNGE`
    Expunge,
    /// Any other command name.
    Other,
}

impl CommandName {
    /// Maps a command-name atom (case-insensitive).
    pub fn from_atom(atom: &[u8]) -> Self {
        const NAMES: &[(&[u8], CommandName)] = &[
            (b"CAPABILITY", CommandName::Capability),
            (b"NOOP", CommandName::Noop),
            (b"LOGOUT", CommandName::Logout),
            (b"STARTTLS", CommandName::Starttls),
            (b"AUTHENTICATE", CommandName::Authenticate),
            (b"LOGIN", CommandName::Login),
            (b"ID", CommandName::Id),
            (b"ENABLE", CommandName::Enable),
            (b"SELECT", CommandName::Select),
            (b"EXAMINE", CommandName::Examine),
            (b"CLOSE", CommandName::Close),
            (b"UNSELECT", CommandName::Unselect),
            (b"IDLE", CommandName::Idle),
            (b"COMPRESS", CommandName::Compress),
            (b"APPEND", CommandName::Append),
            (b"FETCH", CommandName::Fetch),
            (b"STORE", CommandName::Store),
            (b"SEARCH", CommandName::Search),
            (b"COPY", CommandName::Copy),
            (b"MOVE", CommandName::Move),
            (b"EXPUNGE", CommandName::Expunge),
        ];
        lookup(NAMES, atom).unwrap_or(CommandName::Other)
    }

    /// A short, fixed label for logs and metrics (never client-chosen text).
    pub fn label(self) -> &'static str {
        match self {
            CommandName::Capability => "capability",
            CommandName::Noop => "noop",
            CommandName::Logout => "logout",
            CommandName::Starttls => "starttls",
            CommandName::Authenticate => "authenticate",
            CommandName::Login => "login",
            CommandName::Id => "id",
            CommandName::Enable => "enable",
            CommandName::Select => "select",
            CommandName::Examine => "examine",
            CommandName::Close => "close",
            CommandName::Unselect => "unselect",
            CommandName::Idle => "idle",
            CommandName::Compress => "compress",
            CommandName::Append => "append",
            CommandName::Fetch => "fetch",
            CommandName::Store => "store",
            CommandName::Search => "search",
            CommandName::Copy => "copy",
            CommandName::Move => "move",
            CommandName::Expunge => "expunge",
            CommandName::Other => "other",
        }
    }
}

/// The first line of a command, split into the parts the proxy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine<'a> {
    /// The client's tag, echoed in the tagged response.
    pub tag: &'a [u8],
    /// The command.
    pub name: CommandName,
    /// Whether it was prefixed with `UID`.
    pub uid: bool,
    /// Whatever follows the command name on this line (leading space and line ending removed).
    pub args: &'a [u8],
}

/// `ATOM-CHAR`: any CHAR except atom-specials (`(){ %*"\]` and CTL).
pub fn is_atom_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !b"(){%*\"\\]".contains(&c)
}

/// A tag byte as Dovecot reads client tags (imap-parser.c:969): `ATOM-CHAR` minus `+`, with
/// DEL allowed and `]` not. The one definition for both directions: a tag the lexer accepts from
/// a client is recognised when the server echoes it, so every relayed command can complete.
///
/// ```text
/// tag = 1*<any ASTRING-CHAR except "+">    ; RFC 9051, narrowed as Dovecot reads it
/// ```
pub fn is_tag_char(c: u8) -> bool {
    (0x21..0x80).contains(&c) && !b"(){%*\"\\]+".contains(&c)
}

/// The value a case-insensitive keyword table gives `word`: the one lookup behind command
/// names, response kinds and the like.
pub fn lookup<T: Copy>(table: &[(&[u8], T)], word: &[u8]) -> Option<T> {
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word))
        .map(|&(_, value)| value)
}

/// Strips the line ending (CRLF or a lone LF).
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Classifies the first line of a client message; `None` when it is not shaped like a command.
///
/// This is the head of the same parse the framer frames client lines with
/// ([`super::lexer::command_line`]), so the two never disagree about what a command is.
pub fn parse_command_line(line: &[u8]) -> Option<CommandLine<'_>> {
    super::lexer::command_line(line)
}

/// The tag at the start of a line that may be malformed or cut, to answer it with `BAD`.
pub fn leading_tag(head: &[u8]) -> Option<&[u8]> {
    let end = head.iter().position(|&c| !is_tag_char(c))?;
    (end > 0 && head.get(end) == Some(&b' ')).then(|| &head[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_commands() {
        let c = parse_command_line(b"a1 select INBOX\r\n").unwrap();
        assert_eq!(
            (c.tag, c.name, c.uid, c.args),
            (&b"a1"[..], CommandName::Select, false, &b"INBOX"[..])
        );
        let c = parse_command_line(b"x.2 UID fetch 1:* (FLAGS)\r\n").unwrap();
        assert_eq!(
            (c.name, c.uid, c.args),
            (CommandName::Fetch, true, &b"1:* (FLAGS)"[..])
        );
        let c = parse_command_line(b"t IDLE\n").unwrap();
        assert_eq!((c.name, c.args), (CommandName::Idle, &b""[..]));
        assert_eq!(
            parse_command_line(b"t XYZZY\r\n").unwrap().name,
            CommandName::Other
        );
    }

    #[test]
    fn rejects_non_commands() {
        assert_eq!(parse_command_line(b"DONE\r\n"), None);
        assert_eq!(parse_command_line(b"+tag NOOP\r\n"), None);
        assert_eq!(parse_command_line(b"\r\n"), None);
        assert_eq!(parse_command_line(b"dGVzdA==\r\n"), None);
        assert_eq!(parse_command_line(b" a NOOP\r\n"), None);
    }

    #[test]
    fn finds_tags_in_cut_lines() {
        assert_eq!(leading_tag(b"a12 SEARCH xxxxx"), Some(&b"a12"[..]));
        assert_eq!(leading_tag(b"a12"), None);
        assert_eq!(leading_tag(b"(x"), None);
    }
}
