//! The parsing machinery shared by the message parsers: a cursor that walks an [`Assembled`]
//! message line by line and steps over literals, the token lexers (nom, on one line at a time),
//! generic value extents, decoded strings and word lists, and the error type.
//!
//! ```text
//! astring  = 1*ASTRING-CHAR / string
//! string   = quoted / literal
//! quoted   = DQUOTE *QUOTED-CHAR DQUOTE
//! QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials / UTF8-2..4
//! number   = 1*DIGIT            ; fits in 32 bits
//! nz-number = digit-nz *DIGIT   ; fits in 32 bits
//! number64 = 1*DIGIT            ; fits in 63 bits
//! ```
//!
//! Tokens never span lines: a line break inside a message only ever follows a literal
//! announcement, so a token lexer runs on the rest of the current line, and the cursor moves to
//! the next line only by consuming a literal. Parenthesised values are skipped iteratively (no
//! recursion, so nesting depth cannot exhaust the stack).

use std::borrow::Cow;

use nom::{
    IResult, Parser,
    bytes::complete::{tag_no_case, take_while1},
    character::complete::{char, digit1},
    combinator::recognize,
    multi::separated_list0,
};

use super::{Assembled, LiteralBody, Pos};
pub(crate) use crate::proto::command::trim_eol;
use crate::proto::literal::announced_literal;

/// Why a message did not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The lines and literals do not fit together: no lines, a literal count other than one
    /// fewer than the lines, or a line before a literal that does not announce one.
    #[error("line {line} does not match the literals of the message")]
    Shape {
        /// The offending line.
        line: usize,
    },
    /// A literal's bytes differ in length from its announcement.
    #[error("literal {index} is announced as {announced} bytes but has {actual}")]
    LiteralLength {
        /// Index into the literals.
        index: usize,
        /// Length in the announcement.
        announced: u64,
        /// Length of the literal given.
        actual: u64,
    },
    /// The grammar wanted something else here.
    #[error("expected {expected} at {at}")]
    Expected {
        /// What was expected, in grammar terms.
        expected: &'static str,
        /// Where.
        at: Pos,
    },
    /// A string whose content is needed is a literal that streamed through without being kept.
    #[error("literal {index} at {at} is needed but was not kept")]
    LiteralNotKept {
        /// Index into the literals.
        index: usize,
        /// Where its announcement starts.
        at: Pos,
    },
    /// The message goes on after what the grammar allows.
    #[error("unexpected bytes at {at}")]
    Trailing {
        /// Where the unexpected part starts.
        at: Pos,
    },
}

/// A literal a value refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralRef {
    /// Index into [`Assembled::literals`].
    pub index: usize,
    /// Announced length in bytes.
    pub len: u64,
    /// Announced as `~{n}` (literal8).
    pub binary: bool,
}

/// What a value looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `NIL`
    Nil,
    /// Digits that fit in 64 bits.
    Number(u64),
    /// Any other bare token (an atom, a flag, a sequence set).
    Atom,
    /// A quoted string.
    Quoted,
    /// A literal; its bytes stay in [`Assembled::literals`].
    Literal(LiteralRef),
    /// A parenthesised structure; `literals` are the indices of the literals inside it.
    List {
        /// The literals it contains (`start.line..end.line`).
        literals: std::ops::Range<usize>,
    },
}

/// The extent of one value in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    /// Where the value starts.
    pub start: Pos,
    /// Where it ends (exclusive).
    pub end: Pos,
    /// What it is.
    pub shape: Shape,
    /// The value's bytes when it lies within one line (never for a literal).
    pub text: Option<&'a [u8]>,
}

impl Value<'_> {
    /// The number, when the value is one.
    pub fn number(&self) -> Option<u64> {
        match self.shape {
            Shape::Number(n) => Some(n),
            _ => None,
        }
    }
}

/// How a string was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringForm {
    /// Bare `ASTRING-CHAR`s.
    Atom,
    /// A quoted string.
    Quoted,
    /// A literal (index into [`Assembled::literals`]).
    Literal(usize),
}

/// A decoded `astring` (a mailbox name, a tag string) and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AString<'a> {
    /// The content: quoting and escapes removed, a literal's bytes.
    pub bytes: Cow<'a, [u8]>,
    /// How it was written.
    pub form: StringForm,
    /// Where it starts.
    pub start: Pos,
    /// Where it ends (exclusive; the start of the next line for a literal).
    pub end: Pos,
}

/// A space-separated list of atoms (flags, capabilities), kept as the raw bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Words<'a> {
    /// The words with the single spaces between them.
    pub raw: &'a [u8],
}

impl<'a> Words<'a> {
    /// The words, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.raw.split(|&c| c == b' ').filter(|w| !w.is_empty())
    }

    /// Whether `word` is in the list (ASCII case-insensitive, as flags and capabilities are).
    pub fn contains(&self, word: &[u8]) -> bool {
        self.iter().any(|w| w.eq_ignore_ascii_case(word))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// A character of a flag, keyword or capability: any visible ASCII except `(){"]` (liberal:
/// `\`, `%`, `*` are let through so that `\Seen`, `\*` and odd keywords pass).
pub(crate) fn is_word_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !b"(){\"]".contains(&c)
}

/// `ASTRING-CHAR = ATOM-CHAR / resp-specials`.
pub(crate) fn is_astring_char(c: u8) -> bool {
    crate::proto::command::is_atom_char(c) || c == b']'
}

/// A character of a bare value token: visible ASCII except `(`, `)`, `"`, `{`.
fn is_token_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !b"()\"{".contains(&c)
}

/// A nom failure at `input`.
pub(crate) fn fail<T>(input: &[u8]) -> IResult<&[u8], T> {
    Err(nom::Err::Error(nom::error::Error::new(
        input,
        nom::error::ErrorKind::Verify,
    )))
}

/// Decimal digits as a `u64`, `None` on overflow.
pub(crate) fn digits_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// `number = 1*DIGIT` as a whole slice (at most 2^32 - 1), for callers that have already cut
/// the digits out of a line; `None` for anything else (empty, a non-digit, too large).
pub fn decimal_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    u32::try_from(digits_value(digits)?).ok()
}

/// `number64 = 1*DIGIT` (at most 2^63 - 1).
pub(crate) fn number64(input: &[u8]) -> IResult<&[u8], u64> {
    let (rest, digits) = digit1(input)?;
    match digits_value(digits) {
        Some(n) if n <= i64::MAX as u64 => Ok((rest, n)),
        _ => fail(input),
    }
}

/// `number = 1*DIGIT` (at most 2^32 - 1).
pub(crate) fn number(input: &[u8]) -> IResult<&[u8], u32> {
    let (rest, n) = number64(input)?;
    match u32::try_from(n) {
        Ok(n) => Ok((rest, n)),
        Err(_) => fail(input),
    }
}

/// `nz-number = digit-nz *DIGIT` (1 to 2^32 - 1).
pub(crate) fn nz_number(input: &[u8]) -> IResult<&[u8], u32> {
    if input.first() == Some(&b'0') {
        return fail(input);
    }
    number(input)
}

/// `"(" [word *(SP word)] ")"`: a flag list, content kept raw.
pub(crate) fn word_list(input: &[u8]) -> IResult<&[u8], Words<'_>> {
    let (rest, (_, raw, _)) = (char('('), words, char(')')).parse(input)?;
    Ok((rest, raw))
}

/// `[word *(SP word)]`, content kept raw.
pub(crate) fn words(input: &[u8]) -> IResult<&[u8], Words<'_>> {
    let (rest, raw) =
        recognize(separated_list0(char(' '), take_while1(is_word_char))).parse(input)?;
    Ok((rest, Words { raw }))
}

/// `quoted`: the content, borrowed unless it had escapes. Liberal: 8-bit bytes pass.
pub(crate) fn quoted(input: &[u8]) -> IResult<&[u8], Cow<'_, [u8]>> {
    let Some(body) = input.strip_prefix(b"\"") else {
        return fail(input);
    };
    let mut owned: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        match c {
            b'"' => {
                let rest = body.get(i + 1..).unwrap_or_default();
                let content = match owned {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(body.get(..i).unwrap_or_default()),
                };
                return Ok((rest, content));
            }
            b'\\' => match body.get(i + 1) {
                Some(&e @ (b'"' | b'\\')) => {
                    owned
                        .get_or_insert_with(|| body.get(..i).unwrap_or_default().to_vec())
                        .push(e);
                    i += 2;
                }
                _ => return fail(body.get(i..).unwrap_or_default()),
            },
            b'\r' | b'\n' | 0 => return fail(body.get(i..).unwrap_or_default()),
            _ => {
                if let Some(v) = owned.as_mut() {
                    v.push(c);
                }
                i += 1;
            }
        }
    }
    fail(input)
}

/// A literal announced at the end of the current line.
#[derive(Debug, Clone, Copy)]
struct Announced {
    /// Offset of its `{` (or `~`) in the line.
    at: usize,
    /// Announced length.
    len: u64,
    /// `~{n}`.
    binary: bool,
}

/// Walks a message: the current line, what is left of it, and its literal announcement.
pub(crate) struct Cursor<'m, 'a> {
    /// The message.
    msg: &'m Assembled<'a>,
    /// Index of the current line.
    line: usize,
    /// The current line without its line ending.
    body: &'a [u8],
    /// What is left of `body`.
    rest: &'a [u8],
    /// The literal announced at the end of the current line (every line but the last).
    announced: Option<Announced>,
}

impl<'m, 'a> Cursor<'m, 'a> {
    /// A cursor at the start of `msg`, after checking that its lines and literals fit together.
    pub(crate) fn new(msg: &'m Assembled<'a>) -> Result<Self, ParseError> {
        if msg.lines.is_empty() || msg.literals.len() + 1 != msg.lines.len() {
            return Err(ParseError::Shape { line: 0 });
        }
        let mut cursor = Cursor {
            msg,
            line: 0,
            body: &[],
            rest: &[],
            announced: None,
        };
        cursor.enter(0)?;
        Ok(cursor)
    }

    /// Moves to the start of line `line`, finding (and checking) the literal it announces.
    fn enter(&mut self, line: usize) -> Result<(), ParseError> {
        let shape = ParseError::Shape { line };
        let full = *self.msg.lines.get(line).ok_or(shape.clone())?;
        let body = trim_eol(full);
        self.line = line;
        self.body = body;
        self.rest = body;
        self.announced = None;
        let Some(literal) = self.msg.literals.get(line) else {
            return Ok(());
        };
        let Ok(Some(ann)) = announced_literal(full) else {
            return Err(shape);
        };
        let open = memchr::memrchr(b'{', body).ok_or(shape.clone())?;
        let at = if ann.binary {
            open.checked_sub(1).ok_or(shape)?
        } else {
            open
        };
        if literal.len() != ann.len {
            return Err(ParseError::LiteralLength {
                index: line,
                announced: ann.len,
                actual: literal.len(),
            });
        }
        self.announced = Some(Announced {
            at,
            len: ann.len,
            binary: ann.binary,
        });
        Ok(())
    }

    /// Where the cursor is.
    pub(crate) fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            offset: self.body.len().saturating_sub(self.rest.len()),
        }
    }

    /// The next byte of the current line.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// What is left of the current line.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// An error: `expected` was wanted here.
    pub(crate) fn expected(&self, expected: &'static str) -> ParseError {
        ParseError::Expected {
            expected,
            at: self.pos(),
        }
    }

    /// Runs a nom lexer on the rest of the current line.
    pub(crate) fn lex<O, P>(
        &mut self,
        mut parser: P,
        expected: &'static str,
    ) -> Result<O, ParseError>
    where
        P: Parser<&'a [u8], Output = O, Error = nom::error::Error<&'a [u8]>>,
    {
        match parser.parse(self.rest) {
            Ok((rest, out)) => {
                self.rest = rest;
                Ok(out)
            }
            Err(_) => Err(self.expected(expected)),
        }
    }

    /// Consumes `byte` if it is next.
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        match self.rest.split_first() {
            Some((&c, rest)) if c == byte => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    /// Consumes `byte`, or fails with `expected`.
    pub(crate) fn byte(&mut self, byte: u8, expected: &'static str) -> Result<(), ParseError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.expected(expected))
        }
    }

    /// Consumes a space.
    pub(crate) fn sp(&mut self) -> Result<(), ParseError> {
        self.byte(b' ', "SP")
    }

    /// Consumes `word` (ASCII case-insensitive), or fails with `expected`.
    pub(crate) fn keyword(
        &mut self,
        word: &'static [u8],
        expected: &'static str,
    ) -> Result<(), ParseError> {
        self.lex(tag_no_case(word), expected).map(|_| ())
    }

    /// Whether the cursor sits on the literal announcement that ends the current line.
    pub(crate) fn at_literal(&self) -> bool {
        self.announced.is_some_and(|a| a.at == self.pos().offset)
    }

    /// Consumes the literal announcement at the cursor and moves to the next line.
    pub(crate) fn literal(&mut self) -> Result<LiteralRef, ParseError> {
        let Some(ann) = self.announced.filter(|a| a.at == self.pos().offset) else {
            return Err(self.expected("literal"));
        };
        let index = self.line;
        self.enter(index + 1)?;
        Ok(LiteralRef {
            index,
            len: ann.len,
            binary: ann.binary,
        })
    }

    /// Whether the whole message has been consumed.
    pub(crate) fn at_end(&self) -> bool {
        self.rest.is_empty() && self.line + 1 == self.msg.lines.len()
    }

    /// Succeeds only at the end of the message.
    pub(crate) fn finish(&self) -> Result<(), ParseError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(ParseError::Trailing { at: self.pos() })
        }
    }

    /// `astring`, decoded. A literal's bytes must have been kept.
    pub(crate) fn astring(&mut self) -> Result<AString<'a>, ParseError> {
        let start = self.pos();
        let (bytes, form) = match self.peek() {
            Some(b'"') => (self.lex(quoted, "quoted string")?, StringForm::Quoted),
            Some(b'{' | b'~') if self.at_literal() => {
                let lit = self.literal()?;
                match self.msg.literals.get(lit.index) {
                    Some(LiteralBody::Bytes(b)) => {
                        (Cow::Borrowed(*b), StringForm::Literal(lit.index))
                    }
                    _ => {
                        return Err(ParseError::LiteralNotKept {
                            index: lit.index,
                            at: start,
                        });
                    }
                }
            }
            _ => {
                let atom = self.lex(take_while1(is_astring_char), "astring")?;
                (Cow::Borrowed(atom), StringForm::Atom)
            }
        };
        Ok(AString {
            bytes,
            form,
            start,
            end: self.pos(),
        })
    }

    /// One value of any shape, skipped: a token, a quoted string, a literal, or a parenthesised
    /// structure of those (elements separated by SP; `)(` may touch, as body parts do).
    pub(crate) fn value(&mut self) -> Result<Value<'a>, ParseError> {
        let start = self.pos();
        let shape = if self.peek() == Some(b'(') {
            self.list()?;
            Shape::List {
                literals: start.line..self.line,
            }
        } else {
            self.scalar()?
        };
        let end = self.pos();
        Ok(Value {
            start,
            end,
            shape,
            text: self.msg.slice(start, end),
        })
    }

    /// A parenthesised structure, walked with a depth counter.
    fn list(&mut self) -> Result<(), ParseError> {
        let mut depth = 0usize;
        'element: loop {
            if self.eat(b'(') {
                depth += 1;
                if self.peek() != Some(b')') {
                    continue 'element;
                }
            } else {
                self.scalar()?;
            }
            let mut closed = false;
            while depth > 0 {
                match self.peek() {
                    Some(b')') => {
                        self.rest = self.rest.get(1..).unwrap_or_default();
                        depth -= 1;
                        closed = true;
                    }
                    Some(b' ') => {
                        self.rest = self.rest.get(1..).unwrap_or_default();
                        continue 'element;
                    }
                    Some(b'(') if closed => continue 'element,
                    _ => return Err(self.expected("SP or \")\"")),
                }
            }
            return Ok(());
        }
    }

    /// A value that is not a list.
    fn scalar(&mut self) -> Result<Shape, ParseError> {
        match self.peek() {
            Some(b'"') => {
                self.lex(quoted, "quoted string")?;
                Ok(Shape::Quoted)
            }
            Some(b'{' | b'~') if self.at_literal() => Ok(Shape::Literal(self.literal()?)),
            _ => {
                let token = self.lex(take_while1(is_token_char), "value")?;
                Ok(if token.eq_ignore_ascii_case(b"NIL") {
                    Shape::Nil
                } else if token.iter().all(u8::is_ascii_digit) {
                    digits_value(token).map_or(Shape::Atom, Shape::Number)
                } else {
                    Shape::Atom
                })
            }
        }
    }
}
