//! Optional TLS termination with rustls (`server.tls_cert_file`, `server.tls_key_file`), and the certificate the
//! gate presents to an upstream that requires one (`upstream.tls_client_cert_file`, `tls_client_key_file`).
//!
//! The certificate and key are PEM files; they are re-read when their metadata changes ([`crate::reload::Stamp`]:
//! cert-manager and similar tools replace them before expiry, Kubernetes by swapping a link), and the new pair is
//! used for new handshakes while established connections carry on undisturbed. A pair that fails to load is reported
//! and the previous one stays in use.
//! ALPN offers HTTP/2 and HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio_rustls::TlsAcceptor;

use crate::reload::Stamp;

/// Serves the current certificate; swapped in place when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    keys: PairKeys,
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<(Stamp, Stamp)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// The configuration keys a certificate pair comes from, for messages.
#[derive(Debug, Clone, Copy)]
pub struct PairKeys {
    pub cert: &'static str,
    pub key: &'static str,
}

/// `server.tls_cert_file` and `server.tls_key_file`.
pub const SERVER_KEYS: PairKeys = PairKeys {
    cert: "server.tls_cert_file",
    key: "server.tls_key_file",
};

/// Loads the server's certificate chain and its private key from PEM files.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    load_named(cert_path, key_path, SERVER_KEYS.cert, SERVER_KEYS.key)
}

/// Loads a certificate chain and its private key from PEM files; errors name the configuration keys `cert_key`
/// and `key_key`.
pub fn load_named(cert_path: &Path, key_path: &Path, cert_key: &str, key_key: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert_key}: cannot read certificates from {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{cert_key}: {} holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{key_key}: cannot read a private key from {}: {e}", key_path.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{key_key}: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{key_key} does not belong to {cert_key}: {e}"))?;
    Ok(certified)
}

impl ReloadingCert {
    /// The server's certificate (`server.tls_cert_file`, `server.tls_key_file`).
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, String> {
        Self::new_named(cert_path, key_path, SERVER_KEYS)
    }

    /// A certificate pair from the files of the configuration keys `keys`.
    pub fn new_named(cert_path: &Path, key_path: &Path, keys: PairKeys) -> Result<Arc<Self>, String> {
        let first = load_named(cert_path, key_path, keys.cert, keys.key)?;
        Ok(Arc::new(ReloadingCert {
            keys,
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(first)),
            stamp: RwLock::new((Stamp::of(cert_path), Stamp::of(key_path))),
        }))
    }

    /// The pair in use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Re-reads the pair when either file changed; true when a new pair is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = (Stamp::of(&self.cert_path), Stamp::of(&self.key_path));
        if self.stamp.read().map(|s| *s == now).unwrap_or(true) {
            return false;
        }
        match load_named(&self.cert_path, &self.key_path, self.keys.cert, self.keys.key) {
            Ok(pair) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Arc::new(pair);
                }
                if let Ok(mut s) = self.stamp.write() {
                    *s = now;
                }
                tracing::info!(key = self.keys.cert, cert = %self.cert_path.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Often the first of the two files is replaced before the second: try again next time.
                tracing::warn!(error = %e, "TLS certificate changed but could not be loaded; keeping the current one");
                false
            }
        }
    }

    /// Checks the files every [`crate::reload::CHECK_INTERVAL`] for as long as anything else holds the pair (the
    /// server's TLS acceptor, an upstream client's TLS configuration), then stops.
    pub fn watch_while_held(self: &Arc<Self>) {
        crate::reload::while_held(Arc::downgrade(self), |pair: &ReloadingCert| {
            pair.reload_if_changed();
        });
    }
}

/// Presents the current certificate to a server that asks for one (an upstream requiring mutual TLS).
impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _acceptable_issuers: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS acceptor using `resolver`, offering h2 and http/1.1 by ALPN.
pub fn acceptor(resolver: Arc<ReloadingCert>) -> Result<TlsAcceptor, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
