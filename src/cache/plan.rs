//! What the cache does with one FETCH: fill (forward it and keep the answers' cacheable
//! items) or serve (send the upstream the same set without the cached items and put them back
//! into the answers), decided when the command starts. A FETCH by number that can only fill
//! (nothing in flight, nothing cached in its mailbox) is read only when its answers come
//! ([`Pending`]): under pipelined load the command behind it usually spoils it first.

use std::sync::Arc;

use super::key::{MailboxKey, MessageKey};
use super::merge::{Piece, extract, literal_value};
use super::rewrite::{ItemClass, Request, Wanted};
use super::store::{Item, Message, Store};
use crate::proto::message::{Assembled, FetchData};

/// Most messages a served or filled request may name.
pub const MAX_SET: usize = 10_000;

/// What the stage is doing with a FETCH in flight.
pub enum Op {
    /// Forwarded untouched; its answers may fill the cache.
    Fill(Box<Fill>),
    /// Served: its answers get the cached items.
    Serve(Box<Serve>),
    /// A FETCH by number, alone, in a mailbox with nothing cached: forwarded untouched, and
    /// read only if it comes to fill (see [`Pending`]).
    Pending(Box<Pending>),
}

impl Op {
    /// Its tag.
    pub fn tag(&self) -> &[u8] {
        match self {
            Op::Fill(f) => &f.tag,
            Op::Serve(s) => &s.tag,
            Op::Pending(p) => p.tag(),
        }
    }

    /// Whether it wants FETCH answers whole.
    pub fn listens(&self) -> bool {
        match self {
            Op::Fill(f) => !f.spoiled,
            Op::Serve(_) => true,
            Op::Pending(p) => !p.spoiled,
        }
    }

    /// Whether an answer for `uid` is this command's (the oldest command that claims an answer
    /// gets it: a server answers pipelined commands in order).
    pub fn claims(&self, uid: u32) -> bool {
        match self {
            Op::Serve(s) => s.hit(uid).is_some_and(|i| !s.hits[i].done),
            Op::Fill(f) => f
                .set
                .as_ref()
                .is_none_or(|set| set.binary_search(&uid).is_ok()),
            // As its fill would (by number: no set, every answer).
            Op::Pending(_) => true,
        }
    }

    /// Whether it may share `uids` with another FETCH in flight.
    pub fn disjoint(&self, uids: &[u32]) -> bool {
        let free = |u: u32| uids.binary_search(&u).is_err();
        match self {
            Op::Serve(s) => s.hits.iter().all(|h| free(h.uid)),
            Op::Fill(f) => f
                .set
                .as_ref()
                .is_some_and(|set| set.iter().all(|&u| free(u))),
            Op::Pending(_) => false,
        }
    }
}

/// A FETCH by number planned lazily. It was alone, in a mailbox with nothing cached, so its
/// plan could only be a fill (or nothing): the command goes upstream untouched either way, and
/// reading it (the parse, the items, the canonical request) waits until its first answer or its
/// completion, by which time a command pipelined behind it has usually spoiled it. A spoiled
/// fill by number does the same whatever it holds (it claims every answer, keeps none, shares
/// no UID set, commits nothing), and so does a pending one; one that is not spoiled is made
/// into the [`Fill`] an eager plan would have made (the session's mailbox cannot have changed:
/// nothing was in flight before it and nothing started after it).
pub struct Pending {
    /// The command line as sent.
    pub line: Box<[u8]>,
    /// The tag's length (the tag starts the line).
    pub tag_len: usize,
    /// Another command started meanwhile.
    pub spoiled: bool,
}

impl Pending {
    /// A pending plan for `line`, when `tag` starts it.
    pub fn new(tag: &[u8], line: &[u8]) -> Option<Pending> {
        (line.starts_with(tag) && line.get(tag.len()) == Some(&b' ')).then(|| Pending {
            line: line.into(),
            tag_len: tag.len(),
            spoiled: false,
        })
    }

    /// Its tag.
    pub fn tag(&self) -> &[u8] {
        self.line.get(..self.tag_len).unwrap_or_default()
    }
}

/// A FETCH forwarded untouched, whose answers may fill the cache.
pub struct Fill {
    /// Its tag.
    pub tag: Vec<u8>,
    /// The mailbox it ran in.
    pub mailbox: Arc<MailboxKey>,
    /// The upstream's name (orders are per upstream).
    pub upstream: Arc<str>,
    /// The canonical request (for the order of its answers).
    pub request: String,
    /// Its cacheable items.
    pub wanted: Vec<Wanted>,
    /// The UIDs of a `UID FETCH` without `*`, sorted: what its answers are told apart by when
    /// FETCHes are pipelined.
    pub set: Option<Vec<u32>>,
    /// A complete answer covers `set` (no modifiers): its UIDs below the highest answered UID
    /// that got no answer do not exist.
    pub marks_absent: bool,
    /// Items seen per UID, committed on the tagged OK.
    pub found: Vec<(u32, Vec<Item>)>,
    /// The UIDs answered.
    pub answered: Vec<u32>,
    /// The order of the first answer's items.
    pub order: Option<Vec<String>>,
    /// Per wanted item, its key and the label its first answer had (shared by every entry
    /// this fill makes).
    pub names: Vec<(Arc<str>, Option<Arc<str>>)>,
    /// Bytes in `found`.
    pub bytes: usize,
    /// Another command started meanwhile, or an answer was too much to keep.
    pub spoiled: bool,
}

/// The cached items of one message of a served request.
pub struct Hit {
    /// The message's UID.
    pub uid: u32,
    /// Its entry (held: eviction cannot break the answer).
    pub message: Arc<Message>,
    /// Where its cached request items start in [`Serve::pieces`].
    pub at: usize,
    /// Its answer got the cached items (a later answer for the same UID, such as a flag
    /// change the server reports unasked, passes as it is).
    pub done: bool,
}

/// A FETCH served from the cache.
pub struct Serve {
    /// Its tag.
    pub tag: Vec<u8>,
    /// The messages, by UID (sorted).
    pub hits: Vec<Hit>,
    /// Where each cached request item comes from, for each hit in turn (`wanted` pieces each).
    pub pieces: Vec<Piece>,
    /// Cached request items per message.
    pub wanted: usize,
    /// The labels of the cached items as the server echoes them, in request order.
    pub labels: Vec<String>,
    /// The order the server answers in, when learned.
    pub order: Option<Arc<[String]>>,
    /// The cached item the `\Seen` substitute stands for.
    pub substitute: Option<usize>,
    /// `UID` was added to the upstream request (a FETCH by sequence number without it).
    pub drop_uid: bool,
}

impl Serve {
    /// The index of the hit for a UID.
    pub fn hit(&self, uid: u32) -> Option<usize> {
        self.hits.binary_search_by_key(&uid, |h| h.uid).ok()
    }

    /// The pieces of hit `i`.
    pub fn pieces(&self, i: usize) -> &[Piece] {
        let at = self.hits.get(i).map_or(0, |h| h.at);
        self.pieces.get(at..at + self.wanted).unwrap_or_default()
    }
}

/// Where a wanted item comes from in a cached message: the item itself, or a partial cut from
/// the whole section.
fn piece(message: &Message, wanted: &Wanted) -> Option<Piece> {
    if let Some(i) = message.items.iter().position(|i| *i.key == *wanted.key) {
        return Some(Piece::Whole(i));
    }
    let ((origin, length), whole) = (wanted.partial?, wanted.whole.as_deref()?);
    let item = message.items.iter().position(|i| &*i.key == whole)?;
    let it = message.items.get(item)?;
    // Only a literal can be cut (the server answers partials as literals).
    literal_value(it, it.label.len())?;
    Some(Piece::Slice {
        item,
        origin,
        length,
    })
}

/// The label a piece answers as.
fn label(message: &Message, piece: Piece) -> Option<String> {
    match piece {
        Piece::Whole(i) => Some(message.items.get(i)?.label.to_string()),
        Piece::Slice { item, origin, .. } => {
            Some(format!("{}<{origin}>", message.items.get(item)?.label))
        }
    }
}

/// A served plan when every cacheable item of every message of `uids` is cached (or the
/// message is known not to exist).
pub fn serve(
    store: &Store,
    req: &Request,
    mailbox: &Arc<MailboxKey>,
    uids: &[u32],
    wanted: &[Wanted],
    order: Option<Arc<[String]>>,
) -> Option<Serve> {
    let mut hits = Vec::with_capacity(uids.len());
    let mut pieces = Vec::with_capacity(uids.len() * wanted.len());
    let mut key = MessageKey {
        mailbox: mailbox.clone(),
        uid: 0,
    };
    let mut sorted = true;
    for &uid in uids {
        key.uid = uid;
        let message = store.get(&key)?;
        if message.absent {
            continue;
        }
        let at = pieces.len();
        for w in wanted {
            pieces.push(piece(&message, w)?);
        }
        sorted &= hits.last().is_none_or(|h: &Hit| h.uid < uid);
        hits.push(Hit {
            uid,
            message,
            at,
            done: false,
        });
    }
    if !sorted {
        hits.sort_unstable_by_key(|h| h.uid);
    }
    let labels = match hits.first() {
        Some(h) => pieces[h.at..h.at + wanted.len()]
            .iter()
            .map(|&p| label(&h.message, p))
            .collect::<Option<Vec<String>>>()?,
        None => Vec::new(),
    };
    let order = order.or_else(|| Some(default_order(req, &labels).into()));
    let has_uid = req
        .items
        .iter()
        .any(|i| i.text.eq_ignore_ascii_case(b"UID"));
    Some(Serve {
        tag: req.tag.clone(),
        hits,
        pieces,
        wanted: wanted.len(),
        substitute: wanted.iter().position(|w| w.sets_seen),
        labels,
        order,
        drop_uid: !req.uid && !has_uid,
    })
}

/// The request's items, canonical, in order (what the server's answer order depends on).
pub fn canonical_request(req: &Request) -> String {
    let mut out = String::from(if req.uid { "UID FETCH" } else { "FETCH" });
    for item in &req.items {
        out.push(' ');
        match &item.class {
            // PEEK or not, the answer's order is the same (an implicit FLAGS aside, which the
            // merge places by the upstream's answer).
            ItemClass::Cached(w) => out.push_str(&w.key),
            _ => out.push_str(&String::from_utf8_lossy(&item.text).to_ascii_uppercase()),
        }
    }
    if let Some(m) = &req.modifiers {
        // CHANGEDSINCE adds MODSEQ to every answer.
        let m = String::from_utf8_lossy(m).to_ascii_uppercase();
        for word in ["CHANGEDSINCE", "VANISHED"] {
            if m.contains(word) {
                out.push_str(" +");
                out.push_str(word);
            }
        }
    }
    out
}

/// The order Dovecot answers in, for when no complete answer to the same request was seen:
/// UID; then RFC822.SIZE, INTERNALDATE, FLAGS and MODSEQ as requested; an implicit FLAGS and
/// MODSEQ (CHANGEDSINCE adds it); then the other items as requested. `labels` are the cached items' labels, in request order.
pub fn default_order(req: &Request, labels: &[String]) -> Vec<String> {
    let mut cached = labels.iter();
    let named: Vec<(bool, String)> = req
        .items
        .iter()
        .filter_map(|i| {
            let label = match &i.class {
                ItemClass::Cached(_) => cached.next()?.clone(),
                _ => String::from_utf8_lossy(&i.text).to_ascii_uppercase(),
            };
            let fast = matches!(&*label, "RFC822.SIZE" | "INTERNALDATE" | "FLAGS" | "MODSEQ");
            Some((fast, label))
        })
        .collect();
    let mut order = vec!["UID".to_owned()];
    order.extend(named.iter().filter(|(f, _)| *f).map(|(_, l)| l.clone()));
    order.push("FLAGS".to_owned());
    order.push("MODSEQ".to_owned());
    order.extend(named.iter().filter(|(f, _)| !*f).map(|(_, l)| l.clone()));
    order
}

/// Whether an answer item named `name`, with `section` and partial `origin`, answers `w`
/// (the section compared as the server may echo it: case aside).
fn is_answer(w: &Wanted, name: &str, section: Option<&[u8]>, origin: Option<u32>) -> bool {
    w.name == name
        && w.origin() == origin
        && match (&w.section, section) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            (None, None) => true,
            _ => false,
        }
}

/// Two wanted items the answers could not tell apart.
pub fn ambiguous(wanted: &[Wanted]) -> bool {
    wanted.iter().enumerate().any(|(i, a)| {
        wanted[..i]
            .iter()
            .any(|b| is_answer(b, a.name, a.section.as_deref(), a.origin()))
    })
}

/// The index of the wanted item a response item answers.
pub fn answers(wanted: &[Wanted], item: &crate::proto::message::FetchItem<'_>) -> Option<usize> {
    let name = item.att.name()?;
    wanted
        .iter()
        .position(|w| is_answer(w, name, item.section, item.origin))
}

impl Fill {
    /// Keeps the wanted items of one answer.
    pub(super) fn take(&mut self, msg: &Assembled<'_>, data: &FetchData<'_>, uid: u32, max: usize) {
        if self.spoiled {
            return;
        }
        self.answered.push(uid);
        let mut items = Vec::new();
        for item in &data.items {
            let Some(i) = answers(&self.wanted, item) else {
                continue;
            };
            let Some(bytes) = extract(msg, item.start, item.value.end) else {
                continue;
            };
            self.bytes += bytes.len();
            if self.bytes > max {
                // More than the whole cache holds: not worth keeping.
                self.spoiled = true;
                self.found = Vec::new();
                return;
            }
            let (key, label) = &mut self.names[i];
            let label = match label {
                Some(l) if super::merge::label_is(item, l) => l.clone(),
                _ => label.insert(Arc::from(item.label())).clone(),
            };
            items.push(Item {
                key: key.clone(),
                label,
                bytes: bytes.into(),
            });
        }
        if !items.is_empty() {
            // The order of an answer to the request (not of a flag change the server slipped
            // in before it).
            if self.order.is_none() {
                self.order = Some(data.items.iter().map(|i| i.label()).collect());
            }
            self.found.push((uid, items));
        }
    }

    /// Commits a complete, successful fill.
    pub(super) fn commit(self, store: &Store) {
        let Fill {
            mailbox,
            upstream,
            request,
            found,
            answered,
            set,
            marks_absent,
            order,
            ..
        } = self;
        let uid_set = set.filter(|_| marks_absent);
        let items: usize = found.iter().map(|(_, i)| i.len()).sum();
        store.metrics.misses.inc_by(items as u64);
        let key = |uid| MessageKey {
            mailbox: mailbox.clone(),
            uid,
        };
        if let (Some(set), Some(&top)) = (uid_set, answered.iter().max()) {
            let mut answered = answered;
            answered.sort_unstable();
            for uid in set.into_iter().filter(|&u| u < top) {
                if answered.binary_search(&uid).is_err() {
                    store.mark_absent(key(uid));
                }
            }
        }
        for (uid, items) in found {
            store.add(key(uid), items);
        }
        if let Some(order) = order {
            store.set_order(upstream, request, order);
        }
    }
}
