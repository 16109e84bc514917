//! The PROXY protocol (HAProxy, versions 1 and 2): a load balancer in front of the proxy
//! prepends a header naming the real client, so logs, the loopback rule for cleartext passwords
//! and (later) per-address limits see the client rather than the balancer. When enabled on the
//! listeners, every connection must start with a header (like HAProxy's `accept-proxy`).
//!
//! ```text
//! v1: "PROXY" SP ("TCP4" / "TCP6") SP src-ip SP dst-ip SP src-port SP dst-port CRLF
//!     / "PROXY UNKNOWN" *(any but CR) CRLF                       ; at most 107 bytes
//! v2: sig(12) ver_cmd(1) fam(1) len(2, big endian) addresses(len) ; sig = \r\n\r\n\0\r\nQUIT\n
//!     ver_cmd 0x21 PROXY / 0x20 LOCAL; fam 0x11 TCP4 (12 bytes), 0x21 TCP6 (36 bytes)
//! ```
//!
//! The header is read exactly, never past its end: the bytes after it are the TLS handshake or
//! the IMAP stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Longest v1 header (spec: 107 bytes including CRLF).
const V1_MAX: usize = 107;

/// A header that is not valid PROXY protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Neither a v1 nor a v2 signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 line that does not follow the grammar.
    #[error("malformed PROXY v1 header")]
    BadV1,
    /// A v2 header with an unknown version, command, family or a short address block.
    #[error("malformed PROXY v2 header")]
    BadV2,
}

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client's address as the balancer saw it.
    Client(SocketAddr),
    /// The balancer speaks for itself (health checks, `UNKNOWN`, `LOCAL`, non-TCP families): keep
    /// the socket's own peer address.
    Local,
}

/// Parses a complete v1 line (including CRLF).
pub fn parse_v1(line: &[u8]) -> Result<Origin, ProxyHeaderError> {
    let text = line
        .strip_suffix(b"\r\n")
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or(ProxyHeaderError::BadV1)?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyHeaderError::BadV1);
    }
    let family = parts.next().ok_or(ProxyHeaderError::BadV1)?;
    if family == "UNKNOWN" {
        return Ok(Origin::Local);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, _dst, sport, _dport] = fields[..] else {
        return Err(ProxyHeaderError::BadV1);
    };
    let ip: IpAddr = match family {
        "TCP4" => src.parse::<Ipv4Addr>().map(IpAddr::V4),
        "TCP6" => src.parse::<Ipv6Addr>().map(IpAddr::V6),
        _ => return Err(ProxyHeaderError::BadV1),
    }
    .map_err(|_| ProxyHeaderError::BadV1)?;
    let port: u16 = sport.parse().map_err(|_| ProxyHeaderError::BadV1)?;
    Ok(Origin::Client(SocketAddr::new(ip, port)))
}

/// Parses a v2 header's fixed part (16 bytes): returns the length of the address block.
pub fn v2_len(fixed: &[u8; 16]) -> Result<usize, ProxyHeaderError> {
    if &fixed[..12] != V2_SIG || fixed[12] >> 4 != 2 {
        return Err(ProxyHeaderError::BadV2);
    }
    Ok(usize::from(u16::from_be_bytes([fixed[14], fixed[15]])))
}

/// Parses a v2 header: its fixed part and its address block (TLVs after the addresses ignored).
pub fn parse_v2(fixed: &[u8; 16], block: &[u8]) -> Result<Origin, ProxyHeaderError> {
    match fixed[12] & 0x0f {
        0x0 => return Ok(Origin::Local),
        0x1 => {}
        _ => return Err(ProxyHeaderError::BadV2),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match fixed[13] {
        0x11 if block.len() >= 12 => {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Ok(Origin::Client(SocketAddr::new(
                ip.into(),
                port(&block[8..10]),
            )))
        }
        0x21 if block.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Origin::Client(SocketAddr::new(
                ip.into(),
                port(&block[32..34]),
            )))
        }
        0x11 | 0x21 => Err(ProxyHeaderError::BadV2),
        // UNSPEC, UDP, UNIX: nothing usable as a client address.
        _ => Ok(Origin::Local),
    }
}

/// Reads one header from the start of `tcp`, consuming exactly its bytes.
pub async fn read_header(tcp: &mut TcpStream) -> std::io::Result<Result<Origin, ProxyHeaderError>> {
    // "PROXY UNKNOWN\r\n" (15 bytes) is the shortest header of either version.
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head[..15]).await?;
    if head.starts_with(b"PROXY ") {
        let mut line = head[..15].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Ok(Err(ProxyHeaderError::BadV1));
            }
            line.push(tcp.read_u8().await?);
        }
        return Ok(parse_v1(&line));
    }
    if !head.starts_with(&V2_SIG[..12]) {
        return Ok(Err(ProxyHeaderError::Missing));
    }
    head[15] = tcp.read_u8().await?;
    let len = match v2_len(&head) {
        Ok(len) => len,
        Err(e) => return Ok(Err(e)),
    };
    let mut block = vec![0u8; len];
    tcp.read_exact(&mut block).await?;
    Ok(parse_v2(&head, &block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_forms() {
        let a = |s: &str| Origin::Client(s.parse().unwrap());
        assert_eq!(
            parse_v1(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 993\r\n"),
            Ok(a("203.0.113.7:5555"))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 ::1 5555 993\r\n"),
            Ok(a("[2001:db8::1]:5555"))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(Origin::Local));
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"),
            Ok(Origin::Local)
        );
        assert_eq!(
            parse_v1(b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n"),
            Err(ProxyHeaderError::BadV1)
        );
        assert_eq!(
            parse_v1(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n"),
            Err(ProxyHeaderError::BadV1)
        );
        assert_eq!(
            parse_v1(b"PROXY TCP4 1.2.3.4\r\n"),
            Err(ProxyHeaderError::BadV1)
        );
        assert_eq!(parse_v1(b"a LOGIN x y\r\n"), Err(ProxyHeaderError::BadV1));
    }

    #[test]
    fn v2_forms() {
        let mut fixed = [0u8; 16];
        fixed[..12].copy_from_slice(V2_SIG);
        fixed[12] = 0x21;
        fixed[13] = 0x11;
        fixed[15] = 12;
        assert_eq!(v2_len(&fixed), Ok(12));
        let block = [203, 0, 113, 7, 127, 0, 0, 1, 0x15, 0xb3, 0x03, 0xe1];
        assert_eq!(
            parse_v2(&fixed, &block),
            Ok(Origin::Client("203.0.113.7:5555".parse().unwrap()))
        );
        assert_eq!(parse_v2(&fixed, &block[..8]), Err(ProxyHeaderError::BadV2));
        fixed[12] = 0x20;
        assert_eq!(parse_v2(&fixed, &[]), Ok(Origin::Local));
        fixed[12] = 0x11;
        assert_eq!(v2_len(&fixed), Err(ProxyHeaderError::BadV2));
    }
}
