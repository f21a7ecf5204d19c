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
                        if let Some(why) = crate::identity::reserved_header(&h) {
                            p.add(&key, why);
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

    #[test]
    fn headers_the_gate_frames_by_or_sets_cannot_carry_a_claim() {
        let toml = format!(
            "{MINIMAL}\n[headers]\n\"TE\" = \"sub\"\n\"Content-Type\" = \"sub\"\n\"X-Real-IP\" = \"sub\"\n\
             \"X_Forwarded_Prefix\" = \"sub\"\n\"X-Logto-Gate-Assertion\" = \"sub\"\n\"X-Request-Id\" = \"sub\"\n\
             \"X-HTTP-Method-Override\" = \"sub\"\n\"X-Auth-Request-Email\" = \"email\"\n"
        );
        let text = Config::from_toml_str(&toml, no_env()).unwrap_err().to_string();
        for want in [
            "headers.TE: this header frames the request or its connection",
            "headers.Content-Type: this header frames the request or its connection",
            "headers.X-Real-IP: this header is managed by the gate",
            "headers.X_Forwarded_Prefix: this header is managed by the gate",
            "headers.X-Logto-Gate-Assertion: this header is managed by the gate",
            "headers.X-Request-Id: this header is managed by the gate",
            "headers.X-HTTP-Method-Override: this header is managed by the gate",
            "headers.X-Auth-Request-Email: this header is managed by the gate",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        // Authorization carries a claim unless the gate sends its own there.
        let mapped = format!("{MINIMAL}\n[headers]\n\"Authorization\" = \"sub\"\n");
        assert!(Config::from_toml_str(&mapped, no_env()).is_ok());
        for (key, says) in [
            ("pass_access_token", "upstream.pass_access_token sends the access token"),
            (
                "protected_app",
                "upstream.protected_app sends the app's Basic credentials",
            ),
        ] {
            let toml = mapped.replace("[upstream]\n", &format!("[upstream]\n{key} = true\n"));
            let text = Config::from_toml_str(&toml, no_env()).unwrap_err().to_string();
            assert!(
                text.contains(&format!("headers.authorization: {says} in this header")),
                "{text}"
            );
        }
    }
}
