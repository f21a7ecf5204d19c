//! The respond step's last edit: the operator's `[response_headers]` on every answer to a client, the app's and the
//! gate's own pages alike (not the forward-auth answer, which goes to the proxy asking).

use http::header::{HeaderName, HeaderValue};
use http::Response;

use crate::body::Body;
use crate::pages::OwnAnswer;

/// Puts `fields` on `resp`. On the app's answer each name's fields are removed first (on either client path), then
/// its value set when it has one. On an answer the gate made itself ([`OwnAnswer`]) a value is only added where the
/// gate set none: its pages keep their own `Content-Security-Policy`, `X-Frame-Options` and `Referrer-Policy`, which
/// are stricter than an app's. The names were checked at start
/// (`config::response_headers::reserved_response_header`): none frames the answer, carries cookies or tells caches
/// what to keep.
pub(super) fn apply(resp: &mut Response<Body>, fields: &[(HeaderName, Option<HeaderValue>)]) {
    let own = resp.extensions().get::<OwnAnswer>().is_some();
    if !own {
        crate::body::retain_response_fields(resp, |name, _| !fields.iter().any(|(configured, _)| configured == name));
    }
    let headers = resp.headers_mut();
    for (name, value) in fields {
        if let (Some(value), false) = (value, own && headers.contains_key(name)) {
            headers.insert(name.clone(), value.clone());
        }
    }
}
