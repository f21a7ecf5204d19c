//! logto-gate: an authenticating reverse proxy that puts Logto sign-in in front of any web app.
//!
//! The module tree follows the request: `server` accepts connections, `http1` reads and writes HTTP/1 (hyper the
//! rest), `gate` runs the pipeline (classify → authenticate → authorize → rewrite → forward → respond), [`oidc`]
//! speaks OpenID Connect to Logto, [`session`] keeps the signed-in state, [`identity`] turns claims into upstream
//! headers, [`proxy`] forwards to the app, and `error` maps failures to responses by their source.
//! docs/architecture.md draws the whole.
#![forbid(unsafe_code)]
// Request and config data must never be able to panic the gate: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub(crate) mod activation;
pub(crate) mod activity;
pub(crate) mod assertion;
pub(crate) mod body;
pub mod config;
pub(crate) mod connections;
pub(crate) mod connector;
pub(crate) mod deadlines;
pub(crate) mod error;
pub(crate) mod gate;
pub(crate) mod http1;
pub(crate) mod http2;
pub(crate) mod http_redirect;
pub mod identity;
pub(crate) mod listener;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod metrics_server;
pub(crate) mod observed;
pub mod oidc;
pub(crate) mod pages;
pub(crate) mod placement;
pub mod policy;
pub mod proxy;
pub(crate) mod reload;
pub mod return_path;
pub(crate) mod routes;
pub(crate) mod server;
pub mod session;
pub(crate) mod side_listener;
pub(crate) mod sniff;
pub(crate) mod tls;
pub(crate) mod values;
pub(crate) mod worker;

use std::future::Future;

use tokio::net::TcpListener;

use gate::Gate;

pub use config::Config;

/// What the fuzz targets and the integration tests reach besides the public API: the parsers that see attacker
/// bytes. Not a stable interface.
#[doc(hidden)]
pub mod testing {
    pub use crate::http1::client::{read_response, ReadResponse};
    pub use crate::http1::framing::{first_ambiguous, quick_reading_agrees};
    pub use crate::http1::server::read_head;
    pub use crate::http2::arriving_after as http2_arriving_after;
}

/// Binds `server.listen` and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let mut passed = activation::passed()?;
    // The setting's own check (an https public_url) ran when the configuration was read; a socket has none.
    if passed.http_redirect_listen.is_some() && !config.server.public_url.is_https() {
        return Err(format!(
            "server.http_redirect_listen: the socket systemd passed (FileDescriptorName={}) redirects to https, but \
             server.public_url is {}: set an https public_url (TLS in the gate, server.tls_cert_file, or in front of \
             it), or remove that socket",
            activation::HTTP_REDIRECT_LISTEN,
            config.server.public_url.origin()
        ));
    }
    let listener = match (passed.clients.take(), &config.server.listen) {
        (Some(passed), listen) => {
            tracing::info!(%listen, "listening on the socket systemd passed, in place of server.listen");
            passed
        }
        (None, config::Listen::Tcp(addr)) => TcpListener::bind(addr)
            .await
            .map(listener::Listener::Tcp)
            .map_err(|e| format!("server.listen: cannot listen on {addr}: {e}"))?,
        (None, config::Listen::Unix { path, mode }) => listener::bind_unix(path, *mode)?,
    };
    serve_on(config, listener, passed, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0 first, then configure `public_url`).
pub async fn run_with_listener(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    serve_on(
        config,
        listener::Listener::Tcp(listener),
        activation::Passed::default(),
        shutdown,
    )
    .await
}

async fn serve_on(
    config: Config,
    listener: listener::Listener,
    passed: activation::Passed,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let local = listener.describe();
    let limits = server::Limits::from(&config.server);
    let tls = match &config.server.tls {
        Some((cert, key)) => {
            let resolver = tls::ReloadingCert::new(cert, key)?;
            resolver.watch_while_held();
            Some(tls::acceptor(resolver)?)
        }
        None => None,
    };
    let metrics_listener = bind_side(
        activation::METRICS_LISTEN,
        passed.metrics_listen,
        config.server.metrics_listen,
    )
    .await?;
    let http_redirect_listener = bind_side(
        activation::HTTP_REDIRECT_LISTEN,
        passed.http_redirect_listen,
        config.server.http_redirect_listen,
    )
    .await?;
    for caveat in config.caveats() {
        tracing::warn!("{caveat}");
    }
    let http_redirect_listener =
        http_redirect_listener.map(|l| (l, std::sync::Arc::new(http_redirect::Redirects::new(&config))));
    let workers = config.server.workers;
    let gate = Gate::new(config)?;
    gate.oidc().spawn_background_load();
    gate.watch_files();
    let side = |max_connections: usize, keep_alive: bool| side_listener::SideLimits {
        header_read_timeout: limits.header_read_timeout,
        max_header_bytes: limits.max_header_bytes,
        max_connections: max_connections.min(limits.max_connections),
        keep_alive,
    };
    let metrics_task = metrics_listener.map(|l| {
        let listen = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%listen, "metrics listening");
        let metrics = std::sync::Arc::clone(gate.metrics());
        let answer = std::sync::Arc::new(move |req: &_| metrics_server::answer(&metrics, req));
        tokio::spawn(side_listener::serve(
            l,
            side(metrics_server::MAX_CONNECTIONS, true),
            answer,
        ))
    });
    let http_redirect_task = http_redirect_listener.map(|(l, redirects)| {
        let listen = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%listen, "redirecting plain HTTP to https");
        let answer = std::sync::Arc::new(move |req: &_| http_redirect::redirect(&redirects, req));
        tokio::spawn(side_listener::serve(
            l,
            side(http_redirect::MAX_CONNECTIONS, false),
            answer,
        ))
    });
    let max_connections = limits.max_connections;
    tracing::info!(listen = %local, tls = tls.is_some(), workers, max_connections, "logto-gate listening");
    let open_files = connections::open_files();
    let affordable = connections::default_max(open_files);
    if max_connections > affordable {
        tracing::warn!(
            max_connections,
            open_files,
            "server.max_connections is more than the open-file limit allows (each connection may need one to the \
             app too): past {affordable} connections, accepts or connections to the app may fail; raise the limit \
             (LimitNOFILE=, ulimit -n) or lower the setting"
        );
    }
    let served = server::serve(listener, gate, limits, tls, workers, shutdown).await;
    for task in [metrics_task, http_redirect_task].into_iter().flatten() {
        task.abort();
    }
    served
}

/// A side listener: the socket systemd passed for it (`FileDescriptorName=<name>`), or else `server.<name>`'s
/// address bound, when one is configured; the error names the key.
async fn bind_side(
    name: &str,
    passed: Option<TcpListener>,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<TcpListener>, String> {
    match (passed, addr) {
        (Some(passed), configured) => {
            let configured = configured.map(|a| a.to_string()).unwrap_or_else(|| "unset".to_owned());
            tracing::info!(%configured, "server.{name}: listening on the socket systemd passed, in its place");
            Ok(Some(passed))
        }
        (None, Some(addr)) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| format!("server.{name}: cannot listen on {addr}: {e}")),
        (None, None) => Ok(None),
    }
}
