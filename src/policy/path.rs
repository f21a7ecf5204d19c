//! Request path normalisation (RFC 3986 §6.2.2). Rules are matched on the normalised path, and the same normalised
//! path is what the upstream receives, so matching and proxying can never disagree.
//!
//! - Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%2e` is `.`, `%41` is `A`), other
//!   escapes keep their meaning and get upper-case hex.
//! - Dot segments are removed (RFC 3986 §5.2.4), never above the root, and runs of `/` collapse into one.
//! - An encoded `/` or `\` (`%2F`, `%5C`) is refused unless allowed: upstreams disagree on whether it separates
//!   segments, which is exactly what a rule bypass needs. A raw `\` is always refused (some servers read it as `/`).
//! - The query string is never part of the path.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path contains an encoded slash or backslash (%2F or %5C)")]
    EncodedSlash,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains a malformed percent escape")]
    BadEscape,
    #[error("the path contains control characters or an encoded NUL")]
    Control,
    #[error("the path does not start with /")]
    NotAbsolute,
    #[error("the path has a dot segment with parameters (`..;` or `.;`), which servlet containers resolve")]
    DotSegmentParameters,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises `raw` (the path part of a request target, without the query). Most paths are already normal and
/// come back borrowed, without an allocation.
pub fn normalise(raw: &str, allow_encoded_slashes: bool) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_already_normal(bytes) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    normalise_slow(raw, allow_encoded_slashes).map(std::borrow::Cow::Owned)
}

/// No escapes, backslashes, controls, empty or dot segments: nothing to change.
fn is_already_normal(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b if b < 0x20 || b == 0x7f => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // "/." or "/.." starting a segment
                let next = bytes.get(i + 1).copied();
                if matches!(next, None | Some(b'/') | Some(b'.')) {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

fn normalise_slow(raw: &str, allow_encoded_slashes: bool) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    // 1. Decode unreserved escapes, normalise the case of the rest.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                if v == b'/' || v == b'\\' {
                    if !allow_encoded_slashes {
                        return Err(PathError::EncodedSlash);
                    }
                    decoded.push_str(if v == b'/' { "%2F" } else { "%5C" });
                } else if v < 0x20 || v == 0x7f {
                    return Err(PathError::Control);
                } else if is_unreserved(v) {
                    decoded.push(v as char);
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b < 0x20 || b == 0x7f => return Err(PathError::Control),
            _ => {
                // Multi-byte UTF-8 passes through unchanged (hyper only hands us valid request targets).
                let ch_len = utf8_len(b);
                let end = (i + ch_len).min(bytes.len());
                decoded.push_str(raw.get(i..end).unwrap_or(""));
                i = end;
                continue;
            }
        }
    }
    // 2. Remove dot segments and empty segments.
    let trailing_slash = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || (trailing_slash && !path.ends_with('/')) {
        path.push('/');
    }
    Ok(path)
}

/// The path rules decide on, from a [`normalise`]d path: what a servlet container (Tomcat, Jetty, Spring) serves
/// for it. Those strip path parameters (`;jsessionid=1`) from every segment before they resolve dot segments, so
/// `/admin;jsessionid=1` is `/admin` to them; here every segment loses its parameters too (a segment left empty
/// disappears, as `//` does). A segment that is `.` or `..` once its parameters are gone (`/x/..;/admin`) is
/// refused: a servlet container climbs out of `/x` with it while any other server reads a plain segment named
/// `..;`, and no rule can be right for both. With `case_insensitive` (IIS and other servers that ignore case) the
/// result is lower-cased, and rules are compiled lower-cased to match. The upstream still receives the normalised
/// path with its parameters: legacy apps keep their `;jsessionid=` URLs.
pub fn rule_path(normalised: &str, case_insensitive: bool) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let has_params = normalised.contains(';');
    let needs_case = case_insensitive && normalised.chars().any(char::is_uppercase);
    if !has_params && !needs_case {
        return Ok(std::borrow::Cow::Borrowed(normalised));
    }
    let mut out = String::with_capacity(normalised.len());
    if has_params {
        for segment in normalised.split('/').skip(1) {
            let (name, params) = segment.split_once(';').map_or((segment, None), |(n, p)| (n, Some(p)));
            if params.is_some() && (name == "." || name == "..") {
                return Err(PathError::DotSegmentParameters);
            }
            if !name.is_empty() {
                out.push('/');
                out.push_str(name);
            }
        }
        let trailing = normalised.ends_with('/') || normalised.rsplit('/').next().is_some_and(|s| s.starts_with(';'));
        if out.is_empty() || (trailing && !out.ends_with('/')) {
            out.push('/');
        }
    } else {
        out.push_str(normalised);
    }
    if case_insensitive {
        out = out.to_lowercase();
    }
    Ok(std::borrow::Cow::Owned(out))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_rfc_3986() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a/%7euser", "/a/~user"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%20b", "/a%20b"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/caf\u{e9}", "/caf\u{e9}"),
            ("/a/.b/..c", "/a/.b/..c"),
            ("/a/..b", "/a/..b"),
            ("/.well-known/x", "/.well-known/x"),
        ] {
            assert_eq!(normalise(raw, false).as_deref(), Ok(want), "{raw}");
            assert_eq!(normalise_slow(raw, false).as_deref(), Ok(want), "{raw} (slow path)");
        }
    }

    #[test]
    fn rules_see_the_path_a_servlet_container_serves() {
        for (normalised, want) in [
            ("/admin", "/admin"),
            ("/admin;jsessionid=1", "/admin"),
            ("/admin;jsessionid=1/x;a=b", "/admin/x"),
            ("/;x/admin", "/admin"),
            ("/admin/;x", "/admin/"),
            ("/admin/", "/admin/"),
            ("/;x", "/"),
            ("/a;b;c/d", "/a/d"),
            ("/a/..b;x", "/a/..b"),
        ] {
            assert_eq!(rule_path(normalised, false).as_deref(), Ok(want), "{normalised}");
        }
        for tricky in [
            "/x/..;/admin",
            "/pub/..;/admin",
            "/x/.;/admin",
            "/..;x",
            "/a/..;jsessionid=1/b",
        ] {
            assert_eq!(
                rule_path(tricky, false),
                Err(PathError::DotSegmentParameters),
                "{tricky}"
            );
        }
        assert_eq!(rule_path("/ADMIN", false).as_deref(), Ok("/ADMIN"));
        assert_eq!(rule_path("/ADMIN", true).as_deref(), Ok("/admin"));
        assert_eq!(rule_path("/Admin/X;Y=Z", true).as_deref(), Ok("/admin/x"));
        assert!(matches!(rule_path("/admin", true), Ok(std::borrow::Cow::Borrowed(_))));
        assert!(matches!(rule_path("/admin", false), Ok(std::borrow::Cow::Borrowed(_))));
    }

    #[test]
    fn encoded_slashes_backslashes_and_controls_are_refused() {
        assert_eq!(normalise("/a%2Fb", false), Err(PathError::EncodedSlash));
        assert_eq!(normalise("/a%2fb", false), Err(PathError::EncodedSlash));
        assert_eq!(normalise("/a%5Cb", false), Err(PathError::EncodedSlash));
        assert_eq!(normalise("/a%2Fb", true).as_deref(), Ok("/a%2Fb"));
        assert_eq!(normalise("/a\\b", true), Err(PathError::Backslash));
        assert_eq!(normalise("/a%00b", true), Err(PathError::Control));
        assert_eq!(normalise("/a%0ab", true), Err(PathError::Control));
        assert_eq!(normalise("/a%zz", true), Err(PathError::BadEscape));
        assert_eq!(normalise("/a%2", true), Err(PathError::BadEscape));
        assert_eq!(normalise("a", true), Err(PathError::NotAbsolute));
    }
}
