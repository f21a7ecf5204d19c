//! `[response_headers]`: fields the gate puts on every answer it sends a client (`Strict-Transport-Security` when it
//! terminates TLS, `Content-Security-Policy`), replacing the app's and adding to its own pages where they set none,
//! or removes from the app's (`Server`, `X-Powered-By`).

use std::collections::BTreeMap;

use http::header::{HeaderName, HeaderValue};

use super::checks::Problems;

/// Why the gate cannot set or remove `name` on every answer, or `None` when it can:
/// - fields that frame an answer (RFC 9110 §8.3-8.6, §14.4; RFC 9112 §6) or belong to its connection (the
///   hop-by-hop fields, RFC 9110 §7.6.1, [`crate::http1::hop::is_hop_by_hop`]): a fixed value would misdescribe
///   every body, or be dropped on the way;
/// - fields each answer has its own of (RFC 9110 §6.6.1, §8.7-8.8, §10.2.2, §11.6.1): its date, its validators,
///   where it redirects (`Location`, `Refresh`, which the gate also rewrites), what it asks a client for, the
///   request id;
/// - `Set-Cookie`, where the gate's session travels and the app's cookies too;
/// - the fields caches read to decide what to keep and for whom (RFC 9111 §5, [`crate::proxy::caching`]): the gate
///   makes a signed-in answer `private`, and a fixed value there would undo that or mislead a cache.
pub(crate) fn reserved_response_header(name: &HeaderName) -> Option<&'static str> {
    const FRAMING: [&str; 5] = [
        "content-length",
        "content-encoding",
        "content-range",
        "content-type",
        "content-location",
    ];
    const PER_ANSWER: [&str; 7] = [
        "date",
        "etag",
        "last-modified",
        "location",
        "refresh",
        "www-authenticate",
        "x-request-id",
    ];
    const CACHING: [&str; 5] = ["cache-control", "expires", "pragma", "vary", "age"];
    let n = name.as_str();
    if FRAMING.contains(&n) || crate::http1::hop::is_hop_by_hop(name) {
        Some("frames each answer or belongs to its connection; a fixed value would misdescribe it")
    } else if PER_ANSWER.contains(&n) {
        Some("each answer has its own (its date, validators, where it redirects, what it asks for, its request id)")
    } else if n == "set-cookie" {
        Some("the gate's session cookies and the app's own travel in it; set cookies in the app")
    } else if CACHING.contains(&n) || crate::proxy::caching::overrides_cache_control(name) {
        Some("caches read it to decide what to keep and for whom; the gate makes signed-in answers private")
    } else {
        None
    }
}

/// Validates `[response_headers]`, or an `[[upstreams]]` entry's (`section` names it for messages): header name ->
/// value, an empty value removing the app's field; names and values as HTTP allows them (RFC 9110 §5.1, §5.5:
/// visible ASCII and spaces, none at either end), none of the [`reserved_response_header`]s. `None` when an entry
/// has a problem.
pub(super) fn validate_response_headers(
    p: &mut Problems,
    section: &str,
    raw: Option<BTreeMap<String, String>>,
) -> Option<Vec<(HeaderName, Option<HeaderValue>)>> {
    let before = p.len();
    let mut out = Vec::new();
    for (name, value) in raw.unwrap_or_default() {
        let key = format!("{section}.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            p.add(&key, "not a valid HTTP header name");
            continue;
        };
        if let Some(why) = reserved_response_header(&header) {
            p.add(&key, why);
            continue;
        }
        if out.iter().any(|(have, _)| *have == header) {
            p.add(&key, "given twice (header names ignore letter case)");
            continue;
        }
        let visible = value.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
        if !visible || value.trim() != value {
            p.add(
                &key,
                "a value must be visible ASCII and spaces, none at either end (an empty value removes the app's field)",
            );
            continue;
        }
        if value.is_empty() {
            out.push((header, None));
            continue;
        }
        match HeaderValue::from_str(&value) {
            Ok(v) => out.push((header, Some(v))),
            Err(_) => p.add(&key, "not a valid HTTP header value"),
        }
    }
    (p.len() == before).then_some(out)
}

/// An `[[upstreams]]` entry's `response_headers` over `[response_headers]`: the entry's value (or removal) where both
/// name a field, the rest of each.
pub(super) fn merged(
    shared: &[(HeaderName, Option<HeaderValue>)],
    own: Vec<(HeaderName, Option<HeaderValue>)>,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    let mut out: Vec<_> = shared
        .iter()
        .filter(|(name, _)| !own.iter().any(|(mine, _)| mine == name))
        .cloned()
        .collect();
    out.extend(own);
    out
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::Config;

    fn with_table(table: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{MINIMAL}\n[response_headers]\n{table}"), no_env()).map_err(|e| e.to_string())
    }

    #[test]
    fn fields_to_set_and_to_remove_are_read_in_any_letter_case() {
        let c = with_table("\"Strict-Transport-Security\" = \"max-age=63072000\"\n\"server\" = \"\"\n").unwrap();
        let fields: Vec<_> = c
            .response_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref().map(|v| v.to_str().unwrap_or("?"))))
            .collect();
        assert_eq!(
            fields,
            [
                ("strict-transport-security", Some("max-age=63072000")),
                ("server", None)
            ]
        );
        assert!(Config::from_toml_str(MINIMAL, no_env())
            .unwrap()
            .response_headers
            .is_empty());
    }

    #[test]
    fn fields_the_gate_or_each_answer_owns_and_bad_values_are_refused_by_key() {
        for (table, says) in [
            (
                "\"Set-Cookie\" = \"a=b\"",
                "response_headers.Set-Cookie: the gate's session cookies",
            ),
            (
                "\"Content-Length\" = \"0\"",
                "response_headers.Content-Length: frames each answer",
            ),
            (
                "\"Cache-Control\" = \"public\"",
                "response_headers.Cache-Control: caches read it",
            ),
            (
                "\"CDN-Cache-Control\" = \"max-age=60\"",
                "response_headers.CDN-Cache-Control: caches read it",
            ),
            ("\"Vary\" = \"Accept\"", "response_headers.Vary: caches read it"),
            (
                "\"ETag\" = \"\\\"1\\\"\"",
                "response_headers.ETag: each answer has its own",
            ),
            (
                "\"Location\" = \"/\"",
                "response_headers.Location: each answer has its own",
            ),
            (
                "\"X-Request-Id\" = \"1\"",
                "response_headers.X-Request-Id: each answer has its own",
            ),
            (
                "\"Bad Name\" = \"x\"",
                "response_headers.Bad Name: not a valid HTTP header name",
            ),
            (
                "\"X-A\" = \"line\\r\\nX-B: injected\"",
                "response_headers.X-A: a value must be visible ASCII",
            ),
            (
                "\"X-A\" = \" padded\"",
                "response_headers.X-A: a value must be visible ASCII",
            ),
            (
                "\"X-A\" = \"caf\u{e9}\"",
                "response_headers.X-A: a value must be visible ASCII",
            ),
            ("\"X-A\" = \"1\"\n\"x-a\" = \"2\"", "response_headers.x-a: given twice"),
        ] {
            let err = with_table(table).err().unwrap_or_default();
            assert!(err.contains(says), "{table}: {err}");
        }
    }

    #[test]
    fn an_entrys_fields_go_over_the_shared_ones_name_by_name() {
        use http::header::{HeaderName, HeaderValue};
        let f =
            |n: &'static str, v: Option<&'static str>| (HeaderName::from_static(n), v.map(HeaderValue::from_static));
        let shared = [
            f("content-security-policy", Some("default-src 'self'")),
            f("server", None),
        ];
        let merged = super::merged(
            &shared,
            vec![
                f("content-security-policy", Some("frame-ancestors 'self'")),
                f("x-app", None),
            ],
        );
        assert_eq!(
            merged,
            [
                f("server", None),
                f("content-security-policy", Some("frame-ancestors 'self'")),
                f("x-app", None)
            ]
        );
        assert_eq!(super::merged(&shared, Vec::new()), shared);
    }
}
