//! What a shared cache in front of the gate (a CDN, nginx's `proxy_cache`) may keep of the answers it passes on.
//! Such a cache keys its entries by URL, not by who asked (RFC 9111 §4), so it must keep nothing that is one
//! person's: neither an answer the gate let through on an identity, nor one carrying the gate's session cookie.
//! Both are made `Cache-Control: private` (RFC 9111 §5.2.2.7), which shared caches honour and browsers' own caches
//! do not mind, and lose the fields a cache in front would read instead ([`overrides_cache_control`]).

use http::header::{self, HeaderName, HeaderValue};
use http::Response;

use crate::body::Body;

/// The `Cache-Control` an answer gets when no shared cache may store it, from the app's own directives: `private`
/// with the app's others but `public`, `s-maxage` and a qualified `private="…"` (the browser's cache still follows
/// its `max-age`), or the app's own unchanged when they say `private` or `no-store` already. `no-cache` is not
/// enough: a cache may keep the answer and serve it after revalidating it.
pub(crate) fn private_cache_control(directives: &[String]) -> HeaderValue {
    if directives.is_empty() {
        return HeaderValue::from_static("private");
    }
    let name = |d: &str| d.split('=').next().unwrap_or("").trim().to_ascii_lowercase();
    let already = directives
        .iter()
        .any(|d| d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store"));
    let mut value = if already {
        String::new()
    } else {
        String::from("private")
    };
    for d in directives
        .iter()
        .filter(|d| already || !matches!(name(d).as_str(), "public" | "s-maxage" | "private"))
    {
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(d);
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("private"))
}

/// Whether `name` is a field a cache in front reads instead of `Cache-Control`, so that an app's value there would
/// outlast the gate's `private`: RFC 9213's targeted fields (`CDN-Cache-Control`, and `<vendor>-CDN-Cache-Control`
/// such as Cloudflare's), `Surrogate-Control` (Fastly, Akamai, Varnish), Akamai's `Edge-Control` and nginx's
/// `X-Accel-Expires` (with it nginx's `proxy_cache` ignores `Cache-Control` altogether). Such fields are removed from
/// an answer kept from shared caches. Decided on the length first: most answer fields are none of these lengths.
pub(crate) fn overrides_cache_control(name: &HeaderName) -> bool {
    let name = name.as_str();
    match name.len() {
        12 => name == "edge-control",
        15 => name == "x-accel-expires",
        17 => name == "surrogate-control" || name == "cdn-cache-control",
        n if n > 18 => name.ends_with("-cdn-cache-control"),
        _ => false,
    }
}

/// What an answer kept from shared caches loses, gathered field by field in a pass over the answer's fields that the
/// caller makes anyway (see `body::retain_response_fields`): the app's `Cache-Control` fields, taken out to be put
/// back as one `private` field, and the fields a cache in front would read instead ([`overrides_cache_control`]).
#[derive(Default)]
pub(crate) struct Private {
    directives: Vec<String>,
}

impl Private {
    /// Whether the field `name: value` stays in the answer; a `Cache-Control` field's directives are kept for
    /// [`Private::finish`]. Asked for every answer field of every signed-in request, so inlined into the caller's
    /// pass (not inlined, the call cost as much as the check).
    #[inline(always)]
    pub(crate) fn keeps(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        if name == header::CACHE_CONTROL {
            self.collect(value);
            return false;
        }
        !overrides_cache_control(name)
    }

    /// Adds the directives of one `Cache-Control` field value.
    fn collect(&mut self, value: &[u8]) {
        let text = String::from_utf8_lossy(value);
        self.directives.extend(
            text.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
        );
    }

    /// Puts the one `Cache-Control` field in, made private ([`private_cache_control`]).
    pub(crate) fn finish(self, resp: &mut Response<Body>) {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, private_cache_control(&self.directives));
    }
}

/// Makes an answer that carries the gate's session cookies one no shared cache stores: a CDN in front that keeps
/// the app's `public` answer (a static asset under a `public` rule, say) together with the `Set-Cookie` the gate
/// added to it (a refresh, a reseal) would hand one person's session to everyone it serves that answer to.
pub(crate) fn keep_from_shared_caches(resp: &mut Response<Body>) {
    let mut private = Private::default();
    crate::body::retain_response_fields(resp, |name, value| private.keeps(name, value));
    private.finish(resp);
}
