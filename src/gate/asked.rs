//! The request a proxy asks about in a forward-auth call (`/_logto/auth`), or sends to sign in after one: the method
//! and target it names in `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik, Caddy) or `X-Original-URI` (nginx's
//! `auth_request` as commonly written). Read only from a trusted proxy (the caller checks).
//!
//! The proxy passes the client's own fields to the gate along with the ones it sets (nginx's `auth_request`, Caddy's
//! `forward_auth` and Traefik's ForwardAuth all copy the client's head), so a proxy that sets one of the two target
//! fields lets a client write the other: a client asking for `/admin` with `X-Forwarded-Uri: /public/x` behind a
//! proxy that set only `X-Original-URI` would have the gate rule on the public path and the app serve the private
//! one. The gate cannot tell which field the proxy wrote, so it reads none it cannot trust to be the proxy's alone:
//! both fields present must name the same target, each field appears at most once (a proxy that adds its own after
//! a client's copy leaves two), and a value must be text. Otherwise the answer is 400, never a guess.

use http::HeaderMap;

use crate::error::ClientError;

/// `X-Forwarded-Uri`, as Traefik and Caddy send it.
const FORWARDED_URI: &str = "x-forwarded-uri";
/// `X-Original-URI`, as nginx `auth_request` configurations usually send it.
const ORIGINAL_URI: &str = "x-original-uri";
/// `X-Forwarded-Method`.
const FORWARDED_METHOD: &str = "x-forwarded-method";

/// The target (path and query) the proxy names: `None` when it names none. Err when the two target fields differ,
/// or either is repeated or not text.
pub(super) fn target(headers: &HeaderMap) -> Result<Option<&str>, ClientError> {
    let forwarded = single(headers, FORWARDED_URI, "X-Forwarded-Uri")?;
    let original = single(headers, ORIGINAL_URI, "X-Original-URI")?;
    match (forwarded, original) {
        (Some(a), Some(b)) if a != b => Err(ClientError::BadRequest(
            "X-Forwarded-Uri and X-Original-URI name different requests: the proxy sets one and passed on a \
             client's copy of the other; set both to the request's URI (nginx: proxy_set_header X-Forwarded-Uri \
             $request_uri)"
                .to_owned(),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// The method the proxy names in `X-Forwarded-Method`: `None` when it names none. Err when it is repeated or not
/// text.
pub(super) fn method(headers: &HeaderMap) -> Result<Option<&str>, ClientError> {
    single(headers, FORWARDED_METHOD, "X-Forwarded-Method")
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

    fn refused(r: Result<Option<&str>, ClientError>) -> String {
        match r {
            Err(ClientError::BadRequest(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn either_target_field_names_the_request_and_both_must_agree() {
        assert_eq!(target(&headers(&[])).unwrap(), None);
        let one = headers(&[("x-forwarded-uri", b"/a?b=1")]);
        assert_eq!(target(&one).unwrap(), Some("/a?b=1"));
        let other = headers(&[("x-original-uri", b"/a?b=1")]);
        assert_eq!(target(&other).unwrap(), Some("/a?b=1"));
        let both = headers(&[("x-forwarded-uri", b"/a"), ("x-original-uri", b"/a")]);
        assert_eq!(target(&both).unwrap(), Some("/a"));
        let differ = headers(&[("x-forwarded-uri", b"/public/x"), ("x-original-uri", b"/admin")]);
        assert!(refused(target(&differ)).contains("different requests"));
    }

    #[test]
    fn a_repeated_or_unreadable_field_is_refused_not_skipped() {
        let twice = headers(&[("x-original-uri", b"/public/x"), ("x-original-uri", b"/admin")]);
        assert!(refused(target(&twice)).starts_with("X-Original-URI is given more than once"));
        // Unreadable, the field must not give way to the other one, which a client may have written.
        let raw = headers(&[("x-original-uri", b"/admin/\xff"), ("x-forwarded-uri", b"/public/x")]);
        assert!(refused(target(&raw)).contains("not text"));
        let raw = headers(&[("x-forwarded-method", b"P\xd6ST")]);
        assert!(refused(method(&raw)).starts_with("X-Forwarded-Method from the trusted proxy"));
        let twice = headers(&[("x-forwarded-method", b"GET"), ("x-forwarded-method", b"DELETE")]);
        assert!(refused(method(&twice)).contains("more than once"));
        assert_eq!(
            method(&headers(&[("x-forwarded-method", b"DELETE")])).unwrap(),
            Some("DELETE")
        );
    }
}
