//! Hidden mailboxes: the patterns an `on_login` decision names for its session, matched against
//! the names commands carry and the names in LIST, LSUB and STATUS responses (which NOTIFY
//! sends too).
//!
//! A pattern is a mailbox name as the server spells it (modified UTF-7, or UTF-8 after
//! `ENABLE UTF8=ACCEPT`) with IMAP's LIST wildcards: `*` matches anything, `%` anything but a
//! hierarchy delimiter (`.` or `/`). `INBOX` matches in any case, as IMAP says; every other name
//! is case-sensitive, as Dovecot's are.

use crate::phases::{Kinds, ResponseMessage};
use crate::proto::message::{parse_list, parse_lsub, parse_status};

/// Most patterns a decision may give.
const MAX_PATTERNS: usize = 256;

/// The hidden-mailbox rules of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The patterns.
    patterns: Vec<Vec<u8>>,
}

impl Rules {
    /// Rules from patterns (empty ones refused).
    pub fn new(patterns: Vec<Vec<u8>>) -> Result<Rules, String> {
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("more than {MAX_PATTERNS} hide patterns"));
        }
        if patterns.iter().any(|p| p.is_empty()) {
            return Err("an empty hide pattern".into());
        }
        Ok(Rules { patterns })
    }

    /// Whether `name` is hidden.
    pub fn hides(&self, name: &[u8]) -> bool {
        let name = inbox_upper(name);
        self.patterns
            .iter()
            .any(|p| matches(&inbox_upper(p), &name))
    }

    /// Whether a LIST, LSUB or STATUS response names a hidden mailbox (it is then dropped).
    /// A response of these kinds that does not parse is dropped too: it cannot be shown to
    /// name a visible one.
    pub fn hides_response(&self, msg: &ResponseMessage<'_>) -> bool {
        let name = msg.with_assembled(|m| {
            if msg.kind.intersects(Kinds::LIST) {
                parse_list(m).map(|l| l.mailbox.bytes.into_owned())
            } else if msg.kind.intersects(Kinds::LSUB) {
                parse_lsub(m).map(|l| l.mailbox.bytes.into_owned())
            } else {
                parse_status(m).map(|s| s.mailbox.bytes.into_owned())
            }
        });
        match name {
            Some(Ok(name)) => self.hides(&name),
            _ => true,
        }
    }
}

/// `INBOX` in any case, and its children, spelled `INBOX`.
fn inbox_upper(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let is_inbox = name.len() >= 5
        && name[..5].eq_ignore_ascii_case(b"INBOX")
        && (name.len() == 5 || matches!(name[5], b'.' | b'/'));
    if is_inbox && &name[..5] != b"INBOX" {
        let mut owned = name.to_vec();
        owned[..5].copy_from_slice(b"INBOX");
        std::borrow::Cow::Owned(owned)
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// LIST-style wildcard match of a whole name: dynamic programming over the pattern, one row
/// per pattern byte (O(pattern × name), no recursion, no backtracking blow-up).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    // `row[j]`: the pattern so far matches `name[..j]`.
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    for &c in pattern {
        match c {
            b'*' => {
                for j in 1..=name.len() {
                    row[j] = row[j] || row[j - 1];
                }
            }
            b'%' => {
                for j in 1..=name.len() {
                    row[j] = row[j] || (row[j - 1] && !matches!(name[j - 1], b'.' | b'/'));
                }
            }
            _ => {
                for j in (1..=name.len()).rev() {
                    row[j] = row[j - 1] && name[j - 1] == c;
                }
                row[0] = false;
            }
        }
    }
    row[name.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(p: &[&str]) -> Rules {
        Rules::new(p.iter().map(|s| s.as_bytes().to_vec()).collect()).unwrap()
    }

    #[test]
    fn wildcards_and_inbox() {
        let r = rules(&["Archive", "Private.*", "Team%", "inbox.Secret"]);
        assert!(r.hides(b"Archive"));
        assert!(!r.hides(b"Archive2"));
        assert!(!r.hides(b"archive"));
        assert!(r.hides(b"Private.a.b"));
        assert!(!r.hides(b"Private"));
        assert!(r.hides(b"TeamX"));
        assert!(!r.hides(b"TeamX.Sub"));
        assert!(r.hides(b"INBOX.Secret"));
        assert!(r.hides(b"Inbox.Secret"));
        assert!(!r.hides(b"INBOX"));
        assert!(rules(&["*"]).hides(b"anything.at/all"));
        assert!(rules(&["a*b*c"]).hides(b"aXbYbZc"));
        assert!(!rules(&["a*b*c"]).hides(b"aXbYbZ"));
    }

    #[test]
    fn responses() {
        let r = rules(&["Archive", "Folder With Spaces"]);
        let msg = |kind, bytes: &'static [u8]| ResponseMessage {
            kind,
            bytes,
            streamed: false,
            assembled: None,
        };
        assert!(r.hides_response(&msg(
            Kinds::LIST,
            b"* LIST (\\HasNoChildren) \".\" Archive\r\n"
        )));
        assert!(!r.hides_response(&msg(Kinds::LIST, b"* LIST () \".\" INBOX\r\n")));
        assert!(r.hides_response(&msg(
            Kinds::LSUB,
            b"* LSUB () \".\" {18}\r\nFolder With Spaces\r\n"
        )));
        assert!(r.hides_response(&msg(
            Kinds::STATUS,
            b"* STATUS \"Archive\" (MESSAGES 2)\r\n"
        )));
        assert!(!r.hides_response(&msg(Kinds::STATUS, b"* STATUS INBOX (MESSAGES 2)\r\n")));
        assert!(r.hides_response(&msg(Kinds::STATUS, b"* STATUS (garbage\r\n")));
    }
}
