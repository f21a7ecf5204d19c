//! PHP's multipart reading (`main/rfc1867.c`, PHP 8.2), step by step: every field it may register in `$_POST`,
//! which Symfony and Laravel read `_method` from. Its ways, each a way past a reading that does not follow them:
//!
//! - Lines end at a line feed (a CR before it dropped) and are C strings, cut at a NUL. A line with no line feed
//!   within the read buffer ([`buffer_size`] bytes) comes in pieces of that size, and a line that fills the buffer
//!   exactly is followed by an empty one.
//! - A part starts at a line that is exactly `--boundary`; its head ends at the first empty line, whatever lines come
//!   before it (a delimiter among them).
//! - A head line that starts with a blank or holds no `:` continues the field before it, joined without a blank
//!   (`name=` and `"_method"` on the next line make `name="_method"`).
//! - The `Content-Disposition` field's `;`-separated pairs are read with quotes, blanks skipped after `=` (a
//!   vertical tab too); the last `name` counts. A field's value runs from the head's end to the next
//!   `\n--boundary` (a CR before it dropped).
//! - Where PHP would not read a part's content (a file it skips, a part without a disposition), it looks for the
//!   next delimiter among the content's lines; both ways are followed here.

use std::collections::HashSet;

use super::Field;

/// The size of PHP's multipart read buffer: `FILLUNIT` (5 KiB), or the boundary's length and 6 when longer.
fn buffer_size(boundary: &[u8]) -> usize {
    (boundary.len() + 6).max(5 * 1024)
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `bytes` as C reads them: up to the first NUL.
fn c_str(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or_default()
}

/// How far a reading of one body may go, in bytes looked at, before it is refused as too tangled (each part start
/// read at most once; a body whose heads and contents overlap over and over would otherwise cost its square).
fn work_limit(body: &[u8]) -> usize {
    16 * body.len() + 64 * 1024
}

/// Every `(name, value)` PHP may take from the multipart `body` with `boundary` (file parts too: more is found than
/// PHP registers, never less). `Err` when the body is too tangled to read within [`work_limit`].
pub(super) fn fields<'b>(body: &'b [u8], boundary: &[u8]) -> Result<Vec<Field<'b>>, String> {
    fields_within(body, boundary, work_limit(body))
}

/// [`fields`], looking at no more than `limit` bytes in all.
fn fields_within<'b>(body: &'b [u8], boundary: &[u8], limit: usize) -> Result<Vec<Field<'b>>, String> {
    let reader = Reader {
        body,
        delimiter: [b"--", boundary].concat(),
        next_delimiter: [b"\n--", boundary].concat(),
        buffer: buffer_size(boundary),
        work: std::cell::Cell::new(0),
        limit,
    };
    let mut out = Vec::new();
    // Where a look for the next part started, and where parts started: each read once.
    let (mut scanned, mut read) = (HashSet::new(), HashSet::new());
    let mut scans = vec![0];
    while let Some(at) = scans.pop() {
        if !scanned.insert(at) {
            continue;
        }
        let Some(start) = reader.next_part(at)? else {
            continue;
        };
        if !read.insert(start) {
            continue;
        }
        let part = reader.head(start)?;
        let disposition = part
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(b"content-disposition"));
        let (name, filename) = disposition.map_or((None, None), |(_, value)| name_and_filename(value));
        // A field's content, read to the next delimiter; PHP goes on from there.
        let (content, after) = reader.content(part.content_start);
        if let Some(name) = name {
            out.push((name, content));
        }
        if filename.is_none() && disposition.is_some() {
            scans.push(after);
        } else {
            // A file (read, or skipped unread) or a part without a disposition (never read): both ways.
            scans.push(after);
            scans.push(part.content_start);
        }
    }
    Ok(out)
}

/// A part's head as PHP reads it.
struct Part {
    /// Its fields, continuation lines joined to the field before them.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where its content starts: after the empty line that ends the head (or the body's end).
    content_start: usize,
}

struct Reader<'b> {
    body: &'b [u8],
    /// `--boundary`, a part's first line.
    delimiter: Vec<u8>,
    /// `\n--boundary`, where a field's value ends.
    next_delimiter: Vec<u8>,
    buffer: usize,
    work: std::cell::Cell<usize>,
    limit: usize,
}

impl<'b> Reader<'b> {
    /// The line at `at` as PHP's `get_line` returns it (its text, and where the next starts); `None` at the body's
    /// end, or for a last line without a line feed shorter than the buffer (PHP never returns it).
    fn line(&self, at: usize) -> Result<Option<(&'b [u8], usize)>, String> {
        let rest = self.body.get(at..).unwrap_or_default();
        let window = &rest[..rest.len().min(self.buffer)];
        let line = match window.iter().position(|b| *b == b'\n') {
            Some(n) => {
                let text = &rest[..n];
                Some((text.strip_suffix(b"\r").unwrap_or(text), at + n + 1))
            }
            None if window.len() == self.buffer => Some((window, at + self.buffer)),
            None => None,
        };
        self.work.set(self.work.get() + line.map_or(0, |(_, next)| next - at));
        if self.work.get() > self.limit {
            return Err("a multipart body whose parts overlap too much to read".into());
        }
        Ok(line.map(|(text, next)| (c_str(text), next)))
    }

    /// Where the first part after `at` starts, after its delimiter line (`find_boundary`).
    fn next_part(&self, mut at: usize) -> Result<Option<usize>, String> {
        loop {
            let Some((text, next)) = self.line(at)? else {
                return Ok(None);
            };
            at = next;
            if text == self.delimiter.as_slice() {
                return Ok(Some(at));
            }
        }
    }

    /// The head of the part starting at `at` (`multipart_buffer_headers`).
    fn head(&self, mut at: usize) -> Result<Part, String> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut current: Option<(Vec<u8>, Vec<u8>)> = None;
        while let Some((text, next)) = self.line(at)? {
            at = next;
            if text.is_empty() {
                break;
            }
            let colon = match text.first() {
                Some(b) if !is_space(*b) => text.iter().position(|b| *b == b':'),
                _ => None,
            };
            match (colon, &mut current) {
                (Some(colon), _) => {
                    headers.extend(current.take());
                    // `do { value++; } while (isspace(*value));`
                    let value = &text[colon + 1..];
                    let value = &value[value.iter().take_while(|b| is_space(**b)).count()..];
                    current = Some((text[..colon].to_vec(), value.to_vec()));
                }
                (None, Some((_, value))) => value.extend_from_slice(text),
                (None, None) => {}
            }
        }
        headers.extend(current);
        Ok(Part {
            headers,
            content_start: at,
        })
    }

    /// A field's content from `at` (`multipart_buffer_read_body`): up to the next `\n--boundary`, a CR before it
    /// dropped, or to the body's end; and where PHP looks for the next part.
    fn content(&self, at: usize) -> (&'b [u8], usize) {
        let rest = self.body.get(at..).unwrap_or_default();
        let found = memchr::memmem::find(rest, &self.next_delimiter);
        self.work.set(self.work.get() + found.unwrap_or(rest.len()));
        match found {
            Some(n) => {
                let content = &rest[..n];
                (content.strip_suffix(b"\r").unwrap_or(content), at + n)
            }
            None => (rest, self.body.len()),
        }
    }
}

/// The `name` and `filename` of a `Content-Disposition` value as PHP reads its pairs (the last of each counts).
fn name_and_filename(value: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (mut name, mut filename) = (None, None);
    let mut rest = &value[value.iter().take_while(|b| is_space(**b)).count()..];
    while !rest.is_empty() {
        let (pair, after) = getword(rest, b';');
        rest = &after[after.iter().take_while(|b| is_space(**b)).count()..];
        if !pair.contains(&b'=') {
            continue;
        }
        let (key, value) = getword(pair, b'=');
        if key.eq_ignore_ascii_case(b"name") {
            name = Some(getword_conf(value));
        } else if key.eq_ignore_ascii_case(b"filename") {
            filename = Some(getword_conf(value));
        }
    }
    (name, filename)
}

/// `php_ap_getword`: the text up to `stop` outside quotes (a backslash before the quote escapes it), and the rest
/// after every `stop` that follows.
fn getword(line: &[u8], stop: u8) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < line.len() && line[pos] != stop {
        let quote = line[pos];
        pos += 1;
        if quote == b'"' || quote == b'\'' {
            while pos < line.len() && line[pos] != quote {
                pos += if line[pos] == b'\\' && line.get(pos + 1) == Some(&quote) {
                    2
                } else {
                    1
                };
            }
            pos = (pos + 1).min(line.len());
        }
    }
    let word = &line[..pos];
    let skip = line[pos..].iter().take_while(|b| **b == stop).count();
    (word, &line[pos + skip..])
}

/// `php_ap_getword_conf`: blanks skipped, then a quoted value (to its quote, `\\` and `\` before the quote
/// unescaped) or a bare one (to a blank, `\\` unescaped).
fn getword_conf(text: &[u8]) -> Vec<u8> {
    let text = &text[text.iter().take_while(|b| is_space(**b)).count()..];
    let (text, quote) = match text.first() {
        Some(q @ (b'"' | b'\'')) => (&text[1..], Some(*q)),
        _ => (
            &text[..text.iter().position(|b| is_space(*b)).unwrap_or(text.len())],
            None,
        ),
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() && Some(text[i]) != quote {
        let next = text.get(i + 1).copied();
        if text[i] == b'\\' && (next == Some(b'\\') || (quote.is_some() && next == quote)) {
            i += 1;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(body: &str) -> Vec<(String, String)> {
        fields(body.as_bytes(), b"B")
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(&n).into(), String::from_utf8_lossy(v).into()))
            .collect()
    }

    fn has(body: &str, name: &str, value: &str) -> bool {
        names(body).iter().any(|(n, v)| n == name && v == value)
    }

    #[test]
    fn fields_are_read_as_php_reads_them() {
        let plain = "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B\r\n\
                     Content-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--B--\r\n";
        assert!(
            has(plain, "a", "1") && has(plain, "_method", "DELETE"),
            "{:?}",
            names(plain)
        );
        // Folded fields, with or without a leading blank.
        for head in [
            "Content-Disposition: form-data; name=\r\n\"_method\"",
            "Content-Disposition: form-data; name=\r\n \"_method\"",
            "Content-Disposition: form-data; na\r\nme=_method",
            "Content-Disposition: form-data; name=\"_me\r\nthod\"",
            "Content-Disposition: form-data; name=\r\n\r\"_method\"",
            "Content-Disposition: form-data; name=\x0b\"_method\"",
            "Content-Disposition: form-data; name=_method\x0bx",
            "Content-Disposition: form-data; name=_method\0x",
            "content-disposition:\x0bform-data; name=_method",
        ] {
            let body = format!("--B\r\n{head}\r\n\r\nDELETE\r\n--B--\r\n");
            assert!(has(&body, "_method", "DELETE"), "{head:?}: {:?}", names(&body));
        }
        // A head runs over a delimiter line to its empty line; a line starting with a NUL is empty.
        assert!(has(
            "--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n--B\n\nDELETE\r\n--B--",
            "_method",
            "DELETE"
        ));
        assert!(has(
            "--B\r\nContent-Disposition: form-data; name=_method\r\n\0x\r\nDELETE\r\n--B--",
            "_method",
            "DELETE"
        ));
        // A head line of exactly the buffer's size is followed by an empty line.
        let pad = "x".repeat(5 * 1024 - "Content-Disposition: form-data; name=_method; x=".len());
        let long = format!("--B\r\nContent-Disposition: form-data; name=_method; x={pad}\nDELETE\r\n--B--\r\n");
        assert!(has(&long, "_method", "DELETE"), "{:?}", names(&long));
        // Only a line that is the delimiter starts a part; the closing one does not.
        assert!(names("--B--\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE").is_empty());
        assert!(names("--B \r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE").is_empty());
        // A key is the text before `=` as it stands.
        assert!(names("--B\r\nContent-Disposition: form-data; name =_method\r\n\r\nDELETE\r\n--B--").is_empty());
    }

    #[test]
    fn reading_stays_within_its_bound() {
        // Many delimiter lines in one head: read once, in one pass.
        let body = "--B\n".repeat(100_000);
        assert!(fields(body.as_bytes(), b"B").unwrap().is_empty());
        let plain = b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B--\r\n";
        assert!(fields_within(plain, b"B", 20).unwrap_err().contains("overlap"));
        assert_eq!(fields_within(plain, b"B", 200).unwrap().len(), 1);
    }
}
