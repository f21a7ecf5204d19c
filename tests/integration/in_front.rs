//! nginx and Caddy in front of the gate, ending TLS (deploy/examples/nginx-in-front.conf and Caddyfile-in-front,
//! run by Debian's nginx and Caddy): a sign-in through each, what the app is told about the client, a WebSocket, and
//! the fields a client sends, which both pass on as they came unless the example sets or removes them, and which the
//! gate believes or passes on from a trusted proxy.

use std::path::PathBuf;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::forward_auth::{
    chooses_no_request_id_with, claims_no_other_address_with, gate_behind_a_proxy_at, nginx_example, ADDRESS_RULES,
    RULES,
};
use crate::support::caddy::{self, Caddy};
use crate::support::cert::make_cert;
use crate::support::idp::{Idp, IdpOptions};
use crate::support::nginx::Nginx;
use crate::support::upstream::Upstream;
use crate::support::*;

/// Which proxy is in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Nginx,
    Caddy,
}

/// The gate behind a shipped example, and what a client needs to reach it.
struct Front {
    idp: Idp,
    upstream: Upstream,
    _gate: TestGate,
    _running: Box<dyn std::any::Any + Send>,
    /// The proxy's origin over TLS.
    origin: String,
    /// nginx's plain-HTTP port, which only redirects (Caddy's automatic redirect is off in the tests).
    plain_port: Option<u16>,
    /// The certificate the proxy serves, for clients to trust.
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

/// Debian's nginx or Caddy running its example (ports and certificate replaced) in front of a gate with `extra` in
/// its configuration; `None`, after saying what to install, without the proxy.
async fn behind(proxy: Proxy, extra: &str) -> Option<Front> {
    let installed = match proxy {
        Proxy::Nginx => have_tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx"),
        Proxy::Caddy => have_tool("caddy", &caddy::PATHS, "caddy"),
    };
    if !installed {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "proxy");
    let (tls_port, plain_port) = (free_port(), free_port());
    let origin = format!("https://127.0.0.1:{tls_port}");
    let (idp, upstream, gate) = gate_behind_a_proxy_at(&origin, IdpOptions::default(), "", extra, |t| t).await;
    let (running, plain_port): (Box<dyn std::any::Any + Send>, _) = match proxy {
        Proxy::Nginx => {
            let conf = nginx_example("nginx-in-front.conf", &gate)
                .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{tls_port} ssl;"))
                .replace("listen 80;", &format!("listen 127.0.0.1:{plain_port};"))
                .replace("/etc/nginx/tls/app.example.com.crt", &cert.display().to_string())
                .replace("/etc/nginx/tls/app.example.com.key", &key.display().to_string());
            assert!(conf.contains(&format!("listen 127.0.0.1:{tls_port} ssl;")), "{conf}");
            (Box::new(Nginx::start(tls_port, &conf).await), Some(plain_port))
        }
        Proxy::Caddy => {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/Caddyfile-in-front");
            let site = std::fs::read_to_string(path)
                .unwrap()
                .replace("127.0.0.1:4180", &format!("127.0.0.1:{}", gate.port));
            // The tests' Caddy makes no certificates of its own: it is given the throwaway one.
            let tls = format!("{origin} {{\n\ttls {} {}", cert.display(), key.display());
            let site = site.replace("app.example.com {", &tls);
            assert!(site.contains(&tls), "{site}");
            (Box::new(Caddy::start(tls_port, &site).await), None)
        }
    };
    Some(Front {
        idp,
        upstream,
        _gate: gate,
        _running: running,
        origin,
        plain_port,
        cert,
        _dir: dir,
    })
}

/// A client that trusts the proxy's certificate, connecting from `from`.
fn client_from(front: &Front, from: [u8; 4]) -> reqwest::Client {
    let pem = std::fs::read(&front.cert).unwrap();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(from))
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// A WebSocket through the proxy's TLS and the gate at `/ws`, with the session `cookie`: sends a message and expects
/// it back.
async fn websocket_echo(front: &Front, cookie: &str) {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(&front.cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("a PEM certificate")).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let address = front.origin.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS with the proxy");
    let mut request = format!("wss://{address}/ws").into_client_request().unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, answer) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("a WebSocket through the proxy and the gate");
    assert_eq!(answer.status().as_u16(), 101);
    ws.send(Message::text("through both")).await.unwrap();
    let echo = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an echo")
        .expect("open")
        .expect("no error");
    assert_eq!(echo.into_text().unwrap().as_str(), "through both");
}

/// A person signs in through the proxy over TLS and lands on the page asked for; the app is told the gate's
/// identity, the scheme `https`, the address the proxy saw (and the proxy's, which the gate adds) and the proxy's
/// request id; a WebSocket opens through both; nginx sends plain HTTP to https.
async fn a_sign_in_through_the_proxy_reaches_the_app(proxy: Proxy) {
    let Some(front) = behind(proxy, RULES).await else {
        return;
    };
    let b = Browser::trusting(&front.idp, &front.cert);
    let (hops, resp) = b.navigate(&format!("{}/reports?year=2026", front.origin)).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(hops.last().unwrap().url, format!("{}/reports?year=2026", front.origin));
    let seen = front.upstream.last();
    assert_eq!(seen.path, "/reports?year=2026");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1, 127.0.0.1"));
    let id = seen.header("x-request-id").unwrap_or_default();
    let proxys_own = match proxy {
        // nginx's $request_id, Caddy's {http.request.uuid}.
        Proxy::Nginx => id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        Proxy::Caddy => id.len() == 36 && id.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'),
    };
    assert!(proxys_own, "{proxy:?}'s request id: {id:?}");
    assert_eq!(
        resp.headers()["x-request-id"].to_str().unwrap(),
        id,
        "the same id in the answer"
    );

    websocket_echo(&front, &b.gate_cookies(&front.origin)).await;

    if let Some(port) = front.plain_port {
        let redirect = plain()
            .get(format!("http://127.0.0.1:{port}/reports?x=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()["location"], "https://127.0.0.1/reports?x=1");
    }
}

#[tokio::test]
async fn a_sign_in_through_nginx_in_front_reaches_the_app() {
    a_sign_in_through_the_proxy_reaches_the_app(Proxy::Nginx).await;
}

#[tokio::test]
async fn a_sign_in_through_caddy_in_front_reaches_the_app() {
    a_sign_in_through_the_proxy_reaches_the_app(Proxy::Caddy).await;
}

/// Every forwarding field the gate believes or passes on from a trusted proxy, as a client would forge it.
const FORGED: [(&str, &str); 24] = [
    ("Forwarded", "for=198.51.100.7;proto=https;host=admin.example.com"),
    ("X-Forwarded", "for=198.51.100.7"),
    ("Forwarded-For", "198.51.100.7"),
    ("X-Forwarded-For", "198.51.100.7"),
    ("X-Forwarded-Proto", "gopher"),
    ("X-Forwarded-Host", "admin.example.com"),
    ("X-Forwarded-Port", "8443"),
    ("X-Forwarded-Prefix", "/evil"),
    ("X-Forwarded-Ssl", "forged-off"),
    ("X-Forwarded-Scheme", "gopher"),
    ("X-Url-Scheme", "gopher"),
    ("Front-End-Https", "forged-off"),
    ("X-Original-Host", "admin.example.com"),
    ("X-Original-Forwarded-For", "198.51.100.7"),
    ("X-Real-IP", "198.51.100.7"),
    ("Client-IP", "198.51.100.7"),
    ("X-Client-IP", "198.51.100.7"),
    ("True-Client-IP", "198.51.100.7"),
    ("X-Cluster-Client-IP", "198.51.100.7"),
    ("CF-Connecting-IP", "198.51.100.7"),
    ("Fastly-Client-IP", "198.51.100.7"),
    ("X-Forwarded-Uri", "/admin"),
    ("X-Forwarded-Method", "DELETE"),
    ("X-Original-URI", "/admin"),
];

/// None of [`FORGED`] reaches the app as the client wrote it, through a proxy that passes a client's fields on
/// unless told otherwise and that the gate trusts; the address `client_ips` rules see and the request id are the
/// proxy's.
async fn a_client_chooses_nothing_the_proxy_tells_the_gate(proxy: Proxy) {
    let rules = format!("{RULES}{ADDRESS_RULES}");
    let Some(front) = behind(proxy, &rules).await else {
        return;
    };
    let client = client_from(&front, [127, 0, 0, 2]);
    let mut request = client.get(format!("{}/public/x", front.origin));
    for (name, value) in FORGED {
        request = request.header(name, value);
    }
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = front.upstream.last();
    assert_eq!(seen.path, "/public/x");
    for (name, value) in FORGED {
        assert!(
            seen.headers
                .iter()
                .all(|(n, v)| !(n.eq_ignore_ascii_case(name) && v.contains(value))),
            "{name}: {value} reached the app through {proxy:?}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.2, 127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.2"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // nginx's $host has no port; Caddy passes the Host as sent.
    let host = match proxy {
        Proxy::Nginx => "127.0.0.1",
        Proxy::Caddy => front.origin.trim_start_matches("https://"),
    };
    assert_eq!(seen.header("x-forwarded-host"), Some(host));

    claims_no_other_address_with(&client, &front.origin, &front.upstream).await;
    chooses_no_request_id_with(&client_from(&front, [127, 0, 0, 1]), &front.origin, &front.upstream).await;
}

#[tokio::test]
async fn a_client_chooses_nothing_nginx_in_front_tells_the_gate() {
    a_client_chooses_nothing_the_proxy_tells_the_gate(Proxy::Nginx).await;
}

#[tokio::test]
async fn a_client_chooses_nothing_caddy_in_front_tells_the_gate() {
    a_client_chooses_nothing_the_proxy_tells_the_gate(Proxy::Caddy).await;
}
