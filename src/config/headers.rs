//! `[headers]`: which claim goes upstream in which header.

use std::collections::BTreeMap;

use http::header::HeaderName;

use super::checks::Problems;
use crate::identity::ClaimPath;

/// Validates `[headers]` (header name -> claim path); without the table, the default mapping. `None` when an
/// entry has a problem.
pub(super) fn validate_headers(
    p: &mut Problems,
    raw: Option<BTreeMap<String, String>>,
) -> Option<Vec<(HeaderName, ClaimPath)>> {
    let before = p.len();
    let headers = match raw {
        None => crate::identity::default_headers(),
        Some(table) => {
            let mut out = Vec::new();
            for (name, claim) in table {
                let key = format!("headers.{name}");
                match (HeaderName::from_bytes(name.as_bytes()), ClaimPath::parse(&claim)) {
                    (Ok(h), Ok(c)) => {
                        if crate::identity::is_reserved_header(&h) {
                            p.add(&key, "this header is managed by the gate and cannot carry a claim");
                        } else {
                            out.push((h, c));
                        }
                    }
                    (Err(_), _) => p.add(&key, "not a valid HTTP header name"),
                    (_, Err(e)) => p.add(&key, e),
                }
            }
            out
        }
    };

    (p.len() == before).then_some(headers)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::Config;

    #[test]
    fn header_table_replaces_the_defaults_and_refuses_bad_names() {
        let toml = format!("{MINIMAL}\n[headers]\n\"X-User-Id\" = \"sub\"\n");
        let c = Config::from_toml_str(&toml, no_env()).expect("valid");
        assert_eq!(c.headers.len(), 1);
        let bad = format!("{MINIMAL}\n[headers]\n\"X User\" = \"sub\"\n");
        let err = Config::from_toml_str(&bad, no_env()).unwrap_err();
        assert!(err.0[0].starts_with("headers.X User:"), "{err}");
    }
}
