//! Rack 2.2's multipart reading (`Rack::Multipart::Parser`), step by step: every part `Rack::MethodOverride` (Rails)
//! may take `_method` from. Its ways, each a way past a reading that does not follow them:
//!
//! - A delimiter line is one that is `--boundary` (or `--boundary--`) once blanks and NULs around it are dropped
//!   (Ruby's `strip`): ` --B` starts a part. The first may be a closing one.
//! - A head runs to the first CRLF CRLF (`/(.*?\r\n)\r\n/m`): a bare line feed before a CRLF ends no head.
//! - The name is the last `; name=` before a `:` after `Content-Disposition:` (on later lines too), a quoted string
//!   (`\"` inside it) or a token (which a vertical tab ends); else the rest of a `Content-ID:` line.
//! - A part's content ends at the first `--boundary` followed by CRLF or `--`, anywhere, with the CRLF before it if
//!   there is one; the reader then skips two bytes, whatever they are, and looks for a delimiter line again.
//! - The body is read in pieces of 1 MiB; looking for a delimiter line, a line is cut where a piece ends (which
//!   only bodies over 1 MiB have).

use super::Field;

/// `Rack::Multipart::Parser::BUFSIZE`: how much of the body Rack reads at a time.
const PIECE: usize = 1 << 20;

/// Ruby's `\s`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What `consume_boundary` found.
#[derive(PartialEq)]
enum Token {
    Boundary,
    End,
}

/// Every `(name, value)` Rack may take from the multipart `body` with `boundary` (file parts too: more is found
/// than Rack takes, never less).
pub(super) fn fields<'b>(body: &'b [u8], boundary: &[u8]) -> Vec<Field<'b>> {
    let full = [b"--", boundary].concat();
    let end = [full.as_slice(), b"--"].concat();
    let mut out = Vec::new();
    let mut at = 0;
    // FAST_FORWARD: a body that is only a closing delimiter and its line break holds nothing.
    match consume_boundary(body, &mut at, &full, &end, true) {
        None => return out,
        Some(Token::End) if at == boundary.len() + 6 && at == body.len() => return out,
        Some(_) => {}
    }
    loop {
        // MIME_HEAD
        let Some(n) = find(&body[at..], b"\r\n\r\n") else {
            return out;
        };
        let head = &body[at..at + n + 2];
        at += n + 4;
        // MIME_BODY
        let Some(n) = content_end(&body[at..], &full) else {
            return out;
        };
        if let Some(name) = name(head) {
            out.push((name, &body[at..at + n]));
        }
        at += n + 2;
        // CONSUME_TOKEN
        if consume_boundary(body, &mut at, &full, &end, false) != Some(Token::Boundary) {
            return out;
        }
    }
}

/// `consume_boundary`: reads lines from `at` until one is a delimiter. A line ends after a line feed, or where a
/// piece of [`PIECE`] bytes ends. At a piece's end (where Rack has read no further yet) the search goes on with the
/// next piece while `fast_forward` (looking for the first delimiter), and ends otherwise.
fn consume_boundary(body: &[u8], at: &mut usize, full: &[u8], end: &[u8], fast_forward: bool) -> Option<Token> {
    loop {
        if *at >= body.len() {
            return None;
        }
        let piece_end = (*at / PIECE + 1) * PIECE;
        let line_end = body[*at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |n| *at + n + 1)
            .min(piece_end);
        let line = &body[*at..line_end];
        *at = line_end;
        let stripped = strip(line);
        if stripped == full {
            return Some(Token::Boundary);
        }
        if stripped == end {
            return Some(Token::End);
        }
        if *at >= body.len() || (*at == piece_end && !fast_forward) {
            return None;
        }
    }
}

/// Ruby's `String#strip`: blanks and NULs dropped at both ends.
fn strip(line: &[u8]) -> &[u8] {
    let gone = |b: &u8| *b == 0 || is_space(*b);
    let start = line.iter().take_while(|b| gone(b)).count();
    let line = &line[start..];
    &line[..line.len() - line.iter().rev().take_while(|b| gone(b)).count()]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Where a part's content in `rest` ends (`/(?:\r\n)?--boundary(?:\r\n|--)/m`): at the first delimiter followed
/// by CRLF or `--`, anywhere, or at the CRLF just before it.
fn content_end(rest: &[u8], full: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(n) = find(&rest[from..], full) {
        let k = from + n;
        let after = &rest[k + full.len()..];
        if after.starts_with(b"\r\n") || after.starts_with(b"--") {
            return Some(if k >= 2 && &rest[k - 2..k] == b"\r\n" { k - 2 } else { k });
        }
        from = k + 1;
    }
    None
}

/// The part's name as Rack finds it in its `head` (`MULTIPART_CONTENT_DISPOSITION`, then `MULTIPART_CONTENT_ID`).
/// Linear in the head: each stretch of it is looked at a bounded number of times, however the pattern would
/// backtrack.
fn name(head: &[u8]) -> Option<Vec<u8>> {
    let lower = head.to_ascii_lowercase();
    let disposition = b"content-disposition:";
    // From here on the head holds no quote a quoted value could end at ([`quoted_value`]).
    let mut dead_from = head.len();
    let mut from = 0;
    while let Some(n) = find(&lower[from..], disposition) {
        let start = from + n + disposition.len();
        from = from + n + 1;
        // `[^:]*;`: the last `;` before the next `:` whose `\s*name=VALUE` matches (greedy, backtracking).
        let stop = head[start..]
            .iter()
            .position(|b| *b == b':')
            .map_or(head.len(), |n| start + n);
        for semi in (start..stop).rev().filter(|i| head[*i] == b';') {
            let mut at = semi + 1;
            at += head[at..].iter().take_while(|b| is_space(**b)).count();
            if !lower[at..].starts_with(b"name=") {
                continue;
            }
            let at = at + 5;
            let end = if head.get(at) == Some(&b'"') {
                let (end, dead) = quoted_value(head, at, dead_from);
                dead_from = dead;
                end
            } else {
                let token = head[at..]
                    .iter()
                    .take_while(|b| !is_space(**b) && !b"()<>,;:\\\"/[]?=".contains(b))
                    .count();
                (token > 0).then_some(at + token)
            };
            if let Some(end) = end {
                return Some(dequote(&head[at..end]));
            }
        }
    }
    let id = b"content-id:";
    let n = find(&lower, id)?;
    let rest = &head[n + id.len()..];
    let rest = &rest[rest.iter().take_while(|b| is_space(**b)).count()..];
    let value = &rest[..rest
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(rest.len())];
    (!value.is_empty()).then(|| value.to_vec())
}

/// Where `"(?:\\"|[^"])*"` at `head[at]` ends (past its closing quote): at the first quote after `at` not after a
/// backslash, or, failing that, at the last backslash-quote (as the pattern backtracks to it); `None` when neither
/// comes. Nothing from `dead_from` on can end it (an earlier value found nothing there), so only the stretch before
/// it is looked at; the new such position comes back.
fn quoted_value(head: &[u8], at: usize, dead_from: usize) -> (Option<usize>, usize) {
    let mut i = at + 1;
    let mut last_pair = None;
    while i < dead_from {
        match head[i] {
            b'\\' if head.get(i + 1) == Some(&b'"') => {
                last_pair = Some(i);
                i += 2;
            }
            b'"' => return (Some(i + 1), dead_from),
            _ => i += 1,
        }
    }
    match last_pair {
        Some(pair) => (Some(pair + 2), dead_from),
        None => (None, at + 1),
    }
}

/// `Rack::Auth::Digest::Params.dequote`: the quotes dropped when nothing between them is a line feed, then every
/// backslash before another character than a line feed.
fn dequote(value: &[u8]) -> Vec<u8> {
    let inner = match value {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\n') => inner,
        _ => value,
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && inner.get(i + 1).is_some_and(|b| *b != b'\n') {
            i += 1;
        }
        out.push(inner[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(body: &str, name: &str, value: &str) -> bool {
        fields(body.as_bytes(), b"B")
            .iter()
            .any(|(n, v)| n == name.as_bytes() && *v == value.as_bytes())
    }

    #[test]
    fn fields_are_read_as_rack_reads_them() {
        let plain = "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B\r\n\
                     Content-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--B--\r\n";
        assert!(has(plain, "a", "1") && has(plain, "_method", "DELETE"));
        // A bare line feed before a CRLF ends no head.
        assert!(has(
            "--B\r\nX: 1\n\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B--\r\n",
            "_method",
            "DELETE"
        ));
        // Blanks around a delimiter line; the name after a vertical tab; an escaped quote; a Content-ID.
        assert!(has(
            " --B\r\nContent-Disposition: form-data; name=_method\r\n\r\nPUT\r\n--B--",
            "_method",
            "PUT"
        ));
        assert!(has(
            "--B\r\nContent-Disposition: form-data;\x0bname=_method\x0bx\r\n\r\nPUT\r\n--B--",
            "_method",
            "PUT"
        ));
        assert!(has(
            "--B\r\nContent-Disposition: form-data; name=\"\\_method\"\r\n\r\nPUT\r\n--B--",
            "_method",
            "PUT"
        ));
        assert!(has(
            "--B\r\nContent-ID:\r\n _method\r\n\r\nPUT\r\n--B--",
            "_method",
            "PUT"
        ));
        // The content ends at a delimiter anywhere; two bytes on, the next delimiter line starts a part.
        assert!(has(
            "--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx--B\r\n--B\r\n\
             Content-Disposition: form-data; name=_method\r\n\r\nPUT\r\n--B--",
            "_method",
            "PUT"
        ));
        // Names as Ruby 3.1 read them with Rack's own pattern and `dequote` (checked against it).
        for (head, want) in [
            (
                "Content-Disposition: form-data; name=\"_method\\\"x\r\n",
                &b"_method\\"[..],
            ),
            (
                "Content-Disposition: form-data; name=\"a\"; name=\"_method\"\r\n",
                b"_method",
            ),
            ("Content-Disposition: form-data; name=\"_me\\thod\"\r\n", b"_method"),
            (
                "Content-Disposition: form-data; name=\"x\" ; name=\"_method\r\n\", y\r\n",
                b"\"_method\r\n\"",
            ),
            (
                "Content-Disposition: form-data; name=\"_method\"; x=\"a:b\"; name=zz\r\n",
                b"_method",
            ),
        ] {
            assert_eq!(name(head.as_bytes()).as_deref(), Some(want), "{head:?}");
        }
        // A quoted name holding a line feed keeps its quotes.
        assert!(!has(
            "--B\r\nContent-Disposition: form-data; name=\"_method\n\"\r\n\r\nPUT\r\n--B--",
            "_method",
            "PUT"
        ));
    }
}
