//! Socket activation: the listening sockets systemd passes to this process (`.socket` units' `ListenStream=` lines,
//! the protocol of `sd_listen_fds_with_names(3)`), so that clients wait in a socket's queue while the gate restarts
//! and a port below 1024 needs no capability.
//!
//! Contract:
//! - the variables count only when `LISTEN_PID` names this process (another process's mean nothing here);
//! - each socket takes the place of the setting its `FileDescriptorName=` names: `metrics_listen` of
//!   `server.metrics_listen`, `http_redirect_listen` of `server.http_redirect_listen` (both TCP); a socket of any
//!   other name (systemd's default is the socket unit's name) takes the place of `server.listen`, TCP or Unix;
//! - at most one socket for each: a second is refused at start, as is a name count that does not match the socket
//!   count, or a socket that is not a listening stream socket of the kind its place needs; the error names the
//!   setting and what to change in the units.

use tokio::net::{TcpListener, UnixListener};

use crate::listener::Listener;

/// The `FileDescriptorName=` of a socket that takes the place of `server.metrics_listen`.
pub(crate) const METRICS_LISTEN: &str = "metrics_listen";
/// The `FileDescriptorName=` of a socket that takes the place of `server.http_redirect_listen`.
pub(crate) const HTTP_REDIRECT_LISTEN: &str = "http_redirect_listen";

/// The most sockets read from `LISTEN_FDS`: one for each place; more is refused before any is touched.
const MOST_SOCKETS: usize = 3;

/// The sockets systemd passed, each in its place; all `None` when it passed none.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    /// In place of `server.listen`.
    pub(crate) clients: Option<Listener>,
    /// In place of `server.metrics_listen`.
    pub(crate) metrics_listen: Option<TcpListener>,
    /// In place of `server.http_redirect_listen`.
    pub(crate) http_redirect_listen: Option<TcpListener>,
}

/// Takes the sockets systemd passed to this process (see the module docs). Must run inside a Tokio runtime.
pub(crate) fn passed() -> Result<Passed, String> {
    passed_from(|name| std::env::var(name).ok(), std::process::id())
}

fn passed_from(var: impl Fn(&str) -> Option<String>, pid: u32) -> Result<Passed, String> {
    if var("LISTEN_PID").and_then(|p| p.trim().parse::<u32>().ok()) != Some(pid) {
        return Ok(Passed::default());
    }
    let names = names(var("LISTEN_FDS").as_deref(), var("LISTEN_FDNAMES").as_deref())?;
    let is_side = |name: &str| [METRICS_LISTEN, HTTP_REDIRECT_LISTEN].contains(&name);
    let for_clients: Vec<&str> = names.iter().map(String::as_str).filter(|n| !is_side(n)).collect();
    if for_clients.len() > 1 {
        return Err(format!(
            "server.listen: systemd passed {} sockets for clients (FileDescriptorName= {}); logto-gate serves one, \
             the others by name: give one ListenStream= for clients, and any other its own .socket unit with \
             FileDescriptorName={METRICS_LISTEN} or {HTTP_REDIRECT_LISTEN}",
            for_clients.len(),
            for_clients.join(", ")
        ));
    }
    for side in [METRICS_LISTEN, HTTP_REDIRECT_LISTEN] {
        if names.iter().filter(|n| *n == side).count() > 1 {
            return Err(format!(
                "server.{side}: systemd passed more than one socket named {side} (FileDescriptorName=); the gate \
                 serves one there: give one ListenStream= that name"
            ));
        }
    }
    let mut fds = listenfd::ListenFd::from_env();
    let mut passed = Passed::default();
    for (index, name) in names.iter().enumerate() {
        match name.as_str() {
            METRICS_LISTEN => passed.metrics_listen = Some(side_socket(&mut fds, index, name)?),
            HTTP_REDIRECT_LISTEN => passed.http_redirect_listen = Some(side_socket(&mut fds, index, name)?),
            _ => passed.clients = client_socket(&mut fds, index)?,
        }
    }
    Ok(passed)
}

/// One name per socket: `LISTEN_FDNAMES` split at its colons, or systemd's `unknown` for each when it is absent.
fn names(count: Option<&str>, names: Option<&str>) -> Result<Vec<String>, String> {
    let refuse = |what: String| format!("server.listen: the sockets systemd passed: {what}");
    let count = match count.map(str::trim) {
        None => return Ok(Vec::new()),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n <= MOST_SOCKETS => n,
            Ok(n) => {
                return Err(refuse(format!(
                    "LISTEN_FDS is {n}; logto-gate takes at most {MOST_SOCKETS} (one for clients, \
                     FileDescriptorName={METRICS_LISTEN}, FileDescriptorName={HTTP_REDIRECT_LISTEN})"
                )))
            }
            Err(_) => return Err(refuse(format!("LISTEN_FDS is `{n}`, not a count"))),
        },
    };
    if count == 0 {
        return Ok(Vec::new());
    }
    match names {
        None => Ok(vec!["unknown".to_owned(); count]),
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            if names.len() != count {
                return Err(refuse(format!(
                    "LISTEN_FDNAMES names {} sockets and LISTEN_FDS counts {count}",
                    names.len()
                )));
            }
            Ok(names)
        }
    }
}

/// The socket at `index` as a side listener's: TCP only (the side listeners serve TCP).
fn side_socket(fds: &mut listenfd::ListenFd, index: usize, name: &str) -> Result<TcpListener, String> {
    let refuse = |what: String| format!("server.{name}: the socket systemd passed (FileDescriptorName={name}) {what}");
    match fds.take_tcp_listener(index) {
        Ok(Some(tcp)) => {
            tcp.set_nonblocking(true).map_err(|e| refuse(e.to_string()))?;
            TcpListener::from_std(tcp).map_err(|e| refuse(e.to_string()))
        }
        Ok(None) => Err(refuse("was taken already".into())),
        Err(e) => Err(refuse(format!(
            "is not a listening TCP socket ({e}): give its unit a ListenStream= with an address or port"
        ))),
    }
}

/// The socket at `index` as the clients' listener: TCP, or a Unix stream socket whose file stays systemd's.
fn client_socket(fds: &mut listenfd::ListenFd, index: usize) -> Result<Option<Listener>, String> {
    let refuse = |what: String| format!("server.listen: the socket systemd passed (LISTEN_FDS): {what}");
    match fds.take_tcp_listener(index) {
        Ok(Some(tcp)) => {
            tcp.set_nonblocking(true).map_err(|e| refuse(e.to_string()))?;
            Ok(Some(Listener::Tcp(
                TcpListener::from_std(tcp).map_err(|e| refuse(e.to_string()))?,
            )))
        }
        Ok(None) => Ok(None),
        Err(_) => match fds.take_unix_listener(index) {
            Ok(Some(unix)) => {
                unix.set_nonblocking(true).map_err(|e| refuse(e.to_string()))?;
                Ok(Some(Listener::Unix(
                    UnixListener::from_std(unix).map_err(|e| refuse(e.to_string()))?,
                    None,
                )))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(refuse(format!(
                "it is neither a listening TCP nor Unix stream socket ({e}): use ListenStream="
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_names_every_socket_is_unknown() {
        assert_eq!(names(Some("2"), None).unwrap(), ["unknown", "unknown"]);
        assert!(names(None, Some("a")).unwrap().is_empty());
        assert!(names(Some("0"), None).unwrap().is_empty());
        assert_eq!(
            names(Some(" 1 "), Some("logto-gate.socket")).unwrap(),
            ["logto-gate.socket"]
        );
    }

    #[test]
    fn a_count_that_is_not_one_or_does_not_match_the_names_is_refused() {
        let e = names(Some("x"), None).unwrap_err();
        assert!(e.contains("LISTEN_FDS is `x`, not a count"), "{e}");
        let e = names(Some("4"), None).unwrap_err();
        assert!(e.contains("LISTEN_FDS is 4; logto-gate takes at most 3"), "{e}");
        let e = names(Some("2"), Some("logto-gate.socket")).unwrap_err();
        assert!(
            e.contains("LISTEN_FDNAMES names 1 sockets and LISTEN_FDS counts 2"),
            "{e}"
        );
    }

    #[test]
    fn another_process_s_variables_are_ignored() {
        let vars = |name: &str| match name {
            "LISTEN_PID" => Some("1".to_owned()),
            "LISTEN_FDS" => Some("9".to_owned()),
            _ => None,
        };
        let passed = passed_from(vars, 2).unwrap();
        assert!(passed.clients.is_none() && passed.metrics_listen.is_none() && passed.http_redirect_listen.is_none());
    }

    fn ours(fds: &'static str, names: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name: &str| match name {
            "LISTEN_PID" => Some("7".to_owned()),
            "LISTEN_FDS" => Some(fds.to_owned()),
            "LISTEN_FDNAMES" => Some(names.to_owned()),
            _ => None,
        }
    }

    #[test]
    fn two_sockets_for_clients_or_for_one_side_listener_are_refused_naming_them() {
        let e = passed_from(ours("2", "logto-gate.socket:logto-gate.socket"), 7).unwrap_err();
        assert!(
            e.starts_with(
                "server.listen: systemd passed 2 sockets for clients (FileDescriptorName= logto-gate.socket, \
                 logto-gate.socket); logto-gate serves one"
            ),
            "{e}"
        );
        assert!(
            e.contains("FileDescriptorName=metrics_listen or http_redirect_listen"),
            "{e}"
        );
        let e = passed_from(ours("3", "a:metrics_listen:metrics_listen"), 7).unwrap_err();
        assert!(
            e.starts_with("server.metrics_listen: systemd passed more than one socket named metrics_listen"),
            "{e}"
        );
        let e = passed_from(ours("2", "http_redirect_listen:http_redirect_listen"), 7).unwrap_err();
        assert!(
            e.starts_with("server.http_redirect_listen: systemd passed more than one"),
            "{e}"
        );
    }
}
