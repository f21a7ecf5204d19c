//! The lean client's connections to its upstream: TCP to `host:port`, or a Unix domain socket (`upstream.url =
//! "unix:/path"`). One type for both, so the pool, the exchange and the response body read either the same way.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Where the lean client connects.
#[derive(Debug, Clone)]
pub(crate) enum Dial {
    /// `host:port`, resolved at each new connection.
    Tcp(String),
    /// A socket file.
    Unix(PathBuf),
}

impl Dial {
    /// Opens a connection within `timeout`; the error names the address and what went wrong.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Stream, String> {
        let opened = match self {
            Dial::Tcp(target) => tokio::time::timeout(timeout, TcpStream::connect(target.as_str()))
                .await
                .map(|r| r.map(Stream::Tcp)),
            Dial::Unix(path) => tokio::time::timeout(timeout, UnixStream::connect(path))
                .await
                .map(|r| r.map(Stream::Unix)),
        };
        match opened {
            Err(_) => Err(format!("connecting to {self} timed out after {timeout:?}")),
            Ok(Err(e)) => Err(format!("cannot connect to {self}: {e}")),
            Ok(Ok(stream)) => {
                if let Stream::Tcp(tcp) = &stream {
                    // Heads are written whole, at once: Nagle would only hold them back.
                    tcp.set_nodelay(true)
                        .map_err(|e| format!("cannot set TCP_NODELAY on the connection to {self}: {e}"))?;
                }
                Ok(stream)
            }
        }
    }
}

impl std::fmt::Display for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dial::Tcp(target) => f.write_str(target),
            Dial::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// An open connection to the upstream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Waits until the socket may be read (tests).
    #[cfg(test)]
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }
}
