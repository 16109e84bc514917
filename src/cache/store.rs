//! The in-memory store: a moka cache of items weighed by their bytes, bounded in total and per
//! item, with an idle timeout; and the small map of response orders ([`Store::order`]).

use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache;
use prometheus::{IntCounter, IntGauge, Opts, Registry};

use super::CacheConfig;
use super::key::Key;

/// One cached item: the server's exact bytes for it.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// The response item's label ([`FetchItem::label`](crate::proto::message::FetchItem::label)).
    pub label: String,
    /// The item as the server sent it: name as echoed, a space, the value (literal form
    /// included).
    pub bytes: Box<[u8]>,
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
    items: Cache<Key, Arc<Entry>>,
    orders: Cache<(Arc<str>, String), Arc<[String]>>,
    max_item_bytes: usize,
    /// Counters.
    pub metrics: CacheMetrics,
}

impl Store {
    /// A store as configured.
    pub fn new(config: &CacheConfig) -> Store {
        let metrics = CacheMetrics::new();
        let evictions = metrics.evictions.clone();
        let mut builder = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|k: &Key, v: &Arc<Entry>| {
                u32::try_from(k.weight() + v.bytes.len() + v.label.len()).unwrap_or(u32::MAX)
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
            items: builder.build(),
            orders: Cache::builder().max_capacity(4096).build(),
            max_item_bytes: usize::try_from(config.max_item_bytes).unwrap_or(usize::MAX),
            metrics,
        }
    }

    /// Registers the counters.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let m = &self.metrics;
        for c in [
            &m.hits,
            &m.misses,
            &m.served_bytes,
            &m.saved_bytes,
            &m.evictions,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.entries.clone()))?;
        registry.register(Box::new(m.bytes.clone()))
    }

    /// The item, if cached.
    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.items.get(key)
    }

    /// Keeps an item unless it is larger than `max_item_bytes`.
    pub fn insert(&self, key: Key, entry: Entry) {
        if entry.bytes.len() > self.max_item_bytes {
            return;
        }
        self.items.insert(key, Arc::new(entry));
    }

    /// The most bytes the store holds.
    pub fn capacity(&self) -> u64 {
        self.items.policy().max_capacity().unwrap_or(u64::MAX)
    }

    /// Drops every entry (tests: an eviction while a served command is in flight).
    #[cfg(test)]
    pub fn clear(&self) {
        self.items.invalidate_all();
        self.items.run_pending_tasks();
    }

    /// Brings the gauges up to date.
    pub fn refresh_gauges(&self) {
        self.items.run_pending_tasks();
        let m = &self.metrics;
        m.entries
            .set(i64::try_from(self.items.entry_count()).unwrap_or(i64::MAX));
        m.bytes
            .set(i64::try_from(self.items.weighted_size()).unwrap_or(i64::MAX));
    }

    /// The order of items in the server's answer to a request (its items, canonical and in
    /// order), as seen on a complete answer from `upstream`.
    pub fn order(&self, upstream: &Arc<str>, request: &str) -> Option<Arc<[String]>> {
        self.orders.get(&(upstream.clone(), request.to_owned()))
    }

    /// Records the order of items in an answer.
    pub fn set_order(&self, upstream: Arc<str>, request: String, order: Vec<String>) {
        self.orders.insert((upstream, request), order.into());
    }
}
