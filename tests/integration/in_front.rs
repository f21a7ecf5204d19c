//! nginx in front of the gate, ending TLS (deploy/examples/nginx-in-front.conf run by Debian's nginx): a sign-in
//! through it, what the app is told about the client, a WebSocket, and the fields a client sends, which nginx passes
//! on as they came unless the example sets or empties them and the gate believes from a trusted proxy.

use std::path::PathBuf;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::forward_auth::{
    chooses_no_request_id_with, claims_no_other_address_with, gate_behind_a_proxy_at, nginx_example, ADDRESS_RULES,
    RULES,
};
use crate::support::cert::make_cert;
use crate::support::idp::{Idp, IdpOptions};
use crate::support::nginx::Nginx;
use crate::support::upstream::Upstream;
use crate::support::*;

/// The gate behind the shipped example, and what a client needs to reach it.
struct Front {
    idp: Idp,
    upstream: Upstream,
    _gate: TestGate,
    _nginx: Nginx,
    /// nginx's origin over TLS, and its plain-HTTP port (which only redirects).
    origin: String,
    plain_port: u16,
    /// The certificate nginx serves, for clients to trust.
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

/// Debian's nginx running deploy/examples/nginx-in-front.conf (ports and certificate replaced) in front of a gate
/// with `extra` in its configuration; `None`, after saying what to install, without nginx.
async fn behind_nginx_in_front(extra: &str) -> Option<Front> {
    if !have_tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "nginx");
    let (tls_port, plain_port) = (free_port(), free_port());
    let origin = format!("https://127.0.0.1:{tls_port}");
    let (idp, upstream, gate) = gate_behind_a_proxy_at(&origin, IdpOptions::default(), "", extra, |t| t).await;
    let conf = nginx_example("nginx-in-front.conf", &gate)
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{tls_port} ssl;"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{plain_port};"))
        .replace("/etc/nginx/tls/app.example.com.crt", &cert.display().to_string())
        .replace("/etc/nginx/tls/app.example.com.key", &key.display().to_string());
    assert!(conf.contains(&format!("listen 127.0.0.1:{tls_port} ssl;")), "{conf}");
    let nginx = Nginx::start(tls_port, &conf).await;
    Some(Front {
        idp,
        upstream,
        _gate: gate,
        _nginx: nginx,
        origin,
        plain_port,
        cert,
        _dir: dir,
    })
}

/// A client that trusts nginx's certificate, connecting from `from`.
fn client_from(front: &Front, from: [u8; 4]) -> reqwest::Client {
    let pem = std::fs::read(&front.cert).unwrap();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(from))
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// A person signs in through nginx over TLS and lands on the page asked for; the app is told the gate's identity,
/// the scheme `https`, the address nginx saw (and nginx's, which the gate adds) and nginx's request id; a WebSocket opens through both; plain HTTP is
/// sent to https.
#[tokio::test]
async fn a_sign_in_through_nginx_in_front_reaches_the_app() {
    let Some(front) = behind_nginx_in_front(RULES).await else {
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
    // The address nginx saw, then nginx's own, which the gate adds.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1, 127.0.0.1"));
    let id = seen.header("x-request-id").unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "nginx's $request_id: {id:?}"
    );
    assert_eq!(
        resp.headers()["x-request-id"].to_str().unwrap(),
        id,
        "the same id in the answer"
    );

    // A WebSocket through nginx and the gate, with the session.
    let cookie = b.gate_cookies(&front.origin);
    let pem = std::fs::read(&front.cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(front.origin.trim_start_matches("https://"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS with nginx");
    let mut request = format!("{}/ws", front.origin.replace("https://", "wss://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, answer) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("a WebSocket through nginx and the gate");
    assert_eq!(answer.status().as_u16(), 101);
    ws.send(Message::text("through both")).await.unwrap();
    let echo = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an echo")
        .expect("open")
        .expect("no error");
    assert_eq!(echo.into_text().unwrap().as_str(), "through both");

    let redirect = plain()
        .get(format!("http://127.0.0.1:{}/reports?x=1", front.plain_port))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "https://127.0.0.1/reports?x=1");
}

/// The certificates in a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("a PEM certificate"))
        .collect()
}

/// Every field the gate believes or passes on from a trusted proxy, as a client would forge it: none reaches the
/// app as the client wrote it. nginx passes a client's fields as they came unless told otherwise, and the gate
/// trusts nginx.
#[tokio::test]
async fn a_client_chooses_nothing_nginx_in_front_tells_the_gate() {
    let rules = format!("{RULES}{ADDRESS_RULES}");
    let Some(front) = behind_nginx_in_front(&rules).await else {
        return;
    };
    let client = client_from(&front, [127, 0, 0, 2]);
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
            "{name}: {value} reached the app: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.2, 127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.2"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("127.0.0.1"));

    claims_no_other_address_with(&client, &front.origin, &front.upstream).await;
    chooses_no_request_id_with(&client_from(&front, [127, 0, 0, 1]), &front.origin, &front.upstream).await;
}
