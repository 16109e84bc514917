//! One type for every socket the proxy holds: plain TCP, TLS accepted from a client, or TLS
//! towards the upstream. Sessions are written once against `Stream` instead of being generic.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection, with or without TLS.
pub enum Stream {
    /// Cleartext TCP.
    Plain(TcpStream),
    /// TLS terminated by the proxy (client side). Boxed: rustls state is large and most of the
    /// time only one variant is live.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS originated by the proxy (upstream side).
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Bytes a TLS reader may hold of what arrived, beyond what it handed out: a partial record
/// (16 KiB of plaintext, up to 2 KiB of expansion, a 5-byte header) and one socket read past it.
const TLS_HELD: u64 = 32 * 1024;

impl Stream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The TCP socket under the stream.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::ServerTls(s) => s.get_ref().0,
            Stream::ClientTls(s) => s.get_ref().0,
        }
    }

    /// Bytes that may have arrived on the socket and sit in the stream's own buffers while a
    /// read reports nothing more: a TLS reader's partial record. Zero for plain TCP.
    pub fn held_back(&self) -> u64 {
        if self.is_tls() { TLS_HELD } else { 0 }
    }

    /// Sets the socket's receive low-water mark (`SO_RCVLOWAT`, socket(7)): the kernel reports
    /// it readable once this many bytes are queued (or at end of stream). 1 is the default.
    pub fn set_recv_lowat(&self, bytes: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: a valid descriptor owned by the stream, and a c_int option of its size.
        let rc = unsafe {
            libc::setsockopt(
                self.tcp().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
