//! Every HTTP/1 byte the gate reads or writes itself (RFC 9112), server side and client side, and the second reading
//! of the heads hyper reads.
//!
//! # The dual path
//!
//! Two implementations of HTTP/1.1 serve each side; which one handles a message is decided per message, never by
//! configuration:
//!
//! | side | own code (this folder) | hyper |
//! |---|---|---|
//! | server | [`server`]: a plain or TLS HTTP/1.1 request head without `Upgrade` or `CONNECT`, with at most one plain `Content-Length` or one `Transfer-Encoding: chunked` alone ([`request_body`]) and no expectation but `100-continue`, read whole within the limits | everything else: other transfer codings, upgrades, HTTP/1.0, malformed or oversized heads (hyper answers 400/414/431), and every HTTP/2 connection ([`crate::server`]) |
//! | client | [`client`]: a bodiless `GET` or `HEAD` to a plain-HTTP upstream (TCP or a Unix socket, [`stream`]) | everything else: bodies, other methods, upgrades, HTTPS upstreams ([`crate::proxy::Forwarder`]) |
//!
//! A connection starts on the own server and is handed to hyper, with every unanswered byte, at the first head it
//! does not serve; from there [`framing`] follows the bytes hyper reads (request smuggling). An upstream response
//! read by the own client keeps its end-to-end fields in its body ([`body::ResponseBody`], as [`fields::Fields`])
//! until it is written: the own server writes them straight out, hyper's servers get them moved into the response's
//! map ([`crate::body::into_response_map`]). Gate code therefore never reads or edits an upstream response's
//! map directly; it goes through [`crate::body::retain_response_fields`], which sees the fields wherever they
//! are.
//!
//! # Behaviours that exist on both paths, and where each lives
//!
//! | behaviour | own code | hyper path |
//! |---|---|---|
//! | head parsing, field and size limits ([`MAX_HEADERS`], `server.max_header_bytes`, [`MAX_RESPONSE_HEAD`]) | [`server::read_head`], [`client`] | hyper, configured in [`crate::server`] |
//! | header read and keep-alive timeout | [`server`] | `header_read_timeout` in [`crate::server`] |
//! | `Connection: close`, graceful finish, cancel on hang-up, pipelining | [`server`] | hyper's dispatcher |
//! | response framing, `Date` ([`date`]) | [`server`] | hyper's encoder |
//! | request smuggling (ambiguous framing refused) | only one plain `Content-Length`, or one `chunked` alone, is served | [`framing`] |
//! | request bodies | [`request_body`], read by [`server`] | hyper's `Incoming` |
//! | hop-by-hop removal (RFC 9110 §7.6.1) | [`client`] while parsing | [`hop`], called by [`crate::proxy`] |
//! | pool, reaper, retry of a closed pooled connection | [`pool`], [`client`] | hyper-util's pool |
//! | connect and response timeouts, latency metric, base path | [`client`] via [`crate::proxy`] | [`crate::proxy`] |
//! | chunked decoding (responses; request bodies the front reads) | [`body`] | hyper |
//! | fields the gate replaces (the upstream's `X-Request-Id`) | dropped by [`client`] as told ([`client::Client::new`]) | replaced in the map by [`crate::gate`] |

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod date;
pub(crate) mod fields;
pub(crate) mod framing;
pub(crate) mod hop;
pub(crate) mod names;
pub(crate) mod pool;
pub(crate) mod request_body;
pub(crate) mod server;
pub(crate) mod stream;

/// A body's error, as hyper's bodies box theirs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The most header fields a head may have, request or response (hyper's limit on both sides).
pub(crate) const MAX_HEADERS: usize = 100;

/// The largest upstream response head accepted (hyper's client allows about as much).
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A non-empty run of decimal digits that fits in a `u64` (a `Content-Length`, RFC 9110 §8.6).
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// How many of `n` bytes at hand belong to a body with `left` bytes still to come: the smaller of the two.
pub(crate) fn at_most(left: u64, n: usize) -> usize {
    usize::try_from(left).map_or(n, |left| left.min(n))
}

/// The value of a hex digit (callers check `is_ascii_hexdigit` first).
pub(crate) fn hex(b: u8) -> u64 {
    (b as char).to_digit(16).map_or(0, u64::from)
}
