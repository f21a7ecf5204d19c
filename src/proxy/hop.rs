//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and must not be forwarded.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Always connection-specific, whether or not `Connection` lists them.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Comparing names of the standard set is comparing two small integers.
    HOP_BY_HOP.iter().any(|hop| hop == name)
}

/// True when an HTTP/1.1 request asks to switch protocols (RFC 9110 §7.8), e.g. a WebSocket handshake.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has_token(headers, "upgrade")
}

pub(crate) fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and every header `Connection` names. With `keep_upgrade` (a protocol switch being
/// forwarded) `Upgrade` stays and `Connection: upgrade` is set again, since the switch must reach the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The usual request carries none: one pass over the names instead of a lookup per hop-by-hop name. Headers
    // that `Connection` names only count when `Connection` is there, which this pass sees.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // The values are shared bytes: holding them costs no copy, and the usual single value no allocation either.
    let (first, more) = {
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let more: Vec<HeaderValue> = values.cloned().collect();
        (first, more)
    };
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for token in first
        .iter()
        .chain(&more)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        // Removal by name text parses it in place; a token that is no header name removes nothing.
        headers.remove(token.trim());
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(up) = upgrade {
        headers.insert(header::UPGRADE, up);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_connection() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("keep-alive", "1")]);
        assert!(is_upgrade_request(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in &HOP_BY_HOP {
            let mut h = map(&[(name.as_str(), "x"), ("accept", "*/*")]);
            remove_hop_by_hop(&mut h, false);
            assert!(!h.contains_key(name), "{name} survived");
            assert_eq!(h.len(), 1);
        }
        let mut plain = map(&[("accept", "*/*"), ("x-keep", "1")]);
        remove_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 2);
    }
}
