//! Upstream certificate pins (`pin_sha256`, `--upstream-pin`): parsing the two digest forms and
//! the rustls verifier that accepts an upstream by digest instead of by CA.
//!
//! A pin is either the SHA-256 of the certificate's DER, written the way
//! `openssl x509 -noout -fingerprint -sha256` prints it (`AB:CD:...`; colons optional, any case,
//! the `sha256 Fingerprint=` prefix allowed), or `spki:` plus the hex SHA-256 of the certificate's
//! SubjectPublicKeyInfo (survives re-issuing a certificate for the same key). A pinned upstream is
//! trusted when its end-entity certificate matches one pin: that replaces CA, name and validity
//! checks, since the digest names the exact certificate or key. The handshake signatures are still
//! verified with the crypto provider's algorithms, so the peer must hold the pinned key.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// What a pin digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinKind {
    /// The whole certificate (DER).
    Cert,
    /// The certificate's SubjectPublicKeyInfo (DER).
    Spki,
}

/// One parsed `pin_sha256` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// What is digested.
    pub kind: PinKind,
    /// The SHA-256.
    pub digest: [u8; 32],
}

/// Why a pin string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// A character that is neither a hex digit nor a separating colon.
    #[error("{0:?} is not a hex digit")]
    NotHex(char),
    /// Not 32 bytes.
    #[error("a SHA-256 digest has 64 hex digits, this has {0}")]
    Length(usize),
    /// Colons somewhere else than between every pair of hex digits.
    #[error("colons go between every pair of hex digits (AB:CD:...)")]
    Colons,
}

impl FromStr for Pin {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Pin, PinError> {
        let s = s.trim();
        let (kind, hex) = match strip_prefix_ignore_case(s, "spki:") {
            Some(rest) => (PinKind::Spki, rest),
            None => {
                let rest = strip_prefix_ignore_case(s, "sha256 fingerprint=").unwrap_or(s);
                (PinKind::Cert, rest)
            }
        };
        let digits: String = if hex.contains(':') {
            let pairs: Vec<&str> = hex.split(':').collect();
            if pairs.iter().any(|p| p.len() != 2) {
                return Err(PinError::Colons);
            }
            pairs.concat()
        } else {
            hex.to_string()
        };
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(PinError::NotHex(c));
        }
        if digits.len() != 64 {
            return Err(PinError::Length(digits.len()));
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            // Only ASCII hex digits are left, so every pair is one byte.
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| PinError::Length(digits.len()))?;
        }
        Ok(Pin { kind, digest })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PinKind::Cert => f.write_str(&colon_hex(&self.digest)),
            PinKind::Spki => write!(f, "spki:{}", plain_hex(&self.digest)),
        }
    }
}

/// `AB:CD:...`, as OpenSSL prints fingerprints.
pub fn colon_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    parts.join(":")
}

fn plain_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses every pin of a list; the error names the entry.
pub fn parse_pins(pins: &[String]) -> Result<Vec<Pin>, String> {
    pins.iter()
        .map(|p| p.parse().map_err(|e| format!("{p:?}: {e}")))
        .collect()
}

/// The presented certificate did not match any pin.
#[derive(Debug, thiserror::Error)]
#[error("{address}: certificate matches no pin_sha256: presented {fingerprint} (spki:{spki})")]
pub struct PinMismatch {
    /// The upstream's address.
    pub address: String,
    /// SHA-256 of the presented certificate, `AB:CD:...`.
    pub fingerprint: String,
    /// SHA-256 of its SubjectPublicKeyInfo, hex.
    pub spki: String,
}

/// Trusts an upstream whose end-entity certificate matches one of its pins.
#[derive(Debug)]
pub struct PinVerifier {
    pins: Vec<Pin>,
    /// The upstream's address, for the mismatch error.
    address: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinVerifier {
    /// A verifier for `pins` (not empty) of the upstream at `address`.
    pub fn new(pins: Vec<Pin>, address: &str, algorithms: WebPkiSupportedAlgorithms) -> Self {
        PinVerifier {
            pins,
            address: address.to_string(),
            algorithms,
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert_digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        let spki = ParsedCertificate::try_from(end_entity)?.subject_public_key_info();
        let spki_digest: [u8; 32] = Sha256::digest(spki.as_ref()).into();
        let matches = self.pins.iter().any(|pin| match pin.kind {
            PinKind::Cert => pin.digest == cert_digest,
            PinKind::Spki => pin.digest == spki_digest,
        });
        if matches {
            return Ok(ServerCertVerified::assertion());
        }
        // The upstream connect logs this error (with the presented digests) as a TLS failure.
        let mismatch = PinMismatch {
            address: self.address.clone(),
            fingerprint: colon_hex(&cert_digest),
            spki: plain_hex(&spki_digest),
        };
        Err(Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn colons(hex: &str) -> String {
        let pairs: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
        pairs.join(":")
    }

    #[test]
    fn parses_openssl_fingerprints_and_spki_digests() {
        let cert: Pin = HEX.parse().unwrap();
        assert_eq!(cert.kind, PinKind::Cert);
        assert_eq!(cert.digest[..3], [0x01, 0x23, 0x45]);
        let upper = colons(&HEX.to_uppercase());
        assert_eq!(upper.parse::<Pin>().unwrap(), cert);
        assert_eq!(colons(HEX).parse::<Pin>().unwrap(), cert);
        let openssl = format!("sha256 Fingerprint={upper}");
        assert_eq!(openssl.parse::<Pin>().unwrap(), cert);
        assert_eq!(format!("  {upper}\n").parse::<Pin>().unwrap(), cert);
        assert_eq!(cert.to_string(), upper);

        let spki: Pin = format!("spki:{HEX}").parse().unwrap();
        assert_eq!((spki.kind, spki.digest), (PinKind::Spki, cert.digest));
        assert_eq!(
            format!("SPKI:{}", HEX.to_uppercase()).parse::<Pin>(),
            Ok(spki)
        );
        assert_eq!(spki.to_string(), format!("spki:{HEX}"));
    }

    #[test]
    fn refuses_malformed_digests() {
        assert_eq!("".parse::<Pin>(), Err(PinError::Length(0)));
        assert_eq!(HEX[..62].parse::<Pin>(), Err(PinError::Length(62)));
        assert_eq!(format!("{HEX}00").parse::<Pin>(), Err(PinError::Length(66)));
        assert_eq!(
            format!("{}g", &HEX[..63]).parse::<Pin>(),
            Err(PinError::NotHex('g'))
        );
        assert_eq!(
            format!("A:B{}", &HEX[3..]).parse::<Pin>(),
            Err(PinError::Colons)
        );
        assert_eq!(
            format!("{}:", colons(HEX)).parse::<Pin>(),
            Err(PinError::Colons)
        );
        // A SHA-1 fingerprint (20 bytes) is not a SHA-256 one.
        assert_eq!(colons(HEX)[..59].parse::<Pin>(), Err(PinError::Length(40)));
        assert_eq!("spki:".parse::<Pin>(), Err(PinError::Length(0)));
        assert_eq!(
            format!("spki:{}", colons(HEX))
                .parse::<Pin>()
                .map(|p| p.kind),
            Ok(PinKind::Spki)
        );
        assert_eq!(format!("sha1:{HEX}").parse::<Pin>(), Err(PinError::Colons));
        let err = parse_pins(&[HEX.to_string(), "nope".to_string()]).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }
}
