//! LIST and LSUB responses: flags, hierarchy delimiter, the decoded mailbox name with its extent
//! (so a stage can drop or rewrite the message), and LIST-EXTENDED items kept as raw extents.
//!
//! ```text
//! mailbox-data  =/ "LIST" SP mailbox-list / "LSUB" SP mailbox-list       ; RFC 9051 §9, RFC 3501
//! mailbox-list  = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
//!                 [SP mbox-list-extended]
//! mbox-list-extended = "(" [mbox-list-extended-item *(SP mbox-list-extended-item)] ")"
//! mbox-list-extended-item = mbox-list-extended-item-tag SP tagged-ext-val
//! mbox-list-extended-item-tag = astring
//! mailbox       = "INBOX" / astring
//! ```
//!
//! Liberal: any flag-like word passes in `mbx-list-flags`; `NIL` is case-insensitive.

use super::Assembled;
use super::cursor::{AString, Cursor, ParseError, Shape, Value, Words, quoted, word_list};

/// One `mailbox-list` (the data of `* LIST` or `* LSUB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxList<'a> {
    /// The mailbox attributes (`\HasNoChildren`, `\Noselect`, `\Sent`...).
    pub flags: Words<'a>,
    /// The hierarchy delimiter; `None` for `NIL` (a flat namespace).
    pub delimiter: Option<u8>,
    /// The mailbox name, decoded (still modified UTF-7 or UTF-8 as the server sent it).
    pub mailbox: AString<'a>,
    /// The whole `mbox-list-extended` list, when present.
    pub extended: Option<Value<'a>>,
    /// Its items (`CHILDINFO`, `OLDNAME`...).
    pub items: Vec<ExtendedItem<'a>>,
}

/// One `mbox-list-extended-item`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedItem<'a> {
    /// Its tag (`CHILDINFO`), decoded.
    pub tag: AString<'a>,
    /// Its value's extent.
    pub value: Value<'a>,
}

/// `"LIST" SP mailbox-list`.
pub fn parse_list<'a>(msg: &Assembled<'a>) -> Result<MailboxList<'a>, ParseError> {
    parse(msg, b"* LIST ", "\"* LIST \"")
}

/// `"LSUB" SP mailbox-list`.
pub fn parse_lsub<'a>(msg: &Assembled<'a>) -> Result<MailboxList<'a>, ParseError> {
    parse(msg, b"* LSUB ", "\"* LSUB \"")
}

/// The response word, then `mailbox-list` to the end of the message.
fn parse<'a>(
    msg: &Assembled<'a>,
    word: &'static [u8],
    expected: &'static str,
) -> Result<MailboxList<'a>, ParseError> {
    let mut c = Cursor::new(msg)?;
    c.keyword(word, expected)?;
    let flags = c.lex(word_list, "mbx-list-flags")?;
    c.sp()?;
    let delimiter = if c.peek() == Some(b'"') {
        let at = c.expected("delimiter");
        match c.lex(quoted, "quoted delimiter")?.as_ref() {
            [d] => Some(*d),
            _ => return Err(at),
        }
    } else {
        c.keyword(b"NIL", "delimiter")?;
        None
    };
    c.sp()?;
    let mailbox = c.astring()?;
    let mut extended = None;
    let mut items = Vec::new();
    if c.eat(b' ') {
        let start = c.pos();
        c.byte(b'(', "mbox-list-extended")?;
        if !c.eat(b')') {
            loop {
                let tag = c.astring()?;
                c.sp()?;
                let value = c.value()?;
                items.push(ExtendedItem { tag, value });
                if c.eat(b')') {
                    break;
                }
                c.sp()?;
            }
        }
        let end = c.pos();
        extended = Some(Value {
            start,
            end,
            shape: Shape::List {
                literals: start.line..end.line,
            },
            text: msg.slice(start, end),
        });
    }
    c.finish()?;
    Ok(MailboxList {
        flags,
        delimiter,
        mailbox,
        extended,
        items,
    })
}
