//! What a part's head says across more than one piece, as Go's `net/textproto` and `mime.ParseMediaType` join it:
//! header lines folded onto the one before them (RFC 5322 §2.2.3) and parameters continued over numbered pieces
//! (RFC 2231 §3: `name*0`, `name*1*`). PHP and Rack read neither, so their step-by-step readings never see such a
//! name; Go apps (gorilla/handlers' method override reads `FormValue("_method")`) do.

use std::collections::BTreeMap;

/// The header line `line` (which ends at `end` in `body`) with the lines folded onto it, each joined with one space
/// and its blanks trimmed, as textproto reads a continued line; `None` when no line starting with a blank follows,
/// or when `line` starts with one itself (it is then part of the line above it, read there): each line is read in
/// at most one join.
pub(super) fn unfolded(body: &[u8], line: &[u8], end: usize) -> Option<Vec<u8>> {
    let blank = |b: &u8| matches!(b, b' ' | b'\t');
    if line.first().is_some_and(blank) {
        return None;
    }
    let mut joined: Option<Vec<u8>> = None;
    let mut at = end + 1;
    while body.get(at).is_some_and(blank) {
        let next_end = memchr::memchr(b'\n', &body[at..]).map_or(body.len(), |n| at + n);
        let next = &body[at..next_end];
        let next = next.strip_suffix(b"\r").unwrap_or(next);
        let out = joined.get_or_insert_with(|| line.trim_ascii_end().to_vec());
        out.push(b' ');
        out.extend_from_slice(next.trim_ascii());
        at = next_end + 1;
    }
    joined
}

/// The `name` RFC 2231 continuations in a header `line` join into (`lower`: the line in lower case), as Go's
/// `mime.ParseMediaType` joins them: the pieces `name*0`, `name*1`, ... in order while the next number is there
/// (numbers written without leading zeros), quoted or not; an extended piece (`name*1*`) percent-decoded, the
/// first's `charset'language'` dropped (UTF-8 or US-ASCII only, else that piece adds nothing), and a piece with a
/// malformed escape adding nothing. `None` without a `name*0` piece. Each piece is read once: linear in the line.
pub(super) fn continued_name(line: &[u8], lower: &[u8]) -> Option<Vec<u8>> {
    let mut pieces: BTreeMap<usize, (bool, Vec<u8>)> = BTreeMap::new();
    let mut at = 0;
    while let Some(n) = memchr::memmem::find(&lower[at..], b"name*") {
        let start = at + n;
        at = start + 5;
        if start > 0 && (lower[start - 1].is_ascii_alphanumeric() || lower[start - 1] == b'_') {
            continue; // `filename*0`
        }
        let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let number = &line[at..at + digits];
        if digits == 0 || digits > 6 || (digits > 1 && number[0] == b'0') {
            continue;
        }
        let index: usize = number.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0'));
        let mut rest = &line[at + digits..];
        let extended = rest.first() == Some(&b'*');
        if extended {
            rest = &rest[1..];
        }
        let Some(rest) = go_blanks_trimmed(rest).strip_prefix(b"=") else {
            continue;
        };
        let rest = go_blanks_trimmed(rest);
        let value = match rest.strip_prefix(b"\"") {
            Some(quoted) => super::unquoted(quoted, b'"'),
            None => rest[..rest.iter().position(|b| !is_go_token(b)).unwrap_or(rest.len())].to_vec(),
        };
        pieces.entry(index).or_insert((extended, value));
    }
    pieces.get(&0)?;
    let mut joined = Vec::new();
    for n in 0.. {
        let Some((extended, value)) = pieces.get(&n) else {
            break;
        };
        let piece = match (*extended, n) {
            (false, _) => Some(value.clone()),
            (true, 0) => {
                let mut parts = value.splitn(3, |b| *b == b'\'');
                let (charset, _language, encoded) = (parts.next(), parts.next(), parts.next());
                let known =
                    charset.is_some_and(|c| c.eq_ignore_ascii_case(b"utf-8") || c.eq_ignore_ascii_case(b"us-ascii"));
                encoded.filter(|_| known).and_then(percent_unescaped)
            }
            (true, _) => percent_unescaped(value),
        };
        joined.extend(piece.unwrap_or_default());
    }
    Some(joined)
}

/// `text` without its leading blanks as Go's `strings.TrimLeftFunc(_, unicode.IsSpace)` drops them: ASCII's
/// (vertical tab included) and Unicode's (U+0085, U+00A0, U+2000 to U+200A, ...), written in UTF-8.
pub(super) fn go_blanks_trimmed(mut text: &[u8]) -> &[u8] {
    loop {
        let Some(&first) = text.first() else {
            return text;
        };
        let width = match first {
            b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' => 1,
            0xc2..=0xf4 => {
                let len = if first < 0xe0 {
                    2
                } else if first < 0xf0 {
                    3
                } else {
                    4
                };
                let space = text
                    .get(..len)
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(|c| c.chars().next())
                    .is_some_and(char::is_whitespace);
                if !space {
                    return text;
                }
                len
            }
            _ => return text,
        };
        text = &text[width..];
    }
}

/// Whether Go's `mime` reads `b` as part of a token: printable ASCII but for RFC 2045's specials (`isTokenChar`).
pub(super) fn is_go_token(b: &u8) -> bool {
    (0x21..0x7f).contains(b) && !b"()<>@,;:\\\"/[]?=".contains(b)
}

/// `value` with its `%XX` escapes decoded, as Go's `percentHexUnescape`; `None` when a `%` is not followed by two
/// hexadecimal digits.
fn percent_unescaped(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut at = 0;
    while at < value.len() {
        if value[at] == b'%' {
            let hex = value
                .get(at + 1..at + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            at += 3;
        } else {
            out.push(value[at]);
            at += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(line: &str) -> Option<String> {
        continued_name(line.as_bytes(), line.to_ascii_lowercase().as_bytes())
            .map(|v| String::from_utf8_lossy(&v).into())
    }

    #[test]
    fn continued_names_join_as_go_joins_them() {
        assert_eq!(
            joined("form-data; name*0=\"_me\"; name*1=\"thod\"").as_deref(),
            Some("_method")
        );
        assert_eq!(
            joined("form-data; NAME*1=thod; Name*0*=utf-8''%5Fme").as_deref(),
            Some("_method")
        );
        assert_eq!(
            joined("form-data; name*0*=UTF-8'en'%5f; name*1*=me%74hod").as_deref(),
            Some("_method")
        );
        // An unknown charset or a bad escape: that piece adds nothing, the rest still join.
        assert_eq!(
            joined("form-data; name*0*=latin1''x; name*1=_method").as_deref(),
            Some("_method")
        );
        assert_eq!(
            joined("form-data; name*0=_method; name*1*=%+F").as_deref(),
            Some("_method")
        );
        // A gap ends the join; a piece given twice counts once; leading zeros are no piece.
        assert_eq!(
            joined("name*0=_; name*3=x; name*1=method; name*1=y").as_deref(),
            Some("_method")
        );
        assert_eq!(joined("name*0=_me; name*01=thod").as_deref(), Some("_me"));
        assert_eq!(joined("form-data; name*1=_method"), None);
        assert_eq!(joined("form-data; filename*0=_method"), None);
        assert_eq!(joined("form-data; name*0=\"_m\\\"x\""), Some("_m\"x".into()));
        // Go's blanks: a vertical tab and a no-break space before a value, a vertical tab after a token.
        assert_eq!(
            joined("name*0*=\x0butf-8''%5Fme; name*1=\u{a0}thod\x0b; x=1").as_deref(),
            Some("_method")
        );
    }

    #[test]
    fn go_blanks_are_ascii_and_unicode_white_space() {
        assert_eq!(go_blanks_trimmed(b" \t\x0b\x0c\r\nx"), b"x");
        assert_eq!(go_blanks_trimmed("\u{a0}\u{85}\u{2003}\u{3000}_m".as_bytes()), b"_m");
        assert_eq!(go_blanks_trimmed("\u{200b}_m".as_bytes()), "\u{200b}_m".as_bytes());
        assert_eq!(go_blanks_trimmed(b"\xc2"), b"\xc2");
        assert_eq!(go_blanks_trimmed(b"\x85_m"), b"\x85_m");
    }

    #[test]
    fn folded_lines_join_onto_the_line_above_only() {
        let body = b"Content-Disposition: form-data;\r\n name*0=_me;\r\n\tname*1=thod\r\nX: 1\r\n";
        let end = memchr::memchr(b'\n', body).unwrap();
        let line = &body[..end - 1];
        assert_eq!(
            unfolded(body, line, end).as_deref(),
            Some(&b"Content-Disposition: form-data; name*0=_me; name*1=thod"[..])
        );
        let second = &body[end + 1..end + 14];
        assert_eq!(unfolded(body, second, end + 14), None);
        assert_eq!(unfolded(b"X: 1\r\nY: 2", b"X: 1", 5), None);
    }
}
