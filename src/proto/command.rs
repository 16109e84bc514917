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

use super::keyword::Keywords;

/// The commands the proxy tells apart (RFC 9051 and the common extensions). Everything else is
/// `Other` and is relayed untouched. One table ([`CommandName::ALL`]) gives each its wire name
/// and its fixed label, so the parser, logs and metrics cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// `CREATE`
    Create,
    /// `DELETE`
    Delete,
    /// `RENAME`
    Rename,
    /// `SUBSCRIBE`
    Subscribe,
    /// `UNSUBSCRIBE`
    Unsubscribe,
    /// `LIST`
    List,
    /// `LSUB`
    Lsub,
    /// `NAMESPACE` (RFC 2342)
    Namespace,
    /// `STATUS`
    Status,
    /// `APPEND`
    Append,
    /// `CHECK`
    Check,
    /// `CLOSE`
    Close,
    /// `UNSELECT` (RFC 3691)
    Unselect,
    /// `EXPUNGE`
    Expunge,
    /// `SEARCH`
    Search,
    /// `FETCH`
    Fetch,
    /// `STORE`
    Store,
    /// `COPY`
    Copy,
    /// `MOVE` (RFC 6851)
    Move,
    /// `IDLE` (RFC 2177)
    Idle,
    /// `COMPRESS` (RFC 4978)
    Compress,
    /// `SORT` (RFC 5256)
    Sort,
    /// `THREAD` (RFC 5256)
    Thread,
    /// `GETQUOTA` (RFC 9208)
    GetQuota,
    /// `GETQUOTAROOT` (RFC 9208)
    GetQuotaRoot,
    /// `GETMETADATA` (RFC 5464)
    GetMetadata,
    /// `SETMETADATA` (RFC 5464)
    SetMetadata,
    /// Any other command name.
    Other,
}

impl CommandName {
    /// Every command with its name on the wire and its label, `Other` last.
    pub const ALL: [(CommandName, &'static [u8], &'static str); 38] = [
        (CommandName::Capability, b"CAPABILITY", "capability"),
        (CommandName::Noop, b"NOOP", "noop"),
        (CommandName::Logout, b"LOGOUT", "logout"),
        (CommandName::Starttls, b"STARTTLS", "starttls"),
        (CommandName::Authenticate, b"AUTHENTICATE", "authenticate"),
        (CommandName::Login, b"LOGIN", "login"),
        (CommandName::Id, b"ID", "id"),
        (CommandName::Enable, b"ENABLE", "enable"),
        (CommandName::Select, b"SELECT", "select"),
        (CommandName::Examine, b"EXAMINE", "examine"),
        (CommandName::Create, b"CREATE", "create"),
        (CommandName::Delete, b"DELETE", "delete"),
        (CommandName::Rename, b"RENAME", "rename"),
        (CommandName::Subscribe, b"SUBSCRIBE", "subscribe"),
        (CommandName::Unsubscribe, b"UNSUBSCRIBE", "unsubscribe"),
        (CommandName::List, b"LIST", "list"),
        (CommandName::Lsub, b"LSUB", "lsub"),
        (CommandName::Namespace, b"NAMESPACE", "namespace"),
        (CommandName::Status, b"STATUS", "status"),
        (CommandName::Append, b"APPEND", "append"),
        (CommandName::Check, b"CHECK", "check"),
        (CommandName::Close, b"CLOSE", "close"),
        (CommandName::Unselect, b"UNSELECT", "unselect"),
        (CommandName::Expunge, b"EXPUNGE", "expunge"),
        (CommandName::Search, b"SEARCH", "search"),
        (CommandName::Fetch, b"FETCH", "fetch"),
        (CommandName::Store, b"STORE", "store"),
        (CommandName::Copy, b"COPY", "copy"),
        (CommandName::Move, b"MOVE", "move"),
        (CommandName::Idle, b"IDLE", "idle"),
        (CommandName::Compress, b"COMPRESS", "compress"),
        (CommandName::Sort, b"SORT", "sort"),
        (CommandName::Thread, b"THREAD", "thread"),
        (CommandName::GetQuota, b"GETQUOTA", "getquota"),
        (CommandName::GetQuotaRoot, b"GETQUOTAROOT", "getquotaroot"),
        (CommandName::GetMetadata, b"GETMETADATA", "getmetadata"),
        (CommandName::SetMetadata, b"SETMETADATA", "setmetadata"),
        (CommandName::Other, b"", "other"),
    ];

    /// Maps a command-name atom (case-insensitive).
    pub fn from_atom(atom: &[u8]) -> Self {
        BY_NAME.get(atom).unwrap_or(CommandName::Other)
    }

    /// A short, fixed label for logs and metrics (never client-chosen text).
    pub fn label(self) -> &'static str {
        Self::ALL[self.index()].2
    }

    /// Its position in [`CommandName::ALL`] (a dense index for tables of counters).
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The named commands of [`CommandName::ALL`] (all but `Other`), by wire name.
const BY_NAME: Keywords<CommandName, { CommandName::ALL.len() - 1 }> = Keywords::new(named());

/// [`CommandName::ALL`] without `Other`, as (wire name, command) pairs.
const fn named() -> [(&'static [u8], CommandName); CommandName::ALL.len() - 1] {
    let mut out = [(&[] as &[u8], CommandName::Other); CommandName::ALL.len() - 1];
    let mut i = 0;
    while i < out.len() {
        out[i] = (CommandName::ALL[i].1, CommandName::ALL[i].0);
        i += 1;
    }
    out
}

/// The first line of a command, split into the parts the proxy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    TAG_CHARS[usize::from(c)]
}

/// [`is_tag_char`] as a table: it runs for every byte of every tag, both ways.
const TAG_CHARS: [bool; 256] = printable_except(b"(){%*\"\\]+");

/// A byte-class table: `0x21..0x80` (printable ASCII and DEL, as Dovecot's parser takes it)
/// without the bytes of `excluded`.
pub(crate) const fn printable_except(excluded: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut c = 0x21;
    while c < 0x80 {
        table[c] = true;
        c += 1;
    }
    let mut i = 0;
    while i < excluded.len() {
        table[excluded[i] as usize] = false;
        i += 1;
    }
    table
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
    fn one_table_for_names_labels_and_indices() {
        for (i, &(name, wire, label)) in CommandName::ALL.iter().enumerate() {
            assert_eq!(name.index(), i);
            assert_eq!(name.label(), label);
            if name != CommandName::Other {
                assert_eq!(CommandName::from_atom(&wire.to_ascii_lowercase()), name);
                assert_eq!(label.as_bytes(), wire.to_ascii_lowercase());
            }
        }
        assert!(CommandName::ALL.len() <= 64, "CommandSet is a u64");
    }

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
