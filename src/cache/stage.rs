//! The cache stage: on a UID FETCH whose cacheable items are all cached for every UID of its
//! set, the command goes upstream with those items taken out and the answers get them back
//! ([`merge`](super::merge)); otherwise the command goes upstream untouched and its complete,
//! successful answer fills the cache.
//!
//! The stage acts only on a FETCH that is alone in flight in its session (nothing pipelined
//! before it); a command started while it runs keeps a fill from being committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::CacheConfig;
use super::key::{Key, MailboxKey};
use super::merge::{extract, merge};
use super::rewrite::{self, ItemClass, Parsed, Request, Wanted};
use super::store::{Entry, Store};
use crate::phases::{
    Command, CommandDecision, Completion, Kinds, Outcome, Phases, ResponseDecision,
    ResponseMessage, SessionInfo, Summary, Verdict,
};
use crate::proto::command::CommandName;
use crate::proto::message::{FetchData, parse_fetch};

/// Most UIDs a served request may name.
const MAX_SET: usize = 10_000;

/// The FETCH cache stage.
pub struct Cache {
    store: Arc<Store>,
    sessions: Mutex<HashMap<u64, SessionState>>,
}

#[derive(Default)]
struct SessionState {
    /// Tags of the commands in flight that this stage saw start (a count: a client may reuse
    /// a tag).
    in_flight: HashMap<Vec<u8>, u32>,
    /// The FETCH the stage is working on.
    op: Option<Op>,
}

enum Op {
    /// Forwarded untouched; its answers may fill the cache.
    Fill(Box<Fill>),
    /// Served: its answers get the cached items.
    Serve(Box<Serve>),
}

struct Fill {
    tag: Vec<u8>,
    mailbox: Arc<MailboxKey>,
    upstream: Arc<str>,
    request: String,
    wanted: Vec<Wanted>,
    /// Items seen, committed on the tagged OK.
    found: Vec<(Key, Entry)>,
    order: Option<Vec<String>>,
    bytes: usize,
    /// Another command started meanwhile, or an answer was not understood.
    spoiled: bool,
}

struct Serve {
    tag: Vec<u8>,
    /// The cached items of each UID (taken when the command started: eviction cannot break it).
    items: HashMap<u32, Vec<Arc<Entry>>>,
    order: Option<Arc<[String]>>,
    /// The label of the cached item the `\Seen` substitute stands for.
    substitute: Option<String>,
}

impl Cache {
    /// A cache stage with its own store.
    pub fn new(config: &CacheConfig) -> Cache {
        Cache {
            store: Arc::new(Store::new(config)),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Registers the cache's metrics.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.store.register(registry)
    }

    /// The store (tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SessionState>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What to do with a FETCH alone in flight.
    fn plan(&self, info: &SessionInfo, cmd: &Command<'_>) -> (Option<Op>, CommandDecision) {
        let forward = (None, CommandDecision::Forward);
        let Parsed::Fetch(req) = rewrite::parse_request(cmd.line) else {
            return forward;
        };
        let (Some(mailbox), Some(upstream)) = (MailboxKey::of(info), info.upstream.clone()) else {
            return forward;
        };
        let request = canonical_request(&req);
        let wanted: Vec<Wanted> = req
            .items
            .iter()
            .filter_map(|i| match &i.class {
                ItemClass::Cached(w) => Some(w.clone()),
                _ => None,
            })
            .collect();
        if wanted.is_empty() || ambiguous(&wanted) {
            return forward;
        }
        if let Some(serve) = self.serve(&req, &mailbox, &upstream, &request, &wanted) {
            let line = rewrite::upstream_line(&req);
            return (
                Some(Op::Serve(Box::new(serve))),
                CommandDecision::Rewrite(line),
            );
        }
        if !req.uid
            && !req
                .items
                .iter()
                .any(|i| i.text.eq_ignore_ascii_case(b"UID"))
        {
            // The answers would not say which message they are.
            return forward;
        }
        let fill = Fill {
            tag: req.tag,
            mailbox,
            upstream,
            request,
            wanted,
            found: Vec::new(),
            order: None,
            bytes: 0,
            spoiled: false,
        };
        (Some(Op::Fill(Box::new(fill))), CommandDecision::Forward)
    }

    /// A served plan when every cacheable item of every UID is cached.
    fn serve(
        &self,
        req: &Request,
        mailbox: &Arc<MailboxKey>,
        upstream: &Arc<str>,
        request: &str,
        wanted: &[Wanted],
    ) -> Option<Serve> {
        if !req.uid || req.items.iter().any(|i| i.class == ItemClass::Other) {
            return None;
        }
        let uids = rewrite::expand_set(&req.set, MAX_SET)?;
        let mut items = HashMap::with_capacity(uids.len());
        let keys: Vec<Arc<str>> = wanted.iter().map(|w| Arc::from(&*w.key)).collect();
        for uid in uids {
            let mut got = Vec::with_capacity(keys.len());
            for item in &keys {
                let key = Key {
                    mailbox: mailbox.clone(),
                    uid,
                    item: item.clone(),
                };
                got.push(self.store.get(&key)?);
            }
            items.insert(uid, got);
        }
        let substitute = wanted
            .iter()
            .position(|w| w.sets_seen)
            .and_then(|i| items.values().next().map(|v| v[i].label.clone()));
        let order = self.store.order(upstream, request).or_else(|| {
            let labels: Vec<String> = items
                .values()
                .next()?
                .iter()
                .map(|e| e.label.clone())
                .collect();
            Some(default_order(req, &labels).into())
        });
        Some(Serve {
            tag: req.tag.clone(),
            items,
            order,
            substitute,
        })
    }
}

/// The request's items, canonical, in order (what the server's answer order depends on).
fn canonical_request(req: &Request) -> String {
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
    out
}

/// The order Dovecot answers in, for when no complete answer to the same request was seen:
/// UID; then RFC822.SIZE, INTERNALDATE, FLAGS and MODSEQ as requested; an implicit FLAGS; then
/// the other items as requested. `labels` are the cached items' labels, in request order.
fn default_order(req: &Request, labels: &[String]) -> Vec<String> {
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
    order.extend(named.iter().filter(|(f, _)| !*f).map(|(_, l)| l.clone()));
    order
}

/// Two wanted items the answers could not tell apart.
fn ambiguous(wanted: &[Wanted]) -> bool {
    wanted.iter().enumerate().any(|(i, a)| {
        wanted[..i].iter().any(|b| {
            a.name == b.name
                && a.origin == b.origin
                && match (&a.section, &b.section) {
                    (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                    (None, None) => true,
                    _ => false,
                }
        })
    })
}

/// The wanted item a response item answers.
fn answers<'w>(
    wanted: &'w [Wanted],
    item: &crate::proto::message::FetchItem<'_>,
) -> Option<&'w Wanted> {
    let name = item.att.name()?;
    wanted.iter().find(|w| {
        w.name == name
            && w.origin == item.origin
            && match (&w.section, item.section) {
                (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                (None, None) => true,
                _ => false,
            }
    })
}

impl Fill {
    fn take(
        &mut self,
        msg: &crate::proto::message::Assembled<'_>,
        data: &FetchData<'_>,
        max: usize,
    ) {
        let Some(uid) = data.uid() else { return };
        if self.order.is_none() {
            self.order = Some(data.items.iter().map(|i| i.label()).collect());
        }
        for item in &data.items {
            let Some(w) = answers(&self.wanted, item) else {
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
            let key = Key {
                mailbox: self.mailbox.clone(),
                uid,
                item: Arc::from(&*w.key),
            };
            self.found.push((
                key,
                Entry {
                    label: item.label(),
                    bytes: bytes.into(),
                },
            ));
        }
    }
}

impl Phases for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    fn subscriptions(&self) -> Kinds {
        Kinds::FETCH
    }

    fn keeps_fetch_bodies(&self) -> bool {
        true
    }

    fn on_command(&self, info: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        let mut sessions = self.sessions();
        let state = sessions.entry(info.id).or_default();
        let alone = state.in_flight.is_empty() && state.op.is_none();
        *state.in_flight.entry(cmd.tag.to_vec()).or_default() += 1;
        if let Some(Op::Fill(fill)) = &mut state.op {
            fill.spoiled = true;
        }
        if !alone || cmd.name != CommandName::Fetch || cmd.message.is_some() {
            return Verdict::Now(CommandDecision::Forward);
        }
        let (op, decision) = self.plan(info, cmd);
        state.op = op;
        Verdict::Now(decision)
    }

    fn on_response(&self, info: &SessionInfo, msg: &ResponseMessage<'_>) -> ResponseDecision {
        let mut sessions = self.sessions();
        let Some(op) = sessions.get_mut(&info.id).and_then(|s| s.op.as_mut()) else {
            return ResponseDecision::Forward;
        };
        let max = usize::try_from(self.store_max()).unwrap_or(usize::MAX);
        let decision = msg.with_assembled(|m| {
            let Ok(data) = parse_fetch(m) else {
                return None;
            };
            match op {
                Op::Fill(fill) => {
                    fill.take(m, &data, max);
                    None
                }
                Op::Serve(_) if msg.streamed => None,
                Op::Serve(serve) => {
                    let uid = data.uid()?;
                    let cached = serve.items.remove(&uid)?;
                    let merged = merge(
                        m,
                        &data,
                        &cached,
                        serve.order.as_deref(),
                        serve.substitute.as_deref(),
                    );
                    if merged.is_none() {
                        // Put them back: a later answer for the UID may take them.
                        serve.items.insert(uid, cached);
                        return None;
                    }
                    let served: usize = cached.iter().map(|e| e.bytes.len()).sum();
                    let metrics = &self.store.metrics;
                    metrics.hits.inc_by(cached.len() as u64);
                    metrics.served_bytes.inc_by(served as u64);
                    metrics.saved_bytes.inc_by(served as u64);
                    merged
                }
            }
        });
        match decision.flatten() {
            Some(bytes) => ResponseDecision::Rewrite(bytes),
            None => ResponseDecision::Forward,
        }
    }

    fn on_tagged(&self, info: &SessionInfo, done: &Completion<'_>) {
        let mut sessions = self.sessions();
        let Some(state) = sessions.get_mut(&info.id) else {
            return;
        };
        if let Some(n) = state.in_flight.get_mut(done.tag) {
            *n -= 1;
            if *n == 0 {
                state.in_flight.remove(done.tag);
            }
        }
        let ours = match &state.op {
            Some(Op::Fill(f)) => f.tag == done.tag,
            Some(Op::Serve(s)) => s.tag == done.tag,
            None => false,
        };
        if !ours {
            return;
        }
        let op = state.op.take();
        drop(sessions);
        if let Some(Op::Fill(fill)) = op {
            if done.outcome != Outcome::Ok || fill.spoiled {
                return;
            }
            let Fill {
                upstream,
                request,
                found,
                order,
                ..
            } = *fill;
            self.store.metrics.misses.inc_by(found.len() as u64);
            for (key, entry) in found {
                self.store.insert(key, entry);
            }
            if let Some(order) = order {
                self.store.set_order(upstream, request, order);
            }
            self.store.refresh_gauges();
        }
    }

    fn on_close(&self, summary: &Summary<'_>) {
        self.sessions().remove(&summary.info.id);
    }
}

impl Cache {
    fn store_max(&self) -> u64 {
        self.store.capacity()
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
