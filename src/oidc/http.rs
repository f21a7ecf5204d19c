//! The HTTP client the gate uses to talk to Logto: discovery, JWKS, token and userinfo requests.
//!
//! It never follows redirects (an IdP endpoint that redirects is refused, not followed: following would let a
//! compromised or misconfigured endpoint send the client secret elsewhere), bounds every request in time, and reads
//! at most [`MAX_RESPONSE_BYTES`] of any answer.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{error_chain, IdpError};

/// The largest IdP answer read (discovery documents and key sets are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

const AGENT: &str = concat!("logto-gate/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct IdpHttp {
    client: Client<crate::connector::Connector, Full<Bytes>>,
    timeout: Duration,
}

/// An answer from the IdP: status, body, and how long it may be cached (`Cache-Control: max-age`, RFC 9111 §5.2.2.1).
#[derive(Debug)]
pub struct IdpResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub max_age: Option<Duration>,
}

/// `max-age` of `Cache-Control` values; `None` with `no-store`/`no-cache` or without one.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
    for directive in headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            found = secs.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    found
}

impl IdpHttp {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let https = crate::connector::https_or_http(timeout)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(IdpHttp { client, timeout })
    }

    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<IdpResponse, IdpError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, AGENT);
        if let Some(token) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| IdpError::BadResponse(format!("cannot build a request to {url}: {e}")))?;
        self.send(url, req).await
    }

    /// POSTs a form with HTTP Basic client authentication, `auth` being the `Authorization` value
    /// (the app credentials' `client_secret_basic`, RFC 6749 §2.3.1).
    pub async fn post_form(
        &self,
        url: &str,
        auth: HeaderValue,
        form: &[(&str, &str)],
    ) -> Result<IdpResponse, IdpError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, AGENT)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(AUTHORIZATION, auth)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| IdpError::BadResponse(format!("cannot build a request to {url}: {e}")))?;
        self.send(url, req).await
    }

    async fn send(&self, url: &str, req: Request<Full<Bytes>>) -> Result<IdpResponse, IdpError> {
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| IdpError::Unreachable(format!("{url}: {}", error_chain(&e))))?;
            let status = resp.status();
            let max_age = max_age(resp.headers());
            if status.is_redirection() {
                return Err(IdpError::BadResponse(format!(
                    "{url} answered with a redirect ({status}); the gate does not follow redirects from Logto"
                )));
            }
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| IdpError::BadResponse(format!("{url}: reading the answer failed: {e}")))?
                .to_bytes();
            Ok(IdpResponse { status, body, max_age })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(IdpError::Unreachable(format!(
                "{url}: no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
            m
        };
        assert_eq!(max_age(&h("public, max-age=600")), Some(Duration::from_secs(600)));
        assert_eq!(max_age(&h("Max-Age=\"60\"")), Some(Duration::from_secs(60)));
        assert_eq!(max_age(&h("max-age=600, no-store")), None);
        assert_eq!(max_age(&h("max-age=soon")), None);
        assert_eq!(max_age(&http::HeaderMap::new()), None);
    }
}
