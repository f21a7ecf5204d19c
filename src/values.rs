//! Short header values the gate makes per request (`X-Request-Id`, `X-Forwarded-For`), carved out of one
//! per-thread buffer instead of each allocated on its own.
//!
//! `HeaderValue::from_bytes` copies into a fresh allocation, and the first clone of such a value allocates again
//! (to make the bytes shareable); a request id goes both upstream and into the response. A value cut from a
//! shared buffer is already shareable: making it and cloning it only count references. The buffer is replaced when
//! full ([`CHUNK`] bytes, a few hundred values); one still referenced by a live value is freed with the last of
//! them, so a value never pins more than one chunk. [`text`] reads a value as text, a word at a time.

use std::cell::RefCell;

use bytes::{BufMut, BytesMut};
use http::HeaderValue;

/// Bytes reserved at a time.
const CHUNK: usize = 4096;

thread_local! {
    static BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A header value holding `bytes`, or `None` if they are not a valid field value (RFC 9110 §5.5: no CR, LF, NUL or
/// other controls besides tab).
pub fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    if bytes.len() > CHUNK / 4 {
        return HeaderValue::from_bytes(bytes).ok();
    }
    let shared = BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.capacity() - buffer.len() < bytes.len() {
            // The old chunk stays alive as long as values cut from it do; this one starts empty.
            *buffer = BytesMut::with_capacity(CHUNK);
        }
        buffer.put_slice(bytes);
        buffer.split().freeze()
    });
    HeaderValue::from_maybe_shared(shared).ok()
}

/// A field value as text when it is all visible ASCII: what `HeaderValue::to_str` accepts, checked a word at a
/// time instead of a byte at a time (it showed in profiles for long `Cookie` and `Accept` values). A `HeaderValue`
/// holds no control bytes but tab (RFC 9110 §5.5; hyper, h2 and `HeaderValue`'s constructors all refuse them), so
/// within one, visible ASCII is just ASCII.
pub fn text(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.is_ascii() {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_accepts_exactly_what_to_str_does() {
        for b in 0..=255u8 {
            for value in [
                vec![b],
                vec![b'a', b, b'z'],
                [b"0123456789abcdef".as_slice(), &[b]].concat(),
            ] {
                if let Ok(v) = HeaderValue::from_bytes(&value) {
                    assert_eq!(text(&v), v.to_str().ok(), "byte {b:#04x}");
                }
            }
        }
    }

    #[test]
    fn values_are_their_bytes_and_invalid_ones_are_refused() {
        let a = header_value(b"abc-123").unwrap();
        let b = header_value(b"10.0.0.1").unwrap();
        assert_eq!(a, "abc-123");
        assert_eq!(b, "10.0.0.1");
        assert_eq!(a.clone(), "abc-123");
        assert!(header_value(b"a\r\nb").is_none());
        assert!(header_value(b"a\0").is_none());
        assert_eq!(header_value(b"").unwrap(), "");
        let long = vec![b'x'; CHUNK];
        assert_eq!(header_value(&long).unwrap().len(), CHUNK);
    }

    #[test]
    fn a_full_chunk_is_replaced_and_earlier_values_stay_intact() {
        let values: Vec<HeaderValue> = (0..2000)
            .map(|i| header_value(format!("v{i:05}").as_bytes()).unwrap())
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.to_str().unwrap(), format!("v{i:05}"));
        }
    }
}
