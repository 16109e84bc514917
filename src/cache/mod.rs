//! The cross-session FETCH cache (issue 8): immutable FETCH items (RFC 9051 §2.3.1.1: content
//! does not change for a mailbox + UIDVALIDITY + UID) kept in memory and put back into answers,
//! so repeated header and body FETCHes are not downloaded from the upstream again.
//!
//! Owns: the keys ([`key`]: upstream, account, mailbox, UIDVALIDITY, UTF8=ACCEPT, UID), the
//! store ([`store`]: moka, one entry per message holding its items, weighed by bytes, per-item
//! limit, idle timeout, metrics), reading and rewriting FETCH requests ([`rewrite`]), deciding
//! between fill and serve ([`plan`]), rebuilding answers ([`merge`]), the session's message
//! numbers ([`seqmap`]) and the stage that ties them to the session pipeline ([`stage`]).
//! Leaves to others: framing, assembling messages, tracking the selected mailbox (the core).
//!
//! A FETCH is never answered from the cache alone: the upstream gets the same set with the
//! cached items removed (UID, FLAGS, MODSEQ and uncached items stay; a non-PEEK content item
//! becomes `BODY[]<0.1>` so `\Seen` is set exactly as it would be; modifiers such as
//! CHANGEDSINCE stay), and the cached bytes are put into each message the upstream answered
//! for. Whatever the cache does not handle exactly — macros, `*` in a served set, partial hits
//! (some messages cached, some not), pipelined FETCHes — goes upstream untouched.

pub mod key;
pub mod merge;
pub mod plan;
pub mod rewrite;
pub mod runs;
pub mod seqmap;
pub mod stage;
pub mod store;

use serde::{Deserialize, Serialize};

pub use stage::Cache;

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes the cache may hold (`--cache-size`); 0 turns it off.
    pub max_bytes: u64,
    /// No item larger than this is cached.
    pub max_item_bytes: u64,
    /// Entries not used for this long are dropped (0: never).
    pub time_to_idle_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 64 * 1024 * 1024,
            max_item_bytes: 4 * 1024 * 1024,
            time_to_idle_secs: 0,
        }
    }
}

impl CacheConfig {
    /// Whether a cache stage is installed.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}

/// Reads a size: plain bytes, or a number with `KiB`, `MiB`, `GiB` (also `K`, `M`, `G`, `KB`,
/// `MB`, `GB`, taken as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("not a size: {text:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "unknown size unit in {text:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
