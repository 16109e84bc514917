//! Putting cached items into the server's FETCH responses, and taking items out of them.
//!
//! A served response is rebuilt from the upstream's items (UID, FLAGS, MODSEQ, as the upstream
//! sent them) and the cached items (the server's exact bytes from an earlier answer), in the
//! order the server used for the same request when it answered it whole. Items the order does
//! not name (an implicit `FLAGS` the cold answer lacked) stay where the upstream put them
//! relative to the others.

use std::sync::Arc;

use super::store::Entry;
use crate::proto::message::{Assembled, FetchAtt, FetchData, FetchItem, LiteralBody, Pos};

/// The bytes of a message from `start` to `end`, literals included; `None` when a literal in
/// between streamed (its bytes were not kept).
pub fn extract(msg: &Assembled<'_>, start: Pos, end: Pos) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut line = start.line;
    let mut offset = start.offset;
    loop {
        let text = msg.lines.get(line)?;
        if line == end.line {
            out.extend_from_slice(text.get(offset..end.offset)?);
            return Some(out);
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

/// One item of a response being rebuilt.
struct Part<'a> {
    label: String,
    bytes: &'a [u8],
}

/// Whether `item` is the `\Seen` substitute's answer (`BODY[]<0>`).
pub fn is_substitute(item: &FetchItem<'_>) -> bool {
    item.att == FetchAtt::BodySection && item.section == Some(&b""[..]) && item.origin == Some(0)
}

/// Rebuilds `* n FETCH (...)` from the upstream's answer (`msg`, `data`) and the cached items.
/// `substitute`: the request carried the `\Seen` substitute, whose answer is dropped and whose
/// place the first cached non-PEEK content item takes. `None` when the answer cannot be
/// rebuilt (a literal that streamed).
pub fn merge(
    msg: &Assembled<'_>,
    data: &FetchData<'_>,
    cached: &[Arc<Entry>],
    order: Option<&[String]>,
    substitute: Option<&str>,
) -> Option<Vec<u8>> {
    // The upstream's items; the substitute's answer is marked with a leading NUL.
    let mut upstream: Vec<(String, Vec<u8>)> = Vec::with_capacity(data.items.len());
    for item in &data.items {
        let bytes = extract(msg, item.start, item.value.end)?;
        let label = if is_substitute(item) && substitute.is_some() {
            format!("\0{}", substitute.unwrap_or_default())
        } else {
            item.label()
        };
        upstream.push((label, bytes));
    }
    let ups: Vec<Part<'_>> = upstream
        .iter()
        .map(|(label, bytes)| Part {
            label: label.clone(),
            bytes,
        })
        .collect();
    let cache: Vec<Part<'_>> = cached
        .iter()
        .map(|e| Part {
            label: e.label.clone(),
            bytes: &e.bytes,
        })
        .collect();
    let parts = arrange(&ups, &cache, order, substitute);
    let mut out = format!("* {} FETCH (", data.seq).into_bytes();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b")\r\n");
    Some(out)
}

/// The items in order: see the module comment. Upstream labels starting with NUL are the
/// substitute's answer: it marks where `substitute` goes and is not sent itself.
#[allow(clippy::needless_range_loop)] // three parallel index sets
fn arrange<'a>(
    ups: &[Part<'a>],
    cache: &[Part<'a>],
    order: Option<&[String]>,
    substitute: Option<&str>,
) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(ups.len() + cache.len());
    let mut up_used = vec![false; ups.len()];
    let mut cache_used = vec![false; cache.len()];
    let emit_up = |i: usize, out: &mut Vec<&'a [u8]>, cache_used: &mut Vec<bool>| {
        if let Some(sub) = ups[i].label.strip_prefix('\0') {
            // The substitute's place: the cached item it stands for.
            let want = substitute.unwrap_or(sub);
            if let Some(j) = (0..cache.len()).find(|&j| !cache_used[j] && cache[j].label == want) {
                cache_used[j] = true;
                out.push(cache[j].bytes);
            }
        } else {
            out.push(ups[i].bytes);
        }
    };
    for label in order.unwrap_or_default() {
        let sub_label = |p: &Part<'_>| p.label.strip_prefix('\0').unwrap_or(&p.label) == label;
        if let Some(i) = (0..ups.len()).find(|&i| !up_used[i] && sub_label(&ups[i])) {
            for k in 0..i {
                if !up_used[k] {
                    up_used[k] = true;
                    emit_up(k, &mut out, &mut cache_used);
                }
            }
            up_used[i] = true;
            emit_up(i, &mut out, &mut cache_used);
        } else if let Some(j) =
            (0..cache.len()).find(|&j| !cache_used[j] && cache[j].label == *label)
        {
            cache_used[j] = true;
            out.push(cache[j].bytes);
        }
    }
    for i in 0..ups.len() {
        if !up_used[i] {
            up_used[i] = true;
            emit_up(i, &mut out, &mut cache_used);
        }
    }
    for j in 0..cache.len() {
        if !cache_used[j] {
            out.push(cache[j].bytes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(label: &str, bytes: &'static [u8]) -> Part<'static> {
        Part {
            label: label.to_owned(),
            bytes,
        }
    }

    fn labels(order: &[&str]) -> Vec<String> {
        order.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn order_learned_from_a_whole_answer_wins() {
        let ups = [part("UID", b"UID 1"), part("FLAGS", b"FLAGS ()")];
        let cache = [
            part("BODY[HEADER]", b"BODY[HEADER] {0}\r\n"),
            part("RFC822.SIZE", b"RFC822.SIZE 9"),
        ];
        let order = labels(&["UID", "RFC822.SIZE", "FLAGS", "BODY[HEADER]"]);
        let got = arrange(&ups, &cache, Some(&order), None);
        assert_eq!(
            got,
            [
                &b"UID 1"[..],
                b"RFC822.SIZE 9",
                b"FLAGS ()",
                b"BODY[HEADER] {0}\r\n"
            ]
        );
    }

    #[test]
    fn extras_keep_their_place_and_the_substitute_is_replaced() {
        // The order lacks the implicit FLAGS; the upstream put it before the substitute.
        let ups = [
            part("UID", b"UID 1"),
            part("FLAGS", b"FLAGS (\\Seen)"),
            part("\0BODY[TEXT]", b"BODY[]<0> {1}\r\nR"),
        ];
        let cache = [part("BODY[TEXT]", b"BODY[TEXT] {2}\r\nhi")];
        let order = labels(&["UID", "BODY[TEXT]"]);
        let got = arrange(&ups, &cache, Some(&order), Some("BODY[TEXT]"));
        assert_eq!(
            got,
            [&b"UID 1"[..], b"FLAGS (\\Seen)", b"BODY[TEXT] {2}\r\nhi"]
        );
        // Without an order: upstream first, the rest after.
        let got = arrange(&ups, &cache, None, Some("BODY[TEXT]"));
        assert_eq!(
            got,
            [&b"UID 1"[..], b"FLAGS (\\Seen)", b"BODY[TEXT] {2}\r\nhi"]
        );
    }

    #[test]
    fn extract_spans_literals() {
        let msg = Assembled {
            lines: vec![b"* 1 FETCH (A {2}\r\n", b" B {1}\r\n", b")\r\n"],
            literals: vec![LiteralBody::Bytes(b"xy"), LiteralBody::Bytes(b"z")],
        };
        let got = extract(
            &msg,
            Pos {
                line: 0,
                offset: 11,
            },
            Pos { line: 2, offset: 0 },
        );
        assert_eq!(got.as_deref(), Some(&b"A {2}\r\nxy B {1}\r\nz"[..]));
    }
}
