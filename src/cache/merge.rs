//! Putting cached items into the server's FETCH responses, and taking items out of them.
//!
//! A served response is rebuilt from the upstream's items (UID, FLAGS, MODSEQ and what the
//! cache does not keep, as the upstream sent them) and the cached items (the server's exact
//! bytes from an earlier answer, or a partial cut from a cached whole section), in the order
//! the server used for the same request when it answered it whole. Items the order does not
//! name (an implicit `FLAGS` the cold answer lacked) stay where the upstream put them relative
//! to the others. The rebuild writes straight into the output: no copy of an item is made.

use std::io::Write;

use super::store::Item;
use crate::proto::message::{Assembled, FetchAtt, FetchData, FetchItem, LiteralBody, Pos};

/// The bytes of a message from `start` to `end`, literals included; `None` when a literal in
/// between streamed (its bytes were not kept).
pub fn extract(msg: &Assembled<'_>, start: Pos, end: Pos) -> Option<Vec<u8>> {
    // Sized first: one allocation, as large as the item.
    let mut len = 0;
    for line in start.line..=end.line {
        let text = msg.lines.get(line)?;
        let from = if line == start.line { start.offset } else { 0 };
        let to = if line == end.line {
            end.offset
        } else {
            text.len()
        };
        len += to.checked_sub(from)?;
        if line < end.line {
            len += msg.literals.get(line)?.len() as usize;
        }
    }
    let mut out = Vec::with_capacity(len);
    write_range(msg, start, end, &mut out)?;
    Some(out)
}

/// Appends the bytes of a message from `start` to `end` to `out`.
fn write_range(msg: &Assembled<'_>, start: Pos, end: Pos, out: &mut Vec<u8>) -> Option<()> {
    let mut line = start.line;
    let mut offset = start.offset;
    loop {
        let text = msg.lines.get(line)?;
        if line == end.line {
            out.extend_from_slice(text.get(offset..end.offset)?);
            return Some(());
        }
        out.extend_from_slice(text.get(offset..)?);
        match msg.literals.get(line)? {
            LiteralBody::Bytes(b) => out.extend_from_slice(b),
            LiteralBody::Streamed { .. } => return None,
        }
        line += 1;
        offset = 0;
    }
}

/// Whether `item` is the `\Seen` substitute's answer (`BODY[]<0>`).
pub fn is_substitute(item: &FetchItem<'_>) -> bool {
    item.att == FetchAtt::BodySection && item.section == Some(&b""[..]) && item.origin == Some(0)
}

/// Whether a response item's label ([`FetchItem::label`]) is `label`, without building it.
pub fn label_is(item: &FetchItem<'_>, label: &str) -> bool {
    let label = label.as_bytes();
    let name: &[u8] = match item.att.name() {
        Some(n) => n.as_bytes(),
        None => item.name,
    };
    let Some(mut rest) = label
        .get(..name.len())
        .filter(|l| l.eq_ignore_ascii_case(name))
        .and_then(|_| label.get(name.len()..))
    else {
        return false;
    };
    if let Some(section) = item.section {
        let Some(r) = rest
            .strip_prefix(b"[")
            .and_then(|r| r.strip_prefix(section))
            .and_then(|r| r.strip_prefix(b"]"))
        else {
            return false;
        };
        rest = r;
    }
    match item.origin {
        None => rest.is_empty(),
        Some(origin) => {
            let mut digits = [0u8; 10];
            let mut n = origin;
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            rest.strip_prefix(b"<")
                .and_then(|r| r.strip_prefix(&digits[at..]))
                .is_some_and(|r| r == b">")
        }
    }
}

/// How one cached item of a served request is put into the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The cached item as it is.
    Whole(usize),
    /// A partial `<origin.length>` cut from a cached whole section.
    Slice {
        /// The whole section's item.
        item: usize,
        /// Where the partial starts.
        origin: u32,
        /// How many octets at most.
        length: u32,
    },
}

/// The shape of a cached literal value: `(header length up to the data, data length, literal8)`.
pub fn literal_value(item: &Item, name_len: usize) -> Option<(usize, usize, bool)> {
    let value = item.bytes.get(name_len..)?.strip_prefix(b" ")?;
    let (binary, v) = match value.strip_prefix(b"~") {
        Some(v) => (true, v),
        None => (false, value),
    };
    let v = v.strip_prefix(b"{")?;
    let close = v.iter().position(|&c| c == b'}')?;
    let n: usize = std::str::from_utf8(&v[..close]).ok()?.parse().ok()?;
    let data = v.get(close + 1..)?.strip_prefix(b"\r\n")?;
    (data.len() == n).then_some((item.bytes.len() - n, n, binary))
}

/// Writes a cached piece; returns the bytes written.
fn write_piece(items: &[Item], piece: Piece, out: &mut Vec<u8>) -> usize {
    let before = out.len();
    match piece {
        Piece::Whole(i) => {
            if let Some(item) = items.get(i) {
                out.extend_from_slice(&item.bytes);
            }
        }
        Piece::Slice {
            item,
            origin,
            length,
        } => {
            let Some(item) = items.get(item) else {
                return 0;
            };
            let name_len = item.label.len();
            let Some((head, n, binary)) = literal_value(item, name_len) else {
                return 0;
            };
            let data = &item.bytes[head..];
            let from = (origin as usize).min(n);
            let to = from.saturating_add(length as usize).min(n);
            out.extend_from_slice(&item.bytes[..name_len]);
            let _ = write!(
                out,
                "<{origin}> {}{{{}}}\r\n",
                if binary { "~" } else { "" },
                to - from
            );
            out.extend_from_slice(&data[from..to]);
        }
    }
    out.len() - before
}

/// What a served request puts into each answer.
pub struct Layout<'a> {
    /// The cached pieces, one per cached request item, in request order.
    pub pieces: &'a [Piece],
    /// Their labels as the server echoes them, in the same order.
    pub labels: &'a [String],
    /// The order the server answers the request in, when known.
    pub order: Option<&'a [String]>,
    /// The request carried the `\Seen` substitute, which stands for this piece.
    pub substitute: Option<usize>,
    /// Leave the upstream's `UID` item out (added for a FETCH by sequence number).
    pub drop_uid: bool,
}

/// Rebuilds `* n FETCH (...)` from the upstream's answer (`msg`, `data`) and the cached
/// `items` of the message. Returns the answer and how many cached bytes went into it; `None`
/// when the answer cannot be rebuilt (a literal that streamed).
pub fn merge(
    msg: &Assembled<'_>,
    data: &FetchData<'_>,
    items: &[Item],
    layout: &Layout<'_>,
) -> Option<(Vec<u8>, usize)> {
    let ups = &data.items;
    let (n_up, n_cache) = (ups.len(), layout.pieces.len());
    if n_up > 64 || n_cache > 64 {
        return None;
    }
    let mut m = Merger {
        msg,
        ups,
        items,
        layout,
        out: Vec::with_capacity(
            32 + items.iter().map(|i| i.bytes.len()).sum::<usize>()
                + msg.lines.iter().map(|l| l.len()).sum::<usize>(),
        ),
        head: 0,
        up_used: 0,
        cache_used: 0,
        cached_bytes: 0,
    };
    let _ = write!(m.out, "* {} FETCH (", data.seq);
    m.head = m.out.len();
    let sub_label = layout.substitute.and_then(|j| layout.labels.get(j));
    for label in layout.order.unwrap_or_default() {
        let up_match = (0..n_up).find(|&i| {
            m.up_used & (1 << i) == 0
                && if m.is_sub(i) {
                    sub_label == Some(label)
                } else {
                    label_is(&ups[i], label)
                }
        });
        if let Some(i) = up_match {
            for k in 0..=i {
                m.up(k)?;
            }
        } else if let Some(j) = (0..n_cache)
            .find(|&j| m.cache_used & (1 << j) == 0 && layout.labels.get(j) == Some(label))
        {
            m.cached(j);
        }
    }
    for i in 0..n_up {
        m.up(i)?;
    }
    for j in 0..n_cache {
        m.cached(j);
    }
    m.out.extend_from_slice(b")\r\n");
    Some((m.out, m.cached_bytes))
}

/// A response being rebuilt.
struct Merger<'m, 'a> {
    /// The upstream's message.
    msg: &'m Assembled<'a>,
    /// Its items.
    ups: &'m [FetchItem<'a>],
    /// The message's cached items.
    items: &'m [Item],
    /// What goes in.
    layout: &'m Layout<'m>,
    /// The answer so far.
    out: Vec<u8>,
    /// Length of `* n FETCH (`.
    head: usize,
    /// Upstream items written (bit per item).
    up_used: u64,
    /// Cached pieces written (bit per piece).
    cache_used: u64,
    /// Cached bytes written.
    cached_bytes: usize,
}

impl Merger<'_, '_> {
    fn is_sub(&self, i: usize) -> bool {
        self.layout.substitute.is_some() && is_substitute(&self.ups[i])
    }

    fn sep(&mut self) {
        if self.out.len() > self.head {
            self.out.push(b' ');
        }
    }

    /// Writes cached piece `j` unless written.
    fn cached(&mut self, j: usize) {
        if self.cache_used & (1 << j) != 0 {
            return;
        }
        self.cache_used |= 1 << j;
        self.sep();
        if let Some(&piece) = self.layout.pieces.get(j) {
            self.cached_bytes += write_piece(self.items, piece, &mut self.out);
        }
    }

    /// Writes upstream item `i` unless written (the substitute becomes its piece, a dropped
    /// `UID` nothing).
    fn up(&mut self, i: usize) -> Option<()> {
        if self.up_used & (1 << i) != 0 {
            return Some(());
        }
        self.up_used |= 1 << i;
        if self.is_sub(i) {
            if let Some(j) = self.layout.substitute {
                self.cached(j);
            }
        } else if !(self.layout.drop_uid && self.ups[i].att == FetchAtt::Uid) {
            self.sep();
            let item = &self.ups[i];
            write_range(self.msg, item.start, item.value.end, &mut self.out)?;
        }
        Some(())
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
