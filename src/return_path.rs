//! Where a person goes after signing in: only ever a same-origin relative path.
//!
//! A return path is attacker-controlled (`/_logto/sign-in?redirect=...` is a link anyone can craft), so it is
//! accepted only when it is an absolute-path reference (RFC 3986 §4.2) that every browser resolves against our own
//! origin. Anything that a browser could read as another host (`//evil`, `/\evil`, whose backslash browsers treat as
//! a slash, `https://evil`, `http:evil`), anything with control characters or white space (browsers strip tabs and
//! newlines from URLs, turning `/\t/evil` into `//evil`), and a path (not a query) with encoded slashes or
//! backslashes falls back to `/`. A return path over [`MAX_LEN`] keeps only its path. The gate then prefixes the
//! path with `server.public_url`, so even a mistake here cannot leave the origin.

/// A validated same-origin path (with its query), starting with a single `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnPath(String);

/// The longest return path kept whole. A longer one keeps only its path (a dashboard's long query of panes and
/// filters is dropped, the dashboard stays), or falls back to `/` when the path alone is longer still: the attempt
/// cookie must stay small, since a browser restoring many tabs sends every attempt's cookie at once.
pub const MAX_LEN: usize = 2048;

impl ReturnPath {
    /// The fallback: the app's root.
    pub fn root() -> Self {
        ReturnPath("/".to_owned())
    }

    /// Validates `candidate` (already percent-decoded once, as a query parameter value is); anything doubtful
    /// becomes `/`. Characters outside ASCII are percent-encoded first (UTF-8, as a browser sends them): a link to
    /// `/gesch%C3%A4ft` reaches here decoded as `/geschäft`, and returns there.
    pub fn parse_or_root(candidate: &str) -> Self {
        Self::accept(candidate).unwrap_or_else(Self::root)
    }

    /// [`ReturnPath::parse_or_root`] without the fallback: `None` for anything doubtful.
    fn accept(candidate: &str) -> Option<Self> {
        let encoded = encode_non_ascii(candidate);
        kept(&encoded).map(|kept| ReturnPath(kept.to_owned()))
    }

    /// Like [`ReturnPath::parse_or_root`], also accepting an absolute URL on the gate's own origin (Traefik's
    /// errors middleware passes the original URL whole); it is reduced to its path and query.
    pub fn parse_same_origin_or_root(candidate: &str, origin: &str) -> Self {
        Self::accept_same_origin(candidate, origin).unwrap_or_else(Self::root)
    }

    fn accept_same_origin(candidate: &str, origin: &str) -> Option<Self> {
        match candidate.strip_prefix(origin) {
            Some(rest) if rest.starts_with('/') => Self::accept(rest),
            _ => Self::accept(candidate),
        }
    }

    /// Like [`ReturnPath::parse_same_origin_or_root`], also accepting an absolute URL with the gate's scheme on a host
    /// `allowed` admits (`server.allowed_redirect_hosts`, for one sign-in across subdomains): kept whole, its path
    /// and query held to the same rules as a same-origin path. Any other absolute URL falls back to `/`.
    pub fn parse_for_hosts(candidate: &str, origin: &str, allowed: impl Fn(&str) -> bool) -> Self {
        Self::accept_for_hosts(candidate, origin, allowed).unwrap_or_else(Self::root)
    }

    /// [`ReturnPath::parse_for_hosts`] without the fallback: `None` for anything it would not keep (where a caller
    /// has a better place than `/` to send the person).
    pub fn accept_for_hosts(candidate: &str, origin: &str, allowed: impl Fn(&str) -> bool) -> Option<Self> {
        if candidate.starts_with('/') {
            return Self::accept_same_origin(candidate, origin);
        }
        if let Some(same_origin) = Self::accept_same_origin(candidate, origin) {
            return Some(same_origin);
        }
        let scheme = origin.split("://").next().unwrap_or("https");
        let url = url::Url::parse(candidate).ok()?;
        let host = url.host_str()?;
        if url.scheme() != scheme
            || !url.username().is_empty()
            || url.password().is_some()
            || url.fragment().is_some()
            || !allowed(host)
        {
            return None;
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let path = kept(&path)?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Some(ReturnPath(format!("{scheme}://{authority}{path}")))
    }

    /// True for a return URL on another allowed host (rather than a path on the gate's own origin).
    pub fn is_absolute(&self) -> bool {
        !self.0.starts_with('/')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `endpoint?redirect=<this, form-encoded>`: a gate endpoint (sign-in, sign-out) that returns here afterwards.
    pub fn as_redirect_of(&self, endpoint: &str) -> String {
        let redirect: String = url::form_urlencoded::byte_serialize(self.0.as_bytes()).collect();
        format!("{endpoint}?redirect={redirect}")
    }
}

/// `text` with every byte outside ASCII percent-encoded (RFC 3986 §2.1, upper-case hex).
fn encode_non_ascii(text: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::utf8_percent_encode(text, &percent_encoding::AsciiSet::EMPTY).into()
}

/// What is kept of a path with its query: all of it when it is safe, only the path when the whole is too long but
/// safe without its query (the query's content never matters then, it is not kept), otherwise nothing.
fn kept(p: &str) -> Option<&str> {
    if is_safe(p) {
        return Some(p);
    }
    match p.split_once('?') {
        Some((path, _)) if p.len() > MAX_LEN && is_safe(path) => Some(path),
        _ => None,
    }
}

fn is_safe(p: &str) -> bool {
    if p.is_empty() || p.len() > MAX_LEN {
        return false;
    }
    let bytes = p.as_bytes();
    if bytes[0] != b'/' {
        return false; // relative, scheme-relative or absolute URL
    }
    if bytes.get(1).is_some_and(|b| *b == b'/' || *b == b'\\') {
        return false; // `//host` or `/\host`
    }
    // Only visible ASCII: no control characters, no white space, no raw non-ASCII (IDN look-alikes would have to be
    // percent-encoded, and then they are just path bytes on our own origin).
    if !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    if bytes.contains(&b'\\') {
        return false;
    }
    // In the path, an encoded slash or backslash, or an encoded percent that could decode into one on a second
    // pass: an app that decodes its path before redirecting would read `/%2F%2Fhost` as `//host`. In the query they
    // are an app's own parameters (`?next=%2Fadmin%2F`, a search for `a/b`), kept, and so in a fragment (never sent
    // to a server: a hash router's `#/a%2Fb`). Encoded control characters go nowhere.
    let lower = p.to_ascii_lowercase();
    let (before, fragment) = lower.split_once('#').unwrap_or((&lower, ""));
    let (path, query) = before.split_once('?').unwrap_or((before, ""));
    let refused = |part: &str, needles: &[&str]| needles.iter().any(|needle| part.contains(needle));
    const CONTROLS: [&str; 4] = ["%09", "%0a", "%0d", "%00"];
    !refused(path, &["%2f", "%5c", "%25"])
        && !refused(path, &CONTROLS)
        && !refused(query, &CONTROLS)
        && !refused(fragment, &CONTROLS)
        && !has_slash_lookalike(path)
}

/// Characters that read as `/` or `\` (NFKC folds the fullwidth and small forms into them; the others look the
/// same in an address bar): an app that normalises its decoded path before redirecting, or a person reading the
/// link, could take `/∕∕host` for `//host`.
const SLASH_LOOKALIKES: [char; 9] = [
    '\u{2044}', '\u{2215}', '\u{29f8}', '\u{ff0f}', '\u{2216}', '\u{29f5}', '\u{29f9}', '\u{fe68}', '\u{ff3c}',
];

/// Whether `path` (percent-encoded, any case) spells one of [`SLASH_LOOKALIKES`] once its escapes are decoded.
fn has_slash_lookalike(path: &str) -> bool {
    path.contains('%')
        && percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .chars()
            .any(|c| SLASH_LOOKALIKES.contains(&c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn other_hosts_are_accepted_only_when_allowed_and_with_our_scheme() {
        let allowed = |h: &str| h == "grafana.example.com";
        let origin = "https://auth.example.com";
        let ok = ReturnPath::parse_for_hosts("https://grafana.example.com/d/1?x=2", origin, allowed);
        assert_eq!(ok.as_str(), "https://grafana.example.com/d/1?x=2");
        assert!(ok.is_absolute());
        for refused in [
            "https://evil.example.com/",
            "http://grafana.example.com/",
            "https://user@grafana.example.com/",
            "https://grafana.example.com//evil.com",
            "https://grafana.example.com/a%2Fb",
            "https://grafana.example.com/#frag",
            "javascript:alert(1)",
        ] {
            let r = ReturnPath::parse_for_hosts(refused, origin, allowed);
            assert_eq!(r.as_str(), "/", "{refused}");
        }
        assert_eq!(
            ReturnPath::parse_for_hosts("https://auth.example.com/x", origin, allowed).as_str(),
            "/x"
        );
        assert_eq!(ReturnPath::parse_for_hosts("/y?z", origin, allowed).as_str(), "/y?z");
    }

    use super::*;

    #[test]
    fn same_origin_paths_are_kept_with_their_query() {
        for ok in [
            "/",
            "/app",
            "/app/page?x=1&y=%20z",
            "/a/b#frag",
            "/app#/reports/42?tab=1",
            "/app#/a%2Fb%25",
            "/app?q=1#/x",
            "/@user",
            "/a:b",
            "/login?next=%2Fadmin%2F",
            "/search?q=a%5Cb&rate=100%25",
        ] {
            assert_eq!(ReturnPath::parse_or_root(ok).as_str(), ok);
        }
        // A link's `redirect=/gesch%C3%A4ft` arrives decoded; it returns to the page, encoded as browsers send it.
        for (decoded, kept) in [
            ("/gesch\u{e4}ft?q=\u{e4}", "/gesch%C3%A4ft?q=%C3%A4"),
            ("/\u{e9}xample", "/%C3%A9xample"),
            ("/a?q=\u{ff0f}", "/a?q=%EF%BC%8F"),
        ] {
            assert_eq!(ReturnPath::parse_or_root(decoded).as_str(), kept);
        }
    }

    #[test]
    fn every_known_open_redirect_form_falls_back_to_root() {
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "%2F%2Fevil.example",
            "/%2F%2Fevil.example",
            "/%252F%252Fevil.example",
            "https://evil.example",
            "http:evil.example",
            "evil.example",
            "@evil.example",
            "/\t/evil.example",
            "/\r\n/evil.example",
            "/\n/evil.example",
            "/%09/evil.example",
            "/a?q=%0d%0aSet-Cookie:x",
            "/a?q=%00",
            "/a#%0d%0a",
            "/a%2F#/x",
            "/#/a b",
            "/ /evil.example",
            "/\u{ff0f}evil.example",
            "/%EF%BC%8Fevil.example",
            "/%ef%bc%8f%ef%bc%8fevil.example",
            "/\u{2215}\u{2215}evil.example",
            "/x/\u{ff3c}evil.example",
            "/a\\b",
            "javascript:alert(1)",
        ] {
            assert_eq!(ReturnPath::parse_or_root(bad).as_str(), "/", "{bad:?} must fall back");
            // Without the fallback (a sign-out's `redirect`): refused, not taken for the root.
            let o = "https://app.example.com";
            assert_eq!(ReturnPath::accept_for_hosts(bad, o, |_| false), None, "{bad:?}");
        }
        let o = "https://app.example.com";
        let accepted = |c: &str| ReturnPath::accept_for_hosts(c, o, |h| h == "grafana.example.com");
        assert_eq!(accepted("/").map(|p| p.0), Some("/".to_owned()));
        assert_eq!(accepted("https://app.example.com/").map(|p| p.0), Some("/".to_owned()));
        assert_eq!(
            accepted("https://grafana.example.com/d?x=1").map(|p| p.0),
            Some("https://grafana.example.com/d?x=1".to_owned())
        );
        assert_eq!(accepted("https://other.example.com/"), None);
        assert_eq!(accepted("http://grafana.example.com/"), None, "another scheme");
    }

    #[test]
    fn absolute_urls_on_our_own_origin_are_reduced_to_their_path() {
        let o = "https://app.example.com";
        assert_eq!(
            ReturnPath::parse_same_origin_or_root("https://app.example.com/a?b=1", o).as_str(),
            "/a?b=1"
        );
        for bad in [
            "https://app.example.com.evil.example/a",
            "https://app.example.com@evil.example/a",
            "https://app.example.com//evil.example",
            "https://app.example.com",
            "http://app.example.com/a",
        ] {
            assert_eq!(ReturnPath::parse_same_origin_or_root(bad, o).as_str(), "/", "{bad}");
        }
    }

    #[test]
    fn overlong_paths_fall_back() {
        let long = format!("/{}", "a".repeat(MAX_LEN));
        assert_eq!(ReturnPath::parse_or_root(&long).as_str(), "/");
        assert_eq!(ReturnPath::parse_or_root(&format!("{long}?q=1")).as_str(), "/");
    }

    #[test]
    fn an_overlong_query_is_dropped_and_its_path_kept() {
        let query = format!("panes={}", "%7B%22a%22%3A1%7D".repeat(200));
        let kept = ReturnPath::parse_or_root(&format!("/explore?{query}"));
        assert_eq!(kept.as_str(), "/explore");
        // Exactly at the limit, the query stays.
        let at_limit = format!("/e?{}", "q".repeat(MAX_LEN - 3));
        assert_eq!(ReturnPath::parse_or_root(&at_limit).as_str(), at_limit);
        // The path is held to the same rules: an overlong query never lets a bad path through.
        for bad in [
            "//evil.example",
            "/%2F%2Fevil.example",
            "/a\\b",
            "https://evil.example/",
        ] {
            assert_eq!(
                ReturnPath::parse_or_root(&format!("{bad}?{query}")).as_str(),
                "/",
                "{bad}"
            );
        }
        // A short query with something refused in it is not "shortened" into acceptance.
        assert_eq!(ReturnPath::parse_or_root("/a?q=%0d%0a").as_str(), "/");
        let allowed = |h: &str| h == "grafana.example.com";
        let absolute = format!("https://grafana.example.com/explore?{query}");
        assert_eq!(
            ReturnPath::parse_for_hosts(&absolute, "https://auth.example.com", allowed).as_str(),
            "https://grafana.example.com/explore"
        );
    }
}
