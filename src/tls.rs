//! TLS for both sides: the proxy's server configuration (PEM files, or a self-signed certificate
//! generated with rcgen), the upstream client configuration (system roots, a CA file
//! ([`verify`]), or certificate pins ([`pin`]); SNI from the upstream's name), and certificate
//! generation for `imapgate gen-cert`. Both sides speak ALPN `imap`. Every configuration is built
//! with an explicit crypto provider (ring), so nothing depends on a process default.

pub mod pin;
pub mod verify;

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

use crate::config::{TlsConfig, UpstreamConfig};

/// TLS set-up that failed; each variant names what was being read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error("reading certificate {path}: {source}")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The key file could not be read or parsed.
    #[error("reading private key {path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file held no certificate.
    #[error("{0}: no certificate found")]
    Empty(String),
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// No trust anchors could be loaded.
    #[error("no trusted CA certificates (system store empty and no upstream.ca_file)")]
    NoRoots,
    /// The CA file's certificates could not make a verifier.
    #[error("upstream CA file: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// A `pin_sha256` entry is not a digest (configuration validation refuses it first).
    #[error("pin_sha256 {0}")]
    Pin(String),
}

/// The ALPN protocol name of IMAP over TLS (RFC 9051 and the IANA registry). Offering and
/// requiring it stops a TLS connection meant for another protocol (the ALPACA attacks) from
/// reaching the IMAP dialogue.
pub const ALPN_IMAP: &[u8] = b"imap";

/// The crypto provider used everywhere.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM certificate and key generated for a list of names.
pub struct GeneratedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// Generates a self-signed certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String]) -> Result<GeneratedCert, TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.clone());
    }
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(GeneratedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// SHA-256 of a DER certificate, as colon-separated hex (what `openssl x509 -fingerprint` shows).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    pin::colon_hex(&Sha256::digest(cert.as_ref()))
}

/// The server configuration and the fingerprint of its leaf certificate.
pub struct ServerTls {
    /// Shared by every accepted connection.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf, for the start-up log.
    pub fingerprint: String,
    /// Whether the certificate was generated at start-up.
    pub generated: bool,
}

/// Builds the proxy's server TLS configuration from files, or from a generated certificate.
pub fn server_config(cfg: &TlsConfig) -> Result<ServerTls, TlsError> {
    let (certs, key, generated) = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => (load_certs(cert)?, load_key(key)?, false),
        _ => {
            let generated = generate(&cfg.self_signed_names)?;
            let certs = CertificateDer::pem_slice_iter(generated.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Cert {
                    path: "<generated>".into(),
                    source,
                })?;
            let key =
                PrivateKeyDer::from_pem_slice(generated.key_pem.as_bytes()).map_err(|source| {
                    TlsError::Key {
                        path: "<generated>".into(),
                        source,
                    }
                })?;
            (certs, key, true)
        }
    };
    let fingerprint = certs.first().map(fingerprint).unwrap_or_default();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // A client offering ALPN without `imap` is refused (no_application_protocol); one that
    // offers no ALPN at all is served.
    config.alpn_protocols = vec![ALPN_IMAP.to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
        generated,
    })
}

/// Builds the upstream client configuration: the pins if any (they replace CA validation), else
/// the CA file if given, else the system roots.
pub fn client_config(cfg: &UpstreamConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if !cfg.pin_sha256.is_empty() {
        let pins = pin::parse_pins(&cfg.pin_sha256).map_err(TlsError::Pin)?;
        let algorithms = provider.signature_verification_algorithms;
        let verifier = pin::PinVerifier::new(pins, &cfg.address, algorithms);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else if let Some(ca) = &cfg.ca_file {
        let verifier = verify::CaFileVerifier::new(load_certs(ca)?, provider)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A malformed system certificate is skipped, as every TLS client does.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_IMAP.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for HTTPS (the OAuth token endpoint): the CAs of `ca_file` (a
/// self-signed certificate may be its own) or the system roots; ALPN `http/1.1`.
pub fn https_client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match ca_file {
        Some(ca) => {
            let verifier = verify::CaFileVerifier::new(load_certs(ca)?, provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        None => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS handshake error for logs. rustls shows a verifier's own error (a pin mismatch naming
/// the presented fingerprint, webpki's `CaUsedAsEndEntity`) with `Debug` wrappers; this shows its
/// message.
pub fn handshake_error(e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            format!("invalid peer certificate: {other}")
        }
        _ => e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: shown.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty(shown));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_serves_and_verifies() {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let tls = server_config(&TlsConfig {
            self_signed_names: names,
            ..TlsConfig::default()
        })
        .unwrap();
        assert!(tls.generated);
        assert_eq!(tls.fingerprint.len(), 32 * 3 - 1);
    }
}
