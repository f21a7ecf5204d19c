//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and must not be forwarded.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Always connection-specific, whether or not `Connection` lists them.
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // Only meaningful with `Upgrade: h2c` (RFC 7540 §3.2.1), which the gate never forwards.
    HeaderName::from_static("http2-settings"),
];

/// The position of `name` in [`HOP_BY_HOP`]. Names are lower case, so this is a length check and at most a short
/// comparison or two per field (comparing `HeaderName`s one by one cost more: it was the most of every response's
/// header handling).
fn hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        "http2-settings" => 9,
        _ => return None,
    })
}

/// Whether `name` is always hop-by-hop.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_index(name.as_str()).is_some()
}

/// Whether `text` names an always hop-by-hop field, in any case (as a `Connection` option may).
fn is_hop_by_hop_text(text: &str) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop.as_str().eq_ignore_ascii_case(text))
}

/// The options one `Connection` field value lists (RFC 9110 §7.6.1), trimmed; none from a value that is not
/// visible ASCII.
pub(crate) fn connection_options(value: &HeaderValue) -> impl Iterator<Item = &str> {
    crate::values::text(value)
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|option| !option.is_empty())
}

/// Removes from `headers` every field the `Connection` values `connection` name (RFC 9110 §7.6.1), except the
/// always hop-by-hop ones, which the caller handles; returns whether `close` was among them. `close` removes a field
/// of that name too; a name is matched in any case, and an option that is no header name removes nothing.
pub(crate) fn remove_connection_options<'v>(
    headers: &mut HeaderMap,
    connection: impl IntoIterator<Item = &'v HeaderValue>,
) -> bool {
    let mut close = false;
    for option in connection.into_iter().flat_map(connection_options) {
        close |= option.eq_ignore_ascii_case("close");
        if !is_hop_by_hop_text(option) {
            headers.remove(option);
        }
    }
    close
}

/// True when an HTTP/1.1 request asks to switch protocols (RFC 9110 §7.8), e.g. a WebSocket handshake.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has_token(headers, "upgrade")
}

/// The protocols an `Upgrade` field lists (RFC 9110 §7.8: `name[/version]`, comma-separated), names only.
pub(crate) fn upgrade_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(connection_options)
        .map(|p| p.split('/').next().unwrap_or("").trim())
}

/// True when a request asks to switch protocols and every protocol it names is in `allowed` (lower case; `h2c`
/// never is, see [`crate::config::UpstreamConfig::upgrade_protocols`]). Any other upgrade request is served as the
/// plain HTTP/1.1 request it also is: RFC 9110 §7.8 lets a server ignore `Upgrade`, and hop-by-hop removal then
/// drops `Upgrade`, `HTTP2-Settings` and `Connection`, so the upstream never sees the offer.
pub fn is_allowed_upgrade(headers: &HeaderMap, allowed: &[String]) -> bool {
    is_upgrade_request(headers)
        && upgrade_protocols(headers).all(|p| allowed.iter().any(|a| a.eq_ignore_ascii_case(p)))
        && upgrade_protocols(headers).next().is_some()
}

/// True when a 101's `Upgrade` (`response`) names exactly the protocols the request offered (`request`), in any
/// case (RFC 9110 §15.2.2: the server switches to the protocols it lists; the gate splices only what was asked).
pub fn upgrade_matches(request: &HeaderMap, response: &HeaderMap) -> bool {
    let asked: Vec<&str> = upgrade_protocols(request).collect();
    let got: Vec<&str> = upgrade_protocols(response).collect();
    !got.is_empty() && got.iter().all(|g| asked.iter().any(|a| a.eq_ignore_ascii_case(g)))
}

/// Request fields whose names read, with `_` as `-`, as a framing, hop-by-hop or forwarding field: CGI, WSGI,
/// PHP and Rack map both `Transfer_Encoding` and `Transfer-Encoding` to `HTTP_TRANSFER_ENCODING`, so an app
/// behind such a server could frame the body, or trust a client address, by a field the gate never read as one.
/// nginx drops names with underscores by default; the gate drops these.
const UNDERSCORE_SENSITIVE: [&str; 18] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "http2-settings",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "expect",
];

/// Removes every request field with an `_` in its name that reads as one of [`UNDERSCORE_SENSITIVE`].
pub fn remove_underscore_variants(headers: &mut HeaderMap) {
    let is_variant = |name: &HeaderName| {
        let n = name.as_str();
        n.contains('_')
            && UNDERSCORE_SENSITIVE
                .iter()
                .any(|s| crate::identity::same_normalised(n, s))
    };
    // The usual request has no underscore in any name: one scan, nothing allocated.
    if !headers.keys().any(is_variant) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|n| is_variant(n)).cloned().collect();
    for name in found {
        headers.remove(&name);
    }
}

pub(crate) fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(connection_options)
        .any(|t| t.eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and every header `Connection` names. With `keep_upgrade` (a protocol switch being
/// forwarded) `Upgrade` stays and `Connection: upgrade` is set again, since the switch must reach the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names finds which hop-by-hop ones are there; the usual request has none, the usual
    // response only `Connection: keep-alive`. Only those present are removed (each removal is a hash lookup).
    let present = headers
        .keys()
        .filter_map(|name| hop_index(name.as_str()))
        .fold(0u16, |bits, i| bits | 1 << i);
    if present == 0 {
        return;
    }
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    if present & 1 != 0 {
        // The values are shared bytes: holding them costs no copy, and the usual single value no allocation either.
        let (first, more) = {
            let mut values = headers.get_all(header::CONNECTION).iter();
            let first = values.next().cloned();
            let more: Vec<HeaderValue> = values.cloned().collect();
            (first, more)
        };
        remove_connection_options(headers, first.iter().chain(&more));
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & 1 << i != 0 {
            headers.remove(name);
        }
    }
    if let Some(up) = upgrade {
        headers.insert(header::UPGRADE, up);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests;
