//! The request a proxy asks about in a forward-auth call (`/_logto/auth`), or sends to sign in after one: the method
//! and target it names in `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik, Caddy), `X-Original-URI` (nginx's
//! `auth_request` as commonly written), or `X-Original-Method` and `X-Original-URL` (ingress-nginx's external auth,
//! an absolute URL that names the host too). Read only from a trusted proxy (the caller checks).
//!
//! The proxy passes the client's own fields to the gate along with the ones it sets (nginx's `auth_request`, Caddy's
//! `forward_auth` and Traefik's ForwardAuth all copy the client's head), so a proxy that sets one of these fields
//! lets a client write the others: a client asking for `/admin` with `X-Forwarded-Uri: /public/x` behind a proxy
//! that set only `X-Original-URI` would have the gate rule on the public path and the app serve the private one.
//! The gate cannot tell which field the proxy wrote, so it reads none it cannot trust to be the proxy's alone: all
//! target fields present must name the same target (and `X-Original-URL`'s host the same host as
//! `X-Forwarded-Host`), both method fields the same method, each field appears at most once (a proxy that adds its
//! own after a client's copy leaves two), and a value must be text. Otherwise the answer is 400, never a guess.

use http::HeaderMap;

use crate::error::ClientError;

/// What the proxy says about the request it asks about; `None` where it says nothing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Asked<'h> {
    /// The method.
    pub(super) method: Option<&'h str>,
    /// The target: path and query.
    pub(super) target: Option<&'h str>,
    /// The host (with any port) of `X-Original-URL`.
    pub(super) host: Option<&'h str>,
}

/// Reads the fields; Err when they disagree, or one is repeated, not text, or (`X-Original-URL`) no absolute
/// `http` or `https` URL.
pub(super) fn read(headers: &HeaderMap) -> Result<Asked<'_>, ClientError> {
    let bad = |why: String| Err(ClientError::BadRequest(why));
    let url = match single(headers, "x-original-url", "X-Original-URL")? {
        Some(url) => match split_url(url) {
            Some(parts) => Some(parts),
            None => return bad("X-Original-URL from the trusted proxy is not an absolute http(s) URL".to_owned()),
        },
        None => None,
    };
    let targets = [
        (
            "X-Forwarded-Uri",
            single(headers, "x-forwarded-uri", "X-Forwarded-Uri")?,
        ),
        ("X-Original-URI", single(headers, "x-original-uri", "X-Original-URI")?),
        ("X-Original-URL", url.map(|(_, target)| target)),
    ];
    let target = agreed(
        &targets,
        "name different requests",
        "set them all to the request's URI (nginx: \
         proxy_set_header X-Forwarded-Uri $request_uri), or remove the client's",
    )?;
    let methods = [
        (
            "X-Forwarded-Method",
            single(headers, "x-forwarded-method", "X-Forwarded-Method")?,
        ),
        (
            "X-Original-Method",
            single(headers, "x-original-method", "X-Original-Method")?,
        ),
    ];
    let method = agreed(&methods, "name different methods", "set both to the request's method")?;
    let host = url.map(|(host, _)| host);
    if let (Some(host), Some(forwarded)) = (host, single(headers, "x-forwarded-host", "X-Forwarded-Host")?) {
        if !host.eq_ignore_ascii_case(forwarded) {
            return bad(
                "X-Original-URL and X-Forwarded-Host name different hosts: the proxy sets one and passed on a \
                 client's copy of the other"
                    .to_owned(),
            );
        }
    }
    Ok(Asked { method, target, host })
}

/// The one value the present fields of `fields` (name, value) agree on; Err naming them when two differ.
fn agreed<'h>(fields: &[(&str, Option<&'h str>)], differ: &str, fix: &str) -> Result<Option<&'h str>, ClientError> {
    let mut present = fields.iter().filter_map(|(name, value)| value.map(|v| (*name, v)));
    let Some((first_name, first)) = present.next() else {
        return Ok(None);
    };
    match present.find(|(_, v)| *v != first) {
        Some((name, _)) => Err(ClientError::BadRequest(format!(
            "{first_name} and {name} {differ}: the proxy sets one and passed on a client's copy of the other; {fix}"
        ))),
        None => Ok(Some(first)),
    }
}

/// `http(s)://host[:port]/path?query` as its host and its target (path and query; `/` when it has no path).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")?;
    if !["http", "https"]
        .iter()
        .any(|s| url[..scheme_end].eq_ignore_ascii_case(s))
    {
        return None;
    }
    let rest = &url[scheme_end + 3..];
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, target) = rest.split_at(host_end);
    if !crate::policy::is_host(host.as_bytes()) {
        return None;
    }
    // What nginx's `$scheme://$http_host$request_uri` makes: a target that begins with `/` (or none).
    match target {
        "" => Some((host, "/")),
        t if t.starts_with('/') => Some((host, t)),
        _ => None,
    }
}

/// The one value of the field `name` (`shown` in messages), if any.
fn single<'h>(headers: &'h HeaderMap, name: &'static str, shown: &str) -> Result<Option<&'h str>, ClientError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ClientError::BadRequest(format!(
            "{shown} is given more than once: the proxy must replace a client's copy rather than add its own \
             (nginx: proxy_set_header)"
        )));
    }
    crate::values::text(value)
        .map(Some)
        .ok_or_else(|| ClientError::BadRequest(format!("{shown} from the trusted proxy is not text (visible ASCII)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(fields: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    fn refused(fields: &[(&'static str, &[u8])]) -> String {
        match read(&headers(fields)) {
            Err(ClientError::BadRequest(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn target(fields: &[(&'static str, &[u8])]) -> Option<String> {
        read(&headers(fields)).unwrap().target.map(str::to_owned)
    }

    #[test]
    fn any_target_field_names_the_request_and_all_must_agree() {
        assert_eq!(read(&headers(&[])).unwrap(), Asked::default());
        assert_eq!(target(&[("x-forwarded-uri", b"/a?b=1")]).as_deref(), Some("/a?b=1"));
        assert_eq!(target(&[("x-original-uri", b"/a?b=1")]).as_deref(), Some("/a?b=1"));
        let both = [("x-forwarded-uri", &b"/a"[..]), ("x-original-uri", b"/a")];
        assert_eq!(target(&both).as_deref(), Some("/a"));
        let differ = refused(&[("x-forwarded-uri", b"/public/x"), ("x-original-uri", b"/admin")]);
        assert!(
            differ.starts_with("X-Forwarded-Uri and X-Original-URI name different requests"),
            "{differ}"
        );
        // ingress-nginx's absolute URL: its target and host; another target field must agree with it.
        let fields = headers(&[("x-original-url", b"https://App.example.com:8443/a/b?c=d")]);
        let url = read(&fields).unwrap();
        assert_eq!((url.target, url.host), (Some("/a/b?c=d"), Some("App.example.com:8443")));
        assert_eq!(
            target(&[("x-original-url", b"http://app.example.com")]).as_deref(),
            Some("/")
        );
        let differ = refused(&[
            ("x-original-url", b"https://app.example.com/admin"),
            ("x-forwarded-uri", b"/public"),
        ]);
        assert!(
            differ.starts_with("X-Forwarded-Uri and X-Original-URL name different requests"),
            "{differ}"
        );
        let agree = [
            ("x-original-url", &b"https://app.example.com/a"[..]),
            ("x-original-uri", b"/a"),
        ];
        assert_eq!(target(&agree).as_deref(), Some("/a"));
        for url in [
            &b"/a/b"[..],
            b"ftp://app.example.com/a",
            b"https://user@app.example.com/a",
            b"https:///a",
            b"https://app.example.com?q=1",
            b"https://app.example.com#f",
            b"https://app example.com/a",
        ] {
            let why = refused(&[("x-original-url", url)]);
            assert!(why.contains("not an absolute http(s) URL"), "{why}");
        }
    }

    #[test]
    fn the_host_and_method_fields_must_agree_too() {
        let h = [
            ("x-original-url", &b"https://app.example.com/a"[..]),
            ("x-forwarded-host", b"APP.example.com"),
        ];
        assert_eq!(read(&headers(&h)).unwrap().host, Some("app.example.com"));
        let why = refused(&[
            ("x-original-url", b"https://app.example.com/a"),
            ("x-forwarded-host", b"admin.example.com"),
        ]);
        assert!(why.contains("name different hosts"), "{why}");
        let m = [("x-forwarded-method", &b"DELETE"[..]), ("x-original-method", b"DELETE")];
        assert_eq!(read(&headers(&m)).unwrap().method, Some("DELETE"));
        assert_eq!(
            read(&headers(&[("x-original-method", b"PUT")])).unwrap().method,
            Some("PUT")
        );
        let why = refused(&[("x-forwarded-method", b"GET"), ("x-original-method", b"DELETE")]);
        assert!(
            why.starts_with("X-Forwarded-Method and X-Original-Method name different methods"),
            "{why}"
        );
    }

    #[test]
    fn a_repeated_or_unreadable_field_is_refused_not_skipped() {
        let why = refused(&[("x-original-uri", b"/public/x"), ("x-original-uri", b"/admin")]);
        assert!(why.starts_with("X-Original-URI is given more than once"), "{why}");
        // Unreadable, the field must not give way to another one, which a client may have written.
        let why = refused(&[("x-original-uri", b"/admin/\xff"), ("x-forwarded-uri", b"/public/x")]);
        assert!(why.contains("not text"), "{why}");
        let why = refused(&[("x-forwarded-method", b"P\xd6ST")]);
        assert!(why.starts_with("X-Forwarded-Method from the trusted proxy"), "{why}");
        let why = refused(&[("x-forwarded-method", b"GET"), ("x-forwarded-method", b"DELETE")]);
        assert!(why.contains("more than once"), "{why}");
        let why = refused(&[
            ("x-original-url", b"https://a.example/x"),
            ("x-original-url", b"https://b.example/x"),
        ]);
        assert!(why.contains("more than once"), "{why}");
    }
}
