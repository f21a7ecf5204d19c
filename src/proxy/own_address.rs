//! An app's redirects to its own address, brought back to the gate: a `Location` or `Refresh` field naming the
//! upstream's URL (`upstream.url`, base path included) becomes a path on the gate, under the route's prefix when the
//! route strips it. This is what nginx's `proxy_redirect default` does, and what a legacy app behind the gate needs:
//! the gate sends the upstream's own host in `Host` (unless `upstream.preserve_host`), so an app that builds absolute
//! URLs from `Host` (rather than from `X-Forwarded-Host`) redirects to `http://127.0.0.1:8080/login`, an address
//! the browser cannot reach and should never learn.
//!
//! The result is a path-absolute reference (RFC 9110 §10.2.2 allows relative `Location` values), so it resolves on
//! whichever of the gate's hosts the browser used. A value that would start with `//` or `/\` (an app echoing a
//! path it was given, `http://app//evil.example`) is left as it was: rewritten, it would name another host.

use http::header::HeaderValue;
use http::Uri;

/// One route's upstream address, and where its paths appear on the gate. Public for the `return_path` fuzz target.
#[derive(Debug, Clone)]
pub struct OwnAddress {
    /// The spellings of `scheme://host[:port]` the app may use for itself, lower case: with and without the
    /// scheme's default port.
    origins: Box<[String]>,
    /// The upstream's base path, without a trailing `/` (empty for none).
    base_path: String,
    /// What stands before the app's path on the gate: the route's prefix when it strips it, otherwise nothing.
    public_prefix: String,
}

impl OwnAddress {
    /// `url` is the upstream's origin (`upstream.url` without its path), `base_path` its path; a route serving
    /// `prefix` and removing it (`strip_prefix`) puts it back in front.
    pub fn new(url: &Uri, base_path: &str, prefix: &str, strip_prefix: bool) -> Self {
        let scheme = url.scheme_str().unwrap_or("http").to_ascii_lowercase();
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = match url.authority() {
            Some(a) => (a.host().to_ascii_lowercase(), a.port_u16()),
            None => (String::new(), None),
        };
        let origins: Vec<String> = match port {
            Some(p) if p != default_port => vec![format!("{scheme}://{host}:{p}")],
            _ => vec![
                format!("{scheme}://{host}"),
                format!("{scheme}://{host}:{default_port}"),
            ],
        };
        let public_prefix = if strip_prefix && prefix != "/" {
            prefix.trim_end_matches('/').to_owned()
        } else {
            String::new()
        };
        OwnAddress {
            origins: origins.into_boxed_slice(),
            base_path: base_path.trim_end_matches('/').to_owned(),
            public_prefix,
        }
    }

    /// The new value of a `Location` field, when it names the upstream's own address; `None` keeps the field.
    pub fn location(&self, value: &[u8]) -> Option<HeaderValue> {
        let text = std::str::from_utf8(value).ok()?;
        let rewritten = self.rewrite(text.trim())?;
        // As bytes: a path holding UTF-8 stays as the app wrote it (`from_str` takes visible ASCII only from http 1.6).
        HeaderValue::from_bytes(rewritten.as_bytes()).ok()
    }

    /// The new value of a `Refresh` field (`5; url=http://app/next`), when its URL names the upstream's own
    /// address; `None` keeps the field.
    pub fn refresh(&self, value: &[u8]) -> Option<HeaderValue> {
        let text = std::str::from_utf8(value).ok()?;
        let at = text.to_ascii_lowercase().find("url=")? + "url=".len();
        let (head, url) = text.split_at(at);
        let (quote, url) = match url.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &url[1..]),
            _ => (None, url),
        };
        let (url, tail) = match quote {
            Some(q) => url.split_at(url.find(q)?),
            None => (url.trim_end(), ""),
        };
        let rewritten = self.rewrite(url)?;
        let quote = quote.map(String::from).unwrap_or_default();
        HeaderValue::from_bytes(format!("{head}{quote}{rewritten}{tail}").as_bytes()).ok()
    }

    /// `url` as a path on the gate, when it is an absolute URL on one of the upstream's origins, inside its base
    /// path.
    fn rewrite(&self, url: &str) -> Option<String> {
        let ends_here = |rest: &str| rest.is_empty() || rest.starts_with(['/', '?', '#']);
        // The origin must end where it matched: `http://app:80` is not `http://app:8080`, nor `http://app.evil`.
        let rest = self.origins.iter().find_map(|origin| {
            let head = url.get(..origin.len())?;
            let rest = &url[origin.len()..];
            (head.eq_ignore_ascii_case(origin) && ends_here(rest)).then_some(rest)
        })?;
        let rest = rest.strip_prefix(self.base_path.as_str())?;
        if !ends_here(rest) {
            return None; // `/basement` is not inside `/base`
        }
        let path = if rest.starts_with('/') {
            format!("{}{rest}", self.public_prefix)
        } else {
            format!("{}/{rest}", self.public_prefix)
        };
        let bytes = path.as_bytes();
        if bytes.get(1).is_some_and(|b| *b == b'/' || *b == b'\\') {
            return None;
        }
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(url: &str, base: &str, prefix: &str, strip: bool) -> OwnAddress {
        OwnAddress::new(&url.parse().unwrap(), base, prefix, strip)
    }

    fn location(o: &OwnAddress, value: &str) -> Option<String> {
        o.location(value.as_bytes())
            .map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn the_upstreams_own_urls_become_paths_on_the_gate() {
        let o = own("http://127.0.0.1:8080", "", "/", false);
        for (from, to) in [
            ("http://127.0.0.1:8080/login?next=/x", "/login?next=/x"),
            ("HTTP://127.0.0.1:8080/a#frag", "/a#frag"),
            ("http://127.0.0.1:8080", "/"),
            ("http://127.0.0.1:8080?q=1", "/?q=1"),
            ("http://127.0.0.1:8080/caf\u{e9}?q=\u{e9}", "/caf\u{e9}?q=\u{e9}"),
        ] {
            assert_eq!(location(&o, from).as_deref(), Some(to), "{from}");
        }
        for kept in [
            "/login",
            "login",
            "https://127.0.0.1:8080/login",
            "http://127.0.0.1:80/login",
            "http://127.0.0.1:80800/login",
            "http://127.0.0.1:8080.evil.example/",
            "http://127.0.0.1:8080@evil.example/",
            "https://elsewhere.example/x",
            "http://127.0.0.1:8080//evil.example/",
            "http://127.0.0.1:8080/\\evil.example/",
        ] {
            assert_eq!(location(&o, kept), None, "{kept}");
        }
    }

    #[test]
    fn default_ports_match_either_spelling() {
        let o = own("http://app.internal", "", "/", false);
        assert_eq!(location(&o, "http://app.internal:80/x").as_deref(), Some("/x"));
        assert_eq!(location(&o, "http://APP.internal/x").as_deref(), Some("/x"));
        assert_eq!(location(&o, "http://app.internal:8080/x"), None);
        let tls = own("https://app.internal", "", "/", false);
        assert_eq!(location(&tls, "https://app.internal:443/x").as_deref(), Some("/x"));
        assert_eq!(location(&tls, "http://app.internal/x"), None);
    }

    #[test]
    fn base_path_and_stripped_prefix_are_mapped_back() {
        let o = own("http://127.0.0.1:3000", "/base", "/grafana", true);
        assert_eq!(
            location(&o, "http://127.0.0.1:3000/base/login").as_deref(),
            Some("/grafana/login")
        );
        assert_eq!(location(&o, "http://127.0.0.1:3000/base").as_deref(), Some("/grafana/"));
        assert_eq!(location(&o, "http://127.0.0.1:3000/basement"), None);
        assert_eq!(location(&o, "http://127.0.0.1:3000/other"), None);
        // A prefix the app sees (not stripped) is already in its paths.
        let kept = own("http://127.0.0.1:3000", "", "/grafana", false);
        assert_eq!(
            location(&kept, "http://127.0.0.1:3000/grafana/login").as_deref(),
            Some("/grafana/login")
        );
    }

    #[test]
    fn refresh_urls_are_rewritten_in_place() {
        let o = own("http://127.0.0.1:8080", "", "/app", true);
        let refresh = |v: &str| o.refresh(v.as_bytes()).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            refresh("0; url=http://127.0.0.1:8080/next").as_deref(),
            Some("0; url=/app/next")
        );
        assert_eq!(
            refresh("5;URL='http://127.0.0.1:8080/n'").as_deref(),
            Some("5;URL='/app/n'")
        );
        assert_eq!(refresh("5"), None);
        assert_eq!(refresh("0; url=https://elsewhere.example/"), None);
    }
}
