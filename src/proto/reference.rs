//! A deliberately simple reference for where client messages and literals begin and end: a
//! byte-at-a-time state machine, written apart from the lexer and the framer, for the property
//! tests and the `boundaries` fuzz target to compare them with. It knows the same grammar (see
//! [`super::lexer`]) for commands read by Dovecot's `imap` process, with every synchronizing
//! literal accepted and no size limits. Not for production use.

use super::framer::{Direction, Framer, Limits};
use super::lexer::Dialect;
use super::replay::{Event, replay};

/// A boundary in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A line from `start` to `end` (after its LF).
    Line {
        /// Offset of its first byte.
        start: usize,
        /// Offset after its LF.
        end: usize,
        /// It starts a message.
        first: bool,
        /// It tokenized.
        valid: bool,
    },
    /// Literal data (never empty).
    Literal {
        /// Offset of its first byte.
        start: usize,
        /// Its length.
        len: u64,
    },
}

/// What the per-line machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Reading the tag (`n` bytes so far).
    Tag(usize),
    /// Reading a command name.
    Name,
    /// Before an argument.
    Gap,
    /// After a CR before an argument.
    Cr,
    /// In an atom.
    Atom,
    /// In a quoted string; `true` right after a backslash.
    Quoted(bool),
    /// After `~`, expecting `{`.
    Tilde,
    /// Inside `{...}`: digits value (capped), `+` seen.
    Braces(u128, bool),
    /// After `}`: the value, and `true` after a CR.
    Closed(u128, bool),
    /// Ignoring the rest of the line (valid).
    Ignore,
    /// Ignoring the rest of the line (invalid).
    Broken,
}

/// Computes the marks of `stream`; `true` with them when a literal length was out of range (the
/// framer fails there).
pub fn marks(stream: &[u8]) -> (Vec<Mark>, bool) {
    let mut out = Vec::new();
    let mut line_start = 0;
    let mut first = true;
    // Per command: remaining top-level args (u32::MAX = all; 0 = skip); append step (0 = not
    // APPEND, 1 = mailbox, 2 start, 3 flags, 4 after flags, 5 date, 6 catenate, 7 first part,
    // 8 part, 9 url, 10 text); depth.
    let mut left: u32 = 0;
    let mut append: u8 = 0;
    let mut depth: u64 = 0;
    let mut at = At::Tag(0);
    let mut name: Vec<u8> = Vec::new();
    let mut uid = false;
    let mut tilde = false;
    let mut word: Vec<u8> = Vec::new();
    let mut i = 0;
    while let Some(&c) = stream.get(i) {
        i += 1;
        if c == b'\n' {
            // The line ends; decide what it was.
            let mut literal = None;
            let valid = match at {
                At::Closed(n, _) => {
                    if n > i64::MAX as u128 {
                        // The framer fails on an out-of-range length.
                        return (out, true);
                    }
                    let allowed = !tilde || append >= 2;
                    let valid = allowed && apply(b'{', &[], &mut left, &mut append, depth);
                    if valid {
                        literal = Some(n);
                    }
                    valid
                }
                At::Name => {
                    !name.is_empty() && !uid_pending(uid, &name) && {
                        (left, append) = table(uid, &name);
                        depth = 0;
                        eol(left, append, depth)
                    }
                }
                At::Braces(..) | At::Tilde | At::Tag(_) | At::Broken | At::Quoted(_) => false,
                At::Ignore => true,
                At::Atom => {
                    finish_word(&word, &mut left, &mut append, depth) && eol(left, append, depth)
                }
                At::Gap | At::Cr => eol(left, append, depth),
            };
            out.push(Mark::Line {
                start: line_start,
                end: i,
                first,
                valid,
            });
            match (valid, literal) {
                (true, Some(len)) => {
                    let len = u64::try_from(len).unwrap_or(u64::MAX);
                    let start = i;
                    let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l));
                    match end {
                        Some(end) if end <= stream.len() => {
                            if len > 0 {
                                out.push(Mark::Literal { start, len });
                            }
                            i = end;
                        }
                        _ => return (out, false),
                    }
                    first = false;
                    at = At::Gap;
                }
                _ => {
                    first = true;
                    at = At::Tag(0);
                    depth = 0;
                    left = 0;
                    append = 0;
                }
            }
            line_start = i;
            continue;
        }
        at = match at {
            At::Broken | At::Ignore => at,
            At::Tag(n) => match c {
                b' ' if n > 0 => {
                    name.clear();
                    uid = false;
                    At::Name
                }
                _ if c != b'+' && name_byte(c) => At::Tag(n + 1),
                _ => At::Broken,
            },
            At::Name => match c {
                b' ' | b'\r' if !name.is_empty() => {
                    if uid_pending(uid, &name) {
                        uid = true;
                        name.clear();
                        if c == b' ' { At::Name } else { At::Broken }
                    } else {
                        (left, append) = table(uid, &name);
                        depth = 0;
                        if left == 0 {
                            At::Ignore
                        } else if c == b' ' {
                            At::Gap
                        } else {
                            At::Cr
                        }
                    }
                }
                _ if name_byte(c) => {
                    name.push(c);
                    At::Name
                }
                _ => At::Broken,
            },
            At::Cr => At::Broken,
            At::Gap => {
                if left == 0 {
                    At::Ignore
                } else {
                    match c {
                        b' ' => At::Gap,
                        b'\r' => At::Cr,
                        b'"' => At::Quoted(false),
                        b'{' => {
                            tilde = false;
                            At::Braces(0, false)
                        }
                        b'~' if stream.get(i) == Some(&b'{') => {
                            tilde = true;
                            At::Tilde
                        }
                        b'(' => {
                            depth += 1;
                            if apply(b'(', &[], &mut left, &mut append, depth) {
                                At::Gap
                            } else {
                                At::Broken
                            }
                        }
                        b')' if depth > 0 => {
                            depth -= 1;
                            if apply(b')', &[], &mut left, &mut append, depth) {
                                gap(left)
                            } else {
                                At::Broken
                            }
                        }
                        _ if atom_ok(c) => {
                            word.clear();
                            word.push(c);
                            At::Atom
                        }
                        _ => At::Broken,
                    }
                }
            }
            At::Atom => match c {
                b' ' | b'\r' | b')' if !(c == b')' && depth == 0) => {
                    if !finish_word(&word, &mut left, &mut append, depth) {
                        At::Broken
                    } else if c == b')' {
                        depth -= 1;
                        if apply(b')', &[], &mut left, &mut append, depth) {
                            gap(left)
                        } else {
                            At::Broken
                        }
                    } else if c == b'\r' {
                        if left == 0 { At::Ignore } else { At::Cr }
                    } else {
                        gap(left)
                    }
                }
                _ if atom_ok(c) => {
                    word.push(c);
                    At::Atom
                }
                _ => At::Broken,
            },
            At::Quoted(true) => match c {
                b'\r' => At::Broken,
                _ => At::Quoted(false),
            },
            At::Quoted(false) => match c {
                b'\\' => At::Quoted(true),
                b'"' => {
                    if apply(b'"', &[], &mut left, &mut append, depth) {
                        gap(left)
                    } else {
                        At::Broken
                    }
                }
                0 | b'\r' => At::Broken,
                _ => At::Quoted(false),
            },
            At::Tilde => At::Braces(0, false),
            At::Braces(n, plus) => match c {
                b'}' => At::Closed(n, false),
                _ if plus => At::Broken,
                b'+' => At::Braces(n, true),
                b'0'..=b'9' => At::Braces(
                    (n * 10 + u128::from(c - b'0')).min(u128::from(u64::MAX) + 1),
                    false,
                ),
                _ => At::Broken,
            },
            At::Closed(n, false) if c == b'\r' => At::Closed(n, true),
            At::Closed(..) => At::Broken,
        };
    }
    (out, false)
}

/// The name read so far is `UID` and a sub-command name follows.
fn uid_pending(uid: bool, name: &[u8]) -> bool {
    !uid && name.eq_ignore_ascii_case(b"UID")
}

/// The state before the next argument.
fn gap(left: u32) -> At {
    if left == 0 { At::Ignore } else { At::Gap }
}

/// Tag and command-name bytes (tags also exclude `+`).
fn name_byte(c: u8) -> bool {
    c > b' ' && c < 0x80 && !b"(){%*\"\\]".contains(&c)
}

/// Atom bytes.
fn atom_ok(c: u8) -> bool {
    c > b' ' && c < 0x7f && !b"(){\"".contains(&c)
}

/// (args to read, APPEND step) for a command name.
fn table(uid: bool, name: &[u8]) -> (u32, u8) {
    let n = String::from_utf8_lossy(name).to_ascii_uppercase();
    let all = "CANCELUPDATE ENABLE EXAMINE FETCH GENURLAUTH GETMETADATA ID LIST LSUB NOTIFY \
               RESETKEY SEARCH SELECT SORT STORE THREAD URLFETCH X-STATE XLIST";
    let has = |list: &str| list.split(' ').any(|w| w == n);
    if uid {
        return if has("FETCH SEARCH SORT STORE THREAD") {
            (u32::MAX, 0)
        } else if has("COPY MOVE") {
            (2, 0)
        } else if n == "EXPUNGE" {
            (1, 0)
        } else {
            (0, 0)
        };
    }
    if has(all) {
        (u32::MAX, 0)
    } else if has("CREATE DELETE SUBSCRIBE UNSUBSCRIBE X-CANCEL") {
        (1, 0)
    } else if has("COPY MOVE RENAME SETMETADATA STATUS") {
        (2, 0)
    } else if n == "APPEND" {
        (u32::MAX, 1)
    } else {
        (0, 0)
    }
}

/// An atom ended: count it.
fn finish_word(word: &[u8], left: &mut u32, append: &mut u8, depth: u64) -> bool {
    apply(b'a', word, left, append, depth)
}

/// Applies an argument (`a` atom, `"` string, `{` literal, `(`, `)`) at `depth` (after it).
fn apply(kind: u8, word: &[u8], left: &mut u32, append: &mut u8, depth: u64) -> bool {
    if *append > 0 {
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        *append = match (*append, kind) {
            (1, b'(') => return false,
            (1, _) => 2,
            (2, b'(') => 3,
            (3, b'a') => 3,
            (3, b')') => 4,
            (2 | 4, b'"') => 5,
            (2 | 4 | 5, b'{') => 2,
            (2 | 4 | 5, b'a') if is(b"CATENATE") => 6,
            (6, b'(') => 7,
            (7 | 8, b'a') if is(b"URL") => 9,
            (7 | 8, b'a') if is(b"TEXT") => 10,
            (8, b')') => 2,
            (9, b'a' | b'"') => 8,
            (10, b'{') => 8,
            _ => return false,
        };
        return true;
    }
    if depth == 0 && kind != b'(' && *left != u32::MAX {
        *left = left.saturating_sub(1);
    }
    true
}

/// Whether the line may end here.
fn eol(left: u32, append: u8, depth: u64) -> bool {
    match append {
        0 => left == 0 || depth == 0,
        a => a <= 2,
    }
}

/// The marks the framer (after login, every synchronizing literal accepted, no practical limits)
/// produces for `stream` fed in the pieces that `cuts` (sorted or not) make of it.
pub fn framer_marks(stream: &[u8], cuts: &[usize]) -> (Vec<Mark>, bool) {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for c in cuts {
        chunks.push(stream.get(prev..c).unwrap_or_default());
        prev = c;
    }
    chunks.push(stream.get(prev..).unwrap_or_default());
    let limits = Limits {
        max_line: usize::MAX / 2,
        max_literal: u64::MAX,
    };
    let mut framer = Framer::new(Direction::ClientToServer, limits);
    framer.set_dialect(Dialect::Imap);
    let (events, err) = replay(&mut framer, &chunks, true);
    let mut out = Vec::new();
    let mut at = 0;
    for event in events {
        match event {
            Event::Line {
                bytes,
                first,
                valid,
            } => {
                out.push(Mark::Line {
                    start: at,
                    end: at + bytes.len(),
                    first,
                    valid,
                });
                at += bytes.len();
            }
            Event::Literal(data) => {
                out.push(Mark::Literal {
                    start: at,
                    len: data.len() as u64,
                });
                at += data.len();
            }
            // Not produced without limits; make any appearance a mismatch.
            Event::Discarded { .. } | Event::LiteralTooLarge(_) => out.push(Mark::Literal {
                start: usize::MAX,
                len: 0,
            }),
        }
    }
    (out, err.is_some())
}

#[cfg(test)]
#[path = "reference_tests.rs"]
mod tests;
