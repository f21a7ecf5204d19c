//! The client listener: a TCP address, or a Unix domain socket (`server.listen = "unix:/run/logto-gate/gate.sock"`)
//! for a proxy on the same host (nginx's `proxy_pass http://unix:...`, Caddy's `unix//...`), which then reaches the
//! gate only as the socket file's permissions allow, where any local process reaches a loopback port.
//!
//! A client on the socket has no address. It counts as `127.0.0.1` ([`UNIX_PEER`]), a process on this host, which
//! is what it is: trusted as a proxy (its `X-Forwarded-For` believed) only when `server.trusted_proxies` names
//! `127.0.0.1`, written as `127.0.0.1` into the `X-Forwarded-For` the app receives, and logged as such.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The address a client on the Unix socket counts as (see the module docs); port 0, which no TCP peer has.
pub(crate) const UNIX_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The gate's listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    /// With the socket file the gate made, removed when the listener is dropped ([`SocketFile`]); none for a
    /// socket systemd made ([`crate::activation`]), whose file is systemd's.
    Unix(UnixListener, Option<SocketFile>),
}

/// A listening socket ready to be registered with any worker's runtime ([`Shareable::register`]).
pub(crate) enum Shareable {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// The listener of one worker, in its runtime.
pub(crate) enum WorkerListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted client connection.
pub(crate) enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An accepted connection on its way to another worker's runtime.
pub(crate) enum Handed {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Listener {
    /// Where it listens, for the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l, _) => match l.local_addr().ok().as_ref().and_then(|a| a.as_pathname()) {
                Some(path) => format!("unix:{}", path.display()),
                None => "unix:".to_owned(),
            },
        }
    }

    /// The socket, out of the runtime it was made in, and its file (kept until the server is done with it).
    pub(crate) fn into_shareable(self) -> io::Result<(Shareable, Option<SocketFile>)> {
        Ok(match self {
            Listener::Tcp(l) => (Shareable::Tcp(l.into_std()?), None),
            Listener::Unix(l, file) => (Shareable::Unix(l.into_std()?), file),
        })
    }
}

impl Shareable {
    /// Another handle on the same socket, registered with the current runtime.
    pub(crate) fn register(&self) -> io::Result<WorkerListener> {
        Ok(match self {
            Shareable::Tcp(l) => WorkerListener::Tcp(TcpListener::from_std(l.try_clone()?)?),
            Shareable::Unix(l) => WorkerListener::Unix(UnixListener::from_std(l.try_clone()?)?),
        })
    }
}

impl WorkerListener {
    /// The next connection and its peer ([`UNIX_PEER`] on the Unix socket). A TCP connection gets `TCP_NODELAY`
    /// once it has a place ([`Accepted::ready`]).
    pub(crate) async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        match self {
            WorkerListener::Tcp(l) => l.accept().await.map(|(s, peer)| (Accepted::Tcp(s), peer)),
            WorkerListener::Unix(l) => l.accept().await.map(|(s, _)| (Accepted::Unix(s), UNIX_PEER)),
        }
    }
}

impl Accepted {
    /// Readies a connection that is to be served: answers are written whole, so Nagle would only hold them back.
    pub(crate) fn ready(&self) {
        if let Accepted::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// Out of this worker's runtime, to be handed to another.
    pub(crate) fn into_handed(self) -> io::Result<Handed> {
        Ok(match self {
            Accepted::Tcp(s) => Handed::Tcp(s.into_std()?),
            Accepted::Unix(s) => Handed::Unix(s.into_std()?),
        })
    }
}

impl Handed {
    /// Into the current worker's runtime.
    pub(crate) fn register(self) -> io::Result<Accepted> {
        Ok(match self {
            Handed::Tcp(s) => Accepted::Tcp(TcpStream::from_std(s)?),
            Handed::Unix(s) => Accepted::Unix(UnixStream::from_std(s)?),
        })
    }
}

/// The socket file of a Unix listener, removed when dropped (the server has stopped), unless another file has
/// taken its place meanwhile.
#[derive(Debug)]
pub(crate) struct SocketFile(PathBuf, u64);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| m.ino() == self.1) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Listens on the socket file `path` with permissions `mode` (`server.listen_mode`). A socket file left by a gate
/// that did not stop cleanly (nothing accepts on it) is replaced; a socket something still listens on, or a file
/// that is no socket, is left alone and refused. The error names the key and the file.
pub(crate) fn bind_unix(path: &Path, mode: u32) -> Result<Listener, String> {
    let refuse = |what: String| format!("server.listen: cannot listen on unix:{}: {what}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match probe(path) {
            // A full backlog (would block) is someone listening too.
            Ok(()) => return Err(refuse("another process is listening on it".to_owned())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(refuse("another process is listening on it".to_owned()))
            }
            // Nobody accepts on it: what a process that was killed leaves behind.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| refuse(format!("cannot remove the stale socket file: {e}")))?;
            }
            Err(e) => return Err(refuse(format!("it exists and cannot be checked: {e}"))),
        },
        Ok(_) => {
            return Err(refuse(
                "it exists and is not a socket; remove it or choose another path".to_owned(),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(e.to_string())),
    }
    // Bound, given its permissions, and only then listening: until `listen` a connection to it is refused, so no
    // process the permissions leave out can get a connection queued in the window the umask's permissions held.
    let socket =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).map_err(|e| refuse(e.to_string()))?;
    let address = socket2::SockAddr::unix(path).map_err(|e| refuse(e.to_string()))?;
    socket.bind(&address).map_err(|e| refuse(e.to_string()))?;
    let inode = std::fs::symlink_metadata(path)
        .map_err(|e| refuse(e.to_string()))?
        .ino();
    let file = SocketFile(path.to_owned(), inode);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| refuse(format!("cannot set its permissions to {mode:o}: {e}")))?;
    socket.listen(LISTEN_BACKLOG).map_err(|e| refuse(e.to_string()))?;
    socket.set_nonblocking(true).map_err(|e| refuse(e.to_string()))?;
    let listener = UnixListener::from_std(socket.into()).map_err(|e| refuse(e.to_string()))?;
    Ok(Listener::Unix(listener, Some(file)))
}

/// Connects to the socket file `path` without waiting: `Ok` or `WouldBlock` when something listens on it.
fn probe(path: &Path) -> io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&socket2::SockAddr::unix(path)?)
}

/// The Unix listener's backlog: tokio's, and what the kernel caps at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 1024;
