//! The `logto-gate` command: run the gate, or `check` a configuration against Logto.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use logto_gate::config::{Config, ENV_CONFIG_PATH};

#[derive(Parser)]
#[command(name = "logto-gate", version, about = "Logto sign-in in front of any web app")]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, short = 'c', env = ENV_CONFIG_PATH, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, fetch Logto's discovery document and keys, print what was found.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(path) = cli.config else {
        eprintln!("logto-gate: no configuration: pass --config PATH or set {ENV_CONFIG_PATH}");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("logto-gate: invalid configuration ({}):", path.display());
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
        None => {
            logto_gate::logging::init(&config.log);
            tracing::debug!(limit = ?fd_limit, "open file limit");
            match runtime.block_on(logto_gate::run(config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("logto-gate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Resolves on SIGTERM (Kubernetes, docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn check(config: Config) -> ExitCode {
    use openidconnect::JsonWebKey;
    println!("configuration: ok");
    println!("  public URL:   {}", config.server.public_url.origin());
    println!("  callback:     {}", config.server.public_url.callback_url());
    println!("  upstream:     {}{}", config.upstream.url, config.upstream.base_path);
    println!("  issuer:       {}", config.logto.issuer);
    println!("  scopes:       {}", config.logto.scopes.join(" "));
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
            println!("Logto discovery: ok");
            println!("  authorization: {}", m.authorization_endpoint);
            println!("  token:         {}", m.token_endpoint);
            println!(
                "  userinfo:      {}",
                m.userinfo_endpoint.as_deref().unwrap_or("(none)")
            );
            println!(
                "  end session:   {}",
                m.end_session_endpoint.as_deref().unwrap_or("(none)")
            );
            println!(
                "  iss on callback (RFC 9207): {}",
                m.authorization_response_iss_parameter_supported
            );
            println!(
                "  ID token algorithms: {}",
                m.id_token_signing_alg_values_supported.join(", ")
            );
            println!("signing keys: {}", loaded.jwks.keys().len());
            for k in loaded.jwks.keys() {
                let kid = k.key_id().map_or("(no kid)", |id| id.as_str());
                let alg = match k.signing_alg() {
                    openidconnect::JsonWebKeyAlgorithm::Algorithm(a) => format!("{a:?}"),
                    openidconnect::JsonWebKeyAlgorithm::Unspecified => "unspecified".to_owned(),
                    openidconnect::JsonWebKeyAlgorithm::Unsupported => "unsupported".to_owned(),
                };
                println!("  kid {kid}: type {:?}, alg {alg}", k.key_type());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Logto discovery: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
