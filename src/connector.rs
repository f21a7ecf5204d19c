//! The outbound connector shared by the upstream client and the Logto client: plain HTTP or HTTPS (rustls with
//! the Mozilla root set, so the image needs no system CA bundle), with a connect timeout and TCP_NODELAY.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

pub fn https_or_http(connect_timeout: Duration) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}
