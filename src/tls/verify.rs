//! Verifying an upstream against its `ca_file`: rustls' WebPKI verifier, plus the one case where
//! rustls refuses what OpenSSL (and so Dovecot admins' own tools) accept. `openssl req -x509` marks
//! a self-signed certificate `CA:TRUE`; WebPKI will not take a CA certificate as a server's
//! end-entity certificate (`CaUsedAsEndEntity`) even when that very certificate is the configured
//! trust anchor. This verifier accepts exactly that case: the presented certificate is
//! byte-identical to one in `ca_file`, valid for the server name and within its validity period.
//! Every other failure stands.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::TlsError;

/// WebPKI verification against a CA file, accepting a `CA:TRUE` self-signed certificate that is
/// itself in the file.
#[derive(Debug)]
pub struct CaFileVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The certificates of the CA file, compared byte for byte with a presented one.
    certs: Vec<CertificateDer<'static>>,
}

impl CaFileVerifier {
    /// A verifier trusting `certs` (from the CA file).
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<CaFileVerifier, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots.add(cert.clone())?;
        }
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        Ok(CaFileVerifier { inner, certs })
    }
}

/// Whether rustls refused the certificate because it is a CA certificate. rustls reports that
/// webpki error as `CertificateError::Other`; a webpki version that differs from rustls' own
/// makes this false, which refuses (the integration tests would show it).
fn is_ca_used_as_end_entity(error: &Error) -> bool {
    match error {
        Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

impl ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match result {
            Err(e)
                if is_ca_used_as_end_entity(&e)
                    && self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = ParsedCertificate::try_from(end_entity)?;
                verify_server_name(&parsed, server_name)?;
                check_validity(end_entity, now)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Refuses a certificate outside its validity period (or whose validity cannot be read).
fn check_validity(cert: &[u8], now: UnixTime) -> Result<(), Error> {
    let (not_before, not_after) = validity(cert).ok_or(CertificateError::BadEncoding)?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < not_before {
        return Err(CertificateError::NotValidYet.into());
    }
    if now > not_after {
        return Err(CertificateError::Expired.into());
    }
    Ok(())
}

/// `notBefore` and `notAfter` of a DER certificate (RFC 5280 §4.1), in Unix seconds.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = element(der, 0x30)?;
    let (tbs, _) = element(cert, 0x30)?;
    // version [0] EXPLICIT, absent for v1 certificates.
    let tbs = element(tbs, 0xa0).map_or(tbs, |(_, rest)| rest);
    let (_serial, tbs) = element(tbs, 0x02)?;
    let (_signature, tbs) = element(tbs, 0x30)?;
    let (_issuer, tbs) = element(tbs, 0x30)?;
    let (validity, _) = element(tbs, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some((not_before, not_after))
}

/// One DER element with tag `tag` at the front of `input`: its contents and what follows.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len, rest) = rest.split_at(n);
        (
            len.iter().fold(0, |acc, &b| (acc << 8) | usize::from(b)),
            rest,
        )
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the only
/// forms RFC 5280 allows, in Unix seconds.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (digits, rest, year) = if let Some((v, rest)) = element(input, 0x17) {
        let yy = number(v.get(..2)?)?;
        (
            v.get(2..)?,
            rest,
            if yy >= 50 { 1900 + yy } else { 2000 + yy },
        )
    } else {
        let (v, rest) = element(input, 0x18)?;
        (v.get(4..)?, rest, number(v.get(..4)?)?)
    };
    // MMDDHHMMSS then Z.
    if digits.len() != 11 || digits[10] != b'Z' {
        return None;
    }
    let field = |i: usize| number(&digits[i..i + 2]);
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (60) is allowed by the syntax.
    if second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

/// ASCII decimal digits as a number.
fn number(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, date_time_ymd};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A self-signed certificate for `names`, CA:TRUE when `ca`.
    fn self_signed(names: &[&str], ca: bool, years: (i32, i32)) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.not_before = date_time_ymd(years.0, 1, 2);
        params.not_after = date_time_ymd(years.1, 3, 4);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn at(year: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            days_from_civil(year, 6, 1) as u64 * 86_400,
        ))
    }

    fn verify(
        v: &CaFileVerifier,
        cert: &CertificateDer<'_>,
        name: &str,
        year: i64,
    ) -> Result<ServerCertVerified, Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], at(year))
    }

    #[test]
    fn self_signed_ca_in_the_ca_file_is_accepted_only_as_itself() {
        let cert = self_signed(&["localhost", "127.0.0.1"], true, (2020, 2060));
        let v = CaFileVerifier::new(vec![cert.clone()], provider()).unwrap();
        // What plain rustls says, and what the wrapper makes of it.
        let plain = v.inner.verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            at(2030),
        );
        assert!(
            plain.as_ref().is_err_and(is_ca_used_as_end_entity),
            "{plain:?}"
        );
        assert!(verify(&v, &cert, "localhost", 2030).is_ok());
        assert!(verify(&v, &cert, "127.0.0.1", 2030).is_ok());
        assert!(matches!(
            verify(&v, &cert, "imap.example.com", 2030),
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForNameContext { .. }
            ))
        ));
        assert!(verify(&v, &cert, "localhost", 2061).is_err());
        assert!(verify(&v, &cert, "localhost", 2019).is_err());

        // Another self-signed CA certificate in the file does not vouch for this one.
        let other = self_signed(&["localhost"], true, (2020, 2060));
        let v = CaFileVerifier::new(vec![other], provider()).unwrap();
        assert!(verify(&v, &cert, "localhost", 2030).is_err());
    }

    #[test]
    fn end_entity_self_signed_certificates_still_verify_as_before() {
        let cert = self_signed(&["localhost"], false, (2020, 2060));
        let v = CaFileVerifier::new(vec![cert.clone()], provider()).unwrap();
        assert!(verify(&v, &cert, "localhost", 2030).is_ok());
        assert!(verify(&v, &cert, "other.example", 2030).is_err());
    }

    #[test]
    fn reads_utc_and_generalized_validity_times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        // 2024-03-01 09:00:00 UTC.
        assert_eq!(
            days_from_civil(2024, 3, 1) * 86_400 + 9 * 3_600,
            1_709_283_600
        );
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on.
        let cert = self_signed(&["localhost"], false, (2020, 2060));
        let (nb, na) = validity(&cert).unwrap();
        assert_eq!(nb, days_from_civil(2020, 1, 2) * 86_400);
        assert_eq!(na, days_from_civil(2060, 3, 4) * 86_400);
        assert_eq!(
            time(b"\x17\x0d491231235959Z"),
            Some((days_from_civil(2049, 12, 31) * 86_400 + 86_399, &b""[..]))
        );
        assert_eq!(
            time(b"\x17\x0d500101000000Z").map(|t| t.0),
            Some(days_from_civil(1950, 1, 1) * 86_400)
        );
        assert_eq!(time(b"\x17\x0d491331235959Z"), None);
        assert_eq!(time(b"\x17\x0b4912312359Z"), None);
        assert_eq!(time(b"\x18\x0f20491231235959+"), None);
        assert_eq!(validity(&cert[..40]), None);
        assert_eq!(validity(b""), None);
    }
}
