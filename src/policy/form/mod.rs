//! The `_method` a `POST`'s body names. Rails (`Rack::MethodOverride`), Laravel, Symfony and Express's
//! `method-override` with a body getter take a `POST` whose form holds `_method=DELETE` for a `DELETE`; Laravel
//! (whose input is a JSON body's fields when the body is JSON) and Express take it from a JSON body's top-level
//! `_method` too (Express from an array's first element as well). The rules decide on it as on the query's
//! ([`super::query_method_overrides`]).
//!
//! Apps' parsers differ at the edges, so a body is read as every kind its `Content-Type` may be taken as, and every
//! `_method` any of those readings finds counts: Rack reads a `POST` without `Content-Type` as a form and any
//! `multipart/*` type as multipart (RFC 2046 §5.1), PHP ends multipart lines at a bare LF as well as at CRLF,
//! Laravel takes any type containing `/json` or `+json` for JSON. Names are compared as PHP, Rack and Express's `qs`
//! read them (`_method\0x`, `[_method]`, `_method[]`). A multipart body is read by PHP's and Rack's own parsers,
//! step by step (`php.rs`, `rack.rs`: each of their quirks was a way past a reading that did not follow it), and by
//! a broader one. Bodies Express would decode first (a content coding, a charset) are refused (`encoding.rs`).

use http::header::{self, HeaderMap};

use super::{add_method, is_method_parameter, METHOD_OVERRIDE_PARAMETER};

mod continued;
mod encoding;
mod json;
mod php;
mod rack;

/// Why a body a framework may read a `_method` from is refused unread.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its `Content-Type` reads as different bodies to different parsers (given twice, a boundary read two ways).
    Ambiguous(String),
    /// It is in a content coding (the `Content-Encoding` as sent), which Express's body-parser decodes.
    Coding(String),
    /// A form or JSON body in a charset (as sent) in which `_method` is not written as in ASCII.
    Charset(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Ambiguous(text) => f.write_str(text),
            Refusal::Coding(coding) => write!(
                f,
                "content-encoding: {coding:?}: where the rules tell methods apart, the gate reads a form's \
                 {METHOD_OVERRIDE_PARAMETER} only in a body sent without a content coding"
            ),
            Refusal::Charset(charset) => write!(
                f,
                "content-type: charset {charset:?}: where the rules tell methods apart, the gate reads a form's \
                 {METHOD_OVERRIDE_PARAMETER} only in UTF-8, US-ASCII or ISO-8859-1"
            ),
        }
    }
}

/// A multipart field as a parser reads it: its name, and its value (a slice of the body).
type Field<'b> = (Vec<u8>, &'b [u8]);

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
    /// ([`Refusal`]): `Content-Type` given more than once (apps take either copy), a multipart type without one
    /// boundary; a body in a content coding, a form or JSON body in a charset other than ASCII's kin
    /// (`encoding.rs`).
    pub fn of(headers: &HeaderMap) -> Result<Option<BodyReadings>, Refusal> {
        let readings = Self::of_type(headers).map_err(Refusal::Ambiguous)?;
        if let Some(r) = &readings {
            encoding::check(headers, r.urlencoded || r.json)?;
        }
        Ok(readings)
    }

    fn of_type(headers: &HeaderMap) -> Result<Option<BodyReadings>, String> {
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
        // The type as PHP cuts it (at `;`, `,` or a blank) and Rack (at `;` or `,`): the shorter, which PHP reads.
        let essence = text.trim_start().split([';', ',', ' ', '\t']).next().unwrap_or("");
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
    /// refused (it is not echoed: it may hold anything). JSON is read up to the first thing in it that is not JSON.
    pub fn method_overrides<'a>(&self, body: &'a [u8], out: &mut Vec<String>) -> Result<(), String> {
        let refuse =
            |kind: &str| format!("the {kind} body's {METHOD_OVERRIDE_PARAMETER} is not an HTTP method (letters only)");
        if self.urlencoded {
            // `;` separated fields too, as Rack before 2.0 read them.
            for piece in encoding::unmarked(body).split(|b| *b == b'&' || *b == b';') {
                for (name, value) in url::form_urlencoded::parse(piece) {
                    if is_method_parameter(name.as_bytes()) && !add_method(out, value.trim()) {
                        return Err(refuse("form"));
                    }
                }
            }
        }
        if let Some(boundary) = &self.multipart {
            // PHP's and Rack's own readings, step by step, and one that finds more than either at their edges.
            let named = |(name, value): Field<'a>| is_method_parameter(&name).then_some(value);
            let values = php::fields(body, boundary)?
                .into_iter()
                .filter_map(named)
                .chain(rack::fields(body, boundary).into_iter().filter_map(named))
                .chain(multipart_values(body, boundary));
            for value in values {
                let text = std::str::from_utf8(value).map_err(|_| refuse("multipart"))?;
                if !add_method(out, text.trim()) {
                    return Err(refuse("multipart"));
                }
            }
        }
        if self.json {
            // A `_method` that is not a string is ignored by Symfony and Express alike.
            for text in json::top_level_strings(encoding::unmarked(body), METHOD_OVERRIDE_PARAMETER.as_bytes()) {
                if !add_method(out, text.trim()) {
                    return Err(refuse("JSON"));
                }
            }
        }
        Ok(())
    }
}

/// The boundary of a multipart `Content-Type` (RFC 2046 §5.1.1), as every parser reads it, or refused where they
/// would read different ones: RFC 2045's parameter, PHP's first `boundary` anywhere in the field (up to `,` or `;`
/// after the first `=` that follows, [`php_boundary`]), Rack's first `boundary=` ([`rack_boundary`]), busboy's
/// quoted-string with its escapes dropped (a quoted boundary with a backslash is refused), Go's token (a bare
/// boundary must be one) and RFC 2231 parameter (refused). Each
/// `boundary` in the field is read as those do; all must agree byte for byte (blanks included: a parser reading
/// another boundary than the gate's sees other parts), and the value must not be empty.
fn boundary(value: &[u8]) -> Result<Vec<u8>, String> {
    let lower = value.to_ascii_lowercase();
    let mut found: Option<&[u8]> = None;
    let mut at = 0;
    let twice = || Err("content-type: the multipart boundary can be read as more than one value".to_owned());
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
        };
        // A quoted-string's escapes (RFC 9110 §5.6.4): busboy (Express's multer) and Go drop the backslash, PHP and
        // Rack keep it, and `"B\"x"` is `B"x` to one and `B\` to the others. Go also decodes RFC 2231's
        // `boundary*`, and reads a bare value as a token, blanks after it (Unicode's before it) dropped: `a ` is `a`.
        let quoted = raw.first() == Some(&b'"');
        if found.is_some_and(|f| f != one)
            || (quoted && one.contains(&b'\\'))
            || after.first() == Some(&b'*')
            || (!quoted && !one.iter().all(continued::is_go_token))
        {
            return twice();
        }
        found = Some(one);
    }
    for reading in [php_boundary(value), rack_boundary(value)].into_iter().flatten() {
        if found.is_some_and(|f| f != reading) {
            return twice();
        }
    }
    match found {
        Some(b) if !b.is_empty() && b.len() <= 200 => Ok(b.to_vec()),
        _ => Err("content-type: a multipart body without a boundary (1 to 200 characters)".into()),
    }
}

/// PHP's boundary (`rfc1867_post_handler`): after the first `boundary` (looked for as written, then in any case)
/// and the first `=` after it, a quoted value (`None` unclosed: PHP then reads no part) or the text up to `,` or
/// `;`, blanks and all.
fn php_boundary(value: &[u8]) -> Option<&[u8]> {
    let find = |text: &[u8]| text.windows(8).position(|w| w == b"boundary");
    let at = find(value).or_else(|| find(&value.to_ascii_lowercase()))?;
    let eq = at + value[at..].iter().position(|b| *b == b'=')?;
    let raw = &value[eq + 1..];
    match raw.strip_prefix(b"\"") {
        Some(quoted) => quoted.iter().position(|b| *b == b'"').map(|n| &quoted[..n]),
        None => Some(&raw[..raw.iter().position(|b| matches!(b, b',' | b';')).unwrap_or(raw.len())]),
    }
}

/// Rack's boundary (`Rack::Multipart::MULTIPART`, `\Amultipart/.*?boundary(\s*)=\"?([^\";,]+)\"?`): the first
/// `boundary` followed by blanks and `=` whose value matches.
fn rack_boundary(value: &[u8]) -> Option<&[u8]> {
    let lower = value.to_ascii_lowercase();
    if !lower.starts_with(b"multipart/") {
        return None;
    }
    let mut from = 10;
    while let Some(n) = lower[from..].windows(8).position(|w| w == b"boundary") {
        let mut at = from + n + 8;
        from += n + 1;
        at += value[at..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
            .count();
        let Some(rest) = value[at..].strip_prefix(b"=") else {
            continue;
        };
        let token = |text: &'_ [u8]| -> Option<usize> {
            let n = text.iter().take_while(|b| !matches!(b, b'"' | b';' | b',')).count();
            (n > 0).then_some(n)
        };
        if let Some(n) = rest.strip_prefix(b"\"").and_then(token) {
            return Some(&rest[1..1 + n]);
        }
        if let Some(n) = token(rest) {
            return Some(&rest[..n]);
        }
    }
    None
}

/// The content of every part of a multipart `body` named `_method` ([`names_method`]), as any parser may read it.
/// A delimiter is `--boundary` at the body's start or after a line feed (PHP takes any line that starts with it; the
/// closing one and the rest of its line included). PHP ends a part's headers at its first blank line (a bare line
/// feed ends a line); Rack at the first CRLF blank line after the delimiter, which may be later, even in another
/// part. A name on any line before either end counts, and the content after either is read, to the line break
/// before the next delimiter or to the body's end. More is read than any one parser reads, never less; linear in
/// the body whatever it holds.
fn multipart_values<'b>(body: &'b [u8], boundary: &[u8]) -> Vec<&'b [u8]> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    // One pass over the lines: where delimiters start, which lines name `_method`, where content starts after a
    // blank line (and whether that line was CRLF), each in body order.
    let (mut starts, mut naming, mut blanks, mut crlf_blanks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut at = 0;
    while at < body.len() {
        let end = body[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |n| at + n);
        let raw = &body[at..end];
        if raw.starts_with(&delimiter) {
            starts.push(at);
        } else if (raw.is_empty() || raw == b"\r") && end < body.len() {
            blanks.push(end + 1);
            if raw == b"\r" {
                crlf_blanks.push(end + 1);
            }
        } else {
            // A head line alone, and with the lines folded onto it (Go joins them).
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if names_method(line) || continued::unfolded(body, line, end).is_some_and(|l| names_method(&l)) {
                naming.push(at);
            }
        }
        at = end + 1;
    }
    let first_after = |list: &[usize], at: usize| list.get(list.partition_point(|&p| p <= at)).copied();
    // Content from `from` to the line break before the next delimiter, or to the body's end.
    let content_from = |from: usize| {
        let next = first_after(&starts, from);
        let content = &body[from..next.unwrap_or(body.len())];
        if next.is_none() {
            return content;
        }
        let content = content.strip_suffix(b"\n").unwrap_or(content);
        content.strip_suffix(b"\r").unwrap_or(content)
    };
    let mut values = Vec::new();
    for (i, &at) in starts.iter().enumerate() {
        let part_end = starts.get(i + 1).copied().unwrap_or(body.len());
        let php = first_after(&blanks, at).filter(|&p| p <= part_end);
        let rack = first_after(&crlf_blanks, at);
        let Some(head_end) = php.max(rack) else {
            continue;
        };
        if first_after(&naming, at).is_none_or(|line| line >= head_end) {
            continue;
        }
        for from in [php, rack].into_iter().flatten() {
            let content = content_from(from);
            if !values.contains(&content) {
                values.push(content);
            }
        }
    }
    values
}

/// Whether a part's header line names it `_method` as some parser reads names: any `name` (or RFC 2231's `name*`)
/// parameter in it, under any field name (Rack's pattern reaches past the `Content-Disposition` line to a `; name=`
/// on a later one, and takes the last ` name=` on a line, inside a quoted value too), quoted with `"` or `'`
/// (backslash escapes dropped or kept) or not (up to a character no token holds, or up to `;` or a blank); or a
/// `Content-ID` of `_method` (older Rack names a part without a `name` by it); or RFC 2231 continuations joined
/// (`name*0`, `name*1`: Go). Compared as PHP reads names.
fn names_method(line: &[u8]) -> bool {
    let lower = line.to_ascii_lowercase();
    if continued::continued_name(line, &lower).is_some_and(|name| is_method_parameter(&name)) {
        return true;
    }
    // Rack's pattern finds `Content-ID:` anywhere in the head and takes the rest of its line.
    if let Some(n) = lower.windows(11).position(|w| w == b"content-id:") {
        if is_method_parameter(line[n + 11..].trim_ascii()) {
            return true;
        }
    }
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
        // Blanks as Go's `unicode.IsSpace` reads them: ASCII's, the vertical tab, and Unicode's (no-break space).
        let Some(rest) = continued::go_blanks_trimmed(rest).strip_prefix(b"=") else {
            continue;
        };
        let rest = continued::go_blanks_trimmed(rest);
        // Each way a parser reads the value: quoted, with backslash escapes dropped (Rack, Go) or kept (PHP); bare, up
        // to a character no token holds (Rack's pattern; Go's, where any byte outside ASCII ends it too) or up to `;`
        // or a blank (PHP).
        let values: Vec<Vec<u8>> = match rest.first() {
            Some(q @ (b'"' | b'\'')) => {
                let raw = &rest[1..];
                vec![
                    unquoted(raw, *q),
                    raw[..raw.iter().position(|b| b == q).unwrap_or(raw.len())].to_vec(),
                ]
            }
            _ => {
                let upto = |stop: fn(&u8) -> bool| rest[..rest.iter().position(stop).unwrap_or(rest.len())].to_vec();
                vec![
                    upto(|b| b.is_ascii_whitespace() || b"()<>,;:\\\"/[]?=".contains(b)),
                    upto(|b| matches!(b, b';' | b' ' | b'\t')),
                    upto(|b| !continued::is_go_token(b)),
                ]
            }
        };
        for value in values {
            // `name*=utf-8''%5Fmethod`: the charset and language dropped, escapes decoded.
            let value = match (extended, value.windows(2).position(|w| w == b"''")) {
                (true, Some(i)) => percent_encoding::percent_decode(&value[i + 2..]).collect(),
                _ => value,
            };
            if is_method_parameter(&value) {
                return true;
            }
        }
    }
    false
}

/// A quoted string's content, from just after its opening `quote` to the closing one (or the end), each backslash
/// dropped and the byte after it kept (RFC 9110 §5.6.4's quoted-pair, as Rack, busboy and Go read it).
fn unquoted(text: &[u8], quote: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.extend(bytes.next()),
            _ if b == quote => break,
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(content_type: Option<&str>) -> Result<Option<BodyReadings>, String> {
        let mut h = HeaderMap::new();
        if let Some(t) = content_type {
            h.insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_bytes(t.as_bytes()).unwrap(),
            );
        }
        BodyReadings::of(&h).map_err(|r| r.to_string())
    }

    fn found(content_type: Option<&str>, body: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        readings(content_type)?
            .expect("a reading")
            .method_overrides(body.as_bytes(), &mut out)?;
        out.sort();
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
        // PHP cuts the type at `;`, `,` or a blank, Rack at `;` or `,`: both take these for forms.
        for t in [
            "application/x-www-form-urlencoded, text/plain",
            "application/x-www-form-urlencoded foo",
        ] {
            assert!(readings(Some(t)).unwrap().unwrap().urlencoded, "{t}");
        }
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
            // PHP and Rack keep a blank after `=`; another reading of the field would drop it.
            "multipart/form-data; boundary= a",
            "multipart/form-data; boundary=\"a\"; boundary=a ",
            // Rack's greedy pattern takes the last `boundary=`, in a quoted parameter too; PHP the first.
            "multipart/form-data; boundary=A; x=\"boundary=B\"",
            // busboy unescapes a quoted boundary: `B"x` and `Bx`; PHP and Rack read `B\` and `B\x`.
            "multipart/form-data; boundary=\"B\\\"x\"",
            "multipart/form-data; boundary=\"B\\x\"",
            // Go reads `a`, `Bx` and `Bx` where PHP and Rack read `a `, `utf-8''Bx` and ` Bx` (no-break space).
            "multipart/form-data; boundary=a ;x=1",
            "multipart/form-data; boundary*=utf-8''Bx",
            "multipart/form-data; boundary=\u{a0}Bx",
        ] {
            let err = readings(Some(twice)).unwrap_err();
            assert!(err.contains("more than one value"), "{twice}: {err}");
        }
        // Agreeing copies are one boundary; PHP and Rack read it inside another parameter's name too.
        let same = readings(Some("multipart/form-data; boundary=\"a\"; boundary=a"))
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
        assert!(BodyReadings::of(&h)
            .unwrap_err()
            .to_string()
            .starts_with("content-type"));
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
        assert_eq!(found(t, lf).unwrap(), ["PATCH", "PUT"]);
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
            // Rack's token ends at a quote; its `Content-ID` pattern finds the field inside another name.
            "Content-Disposition: form-data; name=_method\" x\"",
            "X-Content-ID: _method",
        ] {
            let body = format!("--XyZ\r\n{head}\r\n\r\nDELETE\r\n--XyZ--\r\n");
            assert_eq!(found(t, &body).unwrap(), ["DELETE"], "{head}");
        }
        // Older Rack names a part without a name by its Content-ID.
        let id = "--XyZ\r\nContent-ID: _method\r\n\r\nDELETE\r\n--XyZ--";
        assert_eq!(found(t, id).unwrap(), ["DELETE"]);
        // Headers ended by a bare blank line: PHP reads the content after it; Rack reads on to the first CRLF blank
        // line, in the next part here, and takes what follows it for the value.
        let split = "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\n\nPUT\r\n--XyZ\r\n\
                     Content-Disposition: form-data; name=\"a\"\r\n\r\nDELETE\r\n--XyZ--";
        assert_eq!(found(t, split).unwrap(), ["DELETE", "PUT"]);
        // A field's content that mentions `name="_method"` names nothing.
        let snippet = "--XyZ\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\n\
                       <input type=\"hidden\" name=\"_method\" value=\"delete\">\r\n--XyZ--\r\n";
        assert!(found(t, snippet).unwrap().is_empty());
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
        assert!(found(t, r#"{"a":{"_method":"DELETE"},"_method":[["PUT"]]}"#)
            .unwrap()
            .is_empty());
        assert_eq!(found(t, r#"{"_method":["PUT"]}"#).unwrap(), ["PUT"]);
        assert!(found(t, r#"[{"_method":"DELETE"}]"#).unwrap().is_empty());
        assert!(found(t, "_method=DELETE").unwrap().is_empty());
        assert!(found(t, r#"{"_method":"DEL/ETE"}"#).unwrap_err().contains("JSON"));
    }
}
