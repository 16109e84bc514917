//! Parsers for the arguments of the commands the proxy answers itself before login (LOGIN,
//! AUTHENTICATE, ID). They run on a whole, assembled message: literal bytes inline after their
//! announcement's CRLF, exactly as they came over the wire.
//!
//! ```text
//! login        = "LOGIN" SP userid SP password
//! authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]      ; RFC 9051, RFC 4959
//! id           = "ID" SP id-params-list                               ; RFC 2971
//! id-params-list = "(" *(string SP nstring) ")" / nil
//! astring      = 1*ASTRING-CHAR / string
//! string       = quoted / literal
//! quoted       = DQUOTE *QUOTED-CHAR DQUOTE
//! QUOTED-CHAR  = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials / UTF8-2..4
//! literal      = "{" number64 ["+"] "}" CRLF *CHAR8
//! ```

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, tag_no_case, take, take_while, take_while1},
    character::complete::{char, digit1},
    combinator::{eof, map, opt},
    multi::separated_list0,
    sequence::{delimited, preceded, terminated},
};

use super::command::{is_atom_char, trim_eol};

/// `quoted`: the unescaped content.
fn quoted(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (mut input, _) = char('"').parse(input)?;
    let mut out = Vec::new();
    loop {
        match input.first() {
            Some(b'"') => return Ok((&input[1..], out)),
            Some(b'\\') => match input.get(1) {
                Some(&c @ (b'"' | b'\\')) => {
                    out.push(c);
                    input = &input[2..];
                }
                _ => return fail(input),
            },
            Some(b'\r' | b'\n' | 0) | None => return fail(input),
            Some(&c) => {
                out.push(c);
                input = &input[1..];
            }
        }
    }
}

fn fail<T>(input: &[u8]) -> IResult<&[u8], T> {
    Err(nom::Err::Error(nom::error::Error::new(
        input,
        nom::error::ErrorKind::Verify,
    )))
}

/// `literal`: the bytes after the announcement.
fn literal(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (input, (_, digits, _, _, _)) = (
        opt(char('~')),
        preceded(char('{'), digit1),
        opt(char('+')),
        char('}'),
        tag(&b"\r\n"[..]),
    )
        .parse(input)?;
    let len = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<usize>().ok());
    let Some(len) = len else {
        return fail(input);
    };
    map(take(len), |b: &[u8]| b.to_vec()).parse(input)
}

/// `string = quoted / literal`.
pub fn string(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((quoted, literal)).parse(input)
}

/// `astring = 1*ASTRING-CHAR / string`.
pub fn astring(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((
        map(
            take_while1(|c| is_atom_char(c) || c == b']'),
            |a: &[u8]| a.to_vec(),
        ),
        string,
    ))
    .parse(input)
}

/// `nstring = string / nil`.
fn nstring(input: &[u8]) -> IResult<&[u8], Option<Vec<u8>>> {
    alt((map(tag_no_case(&b"NIL"[..]), |_| None), map(string, Some))).parse(input)
}

/// The arguments of `LOGIN`: user name and password.
pub fn login_args(args: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let parsed: IResult<&[u8], _> =
        terminated((astring, preceded(char(' '), astring)), eof).parse(trim_eol(args));
    parsed.ok().map(|(_, v)| v)
}

/// The arguments of `AUTHENTICATE`: the mechanism and the SASL-IR initial response, if any
/// (`Some(empty)` for `=`).
pub fn authenticate_args(args: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let base64_char = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=';
    let parsed: IResult<&[u8], _> = terminated(
        (
            take_while1(is_atom_char),
            opt(preceded(char(' '), take_while1(base64_char))),
        ),
        eof,
    )
    .parse(trim_eol(args));
    let (_, (mech, ir)) = parsed.ok()?;
    let ir = ir.map(|ir: &[u8]| if ir == b"=" { Vec::new() } else { ir.to_vec() });
    Some((mech.to_ascii_uppercase(), ir))
}

/// One `ID` field: a name and an optional value.
pub type IdField = (Vec<u8>, Option<Vec<u8>>);

/// The arguments of `ID`: the field list (empty for `NIL`).
pub fn id_args(args: &[u8]) -> Option<Vec<IdField>> {
    let pair = (string, preceded(char(' '), nstring));
    let list = delimited(char('('), separated_list0(char(' '), pair), char(')'));
    let parsed: IResult<&[u8], _> = terminated(
        alt((list, map(tag_no_case(&b"NIL"[..]), |_| Vec::new()))),
        (take_while(|c| c == b' '), eof),
    )
    .parse(trim_eol(args));
    parsed.ok().map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_forms() {
        let v = |u: &str, p: &str| Some((u.as_bytes().to_vec(), p.as_bytes().to_vec()));
        assert_eq!(login_args(b"alice secret\r\n"), v("alice", "secret"));
        assert_eq!(
            login_args(b"\"al ice\" \"se\\\"c\\\\ret\"\r\n"),
            v("al ice", "se\"c\\ret")
        );
        assert_eq!(
            login_args(b"{5}\r\nalice {6+}\r\nsec et\r\n"),
            v("alice", "sec et")
        );
        assert_eq!(login_args(b"alice\r\n"), None);
        assert_eq!(login_args(b"alice secret extra\r\n"), None);
        assert_eq!(login_args(b"\"unterminated secret\r\n"), None);
        assert_eq!(login_args(b"{9}\r\nabc\r\n"), None);
    }

    #[test]
    fn authenticate_forms() {
        assert_eq!(
            authenticate_args(b"plain\r\n"),
            Some((b"PLAIN".to_vec(), None))
        );
        assert_eq!(
            authenticate_args(b"PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
            Some((b"PLAIN".to_vec(), Some(b"AGFsaWNlAHNlY3JldA==".to_vec())))
        );
        assert_eq!(
            authenticate_args(b"XOAUTH2 =\r\n"),
            Some((b"XOAUTH2".to_vec(), Some(vec![])))
        );
        assert_eq!(authenticate_args(b"PLAIN a b\r\n"), None);
    }

    #[test]
    fn id_forms() {
        assert_eq!(id_args(b"NIL\r\n"), Some(vec![]));
        assert_eq!(
            id_args(b"(\"name\" \"mutt\" \"version\" NIL)\r\n"),
            Some(vec![
                (b"name".to_vec(), Some(b"mutt".to_vec())),
                (b"version".to_vec(), None)
            ])
        );
        assert_eq!(id_args(b"(\"name\")\r\n"), None);
    }
}
