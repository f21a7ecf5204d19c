//! Request path normalisation (RFC 3986 §6.2.2). Rules are matched on the normalised path, and the same normalised
//! path is what the upstream receives, so matching and proxying can never disagree.
//!
//! - Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%2e` is `.`, `%41` is `A`), other
//!   escapes keep their meaning and get upper-case hex.
//! - Dot segments are removed (RFC 3986 §5.2.4), never above the root, and runs of `/` collapse into one.
//! - An encoded `/` or `\` (`%2F`, `%5C`) is refused unless allowed: upstreams disagree on whether it separates
//!   segments, which is exactly what a rule bypass needs. A raw `\` is always refused (some servers read it as `/`).
//! - Characters a URI cannot hold as they are (RFC 3986 §2: anything not ASCII, and the space, `"`, `<`, `>`,
//!   `` ` ``, `{`, `}` that browsers encode) are percent-encoded, so `/geschäft` sent raw and `/gesch%C3%A4ft` as a
//!   browser sends it are one path.
//! - The query string is never part of the path.
//!
//! Rules compare [`rule_path`], which goes one step further than RFC 3986 allows for the path sent on: it decodes
//! the escapes servers decode before they route (`%40` is `@`, `%C3%A4` is `ä`), as nginx does for `location`.

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
    #[error("the path has a segment of dots and spaces alone, which Windows reads as another name")]
    DotsAndSpaces,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A byte sent on percent-encoded: not ASCII, or ASCII a URI path cannot hold (RFC 3986 §2; the WHATWG URL
/// standard's path percent-encode set, less `#` and `?`, which end a path).
const fn must_encode(b: u8) -> bool {
    b >= 0x80 || matches!(b, b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}')
}

/// What a byte asks of the path it is in, one table lookup per byte on the path every request takes:
/// [`NOT_NORMAL`] for [`normalise`] (an escape, a backslash, a control, a byte to encode), and for [`rule_path`]
/// [`PARAMETER`] (`;`), [`ESCAPE`] (`%`) and [`UPPER`] (an ASCII capital).
static BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b == b'%' || b == b'\\' || b < 0x20 || b == 0x7f || must_encode(b) {
            class |= NOT_NORMAL;
        }
        if b == b';' {
            class |= PARAMETER;
        }
        if b == b'%' {
            class |= ESCAPE;
        }
        if b.is_ascii_uppercase() {
            class |= UPPER;
        }
        table[i] = class;
        i += 1;
    }
    table
};
const NOT_NORMAL: u8 = 1;
const PARAMETER: u8 = 2;
const ESCAPE: u8 = 4;
const UPPER: u8 = 8;

/// The classes of every byte of `bytes`, or-ed together.
fn classes(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, &b| acc | BYTE_CLASS[usize::from(b)])
}

/// Appends `b` as an escape with upper-case hex (`%C3`).
fn push_escaped(out: &mut String, b: u8) {
    out.push_str(percent_encoding::percent_encode_byte(b));
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

/// No escapes, backslashes, controls, characters to encode, empty or dot segments: nothing to change.
fn is_already_normal(bytes: &[u8]) -> bool {
    if classes(bytes) & NOT_NORMAL != 0 {
        return false;
    }
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
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
                    push_escaped(&mut decoded, v);
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b < 0x20 || b == 0x7f => return Err(PathError::Control),
            // Every byte of a multi-byte character is encoded on its own, as a browser does.
            b if must_encode(b) => {
                push_escaped(&mut decoded, b);
                i += 1;
            }
            b => {
                decoded.push(char::from(b));
                i += 1;
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
/// `..;`, and no rule can be right for both.
///
/// Then the escapes are decoded, as servers (and nginx's `location`) decode them before they route: `/%40admin`
/// is `/@admin` and `/gesch%C3%A4ft` is `/geschäft` to a rule, so a rule written either way covers both spellings.
/// Kept encoded are the escapes whose character would change where the path splits or ends (`%2F` and `%5C`
/// where allowed, `%3B`, `%3F`, `%23`) and `%25` (`%`, so decoding once cannot be mistaken for decoding twice), and
/// bytes that do not form UTF-8 (upper-case hex).
///
/// With `case_insensitive` (IIS and other servers that ignore case) the result is lower-cased, and rules are
/// compiled lower-cased to match. The upstream still receives the normalised path with its parameters and escapes:
/// legacy apps keep their `;jsessionid=` URLs, and an app that tells `%2C` from `,` still can.
pub fn rule_path(normalised: &str, case_insensitive: bool) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let class = classes(normalised.as_bytes());
    let has_params = class & PARAMETER != 0;
    let has_escapes = class & ESCAPE != 0;
    let needs_case = case_insensitive && (class & UPPER != 0 || ends_a_name_with_a_dot(normalised));
    if !(has_params || has_escapes || needs_case) {
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
    if has_escapes {
        out = decoded_for_rules(&out);
    }
    if case_insensitive {
        out = windows_names(out.to_lowercase())?;
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Whether a segment of `path` ends in `.` (a normalised path holds a space only as `%20`, an escape).
fn ends_a_name_with_a_dot(path: &str) -> bool {
    path.ends_with('.') || path.contains("./")
}

/// `path` as Windows names its files and directories, for an app that ignores case (IIS, ASP.NET, Tomcat on
/// Windows): a name's trailing dots and spaces are dropped (`admin.` and `admin ` are `admin`, so IIS serves
/// `/admin./x` from the directory `admin`). A name of dots and spaces alone is refused: Windows reads `...` as
/// another name than a server that takes it as it is.
fn windows_names(path: String) -> Result<String, PathError> {
    if !path.split('/').any(|name| name.ends_with(['.', ' '])) {
        return Ok(path);
    }
    let mut out = String::with_capacity(path.len());
    for name in path.split('/').skip(1) {
        let kept = name.trim_end_matches(['.', ' ']);
        if kept.is_empty() && !name.is_empty() {
            return Err(PathError::DotsAndSpaces);
        }
        out.push('/');
        out.push_str(kept);
    }
    Ok(out)
}

/// Whether [`rule_path`] keeps the escape of `byte` (see there).
fn kept_encoded_for_rules(byte: u8) -> bool {
    matches!(byte, b'/' | b'\\' | b';' | b'?' | b'#' | b'%')
}

/// `path` with its escapes decoded as [`rule_path`] says: each run of escapes becomes the characters its bytes
/// spell in UTF-8, and a byte that spells none stays an escape.
fn decoded_for_rules(path: &str) -> String {
    fn flush(run: &mut Vec<u8>, out: &mut String) {
        for chunk in run.utf8_chunks() {
            out.push_str(chunk.valid());
            for &b in chunk.invalid() {
                push_escaped(out, b);
            }
        }
        run.clear();
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut run = Vec::new();
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        let at = path.len() - rest.len();
        let escaped = match (
            c,
            bytes.get(at + 1).copied().and_then(hex),
            bytes.get(at + 2).copied().and_then(hex),
        ) {
            ('%', Some(h), Some(l)) => Some(h * 16 + l),
            _ => None,
        };
        match escaped {
            Some(v) if !kept_encoded_for_rules(v) => {
                run.push(v);
                rest = rest.get(3..).unwrap_or("");
            }
            Some(v) => {
                flush(&mut run, &mut out);
                push_escaped(&mut out, v);
                rest = rest.get(3..).unwrap_or("");
            }
            None => {
                flush(&mut run, &mut out);
                out.push(c);
                rest = rest.get(c.len_utf8()..).unwrap_or("");
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Why a `prefix` from the configuration cannot be compared with paths.
fn rule_prefix_problem(prefix: &str) -> Option<String> {
    if !prefix.starts_with('/') {
        return Some(format!("`{prefix}` must start with /"));
    }
    if prefix.contains(['?', '#']) {
        return Some(format!(
            "`{prefix}` must be a path, without a query (?) or fragment (#)"
        ));
    }
    if prefix.contains(';') {
        return Some(format!(
            "`{prefix}` has a `;` parameter, which rules never see (`/a;x` is `/a` to them): leave it out"
        ));
    }
    None
}

/// A `prefix` from the configuration (`[[rules]]`, `[[upstreams]]`) in the form [`rule_path`] gives a request's
/// path, so that it is compared like for like however it is written: `/geschäft`, `/gesch%c3%a4ft` and
/// `/gesch%C3%A4ft` are one prefix, `/%7Euser` is `/~user`, `/a//b/./c` is `/a/b/c`. The error says what is wrong.
pub fn rule_prefix(prefix: &str, allow_encoded_slashes: bool, case_insensitive: bool) -> Result<String, String> {
    if let Some(problem) = rule_prefix_problem(prefix) {
        return Err(problem);
    }
    let escaped_percent = || format!("`{prefix}`: write a `%` that is part of the path as %25");
    let normalised = normalise(prefix, allow_encoded_slashes).map_err(|e| match e {
        PathError::BadEscape => escaped_percent(),
        e => format!("`{prefix}`: {e}"),
    })?;
    rule_path(&normalised, case_insensitive)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| format!("`{prefix}`: {e}"))
}

/// Why a `path` (regular expression) from the configuration would never match what it seems to: [`rule_path`]
/// decodes the escapes it names (`%20`, `%40`, `%C3%A4`), and writes those it keeps in upper case unless
/// `case_insensitive`.
pub fn rule_regex_problem(re: &str, case_insensitive: bool) -> Option<String> {
    let bytes = re.as_bytes();
    for (i, _) in re.match_indices('%') {
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            continue;
        };
        let escape = re.get(i..i + 3).unwrap_or("");
        let v = h * 16 + l;
        if !kept_encoded_for_rules(v) {
            return Some(format!(
                "`{escape}` never matches: rules see the path with its escapes decoded (`%40` is `@`, `%C3%A4` is \
                 `ä`, `%20` a space); write the character itself"
            ));
        }
        if !case_insensitive && escape.bytes().any(|b| b.is_ascii_lowercase()) {
            return Some(format!(
                "`{escape}` never matches: rules see the escapes they keep in upper case (`{}`)",
                escape.to_ascii_uppercase()
            ));
        }
    }
    None
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
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/gesch\u{e4}ft/", "/gesch%C3%A4ft/"),
            ("/a\"b{c}", "/a%22b%7Bc%7D"),
            ("/a b<c>`", "/a%20b%3Cc%3E%60"),
            ("/a|b^[c]@!", "/a|b^[c]@!"),
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
        // As Windows names files: a name's trailing dots and spaces dropped, a name of them alone refused.
        for (normalised, want) in [
            ("/Admin./x", "/admin/x"),
            ("/admin%20/x", "/admin/x"),
            ("/admin.%20.%20", "/admin"),
            ("/admin..;p=1/", "/admin/"),
            ("/a.b/c.d", "/a.b/c.d"),
            ("/a/", "/a/"),
            ("/", "/"),
        ] {
            assert_eq!(rule_path(normalised, true).as_deref(), Ok(want), "{normalised}");
        }
        for refused in ["/.../x", "/x/.%20", "/x/%20"] {
            assert_eq!(rule_path(refused, true), Err(PathError::DotsAndSpaces), "{refused}");
        }
        assert_eq!(rule_path("/admin./x", false).as_deref(), Ok("/admin./x"));
        assert_eq!(rule_path("/.../x", false).as_deref(), Ok("/.../x"));
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

    #[test]
    fn rules_see_escapes_decoded_as_servers_route_them() {
        for (normalised, want) in [
            ("/%40admin", "/@admin"),
            ("/gesch%C3%A4ft/x", "/gesch\u{e4}ft/x"),
            ("/a%20b%21%2C", "/a b!,"),
            ("/a%2Fb%5C", "/a%2Fb%5C"),
            ("/a%3Bb%3F%23", "/a%3Bb%3F%23"),
            ("/100%25", "/100%25"),
            ("/100%2541", "/100%2541"),
            ("/x%FF%C3%A4", "/x%FF\u{e4}"),
            ("/x%C3", "/x%C3"),
            ("/admin;p=%40/%40x;y", "/admin/@x"),
        ] {
            assert_eq!(rule_path(normalised, false).as_deref(), Ok(want), "{normalised}");
        }
        assert_eq!(rule_path("/GESCH%C3%84FT", true).as_deref(), Ok("/gesch\u{e4}ft"));
        assert_eq!(rule_path("/A%2FB", true).as_deref(), Ok("/a%2fb"));
        // A raw spelling and an escaped one come out alike.
        for raw in ["/gesch\u{e4}ft", "/gesch%c3%a4ft", "/gesch%C3%A4ft"] {
            let normalised = normalise(raw, false).unwrap();
            assert_eq!(rule_path(&normalised, false).as_deref(), Ok("/gesch\u{e4}ft"), "{raw}");
        }
    }

    #[test]
    fn configured_prefixes_take_the_form_paths_are_compared_in() {
        for (written, want) in [
            ("/admin", "/admin"),
            ("/admin/", "/admin/"),
            ("/gesch\u{e4}ft", "/gesch\u{e4}ft"),
            ("/gesch%c3%a4ft", "/gesch\u{e4}ft"),
            ("/%40me", "/@me"),
            ("/%7Euser", "/~user"),
            ("/a//b/./c/../d", "/a/b/d"),
            ("/My Docs", "/My Docs"),
            ("/100%25", "/100%25"),
        ] {
            assert_eq!(rule_prefix(written, false, false).as_deref(), Ok(want), "{written}");
        }
        assert_eq!(
            rule_prefix("/Gesch\u{c4}ft", false, true).as_deref(),
            Ok("/gesch\u{e4}ft")
        );
        assert_eq!(rule_prefix("/a%2Fb", true, false).as_deref(), Ok("/a%2Fb"));
        for (written, says) in [
            ("admin", "must start with /"),
            ("/a?b", "without a query"),
            ("/a#b", "without a query"),
            ("/a;jsessionid=1", "leave it out"),
            ("/100%", "write a `%` that is part of the path as %25"),
            ("/a%2Fb", "encoded slash"),
            ("/a\\b", "backslash"),
        ] {
            let e = rule_prefix(written, false, false).unwrap_err();
            assert!(e.contains(says), "{written}: {e}");
        }
    }

    #[test]
    fn regular_expressions_naming_escapes_rules_never_see_are_refused() {
        assert_eq!(rule_regex_problem("^/api/[0-9]+$", false), None);
        assert_eq!(rule_regex_problem("^/a%2Fb", false), None);
        assert_eq!(rule_regex_problem("^/100%25", false), None);
        assert_eq!(rule_regex_problem("^/a%2fb", true), None);
        assert_eq!(rule_regex_problem("^/x%[0-9A-F]{2}", false), None);
        let e = rule_regex_problem("^/My%20Docs", false).unwrap();
        assert!(
            e.contains("`%20` never matches") && e.contains("write the character itself"),
            "{e}"
        );
        assert!(rule_regex_problem("^/gesch%C3%A4ft", false).is_some());
        let e = rule_regex_problem("^/a%2fb", false).unwrap();
        assert!(e.contains("`%2F`"), "{e}");
    }
}
