//! FETCH requests as the cache reads them: the sequence set and each item's canonical form, and
//! the upstream request with the cached items taken out.
//!
//! ```text
//! fetch     = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
//!             "(" fetch-att *(SP fetch-att) ")") [fetch-modifiers]      ; RFC 9051 §9
//! fetch-att = "ENVELOPE" / "FLAGS" / "INTERNALDATE" / "RFC822" [".HEADER" / ".SIZE" / ".TEXT"] /
//!             "BODY" ["STRUCTURE"] / "UID" / "BODY" section [partial] /
//!             "BODY.PEEK" section [partial] / "BINARY" [".PEEK"] section-binary [partial] /
//!             "BINARY.SIZE" section-binary / "EMAILID" / ...
//! fetch-modifiers = SP "(" fetch-modifier *(SP fetch-modifier) ")"   ; RFC 7162 §3.1.4
//! ```
//!
//! Items the cache does not keep (`PREVIEW`, `THREADID`, vendor items, and `SAVEDATE`: RFC 8514
//! means it to be fixed, but Dovecot on maildir reports the file's change time, which a flag
//! change moves) are [`ItemClass::Other`]: they stay in the upstream request. Macros (`ALL`, `FAST`, `FULL`), literals and anything not
//! understood make the command [`Parsed::Bypass`], and it is then forwarded untouched.

use crate::proto::message::decimal_u32 as number;

/// How the cache treats one requested item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemClass {
    /// `UID`, `FLAGS`, `MODSEQ`: always asked of the upstream.
    Live,
    /// An immutable item the cache keeps.
    Cached(Wanted),
    /// An item the cache does not keep (`PREVIEW`, `THREADID`, `X-GM-LABELS`...): it stays in
    /// the upstream request and its answer is passed on.
    Other,
}

/// What a cacheable request item is, and how the server's answer to it is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The canonical item (the key of its entry in a message): upper-case name (`BODY.PEEK` as
    /// `BODY`, `BINARY.PEEK` as `BINARY`), the section exactly as sent, the partial as sent
    /// (`BODY[HEADER.FIELDS (From)]<0.100>`).
    pub key: String,
    /// The response item's name (`BODY`, `BINARY`, `ENVELOPE`, `RFC822.HEADER`...).
    pub name: &'static str,
    /// The section as sent, for items with one.
    pub section: Option<Vec<u8>>,
    /// A partial's `<origin.length>`.
    pub partial: Option<(u32, u32)>,
    /// For a partial: the key of the whole section, which a partial can be cut from.
    pub whole: Option<String>,
    /// A content item whose non-PEEK form sets `\Seen`.
    pub sets_seen: bool,
}

impl Wanted {
    /// The origin of a partial, as the answer echoes it (`BODY[]<0>`).
    pub fn origin(&self) -> Option<u32> {
        self.partial.map(|(o, _)| o)
    }
}

/// One item of the client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The item as sent.
    pub text: Vec<u8>,
    /// What the cache does with it.
    pub class: ItemClass,
}

/// A FETCH request the cache can take part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The tag.
    pub tag: Vec<u8>,
    /// `UID FETCH`.
    pub uid: bool,
    /// The sequence set as sent.
    pub set: Vec<u8>,
    /// The items in the order sent.
    pub items: Vec<Item>,
    /// Fetch modifiers as sent, with their leading space (` (CHANGEDSINCE 5 VANISHED)`).
    pub modifiers: Option<Vec<u8>>,
    /// The line ending as sent.
    pub eol: &'static [u8],
}

/// The result of reading a FETCH line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The cache may take part.
    Fetch(Request),
    /// Forward untouched (macros, literals, anything unexpected).
    Bypass,
}

/// Reads a client command line `tag [UID] FETCH set items CRLF`.
pub fn parse_request(line: &[u8]) -> Parsed {
    parse(line).map_or(Parsed::Bypass, Parsed::Fetch)
}

fn parse(line: &[u8]) -> Option<Request> {
    let (body, eol): (&[u8], &'static [u8]) = if let Some(b) = line.strip_suffix(b"\r\n") {
        (b, b"\r\n")
    } else {
        (line.strip_suffix(b"\n")?, b"\n")
    };
    if body.iter().any(|c| !(b' '..0x7f).contains(c)) || body.ends_with(b"}") {
        return None;
    }
    let sp = body.iter().position(|&c| c == b' ')?;
    let tag = body.get(..sp)?.to_vec();
    let mut rest = body.get(sp + 1..)?;
    let uid = if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case(b"UID ") {
        rest = &rest[4..];
        true
    } else {
        false
    };
    if rest.len() < 6 || !rest[..6].eq_ignore_ascii_case(b"FETCH ") {
        return None;
    }
    rest = &rest[6..];
    let sp = rest.iter().position(|&c| c == b' ')?;
    let set = rest.get(..sp)?;
    if set.is_empty()
        || !set
            .iter()
            .all(|&c| c.is_ascii_digit() || c == b':' || c == b',' || c == b'*')
    {
        return None;
    }
    let atts = rest.get(sp + 1..)?;
    let (texts, modifiers) = if atts.starts_with(b"(") {
        let close = list_end(atts)?;
        let inner = atts.get(1..close)?;
        let after = atts.get(close + 1..)?;
        let modifiers = if after.is_empty() {
            None
        } else if after.starts_with(b" (")
            && after.ends_with(b")")
            && list_end(&after[1..]) == Some(after.len() - 2)
        {
            Some(after.to_vec())
        } else {
            return None;
        };
        (split_items(inner)?, modifiers)
    } else {
        let items = split_items(atts)?;
        if items.len() != 1 {
            return None;
        }
        (items, None)
    };
    if texts.is_empty() {
        return None;
    }
    let mut items = Vec::with_capacity(texts.len());
    for text in texts {
        let class = classify(text)?;
        items.push(Item {
            text: text.to_vec(),
            class,
        });
    }
    Some(Request {
        tag,
        uid,
        set: set.to_vec(),
        items,
        modifiers,
        eol,
    })
}

/// The index of the `)` closing the list `s` starts with (brackets and quotes respected).
fn list_end(s: &[u8]) -> Option<usize> {
    let (mut depth, mut quote, mut i) = (0i32, false, 0);
    while i < s.len() {
        match s[i] {
            b'\\' if quote => i += 1,
            b'"' => quote = !quote,
            b'[' | b'(' if !quote => depth += 1,
            b']' | b')' if !quote => {
                depth -= 1;
                if depth == 0 {
                    return (s[i] == b')').then_some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits items at spaces outside brackets, parentheses and quotes.
fn split_items(s: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start, mut i) = (0i32, false, 0, 0);
    while i < s.len() {
        let c = s[i];
        match c {
            b'\\' if quote => i += 1,
            b'"' => quote = !quote,
            b'[' | b'(' if !quote => depth += 1,
            b']' | b')' if !quote => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            b' ' if !quote && depth == 0 => {
                out.push(s.get(start..i)?);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quote || depth != 0 {
        return None;
    }
    out.push(s.get(start..)?);
    if out.iter().any(|t| t.is_empty()) {
        return None;
    }
    Some(out)
}

/// What one item is; `None` when the command must bypass the cache.
fn classify(text: &[u8]) -> Option<ItemClass> {
    let name_end = text
        .iter()
        .position(|&c| c == b'[' || c == b'<')
        .unwrap_or(text.len());
    let name = text[..name_end].to_ascii_uppercase();
    let rest = &text[name_end..];
    if rest.is_empty() {
        let simple = |n: &'static str, sets_seen: bool| {
            Some(ItemClass::Cached(Wanted {
                key: n.to_owned(),
                name: n,
                section: None,
                partial: None,
                whole: None,
                sets_seen,
            }))
        };
        return match &name[..] {
            b"UID" | b"FLAGS" | b"MODSEQ" => Some(ItemClass::Live),
            b"ENVELOPE" => simple("ENVELOPE", false),
            b"BODYSTRUCTURE" => simple("BODYSTRUCTURE", false),
            b"BODY" => simple("BODY", false),
            b"INTERNALDATE" => simple("INTERNALDATE", false),
            b"RFC822.SIZE" => simple("RFC822.SIZE", false),
            b"RFC822.HEADER" => simple("RFC822.HEADER", false),
            b"RFC822" => simple("RFC822", true),
            b"RFC822.TEXT" => simple("RFC822.TEXT", true),
            b"EMAILID" => simple("EMAILID", false),
            // Macros: the answer's order and implicit items are the server's business.
            b"ALL" | b"FAST" | b"FULL" => None,
            // BINARY, BINARY.SIZE and BODY.PEEK need a section.
            b"BINARY" | b"BINARY.PEEK" | b"BINARY.SIZE" | b"BODY.PEEK" => None,
            n if !n.is_empty()
                && n.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_') =>
            {
                Some(ItemClass::Other)
            }
            _ => None,
        };
    }
    let (canonical, response, sets_seen, partial_ok): (&[u8], &'static str, bool, bool) =
        match &name[..] {
            b"BODY" => (b"BODY", "BODY", true, true),
            b"BODY.PEEK" => (b"BODY", "BODY", false, true),
            b"BINARY" => (b"BINARY", "BINARY", true, true),
            b"BINARY.PEEK" => (b"BINARY", "BINARY", false, true),
            b"BINARY.SIZE" => (b"BINARY.SIZE", "BINARY.SIZE", false, false),
            _ => return None,
        };
    let inner = rest.strip_prefix(b"[")?;
    let close = section_end(inner)?;
    let section = &inner[..close];
    let after = &inner[close + 1..];
    if response != "BODY" && !section.iter().all(|&c| c.is_ascii_digit() || c == b'.') {
        // section-binary = "[" [section-part] "]"
        return None;
    }
    let mut key = canonical.to_vec();
    key.push(b'[');
    key.extend_from_slice(section);
    key.push(b']');
    let whole = String::from_utf8(key.clone()).ok()?;
    let partial = if after.is_empty() {
        None
    } else {
        if !partial_ok {
            return None;
        }
        let p = after.strip_prefix(b"<")?.strip_suffix(b">")?;
        let (o, n) = split_once(p, b'.')?;
        let (o, n) = (number(o)?, number(n)?);
        if n == 0 {
            // `<0.0>` is invalid (RFC 9051 §9, nz-number).
            return None;
        }
        key.extend_from_slice(after);
        Some((o, n))
    };
    Some(ItemClass::Cached(Wanted {
        key: String::from_utf8(key).ok()?,
        name: response,
        section: Some(section.to_vec()),
        partial,
        whole: partial.map(|_| whole),
        sets_seen,
    }))
}

/// The index of the `]` closing a section (quoted field names may hold one).
fn section_end(s: &[u8]) -> Option<usize> {
    let (mut quote, mut i) = (false, 0);
    while i < s.len() {
        match s[i] {
            b'\\' if quote => i += 1,
            b'"' => quote = !quote,
            b']' if !quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&c| c == sep)?;
    Some((&s[..at], &s[at + 1..]))
}

/// The ranges of a sequence set, each low to high; `*` stands for `star` (with `None`, a set
/// with `*` is refused).
///
/// ```text
/// sequence-set = (seq-number / seq-range) ["," sequence-set]   ; RFC 9051 §9
/// seq-range    = seq-number ":" seq-number
/// seq-number   = nz-number / "*"
/// ```
pub fn ranges(set: &[u8], star: Option<u32>) -> Option<Vec<(u32, u32)>> {
    let value = |s: &[u8]| if s == b"*" { star } else { number(s) };
    set.split(|&c| c == b',')
        .map(|part| {
            let (a, b) = match split_once(part, b':') {
                Some((a, b)) => (value(a)?, value(b)?),
                None => {
                    let n = value(part)?;
                    (n, n)
                }
            };
            Some((a.min(b), a.max(b)))
        })
        .collect()
}

/// The numbers of a sequence set (sorted, once each), `*` standing for `star`, when none is 0
/// and there are at most `max`.
pub fn expand(set: &[u8], star: Option<u32>, max: usize) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for (lo, hi) in ranges(set, star)? {
        if lo == 0 || (hi - lo) as usize >= max || out.len() + (hi - lo) as usize >= max {
            return None;
        }
        out.extend(lo..=hi);
    }
    // Clients mostly send ascending, disjoint ranges: then the numbers are already in order.
    if !out.windows(2).all(|w| w[0] < w[1]) {
        out.sort_unstable();
        out.dedup();
    }
    Some(out)
}

/// The numbers of a sequence set without `*`, when there are at most `max`.
pub fn expand_set(set: &[u8], max: usize) -> Option<Vec<u32>> {
    expand(set, None, max)
}

/// The substitute for cached non-PEEK content: it marks the message `\Seen` upstream exactly as
/// the original would, and its answer is replaced by the cached bytes.
pub const SEEN_SUBSTITUTE: &[u8] = b"BODY[]<0.1>";

/// The upstream line for a request served from the cache: the same set, the items not cached
/// as the client sent them (`UID` added for a FETCH by sequence number, so each answer says
/// which message it is), the `\Seen` substitute when a cached item is non-PEEK content, and
/// the modifiers as sent.
pub fn upstream_line(req: &Request) -> Vec<u8> {
    let mut items: Vec<&[u8]> = req
        .items
        .iter()
        .filter(|i| !matches!(i.class, ItemClass::Cached(_)))
        .map(|i| &i.text[..])
        .collect();
    let has_uid = req
        .items
        .iter()
        .any(|i| i.text.eq_ignore_ascii_case(b"UID"));
    if !req.uid && !has_uid {
        items.insert(0, b"UID");
    }
    let seen = req
        .items
        .iter()
        .any(|i| matches!(&i.class, ItemClass::Cached(w) if w.sets_seen));
    if seen {
        items.push(SEEN_SUBSTITUTE);
    }
    if items.is_empty() {
        items.push(b"UID");
    }
    let mut out = req.tag.clone();
    out.extend_from_slice(if req.uid { b" UID FETCH " } else { b" FETCH " });
    out.extend_from_slice(&req.set);
    out.extend_from_slice(b" (");
    out.extend_from_slice(&items.join(&b' '));
    out.push(b')');
    if let Some(m) = &req.modifiers {
        out.extend_from_slice(m);
    }
    out.extend_from_slice(req.eol);
    out
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
