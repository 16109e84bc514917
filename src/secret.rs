//! A container for credentials (passwords, SASL payloads, tokens) that never prints its content:
//! `Debug` and `Display` show `<redacted>`, so a secret cannot reach a log by accident. The bytes
//! are reachable only through [`Secret::expose`], whose call sites are the places that put them on
//! the wire. Memory is zeroed when dropped ([`zeroize`], which the optimiser cannot remove), and
//! so are the buffers the upstream login formats around a secret ([`Wiped`]).

use std::fmt;

use zeroize::Zeroizing;

/// A byte buffer that is zeroed (its whole capacity) when dropped: for lines and encodings that
/// carry a credential on its way to a peer.
pub type Wiped = Zeroizing<Vec<u8>>;

/// Bytes that must not be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The bytes, for writing to a peer. Never format them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_formats_its_content() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), b"hunter2");
    }
}
