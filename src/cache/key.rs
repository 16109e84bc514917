//! Cache keys: whose mail (upstream and upstream account), which mailbox incarnation (name and
//! UIDVALIDITY), how it was rendered (UTF8=ACCEPT or not), and which message (UID). The items of
//! one message live together in one entry ([`Message`](super::store::Message)).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::phases::{Enabled, SessionInfo};

/// A mailbox incarnation as one account on one upstream sees it.
#[derive(Debug, Clone)]
pub struct MailboxKey {
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// The account logged in upstream (`upstream_user`, else `user`).
    pub account: Arc<[u8]>,
    /// The mailbox name as selected.
    pub mailbox: Vec<u8>,
    /// Its UIDVALIDITY.
    pub uidvalidity: u32,
    /// UTF8=ACCEPT was enabled (the server may render items differently).
    pub utf8: bool,
    /// A digest of the fields above, computed once: a lookup hashes this and the UID, not the
    /// names (equality still compares every field).
    digest: u64,
}

impl MailboxKey {
    /// A key from its parts.
    pub fn new(
        upstream: Arc<str>,
        account: Arc<[u8]>,
        mailbox: Vec<u8>,
        uidvalidity: u32,
        utf8: bool,
    ) -> MailboxKey {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&*upstream, &*account, &mailbox, uidvalidity, utf8).hash(&mut h);
        MailboxKey {
            upstream,
            account,
            mailbox,
            uidvalidity,
            utf8,
            digest: h.finish(),
        }
    }

    /// The selected mailbox of a session, when everything the key needs is known (never for a
    /// mailbox without a UIDVALIDITY).
    pub fn of(info: &SessionInfo) -> Option<Arc<MailboxKey>> {
        let selected = info.selected.as_ref()?;
        Some(Arc::new(MailboxKey::new(
            info.upstream.clone()?,
            info.upstream_user.clone().or_else(|| info.user.clone())?,
            selected.name.clone(),
            selected.uidvalidity?,
            info.enabled.contains(Enabled::UTF8_ACCEPT),
        )))
    }

    /// The [`gate`] of this mailbox.
    pub fn gate(&self) -> u64 {
        gate(
            &self.upstream,
            &self.account,
            &self.mailbox,
            self.uidvalidity,
        )
    }

    /// The [`gate`] of `info`'s selected mailbox, when [`MailboxKey::of`] would give a key
    /// (without building one).
    pub fn gate_of(info: &SessionInfo) -> Option<u64> {
        let selected = info.selected.as_ref()?;
        let account = info.upstream_user.as_ref().or(info.user.as_ref())?;
        Some(gate(
            info.upstream.as_ref()?,
            account,
            &selected.name,
            selected.uidvalidity?,
        ))
    }

    /// Whether `info`'s selected mailbox is this one.
    pub fn matches(&self, info: &SessionInfo) -> bool {
        MailboxKey::of(info).is_some_and(|k| *k == *self)
    }
}

impl PartialEq for MailboxKey {
    fn eq(&self, other: &MailboxKey) -> bool {
        self.digest == other.digest
            && self.uidvalidity == other.uidvalidity
            && self.utf8 == other.utf8
            && self.mailbox == other.mailbox
            && self.account == other.account
            && self.upstream == other.upstream
    }
}

impl Eq for MailboxKey {}

impl Hash for MailboxKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// A cheap hash of a mailbox incarnation (upstream, account, name, UIDVALIDITY; not UTF8=ACCEPT):
/// what the store's record of the mailboxes it ever held an entry for is kept by
/// ([`Store::may_hold`](super::store::Store::may_hold)). Two mailboxes with the same gate only
/// make that record answer "maybe" more often.
pub fn gate(upstream: &str, account: &[u8], mailbox: &[u8], uidvalidity: u32) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(upstream.as_bytes());
    h.write_u8(0xff);
    h.write(account);
    h.write_u8(0xff);
    h.write(mailbox);
    h.write_u32(uidvalidity);
    h.finish()
}

/// One message of one mailbox incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageKey {
    /// The mailbox incarnation (shared by the keys of one request).
    pub mailbox: Arc<MailboxKey>,
    /// The message's UID.
    pub uid: u32,
}

impl Hash for MessageKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.mailbox.digest ^ u64::from(self.uid).rotate_left(32));
    }
}

impl MessageKey {
    /// What the key costs in memory beside its entry (the mailbox key is shared).
    pub fn weight(&self) -> usize {
        64 + self.mailbox.mailbox.len() + self.mailbox.account.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::Selected;
    use crate::session::ListenerKind;

    fn info(user: &[u8], upstream_user: Option<&[u8]>, uv: Option<u32>) -> SessionInfo {
        let mut i = SessionInfo::new(1, "127.0.0.1:1".parse().unwrap(), ListenerKind::Plain);
        i.user = Some(user.into());
        i.upstream_user = upstream_user.map(Into::into);
        i.upstream = Some("default".into());
        i.selected = Some(Selected {
            name: b"INBOX".to_vec(),
            uidvalidity: uv,
            read_only: false,
        });
        i
    }

    #[test]
    fn users_never_share_and_upstream_user_wins() {
        let a = MailboxKey::of(&info(b"alice", None, Some(7))).unwrap();
        let b = MailboxKey::of(&info(b"bob", None, Some(7))).unwrap();
        assert_ne!(a, b);
        let master = MailboxKey::of(&info(b"admin", Some(b"alice"), Some(7))).unwrap();
        assert_eq!(a, master);
        assert!(a.matches(&info(b"admin", Some(b"alice"), Some(7))));
        assert!(!a.matches(&info(b"alice", None, Some(8))));
    }

    #[test]
    fn no_uidvalidity_no_key() {
        assert!(MailboxKey::of(&info(b"alice", None, None)).is_none());
        let mut i = info(b"alice", None, Some(1));
        i.selected = None;
        assert!(MailboxKey::of(&i).is_none());
    }

    #[test]
    fn utf8_accept_is_part_of_the_key() {
        let plain = MailboxKey::of(&info(b"alice", None, Some(7))).unwrap();
        let mut i = info(b"alice", None, Some(7));
        i.enabled.insert(Enabled::UTF8_ACCEPT);
        assert_ne!(plain, MailboxKey::of(&i).unwrap());
        let other_uv = MailboxKey::of(&info(b"alice", None, Some(8))).unwrap();
        assert_ne!(plain, other_uv);
    }

    #[test]
    fn the_gate_is_the_keys() {
        for i in [
            info(b"alice", None, Some(7)),
            info(b"admin", Some(b"alice"), Some(7)),
            info(b"bob", None, Some(8)),
        ] {
            let key = MailboxKey::of(&i).unwrap();
            assert_eq!(MailboxKey::gate_of(&i), Some(key.gate()));
        }
        assert_eq!(MailboxKey::gate_of(&info(b"alice", None, None)), None);
        let mut i = info(b"alice", None, Some(1));
        i.upstream = None;
        assert_eq!(MailboxKey::gate_of(&i), None);
    }

    #[test]
    fn equal_digests_still_compare_fields() {
        let a = MailboxKey::of(&info(b"alice", None, Some(7))).unwrap();
        let mut b = (*a).clone();
        b.mailbox = b"Other".to_vec();
        assert_ne!(*a, b, "the digest alone never decides equality");
    }
}
