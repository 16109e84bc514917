//! The in-memory store: a moka cache of items weighed by their bytes, bounded in total and per
//! item, with an idle timeout; and the small map of response orders ([`Store::order`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntGauge, Opts, Registry};

use super::CacheConfig;
use super::key::{MailboxKey, MessageKey};

/// One cached item: the server's exact bytes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The canonical request item it answers ([`Wanted::key`](super::rewrite::Wanted::key));
    /// shared by the items one answer filled.
    pub key: Arc<str>,
    /// The response item's label ([`FetchItem::label`](crate::proto::message::FetchItem::label));
    /// shared likewise.
    pub label: Arc<str>,
    /// The item as the server sent it: name as echoed, a space, the value (literal form
    /// included).
    pub bytes: Box<[u8]>,
}

/// What the cache knows of one message: its cached items, or that it does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The cached items (a handful: looked up by a scan).
    pub items: Box<[Item]>,
    /// The UID is known not to exist in the mailbox (a complete answer skipped it while
    /// answering for a higher UID: UIDs are never reused nor assigned out of order).
    pub absent: bool,
}

impl Message {
    /// The item cached for a canonical request item.
    pub fn item(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|i| &*i.key == key)
    }

    /// The bytes the entry holds (its weight beside the key's).
    pub fn weight(&self) -> usize {
        self.items.iter().map(|i| 48 + i.bytes.len()).sum::<usize>() + 32
    }
}

/// The cache's counters.
#[derive(Clone)]
pub struct CacheMetrics {
    /// Items served from the cache.
    pub hits: IntCounter,
    /// Cacheable items fetched from the upstream.
    pub misses: IntCounter,
    /// Bytes of items served from the cache.
    pub served_bytes: IntCounter,
    /// Bytes the upstream did not send because the cache served them.
    pub saved_bytes: IntCounter,
    /// Entries evicted for room or idleness.
    pub evictions: IntCounter,
    /// Entries now.
    pub entries: IntGauge,
    /// Bytes now.
    pub bytes: IntGauge,
}

impl CacheMetrics {
    fn new() -> CacheMetrics {
        let c = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help).namespace(crate::metrics::NAMESPACE))
                .unwrap_or_else(|_| unreachable!("valid static metric names"))
        };
        let g = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help).namespace(crate::metrics::NAMESPACE))
                .unwrap_or_else(|_| unreachable!("valid static metric names"))
        };
        CacheMetrics {
            hits: c("cache_hits_total", "FETCH items served from the cache."),
            misses: c(
                "cache_misses_total",
                "Cacheable FETCH items fetched from the upstream.",
            ),
            served_bytes: c(
                "cache_served_bytes_total",
                "Bytes of FETCH items served from the cache.",
            ),
            saved_bytes: c(
                "cache_saved_bytes_total",
                "Bytes the upstream did not send thanks to the cache.",
            ),
            evictions: c(
                "cache_evictions_total",
                "Cache entries evicted (size or idle time).",
            ),
            entries: g("cache_entries", "Entries in the FETCH cache."),
            bytes: g("cache_bytes", "Bytes held by the FETCH cache."),
        }
    }
}

/// The shared store.
pub struct Store {
    /// Messages by mailbox incarnation and UID, weighed by bytes.
    messages: Cache<MessageKey, Arc<Message>>,
    /// The order the server answered a request's items in, by upstream and canonical
    /// request: served answers are arranged alike.
    orders: Cache<(Arc<str>, String), Arc<[String]>>,
    /// No item larger is kept.
    max_item_bytes: usize,
    /// One bit per [`gate`](super::key::gate) value (folded to [`GATE_BITS`]), set before a
    /// mailbox's first entry is inserted and never cleared: a clear bit means the mailbox has
    /// nothing cached, so a FETCH there cannot be served and need not be looked up.
    held: [AtomicU64; GATE_BITS / 64],
    /// The counters.
    pub metrics: CacheMetrics,
}

impl Store {
    /// A store as configured.
    pub fn new(config: &CacheConfig) -> Store {
        let metrics = CacheMetrics::new();
        let evictions = metrics.evictions.clone();
        let mut builder = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|k: &MessageKey, v: &Arc<Message>| {
                u32::try_from(k.weight() + v.weight()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_k, _v, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    evictions.inc();
                }
            });
        if config.time_to_idle_secs > 0 {
            builder = builder.time_to_idle(Duration::from_secs(config.time_to_idle_secs));
        }
        Store {
            messages: builder.build(),
            orders: Cache::builder().max_capacity(4096).build(),
            max_item_bytes: usize::try_from(config.max_item_bytes).unwrap_or(usize::MAX),
            held: std::array::from_fn(|_| AtomicU64::new(0)),
            metrics,
        }
    }

    /// Registers the counters and gauges.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let m = &self.metrics;
        for c in [&m.hits, &m.misses, &m.served_bytes, &m.saved_bytes] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(Gauges {
            messages: self.messages.clone(),
            entries: m.entries.clone(),
            bytes: m.bytes.clone(),
            evictions: m.evictions.clone(),
        }))
    }

    /// What is known of a message.
    pub fn get(&self, key: &MessageKey) -> Option<Arc<Message>> {
        self.messages.get(key)
    }

    /// Adds items to a message's entry (an item already there is replaced). Items over
    /// `max_item_bytes` are left out.
    pub fn add(&self, key: MessageKey, items: Vec<Item>) {
        let items: Vec<Item> = items
            .into_iter()
            .filter(|i| i.bytes.len() <= self.max_item_bytes)
            .collect();
        if items.is_empty() {
            return;
        }
        self.hold(&key.mailbox);
        self.messages.entry(key).and_upsert_with(|old| {
            let mut all: Vec<Item> = match old {
                Some(old) => old
                    .value()
                    .items
                    .iter()
                    .filter(|o| !items.iter().any(|n| n.key == o.key))
                    .cloned()
                    .collect(),
                None => Vec::with_capacity(items.len()),
            };
            all.extend(items);
            Arc::new(Message {
                items: all.into(),
                absent: false,
            })
        });
    }

    /// Records that a UID does not exist in its mailbox.
    pub fn mark_absent(&self, key: MessageKey) {
        self.hold(&key.mailbox);
        self.messages.insert(
            key,
            Arc::new(Message {
                items: Box::new([]),
                absent: true,
            }),
        );
    }

    /// Notes that `mailbox` may have entries (before one is inserted).
    fn hold(&self, mailbox: &MailboxKey) {
        let (word, bit) = gate_bit(mailbox.gate());
        self.held[word].fetch_or(bit, Ordering::Release);
    }

    /// Whether the mailbox with this [`gate`](super::key::gate) may have entries: `false` only
    /// when none was ever inserted for it (nor for a mailbox sharing its bit).
    pub fn may_hold(&self, gate: u64) -> bool {
        let (word, bit) = gate_bit(gate);
        self.held[word].load(Ordering::Acquire) & bit != 0
    }

    /// Says every mailbox may have entries (tests: the plans a store without the record makes).
    #[cfg(test)]
    pub fn hold_all(&self) {
        for word in &self.held {
            word.store(u64::MAX, Ordering::Release);
        }
    }

    /// No item larger is kept.
    pub fn max_item_bytes(&self) -> u64 {
        self.max_item_bytes as u64
    }

    /// The configured bound in bytes.
    pub fn capacity(&self) -> u64 {
        self.messages.policy().max_capacity().unwrap_or(u64::MAX)
    }

    /// Drops everything (tests).
    #[cfg(test)]
    pub fn clear(&self) {
        self.messages.invalidate_all();
        self.messages.run_pending_tasks();
    }

    /// The order the server answered `request` in, if a complete answer was seen.
    pub fn order(&self, upstream: &Arc<str>, request: &str) -> Option<Arc<[String]>> {
        self.orders.get(&(upstream.clone(), request.to_owned()))
    }

    /// Remembers the order of a complete answer (unless it is the one remembered).
    pub fn set_order(&self, upstream: Arc<str>, request: String, order: Vec<String>) {
        let key = (upstream, request);
        if self.orders.get(&key).is_some_and(|o| *o == *order) {
            return;
        }
        self.orders.insert(key, order.into());
    }
}

/// Bits in [`Store`]'s record of the mailboxes it held entries for (512 bytes).
const GATE_BITS: usize = 4096;

/// The word and bit of a gate value.
fn gate_bit(gate: u64) -> (usize, u64) {
    // Fx leaves its entropy in the high bits: take those.
    let folded = (gate.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize % GATE_BITS;
    (folded / 64, 1 << (folded % 64))
}

/// The entries and bytes gauges and the evictions counter, brought up to date when they are
/// scraped (moka's counts, and its eviction notices, lag until it catches up on its
/// bookkeeping, which is not worth doing on every fill).
struct Gauges {
    /// The cache they describe (a handle on the same cache).
    messages: Cache<MessageKey, Arc<Message>>,
    /// Entries now.
    entries: IntGauge,
    /// Bytes now.
    bytes: IntGauge,
    /// Entries evicted (counted by the eviction listener as moka catches up).
    evictions: IntCounter,
}

impl Collector for Gauges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.entries.desc();
        d.extend(self.bytes.desc());
        d.extend(self.evictions.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.messages.run_pending_tasks();
        self.entries
            .set(i64::try_from(self.messages.entry_count()).unwrap_or(i64::MAX));
        self.bytes
            .set(i64::try_from(self.messages.weighted_size()).unwrap_or(i64::MAX));
        let mut families = self.entries.collect();
        families.extend(self.bytes.collect());
        families.extend(self.evictions.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mailbox: &[u8], uid: u32) -> MessageKey {
        MessageKey {
            mailbox: Arc::new(MailboxKey::new(
                "default".into(),
                Arc::from(&b"alice"[..]),
                mailbox.to_vec(),
                7,
                false,
            )),
            uid,
        }
    }

    #[test]
    fn a_mailbox_may_hold_entries_once_one_was_inserted() {
        let store = Store::new(&CacheConfig::default());
        let (inbox, sent) = (key(b"INBOX", 1), key(b"Sent", 1));
        assert!(!store.may_hold(inbox.mailbox.gate()));
        store.add(inbox.clone(), Vec::new());
        assert!(!store.may_hold(inbox.mailbox.gate()), "nothing kept");
        let item = Item {
            key: "ENVELOPE".into(),
            label: "ENVELOPE".into(),
            bytes: Box::from(&b"ENVELOPE NIL"[..]),
        };
        store.add(inbox.clone(), vec![item]);
        assert!(store.may_hold(inbox.mailbox.gate()));
        assert!(store.get(&inbox).is_some());
        assert!(!store.may_hold(sent.mailbox.gate()));
        store.mark_absent(sent.clone());
        assert!(store.may_hold(sent.mailbox.gate()));
    }
}
