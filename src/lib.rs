//! imapgate: a transparent, TLS-terminating IMAP proxy.

pub mod proto;
