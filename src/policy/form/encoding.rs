//! How a body's bytes are written, before any parser reads a field: its content coding (RFC 9110 §8.4) and its
//! charset. Express's body-parser decodes both (gzip and deflate, br since Express 5; JSON in any `utf-` charset
//! iconv-lite knows, UTF-16 and UTF-7 among them) and drops a UTF-8 byte order mark, so a `_method` the gate read no
//! trace of in the bytes reached the app. The gate reads bytes as they came: a body it would read in another coding
//! or charset is refused, not decoded (no decompression bombs, no charset tables), and the mark is dropped as
//! body-parser drops it.

use http::header::{self, HeaderMap};

use super::Refusal;

/// The UTF-8 byte order mark, which body-parser (iconv-lite) drops from the start of a body before parsing it.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The charsets in which the bytes of `_method` are those of ASCII, as iconv-lite writes names once it has kept only
/// their letters and digits: a form or a JSON body in any other is refused.
const ASCII_CHARSETS: [&str; 3] = ["utf8", "usascii", "iso88591"];

/// Refuses a body the gate would read for `_method` whose `Content-Encoding` names a coding (anything but
/// `identity`, in any field, in any item of its list: body-parser decodes one coding and refuses the rest, but its
/// list is the gate's to keep short), or, for a form or a JSON body (`text`), whose `Content-Type` has a `charset`
/// parameter outside [`ASCII_CHARSETS`]. Every `charset=` in the field is read, quoted or not, as any parser might
/// take it.
pub(super) fn check(headers: &HeaderMap, text: bool) -> Result<(), Refusal> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let written = String::from_utf8_lossy(value.as_bytes());
        let coded = written
            .split(',')
            .map(|item| item.trim().to_ascii_lowercase())
            .any(|item| !item.is_empty() && item != "identity");
        if coded {
            return Err(Refusal::Coding(written.trim().to_owned()));
        }
    }
    if !text {
        return Ok(());
    }
    for value in headers.get_all(header::CONTENT_TYPE) {
        for charset in charsets(value.as_bytes()) {
            let canonical: String = String::from_utf8_lossy(&charset)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            if !canonical.is_empty() && !ASCII_CHARSETS.contains(&canonical.as_str()) {
                return Err(Refusal::Charset(String::from_utf8_lossy(&charset).into_owned()));
            }
        }
    }
    Ok(())
}

/// Every value a `charset` parameter may be read as in a `Content-Type` field: after each `charset` in any case,
/// blanks, `=` and blanks, a quoted string (to its closing quote) or a token (to `;`, `,`, `"` or a blank).
fn charsets(value: &[u8]) -> Vec<Vec<u8>> {
    let lower = value.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(n) = memchr::memmem::find(&lower[at..], b"charset") {
        at += n + 7;
        let Some(rest) = value[at..].trim_ascii_start().strip_prefix(b"=") else {
            continue;
        };
        let rest = rest.trim_ascii_start();
        let charset = match rest.strip_prefix(b"\"") {
            Some(quoted) => &quoted[..memchr::memchr(b'"', quoted).unwrap_or(quoted.len())],
            None => {
                let end = rest
                    .iter()
                    .position(|b| matches!(b, b';' | b',' | b'"') || b.is_ascii_whitespace())
                    .unwrap_or(rest.len());
                &rest[..end]
            }
        };
        out.push(charset.to_vec());
    }
    out
}

/// `body` without a leading UTF-8 byte order mark, as body-parser parses it.
pub(super) fn unmarked(body: &[u8]) -> &[u8] {
    body.strip_prefix(BOM).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_body_in_a_content_coding_is_refused() {
        for plain in ["identity", " Identity ", "", "identity, identity"] {
            assert_eq!(check(&with(&[("content-encoding", plain)]), true), Ok(()), "{plain:?}");
        }
        assert_eq!(check(&HeaderMap::new(), true), Ok(()));
        for coded in ["gzip", "GZIP", " deflate", "br", "identity, gzip", "x-gzip", "zstd"] {
            let refusal = check(&with(&[("content-encoding", coded)]), false).unwrap_err();
            assert_eq!(refusal, Refusal::Coding(coded.trim().to_owned()), "{coded:?}");
        }
        // A second field, as Node.js joins it to the first.
        let twice = with(&[("content-encoding", "identity"), ("content-encoding", "gzip")]);
        assert_eq!(check(&twice, true), Err(Refusal::Coding("gzip".into())));
    }

    #[test]
    fn a_text_body_in_a_charset_other_than_ascii_is_refused() {
        let of = |t: &str| check(&with(&[("content-type", t)]), true);
        for ascii in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/x-www-form-urlencoded; Charset = utf8",
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
            "application/x-www-form-urlencoded; charset=us-ascii",
            "application/json; charset=",
        ] {
            assert_eq!(of(ascii), Ok(()), "{ascii}");
        }
        for (t, named) in [
            ("application/json; charset=utf-16le", "utf-16le"),
            ("application/json; charset=\"utf-7\"", "utf-7"),
            ("application/json; charset=\"utf\\-16\"", "utf\\-16"),
            ("application/json; charset=utf-8; charset=utf-32", "utf-32"),
            ("application/json; x=\"charset=utf-16\"", "utf-16"),
            ("application/x-www-form-urlencoded; charset=utf-16,x", "utf-16"),
        ] {
            assert_eq!(of(t), Err(Refusal::Charset(named.into())), "{t}");
        }
        // Multipart parts carry their own charsets; the field's is not looked at.
        assert_eq!(
            check(
                &with(&[("content-type", "multipart/form-data; boundary=B; charset=utf-16")]),
                false
            ),
            Ok(())
        );
    }

    #[test]
    fn a_byte_order_mark_is_dropped_once() {
        assert_eq!(unmarked(b"\xef\xbb\xbf_method=PUT"), b"_method=PUT");
        assert_eq!(unmarked(b"\xef\xbb\xbf\xef\xbb\xbfa"), b"\xef\xbb\xbfa");
        assert_eq!(unmarked(b"_method=PUT"), b"_method=PUT");
    }
}
