//! The tokenizer of client command lines: decides, exactly as Dovecot does, whether a line is a
//! well-formed command (or continuation of one) and whether it ends in a literal announcement.
//!
//! A client message is `line {n}CRLF <n bytes> line ...`; [`scan_line`] reads one line at a time
//! and hands back the [`ArgState`] the next line starts in after the literal's bytes. The framer
//! takes literal boundaries only from here, so a line that merely *looks* like it ends in `{n}`
//! (inside a quoted string, glued to an atom, after a syntax error, or after the arguments the
//! server reads) never makes the proxy treat the following bytes as literal data while the server
//! reads them as a new command.
//!
//! ```text
//! command  = tag SP name *(SP / arg) EOL        ; args separated by zero or more SP (Dovecot)
//! name     = atom / "UID" SP atom
//! arg      = atom / quoted / literal / literal8 / "(" *(SP / arg) ")"
//! quoted   = DQUOTE *(<any byte but NUL CR LF DQUOTE "\"> / "\" <any byte but CR LF>) DQUOTE
//! literal  = "{" *DIGIT ["+"] "}" EOL            ; Dovecot: "{}" and "{+}" are zero-length
//! literal8 = "~{" *DIGIT ["+"] "}" EOL           ; APPEND only
//! EOL      = [CR] LF
//! ```
//!
//! Dovecot 2.3.19.1 (Debian 12) behaviours mirrored, from `src/lib-imap/imap-parser.c` and
//! `src/imap/imap-client.c`:
//! - tag and command name (`imap_parser_read_next_atom`, imap-parser.c:952): bytes other than
//!   `(){%*"\]`, CTL and 8-bit (0x7f is allowed), `+` not in tags; each ends at exactly one SP, or
//!   CR/LF (then the name is missing: invalid). `UID` reads one more name (imap-client.c:1262).
//! - arguments (`imap_parser_read_arg`, imap-parser.c:588): any number of SP before each argument
//!   (`imap_parser_skip_to_next`), none required between arguments, so `"a"{5}` and
//!   `BODY[HEADER.FIELDS (DATE)]<0.10>` tokenize (atom, list, atom).
//! - atoms (imap-parser.c:15, :302, :320): end at SP, CR or LF, or `)` inside a list; `(){"`,
//!   CTL, DEL and 8-bit bytes are errors (so `x{5}` is an invalid atom, not a literal); `[`, `]`,
//!   `%`, `*`, `\` are atom bytes. A `)` at top level is an error.
//! - quoted strings (imap-parser.c:350): 8-bit allowed, `\` escapes any byte but CR/LF, NUL and
//!   CR/LF are errors.
//! - literals (imap-parser.c:437, :484): digits may be absent or zero-padded; `+` must be followed
//!   by `}`; the value must fit 64 bits (we require number64, 63 bits); `}` must be followed by
//!   `[CR] LF`. `~{` is an error except in APPEND (`IMAP_PARSE_FLAG_LITERAL8`, cmd-append.c:758).
//! - end of line (imap-parser.c:611): `CRLF` or bare `LF`; a CR followed by anything else is an
//!   error; an open list at the end of the line is an error (imap-parser.c:777).
//! - how much of a line the command reads (`client_read_args` counts in `src/imap/cmd-*.c`): after
//!   the arguments a command reads, the server skips to LF without parsing (imap-client.c:1155),
//!   so a `{n+}` there is not a literal. Commands with no arguments (NOOP, IDLE, ...) and unknown
//!   commands (imap-client.c:1297) read none. See [`Dialect`].
//! - APPEND (cmd-append.c:467, :724): after the mailbox, messages of `[flag-list] [quoted date]
//!   literal` or `CATENATE (URL astring / TEXT literal ...)`. Dovecot's recovery from other shapes
//!   is odd (it parses literal data as arguments, or the rest of a line as a new command), so we
//!   call them invalid instead of following it; the caller refuses invalid lines.
//!
//! An empty line, a line starting with SP and a bare `DONE` are invalid commands, as for Dovecot.

use super::command::{CommandLine, CommandName, trim_eol};
use super::literal::Literal;
use nom::{
    IResult, Parser, bytes::complete::take_while, character::complete::char, combinator::opt,
};

/// Which server process reads the commands, which decides how much of a line each command reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Before login (`imap-login`, imap-login-client.c:211): every command's whole line is parsed.
    #[default]
    Login,
    /// After login (the `imap` process): only the arguments each command reads are parsed.
    Imap,
}

/// How the arguments of the current command are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every argument up to the end of the command.
    All,
    /// This many more top-level arguments; the rest of the line is skipped unparsed.
    First(u8),
    /// Nothing more: the rest of the line is skipped unparsed.
    Skip,
    /// APPEND's mailbox argument; the messages follow.
    AppendMailbox,
    /// APPEND's messages.
    Append(AppendStep),
}

/// Where APPEND is in the shape of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppendStep {
    /// Before a message (or at the end of the command).
    Start,
    /// Inside the flag list.
    Flags,
    /// After the flag list.
    AfterFlags,
    /// After the date string.
    Date,
    /// After `CATENATE`, before its list.
    Catenate,
    /// Inside the CATENATE list, before a part; `first` when no part came yet.
    Part {
        /// No part was read yet (an empty list is an error).
        first: bool,
    },
    /// After `URL`.
    Url,
    /// After `TEXT`.
    Text,
}

/// The state a line of a command starts in: carried across a literal to the next line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgState {
    /// How the command reads its arguments.
    mode: Mode,
    /// Open parentheses.
    depth: u32,
}

/// Where a line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStart {
    /// A new command, read by this server process.
    Command(Dialect),
    /// The line after a literal's bytes, in the state the announcing line left.
    Continuation(ArgState),
}

/// A line that tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedLine<'a> {
    /// The literal the line ends with, whose bytes follow it.
    pub literal: Option<Literal>,
    /// The state the line after the literal's bytes starts in (meaningful with `literal`).
    pub next: ArgState,
    /// The first line of a command: its tag, name and arguments (so nobody parses it again).
    pub command: Option<CommandLine<'a>>,
}

/// Why a line is not a command the server would read as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// Empty tag or a byte not allowed in tags.
    #[error("invalid tag")]
    InvalidTag,
    /// Missing command name or a byte not allowed in it.
    #[error("invalid command name")]
    InvalidCommandName,
    /// A byte not allowed in an atom (`(){"`, CTL, DEL).
    #[error("invalid characters in atom")]
    InvalidAtom,
    /// An 8-bit byte in an atom.
    #[error("8bit data in atom")]
    EightBitAtom,
    /// A quoted string not closed on its line.
    #[error("missing '\"'")]
    UnterminatedQuoted,
    /// NUL in a quoted string.
    #[error("NULs not allowed in strings")]
    NulInQuoted,
    /// `)` without a matching `(`.
    #[error("unexpected ')'")]
    UnexpectedClose,
    /// The line ended inside a list.
    #[error("missing ')'")]
    MissingClose,
    /// CR not followed by LF.
    #[error("CR sent without LF")]
    BareCr,
    /// A byte other than digits, `+` and `}` in a literal announcement.
    #[error("invalid literal size")]
    InvalidLiteral,
    /// Something other than `}` after `+`.
    #[error("expecting '}}' after '+'")]
    LiteralPlus,
    /// Something other than the line ending after `}`.
    #[error("missing LF after literal size")]
    LiteralNotAtEol,
    /// A literal length that does not fit number64.
    #[error("literal size out of range")]
    LiteralLength,
    /// `~{` outside APPEND.
    #[error("literal8 not allowed here")]
    Literal8NotAllowed,
    /// APPEND arguments of a shape the server does not read as messages.
    #[error("invalid APPEND arguments")]
    AppendArguments,
    /// More nested lists than a u32 counts.
    #[error("lists nested too deep")]
    TooDeep,
}

/// A token of a command's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An atom, as sent.
    Atom(&'a [u8]),
    /// A quoted string's content between the quotes, escapes left in.
    Quoted(&'a [u8]),
    /// A literal announcement (always the last token of its line).
    Literal(Literal),
    /// `(`
    Open,
    /// `)`
    Close,
}

/// Tag bytes (imap-parser.c:969): no `(){%*"\]`, CTL, 8-bit or `+`.
fn is_tag_byte(c: u8) -> bool {
    super::command::is_tag_char(c)
}

/// Command-name bytes (imap-parser.c:969).
fn is_name_byte(c: u8) -> bool {
    NAME_BYTES[usize::from(c)]
}

/// [`is_name_byte`] as a table (every command name's bytes go through it).
const NAME_BYTES: [bool; 256] = super::command::printable_except(b"(){%*\"\\]");

/// Atom bytes that need no further look: not SP, CR, LF, `)`, and not refused by [`atom_byte`].
const PLAIN_ATOM: [bool; 256] = super::command::printable_except(b"(){\"\x7f");

/// Atom bytes (`IS_ATOM_PARSER_INPUT`, imap-parser.c:15, and the 8-bit check).
fn atom_byte(c: u8) -> Result<(), SyntaxError> {
    match c {
        b'(' | b')' | b'{' | b'"' | 0..=0x20 | 0x7f => Err(SyntaxError::InvalidAtom),
        0x80.. => Err(SyntaxError::EightBitAtom),
        _ => Ok(()),
    }
}

/// `tag SP name [SP "UID"-name]` followed by SP or the line ending; returns the rest after the SP.
fn command_head(line: &[u8]) -> Result<(CommandLine<'_>, &[u8], &[u8]), SyntaxError> {
    let (rest, tag) = word(line, is_tag_byte).map_err(|()| SyntaxError::InvalidTag)?;
    let rest = rest
        .strip_prefix(b" ")
        .ok_or(SyntaxError::InvalidCommandName)?;
    let (mut rest, mut name) =
        word(rest, is_name_byte).map_err(|()| SyntaxError::InvalidCommandName)?;
    let uid = name.eq_ignore_ascii_case(b"UID");
    if uid {
        rest = rest
            .strip_prefix(b" ")
            .ok_or(SyntaxError::InvalidCommandName)?;
        (rest, name) = word(rest, is_name_byte).map_err(|()| SyntaxError::InvalidCommandName)?;
    }
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let cmd = CommandLine {
        tag,
        name: CommandName::from_atom(name),
        uid,
        args: trim_eol(rest),
    };
    Ok((cmd, name, rest))
}

/// `1*byte` ending at SP, CR, LF or the end of input (imap-parser.c:972).
fn word(input: &[u8], ok: impl Fn(u8) -> bool) -> Result<(&[u8], &[u8]), ()> {
    let end = input.iter().position(|&c| !ok(c)).unwrap_or(input.len());
    if end == 0 {
        return Err(());
    }
    let (w, rest) = input.split_at(end);
    match rest.first() {
        None | Some(b' ' | b'\r' | b'\n') => Ok((rest, w)),
        Some(_) => Err(()),
    }
}

/// Classifies the first line of a client message from the same parse [`scan_line`] starts with;
/// `None` when its tag or command name is invalid.
pub fn command_line(line: &[u8]) -> Option<CommandLine<'_>> {
    command_head(line).ok().map(|(cmd, _, _)| cmd)
}

/// Tokenizes one line (with its line ending) of a client message.
///
/// A command whose arguments are plain ([`plain::plain_args`]: atoms, spaces and balanced
/// parentheses) is accepted in one pass over them, not token by token; its `next` state is
/// then the one it started in (there is no literal for it to be meaningful with).
pub fn scan_line(line: &[u8], start: LineStart) -> Result<ScannedLine<'_>, SyntaxError> {
    if let LineStart::Command(dialect) = start {
        let (cmd, state, rest) = command_start(line, dialect)?;
        // Skip reads nothing (the walk returns at once); APPEND's shape needs the walk.
        if matches!(state.mode, Mode::All | Mode::First(_)) && plain::plain_args(rest) {
            return Ok(ScannedLine {
                literal: None,
                next: state,
                command: Some(cmd),
            });
        }
        return walk(rest, state, Some(cmd), |_| {});
    }
    scan_tokens(line, start, |_| {})
}

/// Like [`scan_line`], handing each argument token to `each` (for policies that look at them).
pub fn scan_tokens<'a>(
    line: &'a [u8],
    start: LineStart,
    each: impl FnMut(Token<'_>),
) -> Result<ScannedLine<'a>, SyntaxError> {
    let (rest, state, command) = match start {
        LineStart::Command(dialect) => {
            let (cmd, state, rest) = command_start(line, dialect)?;
            (rest, state, Some(cmd))
        }
        LineStart::Continuation(state) => (line, state, None),
    };
    walk(rest, state, command, each)
}

/// A command's head, the state its arguments start in, and the arguments.
fn command_start(
    line: &[u8],
    dialect: Dialect,
) -> Result<(CommandLine<'_>, ArgState, &[u8]), SyntaxError> {
    let (cmd, name, rest) = command_head(line)?;
    let state = ArgState {
        mode: mode_of(dialect, cmd.uid, cmd.name, name),
        depth: 0,
    };
    Ok((cmd, state, rest))
}

/// The token walk over a line's arguments from `state`, handing each token to `each`.
fn walk<'a>(
    mut rest: &'a [u8],
    mut state: ArgState,
    command: Option<CommandLine<'a>>,
    mut each: impl FnMut(Token<'_>),
) -> Result<ScannedLine<'a>, SyntaxError> {
    loop {
        if state.mode == Mode::Skip {
            return Ok(ScannedLine {
                literal: None,
                next: state,
                command,
            });
        }
        rest = skip_spaces(rest);
        let (after, token) = match rest {
            [] | [b'\n', ..] | [b'\r', b'\n', ..] => return end_of_line(state, command),
            [b'\r', ..] => return Err(SyntaxError::BareCr),
            [b'"', ..] => quoted(rest)?,
            [b'~', b'{', ..] | [b'{', ..] => literal(rest)?,
            [b'(', tail @ ..] => (tail, Token::Open),
            [b')', tail @ ..] => (tail, Token::Close),
            _ => atom(rest, state.depth > 0)?,
        };
        rest = after;
        state = step(state, token)?;
        each(token);
        if let Token::Literal(literal) = token {
            return Ok(ScannedLine {
                literal: Some(literal),
                next: state,
                command,
            });
        }
    }
}

/// `*SP` before an argument (`imap_parser_skip_to_next`).
fn skip_spaces(input: &[u8]) -> &[u8] {
    let parsed: IResult<&[u8], &[u8]> = take_while(|c| c == b' ').parse(input);
    parsed.map_or(input, |(rest, _)| rest)
}

/// The end of the line: valid unless a list is open where the arguments are read.
fn end_of_line(
    state: ArgState,
    command: Option<CommandLine<'_>>,
) -> Result<ScannedLine<'_>, SyntaxError> {
    match state.mode {
        Mode::Append(AppendStep::Start) | Mode::AppendMailbox => {}
        Mode::Append(_) => return Err(SyntaxError::AppendArguments),
        _ if state.depth > 0 => return Err(SyntaxError::MissingClose),
        _ => {}
    }
    Ok(ScannedLine {
        literal: None,
        next: state,
        command,
    })
}

/// `DQUOTE *(QUOTED-CHAR / "\" byte) DQUOTE` (imap-parser.c:350).
fn quoted(input: &[u8]) -> Result<(&[u8], Token<'_>), SyntaxError> {
    let body = input.get(1..).unwrap_or_default();
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        match c {
            b'"' => {
                let (content, rest) = body.split_at(i);
                return Ok((rest.get(1..).unwrap_or_default(), Token::Quoted(content)));
            }
            0 => return Err(SyntaxError::NulInQuoted),
            b'\r' | b'\n' => return Err(SyntaxError::UnterminatedQuoted),
            b'\\' => match body.get(i + 1) {
                None | Some(b'\r' | b'\n') => return Err(SyntaxError::UnterminatedQuoted),
                Some(_) => i += 2,
            },
            _ => i += 1,
        }
    }
    Err(SyntaxError::UnterminatedQuoted)
}

/// `["~"] "{" *DIGIT ["+"] "}" [CR] LF` (imap-parser.c:437, :484).
fn literal(input: &[u8]) -> Result<(&[u8], Token<'_>), SyntaxError> {
    let Ok((rest, (tilde, digits, plus))) = announcement(input) else {
        return Err(SyntaxError::InvalidLiteral);
    };
    let rest = match rest {
        [b'}', rest @ ..] => rest,
        _ if plus => return Err(SyntaxError::LiteralPlus),
        _ => return Err(SyntaxError::InvalidLiteral),
    };
    if !matches!(rest, [b'\n', ..] | [b'\r', b'\n', ..]) {
        return Err(SyntaxError::LiteralNotAtEol);
    }
    let mut len: u64 = 0;
    for &d in digits {
        len = len
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(SyntaxError::LiteralLength)?;
    }
    if len > i64::MAX as u64 {
        return Err(SyntaxError::LiteralLength);
    }
    let literal = Literal {
        len,
        sync: !plus,
        binary: tilde,
    };
    Ok((rest, Token::Literal(literal)))
}

/// `["~"] "{" *DIGIT ["+"]`, up to where `}` is expected.
fn announcement(input: &[u8]) -> IResult<&[u8], (bool, &[u8], bool)> {
    let (rest, (tilde, _, digits, plus)) = (
        opt(char('~')),
        char('{'),
        take_while(|c: u8| c.is_ascii_digit()),
        opt(char('+')),
    )
        .parse(input)?;
    Ok((rest, (tilde.is_some(), digits, plus.is_some())))
}

/// An atom up to SP, CR, LF (or `)` inside a list) (imap-parser.c:320).
fn atom(input: &[u8], in_list: bool) -> Result<(&[u8], Token<'_>), SyntaxError> {
    // One pass: the atom ends at SP, CR, LF (or `)` in a list); a byte before that is checked
    // in order, so the first bad one decides the error, as a scan then a check would.
    let mut end = input.len();
    for (i, &c) in input.iter().enumerate() {
        if PLAIN_ATOM[usize::from(c)] {
            continue;
        }
        match c {
            b' ' | b'\r' | b'\n' => {
                end = i;
                break;
            }
            b')' if in_list => {
                end = i;
                break;
            }
            b')' => return Err(SyntaxError::UnexpectedClose),
            _ => atom_byte(c)?,
        }
    }
    let (word, rest) = input.split_at(end);
    Ok((rest, Token::Atom(word)))
}

/// Applies one token to the command's state.
fn step(state: ArgState, token: Token<'_>) -> Result<ArgState, SyntaxError> {
    let depth = match token {
        Token::Open => state.depth.checked_add(1).ok_or(SyntaxError::TooDeep)?,
        Token::Close => state
            .depth
            .checked_sub(1)
            .ok_or(SyntaxError::UnexpectedClose)?,
        _ => state.depth,
    };
    if let Token::Literal(Literal { binary: true, .. }) = token
        && !matches!(state.mode, Mode::Append(_))
    {
        return Err(SyntaxError::Literal8NotAllowed);
    }
    // A top-level argument is complete after an atom, string or literal at depth 0, or a `)`
    // back to depth 0.
    let completes = depth == 0 && token != Token::Open;
    let mode = match state.mode {
        Mode::First(n) if completes => match n.saturating_sub(1) {
            0 => Mode::Skip,
            n => Mode::First(n),
        },
        Mode::AppendMailbox if token == Token::Open => {
            return Err(SyntaxError::AppendArguments);
        }
        Mode::AppendMailbox => Mode::Append(AppendStep::Start),
        Mode::Append(at) => Mode::Append(append_step(at, token)?),
        mode => mode,
    };
    Ok(ArgState { mode, depth })
}

/// APPEND's message shape (cmd-append.c:467 `cmd_append_handle_args`, :285 `cmd_append_catenate`).
fn append_step(at: AppendStep, token: Token<'_>) -> Result<AppendStep, SyntaxError> {
    use AppendStep::*;
    let catenate =
        |t: Token<'_>| matches!(t, Token::Atom(a) if a.eq_ignore_ascii_case(b"CATENATE"));
    Ok(match (at, token) {
        (Start, Token::Open) => Flags,
        (Flags, Token::Atom(_)) => Flags,
        (Flags, Token::Close) => AfterFlags,
        (Start | AfterFlags, Token::Quoted(_)) => Date,
        (Start | AfterFlags | Date, Token::Literal(_)) => Start,
        (Start | AfterFlags | Date, t) if catenate(t) => Catenate,
        (Catenate, Token::Open) => Part { first: true },
        (Part { .. }, Token::Atom(a)) if a.eq_ignore_ascii_case(b"URL") => Url,
        (Part { .. }, Token::Atom(a)) if a.eq_ignore_ascii_case(b"TEXT") => Text,
        (Part { first: false }, Token::Close) => Start,
        (Url, Token::Atom(_) | Token::Quoted(_)) => Part { first: false },
        (Text, Token::Literal(_)) => Part { first: false },
        _ => return Err(SyntaxError::AppendArguments),
    })
}

#[path = "lexer_modes.rs"]
mod modes;
#[cfg(test)]
use modes::mode_by_name;
use modes::mode_of;

#[path = "lexer_plain.rs"]
mod plain;

#[cfg(test)]
#[path = "lexer_tests.rs"]
mod tests;
