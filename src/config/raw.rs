//! The configuration as the operator wrote it (TOML, environment), before validation: every key optional, unknown
//! keys refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) upstream: RawUpstream,
    pub(super) upstreams: Vec<RawUpstreamRoute>,
    pub(super) logto: RawLogto,
    pub(super) session: RawSession,
    pub(super) headers: Option<BTreeMap<String, String>>,
    pub(super) response_headers: Option<BTreeMap<String, String>>,
    pub(super) access: Option<RawRule>,
    pub(super) rules: Vec<RawRule>,
    pub(super) assertion: RawAssertion,
    pub(super) log: RawLog,
    pub(super) pages: RawPages,
}

/// One `[[rules]]` entry, or the `[access]` default (which has no matcher keys).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRule {
    pub(super) path: Option<String>,
    pub(super) prefix: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) methods: Option<Vec<String>>,
    pub(super) host: Option<String>,
    pub(super) client_ips: Option<Vec<String>>,
    pub(super) allow: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) roles: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) all_roles: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) scopes: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) organizations: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) organization_roles: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) emails: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) email_domains: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) github_logins: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) m2m_apps: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) resources: Option<Vec<String>>,
    pub(super) max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAssertion {
    pub(super) enabled: Option<bool>,
    pub(super) audience: Option<String>,
    pub(super) signing_key_file: Option<PathBuf>,
    pub(super) lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) listen_mode: Option<String>,
    pub(super) public_url: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) trusted_proxies: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) trusted_identity_headers: Option<Vec<String>>,
    pub(super) allow_encoded_slashes: Option<bool>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) allowed_redirect_hosts: Option<Vec<String>>,
    pub(super) case_insensitive_paths: Option<bool>,
    pub(super) skip_auth_preflight: Option<bool>,
    pub(super) metrics_listen: Option<String>,
    pub(super) http_redirect_listen: Option<String>,
    pub(super) shutdown_timeout: Option<String>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) max_header_bytes: Option<u64>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_requests_per_connection: Option<u64>,
    pub(super) max_connections: Option<u64>,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) workers: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    pub(super) url: Option<String>,
    pub(super) preserve_host: Option<bool>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) pass_access_token: Option<bool>,
    pub(super) pass_method_override: Option<bool>,
    pub(super) read_form_method: Option<bool>,
    pub(super) max_form_method_bytes: Option<u64>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) upgrade_protocols: Option<Vec<String>>,
    pub(super) protected_app: Option<bool>,
    pub(super) tls_ca_file: Option<PathBuf>,
    pub(super) tls_client_cert_file: Option<PathBuf>,
    pub(super) tls_client_key_file: Option<PathBuf>,
    pub(super) tls_server_name: Option<String>,
    pub(super) request_headers: Option<BTreeMap<String, String>>,
    pub(super) request_headers_files: Option<BTreeMap<String, PathBuf>>,
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstreamRoute {
    pub(super) url: Option<String>,
    pub(super) host: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) strip_prefix: Option<bool>,
    pub(super) pass_access_token: Option<bool>,
    pub(super) preserve_host: Option<bool>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) tls_ca_file: Option<PathBuf>,
    pub(super) tls_client_cert_file: Option<PathBuf>,
    pub(super) tls_client_key_file: Option<PathBuf>,
    pub(super) tls_server_name: Option<String>,
    pub(super) request_headers: Option<BTreeMap<String, String>>,
    pub(super) request_headers_files: Option<BTreeMap<String, PathBuf>>,
    pub(super) response_headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLogto {
    pub(super) endpoint: Option<String>,
    pub(super) app_id: Option<String>,
    pub(super) app_secret: Option<String>,
    pub(super) app_secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) scopes: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) resources: Option<Vec<String>>,
    pub(super) prompt: Option<String>,
    pub(super) first_screen: Option<String>,
    pub(super) direct_sign_in: Option<String>,
    pub(super) post_logout_redirect_uri: Option<String>,
    pub(super) organization_id: Option<String>,
    pub(super) clock_leeway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSession {
    pub(super) secret: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) secrets: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) secret_files: Option<Vec<String>>,
    pub(super) cookie_name: Option<String>,
    pub(super) lifetime: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) tunnel_check_interval: Option<String>,
    pub(super) tunnel_grant_check_interval: Option<String>,
    pub(super) store: Option<String>,
    pub(super) redis_url: Option<String>,
    pub(super) redis_key_prefix: Option<String>,
    pub(super) redis_mode: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) redis_urls: Option<Vec<String>>,
    pub(super) redis_sentinel_master: Option<String>,
    pub(super) cookie_domain: Option<String>,
    pub(super) revocation_file: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    pub(super) sign_out_clear_site_data: Option<Vec<String>>,
    pub(super) keep_url_fragment: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPages {
    pub(super) name: Option<String>,
    pub(super) help: Option<String>,
    pub(super) help_url: Option<String>,
    pub(super) stylesheet_file: Option<PathBuf>,
}

/// Accepts a TOML array of strings, or (from the environment) one string: a JSON array (`["a", "b"]`, what
/// Helm's `toJson` writes), the same without quotes (`[a, b]`), or items separated by commas or spaces (`a,b`).
fn list_of_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match Option::<OneOrMany>::deserialize(d)? {
        None => Ok(None),
        Some(OneOrMany::Many(v)) => Ok(Some(v)),
        Some(OneOrMany::One(s)) => list_from_text(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// One environment value as a list (see [`list_of_strings`]).
fn list_from_text(text: &str) -> Result<Vec<String>, String> {
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let trimmed = text.trim();
    let refused = |why: String| format!("`{text}` is {why}; write a list as a,b or [a, b] or [\"a\", \"b\"]");
    let Some(inner) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        if trimmed.starts_with('[') || trimmed.ends_with(']') {
            return Err(refused("a list with one bracket".to_owned()));
        }
        return Ok(split(trimmed));
    };
    if !inner.contains(['"', '\'']) {
        return Ok(split(inner));
    }
    serde_json::from_str::<Vec<String>>(trimmed).map_err(|e| refused(format!("not a JSON array of strings ({e})")))
}
