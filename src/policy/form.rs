//! The `_method` a `POST`'s body names. Rails (`Rack::MethodOverride`), Laravel and Symfony take a `POST` whose form
//! holds `_method=DELETE` for a `DELETE`; Laravel (whose input is a JSON body's fields when the body is JSON) and
//! Express's `method-override` with a body getter take it from a JSON body's top-level `_method` too. The rules
//! decide on it as on the query's ([`super::query_method_overrides`]).
//!
//! Apps' parsers differ at the edges, so a body is read as every kind its `Content-Type` may be taken as, and every
//! `_method` any of those readings finds counts: Rack reads a `POST` without `Content-Type` as a form and any
//! `multipart/*` type as multipart (RFC 2046 §5.1), PHP ends multipart lines at a bare LF as well as at CRLF,
//! Laravel takes any type containing `/json` or `+json` for JSON. Names are compared as PHP reads them
//! (leading spaces dropped, ` `, `.` and `[` read as `_`).

use http::header::{self, HeaderMap};

use super::{add_method, is_method_parameter, METHOD_OVERRIDE_PARAMETER};

/// How a `POST`'s body is read for `_method`, from its `Content-Type`: each reading an app may make of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BodyReadings {
    /// `application/x-www-form-urlencoded`, or no `Content-Type` (or an empty one).
    pub urlencoded: bool,
    /// A `multipart/*` type's boundary (RFC 2046 §5.1.1).
    pub multipart: Option<Vec<u8>>,
    /// A type containing `/json` or `+json`.
    pub json: bool,
}

impl BodyReadings {
    /// The readings of a body with these request fields; `None` when no framework reads a `_method` from it. Refused
    /// (with the reason): `Content-Type` given more than once (apps take either copy), a multipart type without one
    /// boundary.
    pub fn of(headers: &HeaderMap) -> Result<Option<BodyReadings>, String> {
        let mut types = headers.get_all(header::CONTENT_TYPE).iter();
        let value = types.next();
        if types.next().is_some() {
            return Err("content-type: given more than once".into());
        }
        let Some(value) = value else {
            return Ok(Some(BodyReadings {
                urlencoded: true,
                ..BodyReadings::default()
            }));
        };
        let text = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        let essence = text.split(';').next().unwrap_or("").trim();
        let multipart = if essence.starts_with("multipart/") {
            Some(boundary(value.as_bytes())?)
        } else {
            None
        };
        let readings = BodyReadings {
            urlencoded: essence.is_empty() || essence == "application/x-www-form-urlencoded",
            multipart,
            json: text.contains("/json") || text.contains("+json"),
        };
        Ok((readings != BodyReadings::default()).then_some(readings))
    }

    /// Adds to `out` every method `body` names in a `_method`, by each reading. A value that is not a method is
    /// refused (it is not echoed: it may hold anything). A body that is not JSON has no JSON `_method`.
    pub fn method_overrides(&self, body: &[u8], out: &mut Vec<String>) -> Result<(), String> {
        let refuse =
            |kind: &str| format!("the {kind} body's {METHOD_OVERRIDE_PARAMETER} is not an HTTP method (letters only)");
        if self.urlencoded {
            // `;` separated fields too, as Rack before 2.0 read them.
            for piece in body.split(|b| *b == b'&' || *b == b';') {
                for (name, value) in url::form_urlencoded::parse(piece) {
                    if is_method_parameter(&name) && !add_method(out, value.trim()) {
                        return Err(refuse("form"));
                    }
                }
            }
        }
        if let Some(boundary) = &self.multipart {
            for value in multipart_values(body, boundary) {
                let text = std::str::from_utf8(value).map_err(|_| refuse("multipart"))?;
                if !add_method(out, text.trim()) {
                    return Err(refuse("multipart"));
                }
            }
        }
        if self.json {
            if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(body) {
                // A `_method` that is not a string is ignored by Symfony and Express alike.
                if let Some(serde_json::Value::String(text)) = fields.get(METHOD_OVERRIDE_PARAMETER) {
                    if !add_method(out, text.trim()) {
                        return Err(refuse("JSON"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The boundary of a multipart `Content-Type` (RFC 2046 §5.1.1), as every parser reads it, or refused where they
/// would read different ones: RFC 2045's parameter, PHP's first `boundary` anywhere in the field (up to `,` or `;`
/// after its `=`), Rack's last `boundary=` (as its greedy pattern finds it). Each `boundary` in the field is read
/// as those do; all must agree, and the value (unquoted, trailing blanks dropped: a shorter boundary only finds more
/// delimiters) must not be empty.
fn boundary(value: &[u8]) -> Result<Vec<u8>, String> {
    let lower = value.to_ascii_lowercase();
    let mut found: Option<&[u8]> = None;
    let mut at = 0;
    while let Some(n) = lower[at..].windows(8).position(|w| w == b"boundary") {
        let after = &value[at + n + 8..];
        at += n + 8;
        let Some(eq) = after.iter().position(|b| *b == b'=') else {
            continue;
        };
        let raw = after[eq + 1..].trim_ascii_start();
        let one = match raw.strip_prefix(b"\"") {
            Some(quoted) => &quoted[..quoted.iter().position(|b| *b == b'"').unwrap_or(quoted.len())],
            None => {
                &raw[..raw
                    .iter()
                    .position(|b| matches!(b, b';' | b',' | b'"'))
                    .unwrap_or(raw.len())]
            }
        }
        .trim_ascii_end();
        if found.is_some_and(|f| f != one) {
            return Err("content-type: the multipart boundary can be read as more than one value".into());
        }
        found = Some(one);
    }
    match found {
        Some(b) if !b.is_empty() && b.len() <= 200 => Ok(b.to_vec()),
        _ => Err("content-type: a multipart body without a boundary (1 to 200 characters)".into()),
    }
}

/// The content of every part of a multipart `body` named `_method` ([`disposition_names_method`]): from after its header block to the line break before the next delimiter, or to the body's end. A
/// delimiter is `--boundary` at the body's start or after a line feed (the closing one and any line it starts
/// included); header lines end at a line feed, a carriage return before it dropped. A part with a `filename` counts
/// too. More is read than any one parser reads, never less.
fn multipart_values<'b>(body: &'b [u8], boundary: &[u8]) -> Vec<&'b [u8]> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    // Each line start once: linear in the body, whatever the boundary and the lines are.
    let line_starts = std::iter::once(0).chain(
        body.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1),
    );
    let starts: Vec<usize> = line_starts.filter(|&at| body[at..].starts_with(&delimiter)).collect();
    let mut values = Vec::new();
    for (i, &at) in starts.iter().enumerate() {
        // A part ends where the next delimiter's line starts; its headers and content lie within.
        let part = &body[at..starts.get(i + 1).copied().unwrap_or(body.len())];
        // The rest of the delimiter's line is skipped whatever it holds: PHP takes any line that starts with it
        // for a delimiter.
        let Some(eol) = part.iter().position(|b| *b == b'\n') else {
            continue;
        };
        let mut pos = eol + 1;
        let mut named = false;
        let mut headers_ended = false;
        while let Some(n) = part[pos..].iter().position(|b| *b == b'\n') {
            let line = &part[pos..pos + n];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += n + 1;
            if line.is_empty() {
                headers_ended = true;
                break;
            }
            named |= disposition_names_method(line);
        }
        if !named || !headers_ended {
            continue;
        }
        // The content ends at the line break before the next delimiter, or at the body's end.
        let content = &part[pos..];
        let content = if i + 1 < starts.len() {
            let content = content.strip_suffix(b"\n").unwrap_or(content);
            content.strip_suffix(b"\r").unwrap_or(content)
        } else {
            content
        };
        values.push(content);
    }
    values
}

/// Whether a part's header line names it `_method` as some parser reads names: any `name` (or RFC 2231's `name*`)
/// parameter in it, under any field name (Rack's pattern reaches past the `Content-Disposition` line to a `; name=`
/// on a later one), quoted with `"` or `'` (backslash escapes dropped) or not, compared as PHP reads names.
fn disposition_names_method(line: &[u8]) -> bool {
    let lower = line.to_ascii_lowercase();
    let mut at = 0;
    while let Some(n) = lower[at..].windows(4).position(|w| w == b"name") {
        let start = at + n;
        at = start + 4;
        if start > 0 && (lower[start - 1].is_ascii_alphanumeric() || lower[start - 1] == b'_') {
            continue; // `filename`, `xname`
        }
        let mut rest = &line[at..];
        let extended = rest.first() == Some(&b'*');
        if extended {
            rest = &rest[1..];
        }
        let Some(rest) = rest.trim_ascii_start().strip_prefix(b"=") else {
            continue;
        };
        let rest = rest.trim_ascii_start();
        let value: Vec<u8> = match rest.first() {
            Some(q @ (b'"' | b'\'')) => {
                let mut out = Vec::new();
                let mut bytes = rest[1..].iter();
                while let Some(&b) = bytes.next() {
                    match b {
                        b'\\' => out.extend(bytes.next()),
                        _ if b == *q => break,
                        _ => out.push(b),
                    }
                }
                out
            }
            _ => rest[..rest
                .iter()
                .position(|b| matches!(b, b';' | b' ' | b'\t'))
                .unwrap_or(rest.len())]
                .to_vec(),
        };
        // `name*=utf-8''%5Fmethod`: the charset and language dropped, escapes decoded.
        let value = match (extended, value.windows(2).position(|w| w == b"''")) {
            (true, Some(i)) => percent_encoding::percent_decode(&value[i + 2..]).collect(),
            _ => value,
        };
        if std::str::from_utf8(&value).is_ok_and(is_method_parameter) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(content_type: Option<&str>) -> Result<Option<BodyReadings>, String> {
        let mut h = HeaderMap::new();
        if let Some(t) = content_type {
            h.insert(header::CONTENT_TYPE, t.parse().unwrap());
        }
        BodyReadings::of(&h)
    }

    fn found(content_type: Option<&str>, body: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        readings(content_type)?
            .expect("a reading")
            .method_overrides(body.as_bytes(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn every_kind_a_framework_reads_is_read() {
        assert_eq!(readings(Some("text/plain")).unwrap(), None);
        assert_eq!(readings(Some("application/octet-stream")).unwrap(), None);
        assert!(readings(None).unwrap().unwrap().urlencoded);
        assert!(readings(Some("")).unwrap().unwrap().urlencoded);
        let form = readings(Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"))
            .unwrap()
            .unwrap();
        assert!(form.urlencoded && !form.json && form.multipart.is_none());
        let multi = readings(Some("multipart/mixed; boundary=\"a b\"")).unwrap().unwrap();
        assert_eq!(multi.multipart.as_deref(), Some(&b"a b"[..]));
        assert!(readings(Some("application/vnd.api+json")).unwrap().unwrap().json);
        // Laravel's test is a substring of the whole field: a form type with `/json` in a parameter is both.
        let both = readings(Some("application/x-www-form-urlencoded; x=/json"))
            .unwrap()
            .unwrap();
        assert!(both.urlencoded && both.json);
    }

    #[test]
    fn ambiguous_content_types_are_refused() {
        assert!(readings(Some("multipart/form-data")).unwrap_err().contains("boundary"));
        assert!(readings(Some("multipart/form-data; boundary="))
            .unwrap_err()
            .contains("boundary"));
        for twice in [
            "multipart/form-data; boundary=a; Boundary=b",
            // Rack's greedy pattern takes the last `boundary=`, in a quoted parameter too; PHP the first.
            "multipart/form-data; boundary=A; x=\"boundary=B\"",
        ] {
            let err = readings(Some(twice)).unwrap_err();
            assert!(err.contains("more than one value"), "{twice}: {err}");
        }
        // Agreeing copies are one boundary; PHP and Rack read it inside another parameter's name too.
        let same = readings(Some("multipart/form-data; boundary=\"a\"; boundary=a "))
            .unwrap()
            .unwrap();
        assert_eq!(same.multipart.as_deref(), Some(&b"a"[..]));
        let inside = readings(Some("multipart/form-data; xboundary=AAA")).unwrap().unwrap();
        assert_eq!(inside.multipart.as_deref(), Some(&b"AAA"[..]));
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        h.append(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert!(BodyReadings::of(&h).unwrap_err().starts_with("content-type"));
    }

    #[test]
    fn a_forms_method_in_every_spelling_php_and_rack_read() {
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(found(form, "a=1&_method=delete").unwrap(), ["DELETE"]);
        assert_eq!(found(form, "a=1;_method=PUT").unwrap(), ["PUT"]);
        assert_eq!(found(form, "_%6Dethod=patch&_method=PATCH").unwrap(), ["PATCH"]);
        assert_eq!(found(form, "+_method=DELETE").unwrap(), ["DELETE"]);
        assert_eq!(found(form, "_method=+PUT+").unwrap(), ["PUT"]);
        assert_eq!(found(None, "_method=DELETE").unwrap(), ["DELETE"]);
        assert!(found(form, "_methods=DELETE&method=PUT").unwrap().is_empty());
        assert!(found(form, "_method=DEL%0AETE")
            .unwrap_err()
            .contains("not an HTTP method"));
    }

    #[test]
    fn a_multipart_method_is_found_wherever_a_parser_would_see_it() {
        let t = Some("multipart/form-data; boundary=XyZ");
        let crlf = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\n\
                    content-disposition: form-data; name=\"_method\"\r\n\r\ndelete\r\n--XyZ--\r\n";
        assert_eq!(found(t, crlf).unwrap(), ["DELETE"]);
        // Bare line feeds (PHP), a single-quoted or bare name, a file part, padding after the delimiter.
        let lf = "--XyZ  \nContent-Disposition: form-data; name=_method\n\nPUT\n--XyZ\n\
                  Content-Disposition: form-data; name='_method'; filename=\"x\"\nContent-Type: text/plain\n\n\
                  PATCH\n--XyZ--";
        assert_eq!(found(t, lf).unwrap(), ["PUT", "PATCH"]);
        // A delimiter inside a line is content, not a new part; the last part may lack its closing delimiter.
        let inside = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nsee --XyZ\r\n\
                      Content-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE";
        assert!(found(t, inside).unwrap().is_empty());
        let unclosed = "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE";
        assert_eq!(found(t, unclosed).unwrap(), ["DELETE"]);
        // Rack finds `; name=` on a line after the disposition's; an escaped or RFC 2231 name; not a `filename`.
        for head in [
            "Content-Disposition: form-data; name=\"title\"\r\nX-Junk; name=_method",
            "Content-Disposition: form-data; name=\"\\_method\"",
            "Content-Disposition: form-data; name*=utf-8''%5Fmethod",
            "Content-Disposition: form-data; NAME = \"_method\"",
        ] {
            let body = format!("--XyZ\r\n{head}\r\n\r\nDELETE\r\n--XyZ--\r\n");
            assert_eq!(found(t, &body).unwrap(), ["DELETE"], "{head}");
        }
        let file = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"_method\"\r\n\r\nx y\r\n--XyZ--";
        assert!(found(t, file).unwrap().is_empty());
        let bad = "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDE LETE\r\n--XyZ--";
        assert!(found(t, bad).unwrap_err().contains("multipart"));
        assert!(found(t, "not multipart at all").unwrap().is_empty());
    }

    #[test]
    fn a_json_bodys_top_level_method_string_counts() {
        let t = Some("application/json");
        assert_eq!(found(t, r#"{"a":1,"_method":"delete"}"#).unwrap(), ["DELETE"]);
        assert!(found(t, r#"{"a":{"_method":"DELETE"},"_method":["PUT"]}"#)
            .unwrap()
            .is_empty());
        assert!(found(t, r#"[{"_method":"DELETE"}]"#).unwrap().is_empty());
        assert!(found(t, "_method=DELETE").unwrap().is_empty());
        assert!(found(t, r#"{"_method":"DEL/ETE"}"#).unwrap_err().contains("JSON"));
    }
}
