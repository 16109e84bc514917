//! Cache keys: whose mail (upstream and upstream account), which mailbox incarnation (name and
//! UIDVALIDITY), which message (UID), which item (canonical form) and how it was rendered
//! (UTF8=ACCEPT or not).

use std::sync::Arc;

use crate::phases::{Enabled, SessionInfo};

/// A mailbox incarnation as one account on one upstream sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
}

impl MailboxKey {
    /// The selected mailbox of a session, when everything the key needs is known (never for a
    /// mailbox without a UIDVALIDITY).
    pub fn of(info: &SessionInfo) -> Option<Arc<MailboxKey>> {
        let selected = info.selected.as_ref()?;
        Some(Arc::new(MailboxKey {
            upstream: info.upstream.clone()?,
            account: info.upstream_user.clone().or_else(|| info.user.clone())?,
            mailbox: selected.name.clone(),
            uidvalidity: selected.uidvalidity?,
            utf8: info.enabled.contains(Enabled::UTF8_ACCEPT),
        }))
    }
}

/// One item of one message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The mailbox incarnation.
    pub mailbox: Arc<MailboxKey>,
    /// The message.
    pub uid: u32,
    /// The canonical item ([`Wanted::key`](super::rewrite::Wanted::key)).
    pub item: Arc<str>,
}

impl Key {
    /// Bytes the key holds, for the weigher.
    pub fn weight(&self) -> usize {
        64 + self.item.len() + self.mailbox.mailbox.len() + self.mailbox.account.len()
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
}
