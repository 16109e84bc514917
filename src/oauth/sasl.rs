//! The SASL messages that carry the proxy's access token upstream, built in wiped buffers:
//!
//! ```text
//! XOAUTH2      "user=" user ^A "auth=Bearer " token ^A ^A
//! OAUTHBEARER  "n,a=" saslname "," ^A "host=" host ^A "port=" port ^A "auth=Bearer " token ^A ^A
//! ```
//!
//! (RFC 7628 §3.1; in `saslname`, `,` is `=2C` and `=` is `=3D`. Dovecot 2.3 requires `a=`.)
//! After a refusal the server sends a `+` challenge with an error report; the client's answer is
//! an empty line for XOAUTH2 and `^A` (`AQ==`) for OAUTHBEARER ([`error_answer`]).

use crate::secret::Wiped;
use crate::session::credentials::TokenMechanism;

/// The initial response for `mechanism` logging in as `user` with `token`; `host` and `port`
/// name the server (OAUTHBEARER only).
pub fn message(
    mechanism: TokenMechanism,
    user: &[u8],
    token: &[u8],
    host: &str,
    port: u16,
) -> Wiped {
    let mut out = Wiped::new(Vec::with_capacity(
        user.len() * 3 + token.len() + host.len() + 64,
    ));
    match mechanism {
        TokenMechanism::Xoauth2 => {
            out.extend_from_slice(b"user=");
            out.extend_from_slice(user);
            out.extend_from_slice(b"\x01auth=Bearer ");
            out.extend_from_slice(token);
            out.extend_from_slice(b"\x01\x01");
        }
        TokenMechanism::Oauthbearer => {
            out.extend_from_slice(b"n,a=");
            for &b in user {
                match b {
                    b',' => out.extend_from_slice(b"=2C"),
                    b'=' => out.extend_from_slice(b"=3D"),
                    _ => out.push(b),
                }
            }
            out.extend_from_slice(b",\x01host=");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(format!("\x01port={port}\x01auth=Bearer ").as_bytes());
            out.extend_from_slice(token);
            out.extend_from_slice(b"\x01\x01");
        }
    }
    out
}

/// The line that answers a server's error challenge (ends the exchange with a `NO`).
pub fn error_answer(mechanism: TokenMechanism) -> &'static [u8] {
    match mechanism {
        TokenMechanism::Xoauth2 => b"\r\n",
        TokenMechanism::Oauthbearer => b"AQ==\r\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::credentials::Credentials;

    #[test]
    fn messages() {
        let x = message(
            TokenMechanism::Xoauth2,
            b"alice@example.com",
            b"tok",
            "h",
            993,
        );
        assert_eq!(&x[..], b"user=alice@example.com\x01auth=Bearer tok\x01\x01");
        let o = message(
            TokenMechanism::Oauthbearer,
            b"a,b=c",
            b"tok",
            "imap.example.com",
            993,
        );
        assert_eq!(
            &o[..],
            &b"n,a=a=2Cb=3Dc,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"[..]
        );
        // What the proxy's own parser reads back from them (the pass-through path).
        let c = Credentials::from_token(TokenMechanism::Xoauth2, x.to_vec());
        assert_eq!(c.user(), Some(&b"alice@example.com"[..]));
        let o = message(TokenMechanism::Oauthbearer, b"bob", b"tok", "h", 143);
        let c = Credentials::from_token(TokenMechanism::Oauthbearer, o.to_vec());
        assert_eq!(c.user(), Some(&b"bob"[..]));
        assert_eq!(error_answer(TokenMechanism::Oauthbearer), b"AQ==\r\n");
    }
}
