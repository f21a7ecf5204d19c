//! logto-gate: an authenticating reverse proxy that puts Logto sign-in in front of any web app.
//!
//! The module tree follows the request: [`server`] accepts connections, [`gate`] runs the pipeline
//! (classify → authenticate → challenge → rewrite → forward → respond), [`oidc`] speaks OpenID Connect to Logto,
//! [`session`] keeps the signed-in state in encrypted cookies, [`identity`] turns claims into upstream headers,
//! [`proxy`] forwards to the app, and [`error`] maps failures to responses by their source.
#![forbid(unsafe_code)]
// Request and config data must never be able to panic the gate: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod assertion;
pub mod body;
pub mod config;
pub mod connector;
pub mod error;
pub mod gate;
pub mod identity;
pub mod logging;
pub mod oidc;
pub mod pages;
pub mod policy;
pub mod proxy;
pub mod return_path;
pub mod server;
pub mod session;

use std::future::Future;

use tokio::net::TcpListener;

pub use config::Config;
pub use gate::Gate;

/// Binds `server.listen` and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("server.listen: cannot listen on {}: {e}", config.server.listen))?;
    run_with_listener(config, listener, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0 first, then configure `public_url`).
pub async fn run_with_listener(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let gate = Gate::new(config)?;
    gate.oidc().spawn_background_load();
    tracing::info!(listen = %local, "logto-gate listening");
    server::serve(listener, gate, shutdown).await;
    Ok(())
}
