//! `X-Forwarded-For`, `-Proto` and `-Host` for the upstream.
//!
//! A client's own values are never passed on: the gate is the edge, so it replaces them with what it saw itself
//! (the peer address) and what it knows (the public URL's scheme and host). Other forwarding headers a client could
//! use to steer an app are removed ([`crate::identity::CLIENT_FORWARDING_HEADERS`]): where a request came from, over which scheme, to
//! which host, path and method, in the spellings frameworks and CDNs use.

use std::cell::RefCell;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The three forwarding headers for a request from an untrusted peer, not yet in its header map: the lean client
/// writes them straight into the request head, the other path inserts them.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub for_: HeaderValue,
    pub proto: &'static str,
    pub host: HeaderValue,
}

/// The names of [`Forwarded`]'s headers, in the order of [`Forwarded::values`].
const FORWARDED_NAMES: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

impl Forwarded {
    /// The values for [`FORWARDED_NAMES`] (every one a checked `HeaderValue` or the public URL's scheme).
    fn values(&self) -> [&[u8]; 3] {
        [self.for_.as_bytes(), self.proto.as_bytes(), self.host.as_bytes()]
    }

    /// Sets the three headers in `headers`, replacing any of the same name.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        let [for_, proto, host] = FORWARDED_NAMES.map(HeaderName::from_static);
        headers.insert(for_, self.for_.clone());
        headers.insert(proto, HeaderValue::from_static(self.proto));
        headers.insert(host, self.host.clone());
    }

    /// How many bytes [`Forwarded::write`] writes.
    pub fn written_len(&self) -> usize {
        let values: usize = self.values().iter().map(|v| v.len()).sum();
        FORWARDED_NAMES.iter().map(|n| n.len() + ": \r\n".len()).sum::<usize>() + values
    }

    /// The three headers as HTTP/1.1 field lines, each ending in CRLF (no part can hold a CR or LF, so no line can
    /// split the head).
    pub fn write(&self, buf: &mut bytes::BytesMut) {
        for (name, value) in FORWARDED_NAMES.iter().zip(self.values()) {
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n");
        }
    }
}

/// From an untrusted peer every client forwarding header is removed and the gate's own three are returned, to be
/// added by whichever client sends the request (see [`Forwarded`]); from a trusted proxy (`trusted`) the chain is
/// kept in `headers`: the peer is appended to `X-Forwarded-For`, and the proxy's `X-Forwarded-Proto` / `-Host`
/// pass. `host` is the public host as a header value (built once: using it is a reference-count increment).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    trusted: bool,
    proto: &'static str,
    host: &HeaderValue,
) -> Option<Forwarded> {
    if trusted {
        let chain = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let value = if chain.is_empty() {
            peer.to_string()
        } else {
            format!("{chain}, {peer}")
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert(
                HeaderName::from_static("x-forwarded-proto"),
                HeaderValue::from_static(proto),
            );
        }
        if !headers.contains_key("x-forwarded-host") {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        }
        return None;
    }
    // Names are compared as PHP/WSGI see them (`_` for `-`), so `X_Forwarded_For` cannot slip through either; most
    // fields are ruled out by their length first.
    use crate::identity::{length_bit, length_mask, same_normalised, CLIENT_FORWARDING_HEADERS};
    const LENGTHS: u128 = length_mask(&CLIENT_FORWARDING_HEADERS);
    let is_forwarding = |n: &HeaderName| {
        LENGTHS & length_bit(n.as_str().len()) != 0
            && CLIENT_FORWARDING_HEADERS.iter().any(|f| same_normalised(n.as_str(), f))
    };
    if headers.keys().any(is_forwarding) {
        let spoofed: Vec<HeaderName> = headers.keys().filter(|n| is_forwarding(n)).cloned().collect();
        for name in spoofed {
            headers.remove(name);
        }
    }
    Some(Forwarded {
        for_: ip_value(peer),
        proto,
        host: host.clone(),
    })
}

thread_local! {
    /// The last address made into a header value on this thread. Requests mostly come over kept-alive
    /// connections, so the next one is usually from the same peer, and formatting an address costs more than
    /// everything else this module does.
    static LAST_PEER: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// An address as a header value: the last one again (a reference count), or formatted anew.
fn ip_value(ip: IpAddr) -> HeaderValue {
    LAST_PEER.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((seen, value)) if *seen == ip => value.clone(),
            _ => {
                let value = format_ip(ip);
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

/// An address as a header value, formatted on the stack and cut from the per-thread buffer ([`crate::values`]).
fn format_ip(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 48]; // The longest IPv6 text form is 45 bytes.
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    match write!(cursor, "{ip}") {
        Ok(()) => {
            let len = cursor.position() as usize;
            crate::values::header_value(&buf[..len]).unwrap_or_else(|| HeaderValue::from_static("unknown"))
        }
        Err(_) => HeaderValue::from_static("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_values_are_replaced_with_what_the_gate_saw() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x_forwarded_host", HeaderValue::from_static("evil"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/admin"));
        let added = set_forwarded(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            false,
            "https",
            &HeaderValue::from_static("app.example.com"),
        )
        .unwrap();
        assert!(h.is_empty(), "{h:?}");
        let mut lines = bytes::BytesMut::new();
        added.write(&mut lines);
        assert_eq!(lines.len(), added.written_len());
        assert_eq!(
            &lines[..],
            b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: https\r\nx-forwarded-host: app.example.com\r\n"
        );
        added.insert_into(&mut h);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "app.example.com");
        assert_eq!(h.len(), 3, "{h:?}");
    }

    #[test]
    fn a_repeated_address_is_the_same_value_and_a_new_one_is_its_own() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_value(a), "192.0.2.1");
        assert_eq!(ip_value(a), "192.0.2.1");
        assert_eq!(ip_value(b), "2001:db8::1");
        assert_eq!(ip_value(a), "192.0.2.1");
    }

    #[test]
    fn every_address_form_fits_the_header_value() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            assert_eq!(
                ip_value(ip.parse().unwrap()),
                ip.parse::<IpAddr>().unwrap().to_string().as_str()
            );
        }
    }

    #[test]
    fn a_trusted_proxy_keeps_the_chain() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let added = set_forwarded(
            &mut h,
            "10.0.0.2".parse().unwrap(),
            true,
            "http",
            &HeaderValue::from_static("app.example.com"),
        );
        assert!(added.is_none(), "a trusted proxy's chain stays in the map");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 10.0.0.2");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "app.example.com");
    }
}
