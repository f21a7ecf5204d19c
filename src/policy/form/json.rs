//! A JSON body's top-level fields, read as Laravel's `json_decode` input holds them, without building the document:
//! nesting as deep as PHP allows (512) costs no stack here, where a recursive parser stops at its own limit (serde's
//! 128) and would see no field at all.

/// Every string value of a top-level `key` in a JSON object `body` (each copy: PHP keeps the last), and the first
/// element of an array value when it is a string (Express's method-override takes it). Read up to the
/// first thing that is not JSON: PHP would take nothing from such a body, so what was found before it is more than
/// it takes, never less.
pub(super) fn top_level_strings(body: &[u8], key: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut r = Reader { text: body, at: 0 };
    r.blanks();
    if !r.eat(b'{') {
        return out;
    }
    loop {
        r.blanks();
        if r.eat(b'}') {
            return out;
        }
        let Some(name) = r.string() else {
            return out;
        };
        r.blanks();
        if !r.eat(b':') {
            return out;
        }
        r.blanks();
        // Express's method-override takes an array's first element: `{"_method":["DELETE"]}`.
        let in_array = name.as_bytes() == key && r.eat(b'[');
        if in_array {
            r.blanks();
        }
        if r.peek() == Some(b'"') {
            let Some(value) = r.string() else {
                return out;
            };
            if name.as_bytes() == key {
                out.push(value);
            }
            // The rest of the array, its first element read.
            if in_array && !r.skip_value(1) {
                return out;
            }
        } else if !r.skip_value(usize::from(in_array)) {
            return out;
        }
        r.blanks();
        if !r.eat(b',') {
            return out;
        }
    }
}

struct Reader<'b> {
    text: &'b [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.at += usize::from(hit);
        hit
    }

    /// JSON's blanks (RFC 8259 §2).
    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string at `at`, its escapes decoded (a lone surrogate as U+FFFD); `None` when it is not one.
    fn string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut units: Vec<u16> = Vec::new();
        let mut out = String::new();
        let flush = |units: &mut Vec<u16>, out: &mut String| {
            out.extend(char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)));
        };
        let start = self.at;
        let mut raw = start;
        loop {
            let b = self.peek()?;
            match b {
                b'"' => {
                    flush(&mut units, &mut out);
                    out.push_str(&String::from_utf8_lossy(&self.text[raw..self.at]));
                    self.at += 1;
                    return Some(out);
                }
                b'\\' => {
                    let escape = self.text.get(self.at + 1).copied()?;
                    // Units of `\u` escapes in a row stay together (a surrogate pair), until another character.
                    if escape != b'u' {
                        flush(&mut units, &mut out);
                    }
                    out.push_str(&String::from_utf8_lossy(&self.text[raw..self.at]));
                    self.at += 2;
                    match escape {
                        b'u' => {
                            let hex = self.text.get(self.at..self.at + 4)?;
                            let unit = u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            units.push(unit);
                            self.at += 4;
                            // A surrogate pair comes as two escapes in a row: keep the units together.
                            if self.text.get(self.at..self.at + 2) == Some(b"\\u") {
                                raw = self.at;
                                continue;
                            }
                            flush(&mut units, &mut out);
                        }
                        b'"' | b'\\' | b'/' => out.push(char::from(escape)),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        _ => return None,
                    }
                    raw = self.at;
                }
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    /// Steps over a value that is not a string (a number, literal, array or object, to any depth, strings inside
    /// read as strings), from inside `depth` arrays or objects to the end of the outermost; `false` when it ends
    /// before its end.
    fn skip_value(&mut self, mut depth: usize) -> bool {
        loop {
            match self.peek() {
                None => return false,
                Some(b'"') => {
                    if self.string().is_none() {
                        return false;
                    }
                }
                Some(b'[' | b'{') => {
                    depth += 1;
                    self.at += 1;
                }
                Some(b']' | b'}') if depth > 0 => {
                    depth -= 1;
                    self.at += 1;
                    if depth == 0 {
                        return true;
                    }
                }
                // A `,` or closing bracket of the top-level object ends a scalar there.
                Some(b',' | b']' | b'}') if depth == 0 => return true,
                Some(_) => self.at += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(body: &str) -> Vec<String> {
        top_level_strings(body.as_bytes(), b"_method")
    }

    #[test]
    fn only_top_level_strings_count_at_any_depth() {
        assert_eq!(found(r#"{"a":1,"_method":"delete"}"#), ["delete"]);
        assert_eq!(
            found(r#"{"a":[1,{"b":2,"c":[3,4]}],"d":true,"_method":"PUT"}"#),
            ["PUT"]
        );
        assert_eq!(
            found(r#" { "\u005fmethod" : "PUT" , "_method":"PATCH"} "#),
            ["PUT", "PATCH"]
        );
        assert!(found(r#"{"a":{"_method":"DELETE"},"_method":[["PUT"]],"b":[1,{"c":"}"}]}"#).is_empty());
        // An array's first element, as Express's method-override takes it; the rest of the object read on.
        assert_eq!(
            found(
                r#"{"_method": [ "put" , "x y", {"a": "]"}], "b": 1, "_method": [1, "PATCH"], "_method": ["DELETE"]}"#
            ),
            ["put", "DELETE"]
        );
        assert_eq!(found(r#"{"_method":[],"_method":"PATCH"}"#), ["PATCH"]);
        assert!(found(r#"[{"_method":"DELETE"}]"#).is_empty());
        assert!(found("_method=DELETE").is_empty());
        // Deeper than serde's recursion limit, as PHP reads it.
        let deep = format!(r#"{{"x":{}1{},"_method":"DELETE"}}"#, "[".repeat(300), "]".repeat(300));
        assert_eq!(found(&deep), ["DELETE"]);
        assert_eq!(found(r#"{"_method":"DEL\u0045TE", "b": tru"#), ["DELETE"]);
        assert_eq!(found(r#"{"_method":"\ud83d\ude00\ud800x"}"#), ["\u{1f600}\u{fffd}x"]);
    }
}
