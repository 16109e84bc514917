//! A client's answer to a SASL challenge (RFC 9051 §6.2.2):
//!
//! ```text
//! authenticate  = "AUTHENTICATE" SP auth-type [SP initial-resp] *(CRLF base64)
//! base64        = *(4base64-char) [base64-terminal]
//! ```
//!
//! The answer is exactly one line holding base64 or `*` (cancel). It is not a command: it is read
//! raw, never framed, so a `{n}` in it is not a literal and a second line is the next command. The
//! proxy decodes it and, when it goes upstream, encodes it again, so nothing the client added
//! beyond the base64 (spaces, a literal, a smuggled command) can reach the server.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::SessionError;
use crate::secret::Secret;
use crate::session::wire::Wire;

/// Longest answer line accepted: a bearer token with its framing fits many times over.
pub const MAX_RESPONSE_LINE: usize = 64 * 1024;

/// What the client answered.
#[derive(Debug)]
pub enum Reply {
    /// The decoded bytes.
    Data(Secret),
    /// `*`: the client cancelled the exchange.
    Cancel,
    /// Not one line of base64: the `BAD` text to answer with.
    Invalid(&'static str),
}

/// Reads and decodes one answer line from `client`.
pub async fn read_reply(client: &mut Wire) -> Result<Reply, SessionError> {
    match client.read_raw_line(MAX_RESPONSE_LINE).await? {
        None => Ok(Reply::Invalid("Authentication response too long.")),
        Some(line) => Ok(decode(&zeroize::Zeroizing::new(line))),
    }
}

/// Decodes one answer line (without its CRLF).
pub fn decode(line: &[u8]) -> Reply {
    if line == b"*" {
        return Reply::Cancel;
    }
    match BASE64.decode(line) {
        Ok(bytes) => Reply::Data(Secret::new(bytes)),
        Err(_) => Reply::Invalid("Invalid base64 data in authentication response."),
    }
}

/// The line to send upstream for `reply`: freshly encoded base64, or `*`.
pub fn encode(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Data(bytes) => {
            // Sized up front: no reallocation leaves a copy of the secret behind.
            let len = base64::encoded_len(bytes.expose().len(), true).unwrap_or(0);
            let mut line = String::with_capacity(len + 2);
            BASE64.encode_string(bytes.expose(), &mut line);
            line.push_str("\r\n");
            line.into_bytes()
        }
        Reply::Cancel | Reply::Invalid(_) => b"*\r\n".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_line_of_base64_or_cancel() {
        assert!(matches!(decode(b"*"), Reply::Cancel));
        let Reply::Data(d) = decode(b"AGJvYgBwdw==") else {
            panic!("valid base64");
        };
        assert_eq!(d.expose(), b"\0bob\0pw");
        for bad in [
            &b"AGJvYgBwdw== "[..],
            b"{5}",
            b"AGJv YgBwdw==",
            b"* ",
            b"a1 LOGIN x y",
            b"AGJvYgBwdw==\r\na LOGOUT",
        ] {
            assert!(matches!(decode(bad), Reply::Invalid(_)), "{bad:?}");
        }
        // An empty line is an empty response (RFC 9051: "=" or empty per mechanism).
        assert!(matches!(decode(b""), Reply::Data(ref d) if d.is_empty()));
        assert_eq!(encode(&decode(b"AGJvYgBwdw==")), b"AGJvYgBwdw==\r\n");
        assert_eq!(encode(&Reply::Cancel), b"*\r\n");
    }
}
