//! `cargo run --example demo`: the whole picture on one machine.
//!
//! Starts the local Logto-compatible IdP (tests/idp: oidc-provider configured like Logto, with a small sign-in
//! page), a sample app that has no authentication code and shows the headers it receives, and logto-gate in front
//! of it. Prints the URL to open. Ctrl-C stops everything.

#[path = "../tests/support/idp.rs"]
mod idp;
#[path = "../tests/support/upstream.rs"]
mod upstream;

use std::process::ExitCode;

use tokio::net::TcpListener;

const APP_ID: &str = "demo-app";
const APP_SECRET: &str = "demo-app-secret";

#[tokio::main]
async fn main() -> ExitCode {
    let idp = match idp::Idp::try_start(idp::IdpOptions {
        interactive: true,
        // Its own host name: the IdP's cookies then never show up among the sample app's headers.
        public_host: Some("localhost".to_owned()),
        ..Default::default()
    }) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("demo: cannot start the local IdP: {e}\n(it needs Node.js 20.19+ and npm)");
            return ExitCode::FAILURE;
        }
    };
    let app = upstream::Upstream::start().await;
    // Port 4180 (the gate's default) when free, any free port otherwise.
    let listener = match TcpListener::bind("127.0.0.1:4180").await {
        Ok(l) => l,
        Err(_) => match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo: cannot bind a port: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let public = format!("http://127.0.0.1:{port}");
    idp.register_client(APP_ID, APP_SECRET, &public);
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "{public}"
[upstream]
url = "{app}"
[logto]
endpoint = "{endpoint}"
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
scopes = ["email", "roles", "identities"]
[session]
secret = "demo-session-secret-demo-session-secret-0123"
lifetime = "1h"
[headers]
"X-Forwarded-User" = "sub"
"X-Forwarded-Email" = "email"
"X-Forwarded-Preferred-Username" = "username"
"X-Forwarded-Groups" = "roles"
"X-Forwarded-Github-Login" = "identities.github.details.rawData.userInfo.login"
[[rules]]
prefix = "/admin"
roles = ["admin"]
"#,
        app = app.url(),
        endpoint = idp.endpoint(),
    );
    let config = match logto_gate::Config::from_toml_str(&toml, Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    logto_gate::logging::init(&config.log);
    println!();
    println!("logto-gate demo is running.");
    println!();
    println!("  Open {public}/ in your browser.");
    println!("  You are sent to the local test IdP (standing in for Logto): pick alice (roles admin, editor,");
    println!("  GitHub login Alice-GH) or bob, press Sign in, and you land on the sample app, which shows the");
    println!("  identity headers logto-gate added. {public}/_logto/userinfo shows the session;");
    println!("  {public}/_logto/sign-out signs out of both the gate and the IdP.");
    println!("  {public}/admin needs the admin role: alice gets in, bob gets a 403 page saying why.");
    println!();
    println!(
        "  IdP (issuer): {}   sample app (unreachable except through the gate in production): {}",
        idp.issuer(),
        app.url()
    );
    println!("  Press Ctrl-C to stop.");
    println!();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match logto_gate::run_with_listener(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
