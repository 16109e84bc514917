//! Classifies server responses from the first line of their message, and rewrites the capability
//! lists the client sees.
//!
//! ```text
//! response-data  = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data /
//!                  capability-data / enable-data) CRLF
//! response-tagged = tag SP resp-cond-state CRLF
//! continue-req   = "+" [SP (resp-text / base64)] CRLF
//! resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
//! resp-text      = ["[" resp-text-code "]" SP] [text]
//! capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev2" *(SP capability)
//! ```

use std::borrow::Cow;

use super::command::{is_tag_char, trim_eol};

/// The status of a tagged (or untagged OK/NO/BAD) response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `OK`
    Ok,
    /// `NO`
    No,
    /// `BAD`
    Bad,
}

/// What a response line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// `+ ...`: the server wants more from the client.
    Continuation,
    /// `* ...`; `keyword` is the first atom after `*` (a number for message data such as
    /// `* 3 EXISTS`, in which case `second` holds `EXISTS`).
    Untagged {
        /// First atom after `* `.
        keyword: &'a [u8],
        /// Second atom, if any.
        second: &'a [u8],
    },
    /// `tag OK|NO|BAD ...`
    Tagged {
        /// The tag it completes.
        tag: &'a [u8],
        /// The result.
        status: Status,
    },
}

/// Splits off the first space-separated atom.
fn atom(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&c| c == b' ') {
        Some(end) => (&input[..end], &input[end + 1..]),
        // The empty rest still points into `input`, so callers may compute offsets from it.
        None => (input, &input[input.len()..]),
    }
}

/// Classifies the first line of a response message; `None` when it is not shaped like one.
pub fn classify(line: &[u8]) -> Option<Response<'_>> {
    let body = trim_eol(line);
    match body.first()? {
        b'+' => Some(Response::Continuation),
        b'*' => {
            let rest = body.strip_prefix(b"* ")?;
            let (keyword, rest) = atom(rest);
            let (second, _) = atom(rest);
            Some(Response::Untagged { keyword, second })
        }
        _ => {
            let (tag, rest) = atom(body);
            if tag.is_empty() || !tag.iter().all(|&c| is_tag_char(c)) {
                return None;
            }
            let (word, _) = atom(rest);
            let status = status(word)?;
            Some(Response::Tagged { tag, status })
        }
    }
}

/// Maps `OK` / `NO` / `BAD` (case-insensitive).
pub fn status(word: &[u8]) -> Option<Status> {
    if word.eq_ignore_ascii_case(b"OK") {
        Some(Status::Ok)
    } else if word.eq_ignore_ascii_case(b"NO") {
        Some(Status::No)
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Some(Status::Bad)
    } else {
        None
    }
}

/// The text after `tag SP` (or `* SP`) of a status response: `OK [CODE] text`.
pub fn after_tag(line: &[u8]) -> &[u8] {
    let body = trim_eol(line);
    atom(body).1
}

/// The capability tokens in `* CAPABILITY ...` or a `[CAPABILITY ...]` response code, if present.
pub fn capabilities(line: &[u8]) -> Option<&[u8]> {
    let body = trim_eol(line);
    if let Some(rest) = body.strip_prefix(b"* ") {
        let (keyword, caps) = atom(rest);
        if keyword.eq_ignore_ascii_case(b"CAPABILITY") {
            return Some(caps);
        }
    }
    let (start, end) = capability_code(body)?;
    Some(&body[start..end])
}

/// Where the tokens of a `[CAPABILITY ...]` code sit in a status line (`tag|* OK|NO|BAD|BYE|PREAUTH`).
fn capability_code(body: &[u8]) -> Option<(usize, usize)> {
    let (_, rest) = atom(body);
    let (_, text) = atom(rest);
    let text_at = body.len() - text.len();
    let code = text.strip_prefix(b"[")?;
    let name = b"CAPABILITY ";
    if code.len() < name.len() || !code[..name.len()].eq_ignore_ascii_case(name) {
        return None;
    }
    let start = text_at + 1 + name.len();
    let close = body[start..].iter().position(|&c| c == b']')?;
    Some((start, start + close))
}

/// Whether the proxy can relay a capability. `COMPRESS=` changes the byte stream under the
/// framer, so it is withheld until the proxy implements it; `STARTTLS` and `LOGINDISABLED` are
/// properties of the proxy's own listener, not the upstream's.
fn relayable(cap: &[u8]) -> bool {
    let upper = |p: &[u8]| cap.len() >= p.len() && cap[..p.len()].eq_ignore_ascii_case(p);
    !(upper(b"COMPRESS=")
        || cap.eq_ignore_ascii_case(b"STARTTLS")
        || cap.eq_ignore_ascii_case(b"LOGINDISABLED"))
}

/// Removes what the proxy cannot relay from a space-separated capability list.
pub fn filter_capability_list(caps: &[u8]) -> Cow<'_, [u8]> {
    if caps.split(|&c| c == b' ').all(relayable) {
        return Cow::Borrowed(caps);
    }
    let kept: Vec<&[u8]> = caps
        .split(|&c| c == b' ')
        .filter(|c| !c.is_empty() && relayable(c))
        .collect();
    Cow::Owned(kept.join(&b' '))
}

/// Rewrites a response line so that its capability list (untagged or in a code) holds only what
/// the proxy can relay. Returns `None` when nothing needs to change, so the line goes out as is.
pub fn filter_capability_line(line: &[u8]) -> Option<Vec<u8>> {
    let caps = capabilities(line)?;
    let Cow::Owned(filtered) = filter_capability_list(caps) else {
        return None;
    };
    // `caps` is a sub-slice of `line`: splice the filtered list in its place.
    let start = caps.as_ptr() as usize - line.as_ptr() as usize;
    let end = start + caps.len();
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..start]);
    out.extend_from_slice(&filtered);
    out.extend_from_slice(&line[end..]);
    Some(out)
}

/// Whether a space-separated capability list contains `cap` (case-insensitive).
pub fn has_capability(caps: &[u8], cap: &[u8]) -> bool {
    caps.split(|&c| c == b' ')
        .any(|c| c.eq_ignore_ascii_case(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_responses() {
        assert_eq!(classify(b"+ idling\r\n"), Some(Response::Continuation));
        assert_eq!(classify(b"+\r\n"), Some(Response::Continuation));
        assert_eq!(
            classify(b"* 3 EXISTS\r\n"),
            Some(Response::Untagged {
                keyword: b"3",
                second: b"EXISTS"
            })
        );
        assert_eq!(
            classify(b"a1 ok [READ-WRITE] done\r\n"),
            Some(Response::Tagged {
                tag: b"a1",
                status: Status::Ok
            })
        );
        assert_eq!(classify(b"a1 MAYBE\r\n"), None);
        assert_eq!(classify(b"\r\n"), None);
    }

    #[test]
    fn filters_capabilities_everywhere() {
        let line = b"* CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE LITERAL+\r\n";
        assert_eq!(
            filter_capability_line(line).unwrap(),
            b"* CAPABILITY IMAP4rev1 IDLE LITERAL+\r\n".to_vec()
        );
        let line = b"a OK [CAPABILITY IMAP4rev1 compress=deflate SORT] Logged in\r\n";
        assert_eq!(
            filter_capability_line(line).unwrap(),
            b"a OK [CAPABILITY IMAP4rev1 SORT] Logged in\r\n".to_vec()
        );
        assert_eq!(
            filter_capability_line(b"* CAPABILITY IMAP4rev1 IDLE\r\n"),
            None
        );
        assert_eq!(filter_capability_line(b"* OK [READ-WRITE] x\r\n"), None);
        assert_eq!(
            filter_capability_line(b"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE\r\n"),
            None
        );
    }
}
