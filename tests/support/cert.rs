//! Throwaway TLS certificates for loopback, made with the openssl command line (tests and the benchmark).

use std::process::{Command, Stdio};

/// A self-signed end-entity certificate for 127.0.0.1 made with the openssl command line: (certificate, key).
pub fn make_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    make_cert_for(dir, name, "serverAuth", "IP:127.0.0.1")
}

/// Like [`make_cert`], naming only `san` (`DNS:app.internal`): not valid for 127.0.0.1.
#[allow(dead_code)] // the benchmark, which includes this file too, needs none
pub fn make_cert_naming(dir: &std::path::Path, name: &str, san: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    make_cert_for(dir, name, "serverAuth", san)
}

/// Like [`make_cert`], for a TLS client to present (mutual TLS).
#[allow(dead_code)] // the benchmark, which includes this file too, needs none
pub fn make_client_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    make_cert_for(dir, name, "clientAuth", "IP:127.0.0.1")
}

fn make_cert_for(
    dir: &std::path::Path,
    name: &str,
    usage: &str,
    san: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName={san}"),
        ])
        // An end-entity certificate (not a CA), which a client then trusts directly.
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            &format!("extendedKeyUsage={usage}"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl could not make a certificate");
    (cert, key)
}

/// The DER bytes of the PEM certificate at `pem_path` (one certificate, as `make_cert` writes it).
pub fn der_of(pem_path: &std::path::Path) -> Vec<u8> {
    use base64::Engine;
    let pem = std::fs::read_to_string(pem_path).expect("certificate");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("certificate PEM")
}

/// A TLS client offering HTTP/1.1 by ALPN that trusts only `root_der` (a `make_cert` certificate).
pub fn client_trusting(root_der: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root_der.to_vec()))
        .expect("certificate");
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
