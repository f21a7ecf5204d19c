//! The `logto-gate` command: run the gate, or `check` a configuration against Logto.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use logto_gate::config::{Config, ENV_CONFIG_PATH};

#[derive(Parser)]
#[command(
    name = "logto-gate",
    version,
    about = "Logto sign-in in front of any web app",
    after_help = "Every configuration key can also be set in the environment as LOGTO_GATE_<SECTION>__<KEY>, e.g. \
                  LOGTO_GATE_LOGTO__APP_SECRET or LOGTO_GATE_SESSION__SECRET_FILE; the environment wins over the file, \
                  and without --config the environment alone is the configuration. `logto-gate init` prints an \
                  annotated example configuration."
)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, short = 'c', env = ENV_CONFIG_PATH, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, fetch Logto's discovery document and keys, prove the app's credentials, and
    /// print what was found.
    Check,
    /// Print the annotated example configuration (save it, then fill in your Logto app and secrets).
    Init,
}

/// Writes a line to stdout; a closed pipe (`logto-gate check | head -1`) ends the output quietly instead of
/// panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The example configuration shipped with the source, for `cargo install` users who do not have the file.
const EXAMPLE_CONFIG: &str = include_str!("../config/logto-gate.toml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Init) = cli.command {
        out!("{}", EXAMPLE_CONFIG.trim_end());
        return ExitCode::SUCCESS;
    }
    let loaded = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| (format!("invalid configuration ({})", path.display()), e)),
        None => Config::from_env(std::env::vars()).map_err(|e| ("configuration from the environment".to_owned(), e)),
    };
    let config = match loaded {
        Ok(c) => c,
        Err((what, errors)) => {
            eprintln!("logto-gate: {what}:");
            for line in &errors.0 {
                eprintln!("{line}");
            }
            return ExitCode::from(2);
        }
    };
    // Every connection is a descriptor: allow as many as the hard limit does (systemd and containers often leave the
    // soft limit at 1024 while the hard limit is far higher).
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).ok();
    // This runtime runs signals, the metrics listener, certificate and key reloads; connections are served on
    // `server.workers` threads of their own (see `logto_gate::server`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logto-gate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Check) => runtime.block_on(check(config)),
        Some(Command::Init) => ExitCode::SUCCESS,
        None => {
            logto_gate::logging::init(&config.log);
            tracing::debug!(limit = ?fd_limit, "open file limit");
            let shutdown = {
                let _inside = runtime.enter();
                shutdown_signal()
            };
            match runtime.block_on(logto_gate::run(config, shutdown)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("logto-gate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Listens for SIGTERM (Kubernetes, docker stop) and SIGINT (Ctrl-C) from the moment it is called, inside the
/// runtime, and resolves on the first. Listening starts here rather than when the server first polls the future:
/// until then a signal would take its default action and end the process at once, without the drain, while the
/// workers may already be serving.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let first = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = first(term) => {},
            () = first(interrupt) => {},
        }
    }
}

async fn check(config: Config) -> ExitCode {
    use openidconnect::JsonWebKey;
    out!("configuration: ok");
    for caveat in config.caveats() {
        out!("  warning: {caveat}");
    }
    match &config.server.listen {
        logto_gate::config::Listen::Tcp(addr) => out!("  listening:    {addr}"),
        logto_gate::config::Listen::Unix { path, mode } => {
            out!("  listening:    unix:{} (mode {mode:o})", path.display())
        }
    }
    out!("  public URL:   {}", config.server.public_url.origin());
    out!("  callback:     {}", config.server.public_url.callback_url());
    if let Some(addr) = config.server.http_redirect_listen {
        out!("  plain HTTP:   {addr} redirects to https (308)");
    }
    out!("  upstreams (most specific first: the request's host before any host, then the longest prefix):");
    let mut routes: Vec<&logto_gate::config::UpstreamRoute> = config.routes.iter().collect();
    routes.sort_by_key(|r| std::cmp::Reverse((r.host.is_some(), r.prefix.len())));
    // Each app asked once, all at the same time: an app that is down costs its timeout once, not once per app.
    let reached = futures_util::future::join_all(routes.iter().map(|r| logto_gate::proxy::reach(&r.upstream))).await;
    for (r, reached) in routes.iter().zip(reached) {
        let to = match &r.upstream.unix_socket {
            Some(path) => format!("unix:{}", path.display()),
            None if r.upstream.base_path.is_empty() => r.upstream.url.to_string(),
            None => format!(
                "{}{}",
                r.upstream.url.to_string().trim_end_matches('/'),
                r.upstream.base_path
            ),
        };
        // An HTTP/2 app as its URL was written.
        let to = match to.strip_prefix("http://") {
            Some(rest) if r.upstream.http2 => format!("h2c://{rest}"),
            _ => to,
        };
        let to = match &r.upstream.tls_server_name {
            Some(name) => format!("{to} [TLS name {}]", name.to_str()),
            None => to,
        };
        // A warning, not a failure: the app may start after the gate, or not be reachable from where `check` runs.
        let state = match reached {
            Ok(status) => format!("answers HEAD with {}", status.as_u16()),
            Err(e) => format!("warning: {e}; requests get 502 until it answers"),
        };
        out!(
            "    {}{} -> {to} ({state})",
            r.label,
            if r.strip_prefix { " (prefix stripped)" } else { "" },
        );
    }
    out!("  access rules (the first that matches a request decides):");
    for (matches, grants) in config.policy.describe() {
        out!("    {matches}: {grants}");
    }
    if let Some(path) = &config.session.revocation_file {
        match logto_gate::session::check_revocation_file(path) {
            Ok(n) => out!("  revocation file: {} ({n} revocations in force)", path.display()),
            Err(e) => {
                eprintln!("logto-gate check: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    out!("  issuer:       {}", config.logto.issuer);
    out!("  scopes:       {}", config.logto.scopes.join(" "));
    let oidc = match logto_gate::oidc::Oidc::new(config.logto.clone(), config.server.public_url.callback_url()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("logto-gate check: {e}");
            return ExitCode::FAILURE;
        }
    };
    match oidc.fetch_all().await {
        Ok(loaded) => {
            let m = &loaded.metadata;
            out!("Logto discovery: ok");
            out!("  authorization: {}", m.authorization_endpoint);
            out!("  token:         {}", m.token_endpoint);
            out!(
                "  userinfo:      {}",
                m.userinfo_endpoint.as_deref().unwrap_or("(none)")
            );
            out!(
                "  end session:   {}",
                m.end_session_endpoint.as_deref().unwrap_or("(none)")
            );
            out!(
                "  iss on callback (RFC 9207): {}",
                m.authorization_response_iss_parameter_supported
            );
            out!(
                "  ID token algorithms: {}",
                m.id_token_signing_alg_values_supported.join(", ")
            );
            out!("signing keys: {}", loaded.jwks.keys().len());
            for k in loaded.jwks.keys() {
                let kid = k.key_id().map_or("(no kid)", |id| id.as_str());
                let alg = match k.signing_alg() {
                    openidconnect::JsonWebKeyAlgorithm::Algorithm(a) => format!("{a:?}"),
                    openidconnect::JsonWebKeyAlgorithm::Unspecified => "unspecified".to_owned(),
                    openidconnect::JsonWebKeyAlgorithm::Unsupported => "unsupported".to_owned(),
                };
                out!("  kid {kid}: type {:?}, alg {alg}", k.key_type());
            }
            match oidc.check_credentials(&loaded).await {
                Ok(()) => {
                    out!("app credentials: ok (Logto authenticated logto.app_id with logto.app_secret)");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("app credentials: FAILED: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("Logto discovery: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
