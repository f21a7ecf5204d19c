//! `server.http_redirect_listen`: a plain-HTTP listener that sends every request to the same URL over https, so a
//! browser given an `http://` link (or a bare host name) reaches the gate's TLS listener instead of a refused
//! connection (oauth2-proxy's `--force-https`, Pomerium's `http_redirect_addr`).
//!
//! Contract:
//! - every request, whatever its method, path or fields, is answered `308 Permanent Redirect` (RFC 9110 §15.4.9: a
//!   `POST` stays a `POST`, where 301 lets clients turn it into a `GET`) to `https://<host><public_url's
//!   port><path and query>`, and the connection closes after it; nothing is passed to the app or the pipeline;
//! - the host is the request's `Host` only when the gate serves it (`server.public_url`'s host,
//!   `server.allowed_redirect_hosts`, an `[[upstreams]]` entry's `host`); any other `Host`, none, or an absolute-form
//!   target's authority sends the browser to `public_url`'s own origin: a client cannot make the gate send anyone to
//!   a host of its choosing (an open redirect, or a poisoned cache's);
//! - the path and query are the request's as hyper parsed them (only URI characters); an asterisk-form target
//!   (`OPTIONS *`) goes to `/`;
//! - one request per connection, bounded as every side listener is ([`crate::side_listener`]), at most
//!   [`MAX_CONNECTIONS`] at a time (or `server.max_connections` if lower).

use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::config::Config;

/// The most connections the redirect listener serves at a time (each lives for one request).
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Where requests to the redirect listener are sent.
#[derive(Debug)]
pub(crate) struct Redirects {
    /// `https://host[:port]` of `server.public_url`.
    public_origin: String,
    /// `public_url`'s host name, lower case, without port or brackets.
    public_host: String,
    /// `:port` of `public_url` when it is not 443, else empty: the port of every host the gate serves.
    port_suffix: String,
    /// `server.allowed_redirect_hosts` (`.example.com`: every subdomain) and `[[upstreams]]` hosts, lower case.
    other_hosts: Vec<String>,
}

impl Redirects {
    pub(crate) fn new(config: &Config) -> Redirects {
        let public = &config.server.public_url;
        let authority = public.host();
        // `host:port` or `[v6]:port`: the suffix is the part after the last colon outside brackets.
        let port_suffix = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => authority[i..].to_owned(),
            _ => String::new(),
        };
        let mut other_hosts: Vec<String> = config
            .server
            .allowed_redirect_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        other_hosts.extend(config.routes.iter().filter_map(|r| r.host.clone()));
        Redirects {
            public_origin: public.origin().to_owned(),
            public_host: crate::policy::normalise_host(authority),
            port_suffix,
            other_hosts,
        }
    }

    /// The https URL a request naming `host` (its `Host` field) and `target` (its path and query) is sent to.
    pub(crate) fn location(&self, host: Option<&str>, target: &str) -> String {
        let target = if target.starts_with('/') { target } else { "/" };
        match host.map(crate::policy::normalise_host) {
            Some(name) if name != self.public_host && self.serves(&name) => {
                format!("https://{name}{}{target}", self.port_suffix)
            }
            _ => format!("{}{target}", self.public_origin),
        }
    }

    /// Whether `name` (lower case, no port) is another host the gate serves: a name, never an address (an
    /// address is not in the lists unless written there, and is compared as written).
    fn serves(&self, name: &str) -> bool {
        if name.is_empty() || !crate::policy::is_host(name.as_bytes()) || name.contains(':') {
            return false;
        }
        self.other_hosts.iter().any(|h| match h.strip_prefix('.') {
            Some(domain) => name
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => *h == name,
        })
    }
}

/// The answer to every request: 308 to its https URL.
pub(crate) fn redirect(redirects: &Redirects, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = redirects.location(host, target);
    tracing::debug!(target: "logto_gate::http_redirect", method = %req.method(), %location, "redirected to https");
    let mut resp = Response::new(body::full(format!("This site is served over https: {location}\n")));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let headers = resp.headers_mut();
    // Built from a validated origin, a host the lists hold, and hyper's parsed path: always a valid value.
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The redirects of a gate at `public_url` with `extra` at the end of its configuration.
    fn redirects_of(public_url: &str, extra: &str) -> Redirects {
        let toml = format!(
            "[server]\npublic_url = \"{public_url}\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n\
             [logto]\nendpoint = \"https://tenant.logto.app/\"\napp_id = \"app\"\napp_secret = \"s3cret\"\n\
             [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n{extra}"
        );
        Redirects::new(&Config::from_toml_str(&toml, Vec::new()).expect("valid"))
    }

    fn redirects(extra: &str) -> Redirects {
        redirects_of("https://auth.example.com:8443", extra)
    }

    #[test]
    fn a_request_goes_to_its_https_url_on_a_host_the_gate_serves() {
        let r = redirects("[[upstreams]]\nhost = \"ci.example.com\"\nurl = \"http://127.0.0.1:8111\"\n");
        let public = "https://auth.example.com:8443";
        for (host, target, want) in [
            (Some("auth.example.com"), "/a?b=1", format!("{public}/a?b=1")),
            (Some("AUTH.example.com:80"), "/", format!("{public}/")),
            (Some("ci.example.com"), "/x", "https://ci.example.com:8443/x".to_owned()),
            (
                Some("Ci.Example.Com.:80"),
                "/x",
                "https://ci.example.com:8443/x".to_owned(),
            ),
            // Not served here: the public origin, never the client's host.
            (Some("evil.example"), "/x", format!("{public}/x")),
            (Some("evil.example/ci.example.com"), "/x", format!("{public}/x")),
            (Some("ci.example.com.evil.example"), "/x", format!("{public}/x")),
            (Some(""), "/x", format!("{public}/x")),
            (None, "/x", format!("{public}/x")),
            // A target that is not a path (OPTIONS *).
            (Some("auth.example.com"), "*", format!("{public}/")),
        ] {
            assert_eq!(r.location(host, target), want, "{host:?} {target}");
        }
    }

    #[test]
    fn subdomains_of_an_allowed_domain_are_served_but_not_the_domain_itself() {
        let mut r = redirects("");
        r.other_hosts = vec![".apps.example.com".to_owned(), "grafana.example.com".to_owned()];
        assert_eq!(
            r.location(Some("a.apps.example.com"), "/"),
            "https://a.apps.example.com:8443/"
        );
        assert_eq!(
            r.location(Some("grafana.example.com"), "/"),
            "https://grafana.example.com:8443/"
        );
        for other in [
            "apps.example.com",
            ".apps.example.com",
            "xapps.example.com",
            "a.apps.example.com.evil",
        ] {
            assert_eq!(
                r.location(Some(other), "/"),
                "https://auth.example.com:8443/",
                "{other}"
            );
        }
    }

    #[test]
    fn the_default_https_port_is_left_out() {
        let mut r = redirects_of("https://auth.example.com", "");
        r.other_hosts = vec!["grafana.example.com".to_owned()];
        assert_eq!(
            r.location(Some("grafana.example.com"), "/g"),
            "https://grafana.example.com/g"
        );
        assert_eq!(r.location(Some("x"), "/g"), "https://auth.example.com/g");
    }
}
