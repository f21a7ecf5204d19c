//! `[server]`: where the gate listens, how browsers reach it, and the limits on its clients.

use std::net::SocketAddr;

use super::checks::{duration, http_url, non_empty, origin_of, unix_socket_path, Problems};
use super::raw::RawServer;
use super::{Listen, PublicUrl, ServerConfig};
use crate::proxy::trusted::Cidr;

/// `server.max_requests_per_connection` when unset: nginx's `keepalive_requests`.
const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u32 = 1000;

/// The largest `server.max_connections`.
const MAX_CONNECTIONS: u64 = 10_000_000;

/// On a Unix socket, the proxy in front is the gate's only client, and counts as 127.0.0.1
/// ([`crate::listener`]): unless that is a trusted proxy, its `X-Forwarded-For` is replaced, and the app, the logs
/// and `client_ips` rules see every client as 127.0.0.1. Worth a word, not a refusal (a proxy that sends no client
/// address is possible).
pub(super) fn unix_socket_caveat(server: &ServerConfig) -> Option<String> {
    let Listen::Unix { path, .. } = &server.listen else {
        return None;
    };
    let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    if crate::proxy::trusted::is_trusted(&server.trusted_proxies, local) {
        return None;
    }
    Some(format!(
        "server.trusted_proxies: the gate listens on unix:{}, whose clients count as 127.0.0.1, which is not listed: \
         the X-Forwarded-For of the proxy in front is replaced, so the app, the access log and client_ips rules see \
         every client as 127.0.0.1; add \"127.0.0.1\" to believe that proxy",
        path.display()
    ))
}

/// `server.listen_mode` when unset: the socket file's owner and group may connect (put the proxy in front in the
/// gate's group), others may not.
const DEFAULT_LISTEN_MODE: u32 = 0o660;

/// `server.listen` (an address, or `unix:/path`) and `server.listen_mode` (an octal mode, for a socket file only).
fn listen(p: &mut Problems, listen: Option<String>, mode: Option<String>) -> Option<Listen> {
    let text = non_empty(listen).unwrap_or_else(|| "0.0.0.0:4180".to_owned());
    let mode = non_empty(mode);
    let Some(path) = unix_socket_path(&text, "/run/logto-gate/gate.sock") else {
        if let Some(mode) = mode {
            p.add(
                "server.listen_mode",
                format!("`{mode}` is for a Unix socket (server.listen = \"unix:/path\"); server.listen is {text}"),
            );
        }
        return match text.parse::<SocketAddr>() {
            Ok(a) => Some(Listen::Tcp(a)),
            Err(_) => {
                p.add(
                    "server.listen",
                    format!(
                        "`{text}` is not an address like 0.0.0.0:4180, or a socket like unix:/run/logto-gate/gate.sock"
                    ),
                );
                None
            }
        };
    };
    let path = path.map_err(|problem| p.add("server.listen", problem)).ok();
    let mode = match mode {
        None => Some(DEFAULT_LISTEN_MODE),
        Some(m) => match u32::from_str_radix(&m, 8) {
            // Read and write for the owner at least (the gate removes it when it stops), no set-id or sticky bits.
            Ok(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => Some(mode),
            _ => {
                p.add(
                    "server.listen_mode",
                    format!("`{m}` is not a file mode like \"660\" (octal, at most 777, owner read and write)"),
                );
                None
            }
        },
    };
    Some(Listen::Unix {
        path: path?,
        mode: mode?,
    })
}

/// Validates `[server]`; `None` when a key of it has a problem (each reported in `p`).
pub(super) fn validate_server(p: &mut Problems, raw: RawServer) -> Option<ServerConfig> {
    let before = p.len();
    let listen = listen(p, raw.listen, raw.listen_mode);
    let public_url = p
        .required("server.public_url", non_empty(raw.public_url))
        .and_then(|v| http_url(p, "server.public_url", &v, false))
        .map(|u| {
            let origin = origin_of(&u);
            let host = origin.split_once("://").map(|(_, h)| h.to_owned()).unwrap_or_default();
            PublicUrl {
                https: u.scheme() == "https",
                origin,
                host,
            }
        });

    // Each as a request's Host names it: ".example.com" (every subdomain) keeps its dot, a port goes.
    let mut allowed_redirect_hosts = Vec::new();
    for entry in raw.allowed_redirect_hosts.unwrap_or_default() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (dot, bare) = match entry.strip_prefix('.') {
            Some(bare) => (".", bare),
            None => ("", entry),
        };
        match super::checks::host_name(bare) {
            Ok(name) if !name.starts_with('.') => allowed_redirect_hosts.push(format!("{dot}{name}")),
            _ => p.add(
                "server.allowed_redirect_hosts",
                format!("`{entry}` is not a host like \"grafana.example.com\" or \".example.com\" (every subdomain)"),
            ),
        }
    }

    let mut trusted_proxies = Vec::new();
    for t in raw.trusted_proxies.unwrap_or_default() {
        match Cidr::parse(&t) {
            Ok(c) => trusted_proxies.push(c),
            Err(e) => p.add("server.trusted_proxies", e),
        }
    }

    let mut trusted_identity_headers = Vec::new();
    for name in raw.trusted_identity_headers.unwrap_or_default() {
        let key = "server.trusted_identity_headers";
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Err(_) => p.add(key, format!("`{name}` is not a valid HTTP header name")),
            Ok(h) if !crate::identity::is_foreign_identity_name(h.as_str()) => p.add(
                key,
                format!(
                    "`{name}` is not an identity field of another auth proxy (such as Remote-User or \
                     Cf-Access-Authenticated-User-Email), which the gate removes: any other field reaches the app as \
                     it comes, and the gate's own fields are never kept"
                ),
            ),
            Ok(h) => trusted_identity_headers.push(h),
        }
    }
    if !trusted_identity_headers.is_empty() && trusted_proxies.is_empty() {
        p.add(
            "server.trusted_identity_headers",
            "needs server.trusted_proxies: the fields are kept only as the proxies listed there send them",
        );
    }

    let metrics_listen = non_empty(raw.metrics_listen).and_then(|m| match m.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "server.metrics_listen",
                format!("`{m}` is not an address like 127.0.0.1:9090"),
            );
            None
        }
    });
    let http_redirect_listen = non_empty(raw.http_redirect_listen).and_then(|m| match m.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "server.http_redirect_listen",
                format!("`{m}` is not an address like 0.0.0.0:80"),
            );
            None
        }
    });
    // It redirects to public_url: an http one would send browsers round in a circle, or to a plain listener.
    if let (Some(_), Some(public)) = (http_redirect_listen, &public_url) {
        if !public.https {
            p.add(
                "server.http_redirect_listen",
                format!(
                    "redirects to https, but server.public_url is {}: set an https public_url (TLS in the gate, \
                     server.tls_cert_file, or in front of it)",
                    public.origin
                ),
            );
        }
    }
    let shutdown_timeout = duration(p, "server.shutdown_timeout", raw.shutdown_timeout, "25s");
    let header_read_timeout = duration(p, "server.header_read_timeout", raw.header_read_timeout, "30s");
    let server_idle_timeout = duration(p, "server.idle_timeout", raw.idle_timeout, "90s");
    let max_header_bytes = match raw.max_header_bytes {
        None => 65_536,
        Some(n) if (8_192..=1_048_576).contains(&n) => n as usize,
        Some(n) => {
            p.add("server.max_header_bytes", format!("{n} is outside 8192..=1048576"));
            65_536
        }
    };
    let max_requests_per_connection = match raw.max_requests_per_connection {
        None => DEFAULT_MAX_REQUESTS_PER_CONNECTION,
        Some(n) => u32::try_from(n).unwrap_or_else(|_| {
            p.add(
                "server.max_requests_per_connection",
                format!("{n} is outside 0..={} (0: no limit)", u32::MAX),
            );
            DEFAULT_MAX_REQUESTS_PER_CONNECTION
        }),
    };
    let max_connections = match raw.max_connections {
        None => None,
        Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => Some(n as usize),
        Some(n) => {
            p.add(
                "server.max_connections",
                format!("{n} is outside 1..={MAX_CONNECTIONS} (unset: what the open-file limit allows)"),
            );
            None
        }
    };
    let workers = match raw.workers {
        None => crate::worker::default_count(),
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(n) => {
            p.add("server.workers", format!("{n} is outside 1..=1024"));
            1
        }
    };
    // Whether the pair loads is checked with the other files, after validation (`super::files`).
    let tls = match (raw.tls_cert_file, raw.tls_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c, k)),
        (Some(_), None) => {
            p.add("server.tls_key_file", "missing (server.tls_cert_file is set)");
            None
        }
        (None, Some(_)) => {
            p.add("server.tls_cert_file", "missing (server.tls_key_file is set)");
            None
        }
    };

    if p.len() > before {
        return None;
    }
    Some(ServerConfig {
        listen: listen?,
        public_url: public_url?,
        trusted_proxies,
        trusted_identity_headers,
        allow_encoded_slashes: raw.allow_encoded_slashes.unwrap_or(false),
        allowed_redirect_hosts,
        case_insensitive_paths: raw.case_insensitive_paths.unwrap_or(false),
        skip_auth_preflight: raw.skip_auth_preflight.unwrap_or(false),
        metrics_listen,
        http_redirect_listen,
        shutdown_timeout,
        header_read_timeout,
        max_header_bytes,
        workers,
        idle_timeout: server_idle_timeout,
        max_requests_per_connection,
        max_connections,
        tls,
    })
}

/// The host name of a `server.allowed_redirect_hosts` entry: without the leading `.` (every subdomain) and port.
pub(super) fn redirect_host_name(entry: &str) -> &str {
    let bare = entry.trim_start_matches('.');
    bare.split(':').next().unwrap_or(bare)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::Config;

    #[test]
    fn workers_default_to_the_cpus_and_are_bounded() {
        let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
        assert_eq!(c.server.workers, crate::worker::default_count());
        let with = |n: &str| MINIMAL.replace("[server]\n", &format!("[server]\nworkers = {n}\n"));
        assert_eq!(
            Config::from_toml_str(&with("3"), no_env())
                .expect("valid")
                .server
                .workers,
            3
        );
        for bad in ["0", "1025"] {
            let text = Config::from_toml_str(&with(bad), no_env()).unwrap_err().to_string();
            assert!(
                text.contains(&format!("server.workers: {bad} is outside 1..=1024")),
                "{text}"
            );
        }
        let env = vec![("LOGTO_GATE_SERVER__WORKERS".to_owned(), "5".to_owned())];
        assert_eq!(Config::from_toml_str(MINIMAL, env).expect("valid").server.workers, 5);
    }

    #[test]
    fn requests_per_connection_default_to_nginxs_and_zero_lifts_the_limit() {
        let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
        assert_eq!(c.server.max_requests_per_connection, 1000);
        let with = |n: &str| MINIMAL.replace("[server]\n", &format!("[server]\nmax_requests_per_connection = {n}\n"));
        let max = |text: &str| {
            Config::from_toml_str(text, no_env())
                .expect("valid")
                .server
                .max_requests_per_connection
        };
        assert_eq!(max(&with("0")), 0);
        assert_eq!(max(&with("1")), 1);
        assert_eq!(max(&with("4294967295")), u32::MAX);
        let text = Config::from_toml_str(&with("4294967296"), no_env())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("server.max_requests_per_connection: 4294967296 is outside 0..=4294967295 (0: no limit)"),
            "{text}"
        );
        let text = Config::from_toml_str(&with("-1"), no_env()).unwrap_err().to_string();
        assert!(text.contains("max_requests_per_connection"), "{text}");
        let env = vec![(
            "LOGTO_GATE_SERVER__MAX_REQUESTS_PER_CONNECTION".to_owned(),
            "25".to_owned(),
        )];
        assert_eq!(
            Config::from_toml_str(MINIMAL, env)
                .expect("valid")
                .server
                .max_requests_per_connection,
            25
        );
    }

    #[test]
    fn max_connections_is_bounded_and_unset_by_default() {
        let with = |n: &str| MINIMAL.replace("[server]\n", &format!("[server]\nmax_connections = {n}\n"));
        let max = |text: &str| {
            Config::from_toml_str(text, no_env())
                .expect("valid")
                .server
                .max_connections
        };
        assert_eq!(max(MINIMAL), None);
        assert_eq!(max(&with("1")), Some(1));
        assert_eq!(max(&with("10000000")), Some(10_000_000));
        for bad in ["0", "10000001"] {
            let text = Config::from_toml_str(&with(bad), no_env()).unwrap_err().to_string();
            assert!(
                text.contains(&format!(
                    "server.max_connections: {bad} is outside 1..=10000000 (unset: what the open-file limit allows)"
                )),
                "{text}"
            );
        }
        let env = vec![("LOGTO_GATE_SERVER__MAX_CONNECTIONS".to_owned(), "5000".to_owned())];
        assert_eq!(
            Config::from_toml_str(MINIMAL, env)
                .expect("valid")
                .server
                .max_connections,
            Some(5000)
        );
    }

    #[test]
    fn other_hosts_take_the_form_requests_name_them_in() {
        let with = |hosts: &str, domain: &str| {
            MINIMAL
                .replace("[server]\n", &format!("[server]\nallowed_redirect_hosts = {hosts}\n"))
                .replace("[session]\n", &format!("[session]\ncookie_domain = \"{domain}\"\n"))
        };
        let c = Config::from_toml_str(
            &with("[\"Gr\u{e4}fana.example.com:443\", \".Example.com\"]", "Example.com"),
            no_env(),
        )
        .expect("valid");
        assert_eq!(
            c.server.allowed_redirect_hosts,
            ["xn--grfana-cua.example.com", ".example.com"]
        );
        // A cookie domain outside ASCII contains the public URL's host, both in the form browsers compare.
        let idn = with("[]", "B\u{fc}cher.example").replace("app.example.com", "app.b\u{fc}cher.example");
        let c = Config::from_toml_str(&idn, no_env()).expect("valid");
        assert_eq!(c.session.cookie_domain.as_deref(), Some("xn--bcher-kva.example"));
        for bad in ["*.example.com", "..example.com", "a/b.example.com"] {
            let text = Config::from_toml_str(&with(&format!("[\"{bad}\"]"), "example.com"), no_env())
                .unwrap_err()
                .to_string();
            assert!(
                text.contains(&format!("server.allowed_redirect_hosts: `{bad}` is not a host like")),
                "{bad}: {text}"
            );
        }
    }
}
