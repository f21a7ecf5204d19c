//! Optional TLS termination with rustls (`server.tls_cert_file`, `server.tls_key_file`).
//!
//! The certificate and key are PEM files; they are re-read when their modification time changes (cert-manager and
//! similar tools replace them before expiry), and the new pair is used for new handshakes while established
//! connections carry on undisturbed. A pair that fails to load is reported and the previous one stays in use.
//! ALPN offers HTTP/2 and HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Serves the current certificate; swapped in place when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Loads a certificate chain and its private key from PEM files.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "server.tls_cert_file: cannot read certificates from {}: {e}",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls_cert_file: {} holds no certificate",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "server.tls_key_file: cannot read a private key from {}: {e}",
            key_path.display()
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("server.tls_key_file: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("server.tls_key_file does not belong to server.tls_cert_file: {e}"))?;
    Ok(certified)
}

impl ReloadingCert {
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, String> {
        let first = load(cert_path, key_path)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(first)),
            stamp: RwLock::new((modified(cert_path), modified(key_path))),
        }))
    }

    /// Re-reads the pair when either file changed; true when a new pair is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = (modified(&self.cert_path), modified(&self.key_path));
        if self.stamp.read().map(|s| *s == now).unwrap_or(true) {
            return false;
        }
        match load(&self.cert_path, &self.key_path) {
            Ok(pair) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Arc::new(pair);
                }
                if let Ok(mut s) = self.stamp.write() {
                    *s = now;
                }
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Often the first of the two files is replaced before the second: try again next time.
                tracing::warn!(error = %e, "TLS certificate changed but could not be loaded; keeping the current one");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK_INTERVAL`] for as long as the returned task lives.
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                me.reload_if_changed();
            }
        })
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
