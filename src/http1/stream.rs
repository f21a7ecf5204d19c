//! The lean client's connections to its upstream: TCP to `host:port`, or a Unix domain socket (`upstream.url =
//! "unix:/path"`). One type for both, so the pool, the exchange and the response body read either the same way.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
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
        let target = match self {
            Dial::Tcp(target) => target,
            Dial::Unix(path) => return connect_unix(path, timeout).await.map(Stream::Unix),
        };
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(target.as_str())).await {
            Err(_) => return Err(format!("connecting to {target} timed out after {timeout:?}")),
            Ok(Err(e)) => return Err(format!("cannot connect to {target}: {e}")),
            Ok(Ok(tcp)) => tcp,
        };
        // Heads are written whole, at once: Nagle would only hold them back.
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY on the connection to {target}: {e}"))?;
        Ok(Stream::Tcp(tcp))
    }
}

/// Opens a connection to the socket file `path` within `timeout` (both upstream clients connect so); the error
/// names the file and what went wrong (no such file, no permission to open it, nobody listening).
pub(crate) async fn connect_unix(path: &Path, timeout: Duration) -> Result<UnixStream, String> {
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Err(_) => Err(format!(
            "connecting to unix:{} timed out after {timeout:?}",
            path.display()
        )),
        Ok(Err(e)) => Err(format!("cannot connect to unix:{}: {e}", path.display())),
        Ok(Ok(stream)) => Ok(stream),
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
