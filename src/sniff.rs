//! Which HTTP version a client connection speaks, decided before hyper gets the connection.
//!
//! Over TLS, ALPN says it (RFC 7301; `h2` or `http/1.1`). Over plain TCP, a client with HTTP/2 prior knowledge
//! starts with the connection preface (RFC 9113 §3.4), and anything else is HTTP/1. The plain case is decided by
//! peeking at the socket ([`peek_protocol`]), so the bytes stay in the kernel and hyper reads the whole first request
//! head with its first read into its own buffer. Reading the preface's 24 bytes out first (as hyper-util's `auto`
//! server does) costs every HTTP/1 connection a second, larger read buffer: a short first read makes hyper grow its
//! 8 KiB buffer to 16 KiB and copy it, about 10 KiB more resident memory per idle keep-alive connection.
//!
//! When a peek cannot decide (a client that sent only part of `PRI * HTTP/2.0…`), or over TLS without ALPN, the
//! first bytes are read into [`Prefixed`], which hands them to hyper before anything else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface a client with prior knowledge sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol to serve a connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// What the first bytes of a connection say; `None` while they are a proper prefix of the HTTP/2 preface. No bytes
/// (the client closed) is HTTP/1, whose server then sees the end of the stream.
pub fn classify(first: &[u8]) -> Option<Protocol> {
    if first.len() >= PREFACE.len() {
        Some(if first[..PREFACE.len()] == PREFACE[..] {
            Protocol::Http2
        } else {
            Protocol::Http1
        })
    } else if first.is_empty() || !PREFACE.starts_with(first) {
        Some(Protocol::Http1)
    } else {
        None
    }
}

/// Waits for the client's first bytes and classifies them without consuming them. `None`: undecided (see
/// [`classify`]); the caller reads on with [`Prefixed::read_protocol`].
///
/// Polled as a closure over its 24-byte buffer rather than through `TcpStream::peek`, whose future is ten times
/// that: every connection's task holds this wait while it waits for its first bytes, and is as large as its largest
/// state.
pub fn peek_protocol(stream: &TcpStream) -> impl std::future::Future<Output = io::Result<Option<Protocol>>> + '_ {
    let mut first = [0u8; PREFACE.len()];
    std::future::poll_fn(move |cx| {
        let mut buf = ReadBuf::new(&mut first);
        std::task::ready!(stream.poll_peek(cx, &mut buf))?;
        Poll::Ready(Ok(classify(buf.filled())))
    })
}

/// The protocol ALPN selected (RFC 7301), if the client offered ALPN at all.
pub fn alpn_protocol(selected: Option<&[u8]>) -> Option<Protocol> {
    match selected {
        Some(b"h2") => Some(Protocol::Http2),
        Some(_) => Some(Protocol::Http1),
        None => None,
    }
}

/// A stream whose first bytes, already read (to decide the protocol, or by the HTTP/1 front before it handed the
/// connection over), are read again before the rest.
pub struct Prefixed<T> {
    inner: T,
    prefix: Bytes,
}

impl<T> Prefixed<T> {
    /// `inner` with nothing read ahead.
    pub fn new(inner: T) -> Self {
        Prefixed::replaying(inner, Bytes::new())
    }

    /// `inner`, whose reads return `prefix` first.
    pub fn replaying(inner: T, prefix: Bytes) -> Self {
        Prefixed { inner, prefix }
    }
}

impl<T: AsyncRead + Unpin> Prefixed<T> {
    /// Reads from the stream until its first bytes say which protocol it speaks, keeping them to be read again.
    /// Call it once, before anything else reads. Unbounded in time: the caller bounds it.
    pub async fn read_protocol(&mut self) -> io::Result<Protocol> {
        let mut read = [0; PREFACE.len()];
        let mut end = 0;
        let protocol = loop {
            let n = self.inner.read(&mut read[end..]).await?;
            if n == 0 {
                // Closed before deciding: HTTP/1 sees the (partial) bytes and the end of the stream.
                break Protocol::Http1;
            }
            end += n;
            if let Some(protocol) = classify(&read[..end]) {
                break protocol;
            }
        };
        self.prefix = Bytes::copy_from_slice(&read[..end]);
        Ok(protocol)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        // Add what the stream already has, so the reader gets the whole head at once instead of a short read (which
        // makes hyper grow its buffer). Not ready or an error: the prefix alone now, the stream on the next read.
        if this.prefix.is_empty() && buf.remaining() > 0 {
            let _ = Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_the_preface_and_everything_else() {
        assert_eq!(classify(PREFACE), Some(Protocol::Http2));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"),
            Some(Protocol::Http2)
        );
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"POST"), Some(Protocol::Http1));
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\nxx"), Some(Protocol::Http1));
        assert_eq!(classify(b""), Some(Protocol::Http1));
        // Every proper prefix of the preface is undecided, including "P", which POST and PUT also start with.
        for len in 1..PREFACE.len() {
            assert_eq!(classify(&PREFACE[..len]), None, "prefix of {len} bytes");
        }
    }

    #[test]
    fn alpn_decides_when_offered() {
        assert_eq!(alpn_protocol(Some(b"h2")), Some(Protocol::Http2));
        assert_eq!(alpn_protocol(Some(b"http/1.1")), Some(Protocol::Http1));
        assert_eq!(alpn_protocol(None), None);
    }

    #[tokio::test]
    async fn a_split_preface_is_read_whole_and_replayed_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut prefixed = Prefixed::new(server);
        let reading = tokio::spawn(async move {
            let protocol = prefixed.read_protocol().await.unwrap();
            let mut all = Vec::new();
            prefixed.read_to_end(&mut all).await.unwrap();
            (protocol, all)
        });
        client.write_all(&PREFACE[..3]).await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&PREFACE[3..]).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        drop(client);
        let (protocol, all) = reading.await.unwrap();
        assert_eq!(protocol, Protocol::Http2);
        assert_eq!(all, [&PREFACE[..], b"frames"].concat());
    }

    #[tokio::test]
    async fn an_http1_request_starting_like_the_preface_loses_no_byte() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut prefixed = Prefixed::new(server);
        client.write_all(b"PR").await.unwrap();
        let reading = tokio::spawn(async move {
            let protocol = prefixed.read_protocol().await.unwrap();
            let mut first = [0u8; 64];
            // The replayed bytes and what the stream already holds arrive in one read.
            let n = prefixed.read(&mut first).await.unwrap();
            (protocol, first[..n].to_vec())
        });
        // Longer than the 24 bytes read to decide: the rest stays in the stream.
        client.write_all(b"OPFIND / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (protocol, first) = reading.await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(first, b"PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[tokio::test]
    async fn a_client_that_closes_early_is_http1_with_its_bytes_kept() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut prefixed = Prefixed::new(server);
        client.write_all(b"PRI").await.unwrap();
        drop(client);
        assert_eq!(prefixed.read_protocol().await.unwrap(), Protocol::Http1);
        let mut all = Vec::new();
        prefixed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"PRI");
    }
}
