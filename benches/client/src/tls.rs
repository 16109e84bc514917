//! TLS client configuration for the bench: the server certificate is *pinned* (accepted when it
//! is byte-for-byte one of the given PEM certificates) instead of being chain-verified.
//!
//! Why: Dovecot's test certificate (scripts/dovecot.py) is self-signed with CA:TRUE, which
//! webpki rejects as an end-entity certificate (`CaUsedAsEndEntity`). Pinning keeps the full
//! handshake (including the server's signature check) identical for the direct and the proxied
//! path, which is all a benchmark needs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(
                "server certificate is not one of the pinned ones".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration (ring provider) that trusts exactly the certificates in `pin_files`.
pub fn client_config(pin_files: &[String]) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut certs = Vec::new();
    for f in pin_files {
        let iter = CertificateDer::pem_file_iter(f).map_err(|e| format!("{f}: {e}"))?;
        for c in iter {
            certs.push(c.map_err(|e| format!("{f}: {e}"))?);
        }
    }
    if certs.is_empty() {
        return Err("no certificate to pin (give --pin FILE)".into());
    }
    let verifier = Arc::new(Pinned {
        certs,
        provider: provider.clone(),
    });
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The name sent as SNI (both test certificates carry DNS:localhost).
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("valid name")
}
