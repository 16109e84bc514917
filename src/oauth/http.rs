//! A minimal HTTP/1.1 client for token requests: one `POST` of an
//! `application/x-www-form-urlencoded` form per connection, over rustls (ring, the proxy's own
//! provider; verified against the system roots or `oauth.ca_file`), or plain HTTP to loopback.
//! Token requests are rare (one per account per token lifetime), so there is no pool; the whole
//! exchange runs under one deadline. hyper does the HTTP; nothing here pulls a second TLS stack.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use super::error::OAuthError;

/// Largest response body read (a token response is well under 16 KiB).
const MAX_BODY: usize = 256 * 1024;

/// Posts forms to token endpoints.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

/// An HTTP answer.
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The body (it may hold tokens: wiped when dropped).
    pub body: Zeroizing<Vec<u8>>,
}

impl HttpClient {
    /// A client verifying servers with `tls`, each exchange bounded by `timeout`.
    pub fn new(tls: Arc<ClientConfig>, timeout: Duration) -> HttpClient {
        HttpClient { tls, timeout }
    }

    /// `POST url` with `form` (url-encoded), HTTP Basic credentials when given.
    pub async fn post_form(
        &self,
        url: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Result<HttpResponse, OAuthError> {
        let timeout = self.timeout;
        crate::timer::timeout(timeout, self.exchange(url, basic, form))
            .await
            .map_err(|_| OAuthError::Unavailable(format!("no answer within {timeout:?}")))?
    }

    async fn exchange(
        &self,
        url: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Result<HttpResponse, OAuthError> {
        let down = |what: String| OAuthError::Unavailable(what);
        let uri: Uri = url.parse().map_err(|e| down(format!("bad URL: {e}")))?;
        let host = uri.host().ok_or_else(|| down("URL without host".into()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if super::config::is_loopback(host) => false,
            _ => return Err(down("only https:// (or http:// to loopback)".into())),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| down(format!("connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut body = Zeroizing::new(Vec::new());
        for (i, (k, v)) in form.iter().enumerate() {
            if i > 0 {
                body.push(b'&');
            }
            url_encode(&mut body, k.as_bytes());
            body.push(b'=');
            url_encode(&mut body, v.as_bytes());
        }
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.to_string());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, authority)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "imapgate")
            .header(hyper::header::CONTENT_LENGTH, body.len());
        let auth_value;
        if let Some((id, secret)) = basic {
            // RFC 6749 §2.3.1: both parts form-url-encoded before Basic encoding.
            let mut pair = Zeroizing::new(Vec::new());
            url_encode(&mut pair, id.as_bytes());
            pair.push(b':');
            url_encode(&mut pair, secret.as_bytes());
            auth_value = Zeroizing::new(format!("Basic {}", BASE64.encode(&pair[..])));
            let mut value = hyper::header::HeaderValue::from_str(&auth_value)
                .map_err(|_| down("bad client credentials".into()))?;
            value.set_sensitive(true);
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_vec())))
            .map_err(|e| down(format!("building the request: {e}")))?;
        if https {
            let name = ServerName::try_from(bare.to_string())
                .map_err(|_| down(format!("bad server name {host}")))?;
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    down(format!(
                        "TLS with {host}: {}",
                        crate::tls::handshake_error(&e)
                    ))
                })?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
    }
}

async fn send<T>(io: T, request: Request<Full<Bytes>>) -> Result<HttpResponse, OAuthError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let down = |what: String| OAuthError::Unavailable(what);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| down(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| down(format!("HTTP request: {e}")))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| down(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            body: Zeroizing::new(body.to_vec()),
        })
    }
    .await;
    driver.abort();
    result
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn url_encode(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b),
            b' ' => out.push(b'+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        let mut out = Vec::new();
        url_encode(&mut out, b"a b&c=d/\xc3\xa9~");
        assert_eq!(out, b"a+b%26c%3Dd%2F%C3%A9%7E");
    }
}
