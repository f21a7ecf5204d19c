//! `[access]` and `[[rules]]`: who may reach which paths.

use std::sync::Arc;

use super::checks::Problems;
use super::raw::RawRule;
use crate::policy::{Access, PathMatch, Policy, Requirements, Rule};
use crate::proxy::trusted::Cidr;

/// With `upstream.read_form_method = false` (`read`), one line for each rule that names `PUT`, `PATCH` or `DELETE`
/// but not `POST` in `methods` and is not public: Rails, Laravel, Symfony and Express's `method-override` take a
/// `POST` whose form holds `_method=DELETE` for a `DELETE`, and the gate then does not read request bodies (a
/// query's `_method` it does decide on). Such a rule is then only as strict as whatever decides the `POST`.
pub(super) fn form_override_caveats(policy: &Policy, read: bool) -> impl Iterator<Item = String> + '_ {
    policy.rules.iter().enumerate().filter_map(move |(i, rule)| {
        if read {
            return None;
        }
        let methods = rule.methods.as_ref()?;
        let named = methods
            .iter()
            .find(|m| matches!(m.as_str(), "PUT" | "PATCH" | "DELETE"))?;
        if methods.iter().any(|m| m == "POST") || matches!(rule.access, Access::Public) {
            return None;
        }
        Some(format!(
            "rules[{i}].methods: names {named} but not POST. Apps that take a form's `_method` field for the method \
             (Rails, Laravel, Symfony, Express's method-override) serve a POST as {named}, and with \
             upstream.read_form_method = false the gate does not read request bodies: add POST to this rule, give \
             the POST the same requirements, or leave read_form_method on"
        ))
    })
}

/// Validates the `[access]` default and the `[[rules]]` (each named by its index); `None` when one has a
/// problem. `case_insensitive_paths` (`server.case_insensitive_paths`) makes their paths match in any letter case;
/// prefixes are compared in the form requests' paths are ([`crate::policy::path::rule_prefix`]), with `%2F` kept
/// when `allow_encoded_slashes` (`server.allow_encoded_slashes`).
pub(super) fn validate_policy(
    p: &mut Problems,
    access: Option<&RawRule>,
    rules_raw: &[RawRule],
    case_insensitive_paths: bool,
    allow_encoded_slashes: bool,
) -> Option<Policy> {
    let before = p.len();
    let default_access = match access {
        None => Access::Require(Arc::default()),
        Some(a) => {
            for (key, set) in [
                ("path", a.path.is_some()),
                ("prefix", a.prefix.is_some()),
                ("methods", a.methods.is_some()),
                ("host", a.host.is_some()),
                ("client_ips", a.client_ips.is_some()),
            ] {
                if set {
                    p.add(
                        &format!("access.{key}"),
                        "the default applies to every path; use [[rules]] to match",
                    );
                }
            }
            access_of(p, "access", a)
        }
    };
    let mut rules = Vec::new();
    for (i, r) in rules_raw.iter().enumerate() {
        let key = format!("rules[{i}]");
        let path = match (&r.path, &r.prefix) {
            (Some(_), Some(_)) => {
                p.add(&key, "set either path (a regular expression) or prefix, not both");
                None
            }
            (None, None) => {
                p.add(&key, "needs path (a regular expression) or prefix");
                None
            }
            (Some(re), None) => match crate::policy::path::rule_regex_problem(re, case_insensitive_paths) {
                Some(problem) => {
                    p.add(&format!("{key}.path"), problem);
                    None
                }
                None => match regex::RegexBuilder::new(&format!("^(?:{re})"))
                    .case_insensitive(case_insensitive_paths)
                    .build()
                {
                    Ok(r) => Some(PathMatch::Regex(r)),
                    Err(e) => {
                        p.add(
                            &format!("{key}.path"),
                            format!("`{re}` is not a valid regular expression: {e}"),
                        );
                        None
                    }
                },
            },
            (None, Some(prefix)) => {
                match crate::policy::path::rule_prefix(prefix, allow_encoded_slashes, case_insensitive_paths) {
                    Ok(prefix) => Some(PathMatch::Prefix(prefix)),
                    Err(problem) => {
                        p.add(&format!("{key}.prefix"), problem);
                        None
                    }
                }
            }
        };
        if r.methods.as_deref() == Some(&[]) {
            p.add(
                &format!("{key}.methods"),
                "is an empty list, so the rule would never apply: list methods, or leave the key out for every method",
            );
        }
        let methods = r.methods.as_ref().map(|ms| {
            ms.iter()
                .map(|m| {
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                        p.add(&format!("{key}.methods"), format!("`{m}` is not an HTTP method"));
                    }
                    m.to_ascii_uppercase()
                })
                .collect()
        });
        let host = r.host.as_deref().map(|h| {
            super::checks::host_name(h).unwrap_or_else(|problem| {
                p.add(&format!("{key}.host"), problem);
                String::new()
            })
        });
        let client_ips = r.client_ips.as_ref().map(|ranges| {
            if ranges.is_empty() {
                p.add(
                    &format!("{key}.client_ips"),
                    "is an empty list, so the rule would never apply: list ranges, or leave the key out for every client",
                );
            }
            ranges
                .iter()
                .filter_map(|range| match Cidr::parse(range) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        p.add(&format!("{key}.client_ips"), e);
                        None
                    }
                })
                .collect()
        });
        let access = access_of(p, &key, r);
        if let Some(path) = path {
            rules.push(Rule {
                path,
                methods,
                host,
                client_ips,
                access,
            });
        }
    }
    let policy = Policy {
        rules,
        default: default_access,
        case_insensitive: case_insensitive_paths,
    };
    (p.len() == before).then_some(policy)
}

fn lowered(v: &Option<Vec<String>>) -> Vec<String> {
    v.iter().flatten().map(|s| s.trim().to_ascii_lowercase()).collect()
}

fn kept(v: &Option<Vec<String>>) -> Vec<String> {
    v.iter().flatten().map(|s| s.trim().to_owned()).collect()
}

/// The shortest `max_age`: a sign-in at Logto and the way back take seconds, and Logto counts in seconds.
const MIN_MAX_AGE: u64 = 60;

/// `<key>.max_age`: how long ago the person may have signed in at Logto, in seconds; at least [`MIN_MAX_AGE`].
fn max_age(p: &mut Problems, key: &str, v: Option<&str>) -> Option<u64> {
    let v = v.map(str::trim).filter(|v| !v.is_empty())?;
    let key = format!("{key}.max_age");
    let before = p.len();
    let secs = super::checks::duration(p, &key, Some(v.to_owned()), "").as_secs();
    if p.len() == before && secs < MIN_MAX_AGE {
        p.add(
            &key,
            format!("`{v}` is shorter than a minute, less than signing in again and coming back takes"),
        );
    }
    Some(secs)
}

/// The access a rule (or `[access]`) grants. A condition list that is empty, or holds an empty value, is refused:
/// read as "no condition" it would open the path to every signed-in user (a templated `roles = []` whose values
/// went missing), read as "nobody" it would shut it, and the writer meant neither.
fn access_of(p: &mut Problems, key: &str, r: &RawRule) -> Access {
    for (name, list) in [
        ("roles", &r.roles),
        ("all_roles", &r.all_roles),
        ("scopes", &r.scopes),
        ("organizations", &r.organizations),
        ("organization_roles", &r.organization_roles),
        ("emails", &r.emails),
        ("email_domains", &r.email_domains),
        ("github_logins", &r.github_logins),
        ("m2m_apps", &r.m2m_apps),
        ("resources", &r.resources),
    ] {
        match list.as_deref() {
            Some([]) => p.add(
                &format!("{key}.{name}"),
                "is an empty list: list at least one value, or leave the key out for no condition",
            ),
            Some(values) if values.iter().any(|v| v.trim().trim_start_matches('@').is_empty()) => {
                p.add(&format!("{key}.{name}"), "holds an empty value")
            }
            _ => {}
        }
    }
    let requirements = Requirements {
        roles: kept(&r.roles),
        all_roles: kept(&r.all_roles),
        scopes: kept(&r.scopes),
        organizations: kept(&r.organizations),
        organization_roles: kept(&r.organization_roles),
        emails: lowered(&r.emails),
        email_domains: lowered(&r.email_domains)
            .into_iter()
            .map(|d| d.trim_start_matches('@').to_owned())
            .collect(),
        github_logins: lowered(&r.github_logins),
        m2m_apps: kept(&r.m2m_apps),
        resources: kept(&r.resources),
        max_age: max_age(p, key, r.max_age.as_deref()),
    };
    for role in &requirements.organization_roles {
        if !role.contains(':') {
            p.add(
                &format!("{key}.organization_roles"),
                format!("`{role}` must be <organization id>:<role name>"),
            );
        }
    }
    let has_conditions = [
        &requirements.roles,
        &requirements.all_roles,
        &requirements.scopes,
        &requirements.organizations,
        &requirements.organization_roles,
        &requirements.emails,
        &requirements.email_domains,
        &requirements.github_logins,
        &requirements.m2m_apps,
        &requirements.resources,
    ]
    .iter()
    .any(|v| !v.is_empty())
        || requirements.max_age.is_some();
    match r.allow.as_deref().map(str::trim) {
        None | Some("authenticated") => Access::Require(Arc::new(requirements)),
        Some("public") | Some("deny") if has_conditions => {
            p.add(
                &format!("{key}.allow"),
                "a public or denied route cannot also list conditions on the user",
            );
            Access::Deny
        }
        Some("public") => Access::Public,
        Some("deny") => Access::Deny,
        Some(other) => {
            p.add(
                &format!("{key}.allow"),
                format!("`{other}` must be \"public\", \"authenticated\" or \"deny\""),
            );
            Access::Deny
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::Config;

    #[test]
    fn rules_are_validated_with_their_index() {
        let toml = format!(
            "{MINIMAL}\n[[rules]]\nprefix = \"/ok\"\nallow = \"public\"\n\n[[rules]]\npath = \"([\"\n\n\
             [[rules]]\nprefix = \"no-slash\"\n\n[[rules]]\nallow = \"public\"\nprefix = \"/x\"\nroles = [\"a\"]\n\n\
             [[rules]]\nprefix = \"/y\"\nallow = \"maybe\"\norganization_roles = [\"no-colon\"]\n"
        );
        let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
        let text = err.to_string();
        for want in [
            "rules[1].path: `([` is not a valid regular expression",
            "rules[2].prefix: `no-slash` must start with /",
            "rules[3].allow: a public or denied route cannot also list conditions",
            "rules[4].organization_roles: `no-colon` must be <organization id>:<role name>",
            "rules[4].allow: `maybe` must be",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }

    /// A rule's `resources` name tokens it admits: only resources the gate accepts tokens for at all.
    #[test]
    fn rule_resources_must_be_accepted_resources() {
        let with = |logto: &str, rules: &str| {
            let toml = MINIMAL.replace("[logto]\n", &format!("[logto]\n{logto}\n")) + rules;
            Config::from_toml_str(&toml, no_env())
        };
        let api = "resources = [\"https://a.example.com\", \"https://b.example.com\"]";
        let ok = with(
            api,
            "\n[[rules]]\nprefix = \"/b\"\nresources = [\"https://b.example.com\"]\n",
        )
        .unwrap();
        let crate::policy::Access::Require(r) = &ok.policy.rules[0].access else {
            panic!("a rule with conditions requires them");
        };
        assert_eq!(r.resources, ["https://b.example.com"]);
        let text = with(
            api,
            "\n[[rules]]\nprefix = \"/b\"\nresources = []\n\n\
             [[rules]]\nprefix = \"/p\"\nallow = \"public\"\nresources = [\"https://a.example.com\"]\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "rules[0].resources: is an empty list",
            "rules[1].allow: a public or denied route cannot also list conditions",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let text = with(api, "\n[access]\nresources = [\"https://c.example.com\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("access.resources: `https://c.example.com` is not in logto.resources"),
            "{text}"
        );
        let none = with(
            "",
            "\n[[rules]]\nprefix = \"/b\"\nresources = [\"https://b.example.com\"]\n",
        );
        let text = none.unwrap_err().to_string();
        assert!(
            text.contains("rules[0].resources: `https://b.example.com` is not in logto.resources"),
            "{text}"
        );
    }

    #[test]
    fn empty_lists_and_paths_no_request_can_have_are_refused() {
        let toml = format!(
            "{MINIMAL}\n[access]\nroles = []\n\n[[rules]]\nprefix = \"/a\"\nmethods = []\n\n\
             [[rules]]\nprefix = \"/b\"\nemail_domains = [\"@\"]\n\n[[rules]]\nprefix = \"/c;jsessionid=1\"\n\n\
             [[rules]]\npath = \"^/My%20Docs\"\n\n[[rules]]\nprefix = \"/100%\"\n\n\
             [[rules]]\nprefix = \"/\"\nhost = \"*.example.com\"\n\n[[rules]]\nprefix = \"/\"\nhost = \"\"\n"
        );
        let text = Config::from_toml_str(&toml, no_env()).unwrap_err().to_string();
        for want in [
            "access.roles: is an empty list: list at least one value, or leave the key out for no condition",
            "rules[0].methods: is an empty list, so the rule would never apply",
            "rules[1].email_domains: holds an empty value",
            "rules[2].prefix: `/c;jsessionid=1` has a `;` parameter, which rules never see",
            "rules[3].path: `%20` never matches: rules see the path with its escapes decoded",
            "rules[4].prefix: `/100%`: write a `%` that is part of the path as %25",
            "rules[5].host: `*.example.com` is not a host name like \"app.example.com\" (no wildcards",
            "rules[6].host: `` is not a host name",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        // Written with letters outside ASCII or with escapes, a prefix is kept in the form paths are compared in.
        let toml = format!("{MINIMAL}\n[[rules]]\nprefix = \"/gesch%c3%a4ft//x/\"\nallow = \"deny\"\n");
        let config = Config::from_toml_str(&toml, no_env()).unwrap();
        assert!(matches!(
            &config.policy.rules[0].path,
            crate::policy::PathMatch::Prefix(p) if p == "/gesch\u{e4}ft/x/"
        ));
    }
}
