//! Configuration: raw TOML + environment, parsed, then validated into an immutable [`Config`].
//!
//! Sources, later ones winning: the TOML file, then environment variables `LOGTO_GATE_<SECTION>__<KEY>`
//! (`LOGTO_GATE_LOGTO__APP_SECRET` sets `logto.app_secret`). Environment values are always read as strings and
//! converted only where the key wants a number or a boolean, so a secret made of digits stays a string.
//! Every secret may also come from a file (`logto.app_secret_file`, `session.secret_file`), as Kubernetes mounts
//! secrets. The rest of the program only ever sees a validated [`Config`]; every problem found is reported as one
//! line naming its key (`logto.app_id: missing`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use http::header::HeaderName;
use http::Uri;
use serde::{Deserialize, Deserializer};

use crate::identity::ClaimPath;
use crate::policy::{Access, PathMatch, Policy, Requirements, Rule};
use crate::proxy::trusted::Cidr;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "LOGTO_GATE_";
/// The environment variable naming the config file (also `--config`).
pub const ENV_CONFIG_PATH: &str = "LOGTO_GATE_CONFIG";

/// Scopes the gate always asks for: `offline_access` makes Logto issue a refresh token (with `prompt=consent`).
pub const BASE_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// The validated configuration. Built once at start; immutable afterwards.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// `[upstream]`: the app (or, with `[[upstreams]]`, the default one) and the settings every upstream shares.
    pub upstream: UpstreamConfig,
    /// Where each request goes (`[[upstreams]]`, then `[upstream]` for everything else), most specific first.
    pub routes: Vec<UpstreamRoute>,
    pub logto: LogtoConfig,
    pub session: SessionConfig,
    /// Identity headers sent upstream, in order: header name -> claim.
    pub headers: Vec<(HeaderName, ClaimPath)>,
    /// `[[rules]]` and the `[access]` default.
    pub policy: Policy,
    /// `[assertion]`, when enabled.
    pub assertion: Option<AssertionConfig>,
    pub log: LogConfig,
}

/// The signed identity assertion sent to the upstream (`X-Logto-Gate-Assertion`).
#[derive(Debug, Clone)]
pub struct AssertionConfig {
    pub audience: String,
    /// PKCS#8 PEM file with an EC P-256 private key; `None` generates a key at start.
    pub signing_key_file: Option<PathBuf>,
    pub lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: PublicUrl,
    /// Peers whose X-Forwarded-* (and forward-auth X-Forwarded-Uri/-Method) headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Let `%2F` and `%5C` through in paths instead of answering 400.
    pub allow_encoded_slashes: bool,
    /// Hosts besides `public_url`'s that sign-ins may return to and that the gate serves (lower case; a leading
    /// `.` admits every subdomain).
    pub allowed_redirect_hosts: Vec<String>,
    /// Rules match paths whatever their letter case (for IIS and other case-insensitive apps).
    pub case_insensitive_paths: bool,
    /// CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) pass without a session.
    pub skip_auth_preflight: bool,
    /// Where Prometheus metrics are served; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How long in-flight requests and upgraded connections may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers (HTTP/1, also the wait for the next request).
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// A connection with no traffic for this long is closed (after its current request, if any).
    pub idle_timeout: Duration,
    /// TLS termination: PEM certificate chain and private key, re-read when they change.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Threads serving connections, each with its own runtime and upstream connection pool.
    pub workers: usize,
}

/// The origin browsers use to reach the gate, e.g. `https://app.example.com`.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    /// Scheme, host and port, without a trailing slash.
    origin: String,
    https: bool,
    host: String,
}

impl PublicUrl {
    pub fn origin(&self) -> &str {
        &self.origin
    }
    pub fn is_https(&self) -> bool {
        self.https
    }
    /// Host (and port, when not the scheme's default) as browsers send it in `Host`.
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
    /// An absolute URL for a same-origin path that starts with `/`.
    pub fn join(&self, path: &str) -> String {
        let mut s = String::with_capacity(self.origin.len() + path.len());
        s.push_str(&self.origin);
        s.push_str(path);
        s
    }
    pub fn callback_url(&self) -> String {
        self.join(crate::routes::paths::CALLBACK)
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port`, possibly with a base path (no trailing slash).
    pub url: Uri,
    pub base_path: String,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Send the session's Logto access token to the upstream as `Authorization: Bearer`.
    pub pass_access_token: bool,
    /// Keep `X-HTTP-Method-Override` and its kin (see [`crate::policy::METHOD_OVERRIDE_HEADERS`]); rules then
    /// decide on every method the request may be taken as. Off: they are removed.
    pub pass_method_override: bool,
    /// Protocols a client may switch to through the gate (RFC 9110 §7.8), lower case; `h2c` never.
    pub upgrade_protocols: Vec<String>,
    /// Certificates trusted for an `https` upstream besides the Mozilla roots (`tls_ca_file`).
    pub tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Speak Logto Cloud's Protected App contract to the app: `Authorization: Basic base64(appId:appSecret)`,
    /// `Logto-ID-Token`, `Logto-Host`.
    pub protected_app: bool,
}

/// One `[[upstreams]]` entry (or the `[upstream]` default): which requests it serves and the app that serves them.
#[derive(Debug, Clone)]
pub struct UpstreamRoute {
    /// The `Host` it serves, lower case without port; `None`: any host.
    pub host: Option<String>,
    /// The path prefix it serves, on whole segments: starts with `/`, no trailing `/` but the root's.
    pub prefix: String,
    /// Remove the prefix from the path sent upstream.
    pub strip_prefix: bool,
    pub upstream: UpstreamConfig,
}

impl UpstreamRoute {
    /// How specific it is for `path` on `host` (`None` when it does not serve them): an entry for the request's
    /// host before any entry for every host, then the longest prefix.
    pub fn specificity(&self, host: Option<&str>, path: &str) -> Option<(bool, usize)> {
        if let Some(want) = &self.host {
            if host.map(crate::policy::normalise_host).as_deref() != Some(want.as_str()) {
                return None;
            }
        }
        let p = self.prefix.as_str();
        let matches = p == "/" || path == p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'));
        matches.then_some((self.host.is_some(), p.len()))
    }
}

#[derive(Clone)]
pub struct LogtoConfig {
    /// Logto endpoint without a trailing slash, e.g. `https://tenant.logto.app`.
    pub endpoint: String,
    /// `<endpoint>/oidc`.
    pub issuer: String,
    pub app_id: String,
    pub app_secret: Secret,
    /// Every scope requested: the base scopes, then the configured ones, without duplicates.
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub prompt: Option<String>,
    pub first_screen: Option<String>,
    pub direct_sign_in: Option<String>,
    pub post_logout_redirect_uri: String,
    /// Get an organization token for this Logto organization (membership is then checked by Logto).
    pub organization_id: Option<String>,
    /// Seconds of clock skew allowed for `exp`, `iat` and `nbf` of every token the gate verifies.
    pub clock_leeway: u64,
}

impl fmt::Debug for LogtoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogtoConfig")
            .field("endpoint", &self.endpoint)
            .field("issuer", &self.issuer)
            .field("app_id", &self.app_id)
            .field("app_secret", &self.app_secret)
            .field("scopes", &self.scopes)
            .field("resources", &self.resources)
            .field("prompt", &self.prompt)
            .field("first_screen", &self.first_screen)
            .field("direct_sign_in", &self.direct_sign_in)
            .field("post_logout_redirect_uri", &self.post_logout_redirect_uri)
            .field("organization_id", &self.organization_id)
            .field("clock_leeway", &self.clock_leeway)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Cookie keys: the first encrypts, all decrypt (`session.secrets`, or `session.secret` alone).
    pub secrets: Vec<Secret>,
    pub cookie_name: String,
    pub lifetime: Duration,
    /// Signed out after this long without a request; `None`: only the absolute lifetime holds.
    pub idle_timeout: Option<Duration>,
    /// `Secure` on every cookie: true when `server.public_url` is https.
    pub secure_cookies: bool,
    pub store: StoreKind,
    /// `redis://` or `rediss://`; required for the Redis store, optional in cookie mode (then the back-channel
    /// revocation list and replay cache live there, shared by every replica).
    pub redis_url: Option<String>,
    pub redis_key_prefix: String,
    /// `session.redis_mode`: one server (`redis_url`), Sentinel or Cluster (`redis_urls`).
    pub redis_mode: RedisMode,
    /// Sentinel addresses or cluster seed nodes (`session.redis_urls`).
    pub redis_urls: Vec<String>,
    /// The master Sentinel watches (`session.redis_sentinel_master`).
    pub redis_sentinel_master: Option<String>,
    /// `Domain` of the session (and sign-in attempt) cookies, lower case without a leading dot: one sign-in for
    /// every host under it. `None`: host-only cookies on `server.public_url`'s host.
    pub cookie_domain: Option<String>,
}

/// How the gate reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    /// Redis Sentinel: the current master asked of the sentinels, asked again after a failover.
    Sentinel,
    /// Redis Cluster: every key of the gate under one hash tag, so multi-key commands stay on one slot.
    Cluster,
}

impl SessionConfig {
    /// Whether Redis is configured in any mode (sessions, or the revocation list of the cookie store).
    pub fn uses_redis(&self) -> bool {
        self.redis_url.is_some() || !self.redis_urls.is_empty()
    }
}

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In the encrypted cookie itself (chunked when large).
    Cookie,
    /// In Redis; the cookie holds only an opaque random id.
    Redis,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret value that never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every problem found in a configuration, one per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------------------------
// Raw, as written by the operator.
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    upstream: RawUpstream,
    upstreams: Vec<RawUpstreamRoute>,
    logto: RawLogto,
    session: RawSession,
    headers: Option<BTreeMap<String, String>>,
    access: Option<RawRule>,
    rules: Vec<RawRule>,
    assertion: RawAssertion,
    log: RawLog,
}

/// One `[[rules]]` entry, or the `[access]` default (which has no matcher keys).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRule {
    path: Option<String>,
    prefix: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    methods: Option<Vec<String>>,
    host: Option<String>,
    allow: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    roles: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    all_roles: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    scopes: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    organizations: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    organization_roles: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    emails: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    email_domains: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    github_logins: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    m2m_apps: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAssertion {
    enabled: Option<bool>,
    audience: Option<String>,
    signing_key_file: Option<PathBuf>,
    lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    trusted_proxies: Option<Vec<String>>,
    allow_encoded_slashes: Option<bool>,
    #[serde(deserialize_with = "list_of_strings")]
    allowed_redirect_hosts: Option<Vec<String>>,
    case_insensitive_paths: Option<bool>,
    skip_auth_preflight: Option<bool>,
    metrics_listen: Option<String>,
    shutdown_timeout: Option<String>,
    header_read_timeout: Option<String>,
    max_header_bytes: Option<u64>,
    idle_timeout: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    workers: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    url: Option<String>,
    preserve_host: Option<bool>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    pass_access_token: Option<bool>,
    pass_method_override: Option<bool>,
    #[serde(deserialize_with = "list_of_strings")]
    upgrade_protocols: Option<Vec<String>>,
    protected_app: Option<bool>,
    tls_ca_file: Option<PathBuf>,
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstreamRoute {
    url: Option<String>,
    host: Option<String>,
    prefix: Option<String>,
    strip_prefix: Option<bool>,
    preserve_host: Option<bool>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLogto {
    endpoint: Option<String>,
    app_id: Option<String>,
    app_secret: Option<String>,
    app_secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "list_of_strings")]
    scopes: Option<Vec<String>>,
    #[serde(deserialize_with = "list_of_strings")]
    resources: Option<Vec<String>>,
    prompt: Option<String>,
    first_screen: Option<String>,
    direct_sign_in: Option<String>,
    post_logout_redirect_uri: Option<String>,
    organization_id: Option<String>,
    clock_leeway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSession {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "list_of_strings")]
    secrets: Option<Vec<String>>,
    cookie_name: Option<String>,
    lifetime: Option<String>,
    idle_timeout: Option<String>,
    store: Option<String>,
    redis_url: Option<String>,
    redis_key_prefix: Option<String>,
    redis_mode: Option<String>,
    #[serde(deserialize_with = "list_of_strings")]
    redis_urls: Option<Vec<String>>,
    redis_sentinel_master: Option<String>,
    cookie_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
}

/// Accepts a TOML array of strings, or (from the environment) one string separated by commas or spaces.
fn list_of_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::Many(v)) => Some(v),
        Some(OneOrMany::One(s)) => Some(
            s.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    })
}

const ENV_METADATA_NAME: &str = "environment variable";

/// Environment variables `LOGTO_GATE_<SECTION>__<KEY>` as a figment provider whose values are all strings.
struct EnvOverrides {
    vars: Vec<(String, String)>,
}

/// Secrets that may come inline or from a file: an environment variable for one of the pair replaces whatever the
/// file set for the other, so `LOGTO_GATE_LOGTO__APP_SECRET_FILE` overrides an inline `app_secret` (and the
/// other way round) instead of clashing with it. `session.secrets` (the rotation list) counts as inline.
const SECRET_PAIRS: [(&str, &[&str]); 2] = [
    ("logto__app_secret", &["logto__app_secret_file"]),
    ("session__secret", &["session__secret_file", "session__secrets"]),
];

impl EnvOverrides {
    fn from_iter(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(ENV_PREFIX)?;
                if k == ENV_CONFIG_PATH || rest.is_empty() {
                    return None;
                }
                Some((rest.to_ascii_lowercase(), v))
            })
            .collect();
        for (inline, others) in SECRET_PAIRS {
            let group: Vec<&str> = std::iter::once(inline).chain(others.iter().copied()).collect();
            let set: Vec<&str> = group
                .iter()
                .copied()
                .filter(|k| vars.iter().any(|(have, _)| have == k))
                .collect();
            if set.len() == 1 {
                for other in group.iter().filter(|k| **k != set[0]) {
                    vars.push(((*other).to_owned(), String::new()));
                }
            }
        }
        EnvOverrides { vars }
    }

    /// Whether any `LOGTO_GATE_*` setting is there (configuration from the environment alone).
    fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_METADATA_NAME).interpolater(|_, path| {
            let key = path.join("__").to_ascii_uppercase();
            format!("{ENV_PREFIX}{key}")
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (key, value) in &self.vars {
            let parts: Vec<&str> = key.split("__").collect();
            insert_path(&mut root, &parts, value.clone());
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_path(dict: &mut Dict, parts: &[&str], value: String) {
    match parts {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), Value::from(value));
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Loading and validation.
// ---------------------------------------------------------------------------------------------------------------

impl Config {
    /// Loads the file at `path`, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (tests pass their own).
    pub fn load_with_env(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigErrors> {
        if !path.is_file() {
            return Err(ConfigErrors(vec![format!(
                "config file {}: not found or not a file",
                path.display()
            )]));
        }
        let figment = Figment::new()
            .merge(Toml::file(path))
            .merge(EnvOverrides::from_iter(env));
        Self::from_figment(figment)
    }

    /// Parses and validates TOML text plus an environment (used by tests and `check`).
    pub fn from_toml_str(toml: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigErrors> {
        let figment = Figment::new()
            .merge(Toml::string(toml))
            .merge(EnvOverrides::from_iter(env));
        Self::from_figment(figment)
    }

    /// Configuration from the environment alone (`LOGTO_GATE_<SECTION>__<KEY>`), without a file. With no such
    /// variable at all, the error lists the keys a gate needs and their variables.
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigErrors> {
        let overrides = EnvOverrides::from_iter(env);
        if overrides.is_empty() {
            let mut lines = vec![
                "no configuration: pass --config PATH, set LOGTO_GATE_CONFIG, or set at least these (as LOGTO_GATE_<SECTION>__<KEY>):"
                    .to_owned(),
            ];
            for (key, var) in REQUIRED_KEYS {
                lines.push(format!("  {key:<24} {var}"));
            }
            lines.push("`logto-gate init` prints an annotated example configuration.".to_owned());
            return Err(ConfigErrors(lines));
        }
        Self::from_figment(Figment::new().merge(overrides))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = figment.extract_lossy().map_err(figment_errors)?;
        validate(raw)
    }
}

fn figment_errors(err: figment::Error) -> ConfigErrors {
    ConfigErrors(
        err.into_iter()
            .map(|e| {
                let key = key_path(&e.path);
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| {
                        if m.name == ENV_METADATA_NAME && !e.path.is_empty() {
                            let segs: Vec<&str> = e.path.iter().map(String::as_str).collect();
                            m.interpolate(&e.profile.clone().unwrap_or_default(), &segs)
                        } else {
                            match &m.source {
                                Some(src) => format!("{} {src}", m.name),
                                None => m.name.to_string(),
                            }
                        }
                    })
                    .unwrap_or_default();
                let kind = match &e.kind {
                    figment::error::Kind::UnknownField(field, expected) => match closest(field, expected) {
                        Some(near) => format!("unknown key `{field}` (did you mean `{near}`?)"),
                        None => format!("unknown key `{field}`"),
                    },
                    figment::error::Kind::InvalidType(actual, expected) if expected.contains("string") => {
                        let example = match e.path.last().map(String::as_str) {
                            Some(k) if k.ends_with("timeout") || k.ends_with("lifetime") || k.ends_with("leeway") => {
                                "a duration in quotes, like \"30s\", \"15m\" or \"7d\"".to_owned()
                            }
                            _ => "a value in quotes".to_owned(),
                        };
                        format!("found {actual}, expected {example}")
                    }
                    other => other.to_string(),
                };
                let what = if key.is_empty() { kind } else { format!("{key}: {kind}") };
                if source.is_empty() {
                    what
                } else {
                    format!("{what} (in {source})")
                }
            })
            .collect(),
    )
}

/// What every gate needs, and the environment variable for each.
const REQUIRED_KEYS: [(&str, &str); 6] = [
    ("server.public_url", "LOGTO_GATE_SERVER__PUBLIC_URL"),
    ("upstream.url", "LOGTO_GATE_UPSTREAM__URL"),
    ("logto.endpoint", "LOGTO_GATE_LOGTO__ENDPOINT"),
    ("logto.app_id", "LOGTO_GATE_LOGTO__APP_ID"),
    (
        "logto.app_secret(_file)",
        "LOGTO_GATE_LOGTO__APP_SECRET or ..._APP_SECRET_FILE",
    ),
    ("session.secret(_file)", "LOGTO_GATE_SESSION__SECRET or ..._SECRET_FILE"),
];

/// A key's path as the rest of the messages write it: `rules[1].roles`, not `rules.1.roles`.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// The known key nearest to a mistyped one (at most two edits away), for "did you mean".
fn closest(typed: &str, known: &[&str]) -> Option<String> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .iter()
        .map(|k| (distance(&typed.to_ascii_lowercase(), k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_owned())
}

/// Collects problems while building the validated config.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, msg: impl fmt::Display) {
        self.0.push(format!("{key}: {msg}"));
    }
    fn required<T>(&mut self, key: &str, v: Option<T>) -> Option<T> {
        if v.is_none() {
            self.add(key, "missing");
        }
        v
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn secret_from(p: &mut Problems, key: &str, inline: Option<String>, file: Option<PathBuf>) -> Option<String> {
    let file_key = format!("{key}_file");
    // An empty path is no file (an environment variable for the inline secret blanks the file's `_file` key).
    let file = file.filter(|f| !f.as_os_str().is_empty());
    match (non_empty(inline), file) {
        (Some(_), Some(_)) => {
            p.add(key, format!("set both {key} and {file_key}; keep one"));
            None
        }
        (Some(v), None) => Some(v),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            // Kubernetes secret files often end with a newline that is not part of the secret.
            Ok(s) if !s.trim().is_empty() => Some(s.trim_end_matches(['\r', '\n']).to_owned()),
            Ok(_) => {
                p.add(&file_key, format!("{} is empty", path.display()));
                None
            }
            Err(e) => {
                p.add(&file_key, format!("cannot read {}: {e}", path.display()));
                None
            }
        },
        (None, None) => {
            p.add(key, format!("missing (set {key} or {file_key})"));
            None
        }
    }
}

/// Values this repository's examples use in place of real credentials (`config/logto-gate.toml`,
/// `deploy/kubernetes/base/secret.yaml`): anyone can read them, so a gate started with one would seal sessions
/// with a publicly known key. Every value starting with `change-me` or `replace-with` counts too.
const PLACEHOLDERS: [&str; 2] = ["new-secret-of-32-bytes-or-more...", "old-secret-of-32-bytes-or-more..."];

fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    v.starts_with("change-me") || v.starts_with("replace-with") || PLACEHOLDERS.contains(&v.as_str())
}

/// Reports `key` when its value is one of the examples' placeholders, saying how to get a real one.
fn refuse_placeholder(p: &mut Problems, key: &str, value: &str, how: &str) {
    if is_placeholder(value) {
        p.add(
            key,
            format!("still the placeholder from logto-gate's examples, which anyone can read: {how}"),
        );
    }
}

fn duration(p: &mut Problems, key: &str, v: Option<String>, default: &str) -> Duration {
    let text = v.unwrap_or_else(|| default.to_owned());
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            p.add(key, "must be longer than zero");
            Duration::from_secs(1)
        }
        Err(e) => {
            p.add(
                key,
                format!("`{text}` is not a duration like \"30s\", \"15m\" or \"7d\" ({e})"),
            );
            Duration::from_secs(1)
        }
    }
}

/// The certificates of a `tls_ca_file` (PEM): a private CA or an upstream's self-signed certificate, trusted for
/// that upstream next to the Mozilla roots. A file that cannot be read or holds no certificate is refused.
fn load_tls_roots(p: &mut Problems, key: &str, file: Option<&Path>) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let Some(file) = file else {
        return Vec::new();
    };
    match rustls::pki_types::CertificateDer::pem_file_iter(file) {
        Ok(certs) => match certs.collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => certs,
            Ok(_) => {
                p.add(key, format!("{} holds no PEM certificate", file.display()));
                Vec::new()
            }
            Err(e) => {
                p.add(key, format!("{} is not a PEM certificate file: {e}", file.display()));
                Vec::new()
            }
        },
        Err(e) => {
            p.add(key, format!("cannot read {}: {e}", file.display()));
            Vec::new()
        }
    }
}

/// An upstream URL: its origin as a URI, and its base path (no trailing slash).
fn upstream_url(p: &mut Problems, key: &str, v: &str) -> Option<(Uri, String)> {
    let u = http_url(p, key, v, true)?;
    let origin = origin_of(&u);
    match origin.parse::<Uri>() {
        Ok(uri) => Some((uri, u.path().trim_end_matches('/').to_owned())),
        Err(e) => {
            p.add(key, format!("`{u}` is not usable ({e})"));
            None
        }
    }
}

/// Parses an absolute http(s) URL that must be an origin or an origin with a path, never with query or fragment.
fn http_url(p: &mut Problems, key: &str, v: &str, allow_path: bool) -> Option<url::Url> {
    let parsed = match url::Url::parse(v) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            p.add(
                key,
                format!("`{v}` is not a valid URL: it has no scheme; write it like https://{v}"),
            );
            return None;
        }
        Err(e) => {
            p.add(key, format!("`{v}` is not a valid URL ({e})"));
            return None;
        }
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        p.add(key, format!("`{v}` must start with http:// or https://"));
        return None;
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        p.add(key, format!("`{v}` has no host"));
        return None;
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        p.add(key, format!("`{v}` must not have a query or fragment"));
        return None;
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        p.add(key, format!("`{v}` must not contain credentials"));
        return None;
    }
    if !allow_path && parsed.path() != "/" {
        p.add(
            key,
            format!("`{v}` must be an origin only (scheme, host, port), without a path"),
        );
        return None;
    }
    Some(parsed)
}

fn origin_of(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}

fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();

    // server
    let listen_text = non_empty(raw.server.listen).unwrap_or_else(|| "0.0.0.0:4180".to_owned());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "server.listen",
                format!("`{listen_text}` is not an address like 0.0.0.0:4180"),
            );
            None
        }
    };
    let public_url = p
        .required("server.public_url", non_empty(raw.server.public_url))
        .and_then(|v| http_url(&mut p, "server.public_url", &v, false))
        .map(|u| {
            let origin = origin_of(&u);
            let host = origin.split_once("://").map(|(_, h)| h.to_owned()).unwrap_or_default();
            PublicUrl {
                https: u.scheme() == "https",
                origin,
                host,
            }
        });

    // upstream
    // With [[upstreams]], [upstream].url is optional: the default for requests no entry serves.
    let default_url = match non_empty(raw.upstream.url) {
        Some(v) => Some(v),
        None if raw.upstreams.is_empty() => p.required("upstream.url", None),
        None => None,
    };
    let default_upstream = default_url.and_then(|v| upstream_url(&mut p, "upstream.url", &v));
    let connect_timeout = duration(&mut p, "upstream.connect_timeout", raw.upstream.connect_timeout, "5s");
    let upgrade_protocols = upgrade_protocols(&mut p, raw.upstream.upgrade_protocols);
    let protected_app = raw.upstream.protected_app.unwrap_or(false);
    if protected_app && raw.upstream.pass_access_token == Some(true) {
        p.add(
            "upstream.protected_app",
            "sends Authorization: Basic (the Protected App contract), so it cannot go with upstream.pass_access_token",
        );
    }
    let response_timeout = duration(
        &mut p,
        "upstream.response_timeout",
        raw.upstream.response_timeout,
        "60s",
    );
    let preserve_host = raw.upstream.preserve_host.unwrap_or(false);
    let tls_roots = load_tls_roots(&mut p, "upstream.tls_ca_file", raw.upstream.tls_ca_file.as_deref());
    // The routes: every [[upstreams]] entry with its own URL and timeouts (the rest shared with [upstream]).
    let mut routes: Vec<(UpstreamRoute, String)> = Vec::new();
    for (i, r) in raw.upstreams.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        let url = p
            .required(&format!("{key}.url"), non_empty(r.url.clone()))
            .and_then(|v| upstream_url(&mut p, &format!("{key}.url"), &v));
        let prefix = non_empty(r.prefix.clone()).unwrap_or_else(|| "/".to_owned());
        if !prefix.starts_with('/') || prefix.contains(['?', '#', '%', '\\']) {
            p.add(
                &format!("{key}.prefix"),
                format!("`{prefix}` must be a path starting with /"),
            );
        }
        let prefix = if prefix.len() > 1 {
            prefix.trim_end_matches('/').to_owned()
        } else {
            prefix
        };
        let strip_prefix = r.strip_prefix.unwrap_or(false);
        if strip_prefix && prefix == "/" {
            p.add(&format!("{key}.strip_prefix"), "needs a prefix other than /");
        }
        let host = non_empty(r.host.clone()).map(|h| crate::policy::normalise_host(&h));
        if host.is_none() && prefix == "/" {
            p.add(
                &key,
                "needs a host or a prefix (an entry for every request is what [upstream] is for)",
            );
        }
        let connect = duration(
            &mut p,
            &format!("{key}.connect_timeout"),
            r.connect_timeout.clone(),
            "5s",
        );
        let response = duration(
            &mut p,
            &format!("{key}.response_timeout"),
            r.response_timeout.clone(),
            "60s",
        );
        if let Some((url, base_path)) = url {
            routes.push((
                UpstreamRoute {
                    host,
                    prefix,
                    strip_prefix,
                    upstream: UpstreamConfig {
                        url,
                        base_path,
                        preserve_host: r.preserve_host.unwrap_or(preserve_host),
                        connect_timeout: connect,
                        response_timeout: response,
                        pass_access_token: raw.upstream.pass_access_token.unwrap_or(false),
                        pass_method_override: raw.upstream.pass_method_override.unwrap_or(false),
                        upgrade_protocols: upgrade_protocols.clone(),
                        protected_app,
                        tls_roots: match &r.tls_ca_file {
                            Some(f) => load_tls_roots(&mut p, &format!("{key}.tls_ca_file"), Some(f)),
                            None => tls_roots.clone(),
                        },
                    },
                },
                key,
            ));
        }
    }
    // Two entries for the same host and prefix: the second could never be chosen.
    for (i, (a, a_key)) in routes.iter().enumerate() {
        if let Some((_, b_key)) = routes[..i]
            .iter()
            .find(|(b, _)| b.host == a.host && b.prefix == a.prefix)
        {
            p.add(
                a_key,
                format!("serves the same host and prefix as {b_key}, so it would never be chosen"),
            );
        }
    }

    // logto
    let endpoint = p
        .required("logto.endpoint", non_empty(raw.logto.endpoint))
        .and_then(|v| http_url(&mut p, "logto.endpoint", &v, true))
        .map(|u| u.as_str().trim_end_matches('/').to_owned());
    if let Some(e) = &endpoint {
        if e.ends_with("/oidc") {
            p.add(
                "logto.endpoint",
                format!("`{e}` ends with /oidc: give the Logto endpoint itself, the issuer is <endpoint>/oidc"),
            );
        }
    }
    let app_id = p.required("logto.app_id", non_empty(raw.logto.app_id));
    let app_secret = secret_from(
        &mut p,
        "logto.app_secret",
        raw.logto.app_secret,
        raw.logto.app_secret_file,
    );
    let console = "copy it from the application's details page in the Logto console";
    if let Some(v) = &app_id {
        refuse_placeholder(&mut p, "logto.app_id", v, console);
    }
    if let Some(v) = &app_secret {
        refuse_placeholder(&mut p, "logto.app_secret", v, console);
    }
    let mut scopes: Vec<String> = BASE_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    for s in raw.logto.scopes.unwrap_or_default() {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            p.add("logto.scopes", format!("`{s}` is not a valid scope token"));
        } else if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let mut resources = Vec::new();
    for r in raw.logto.resources.unwrap_or_default() {
        match url::Url::parse(&r) {
            Ok(u) if u.fragment().is_none() => resources.push(r),
            _ => p.add(
                "logto.resources",
                format!("`{r}` is not an absolute URI without a fragment (RFC 8707 §2)"),
            ),
        }
    }
    let prompt = match raw.logto.prompt {
        None => Some("consent".to_owned()),
        Some(s) if s.trim().is_empty() => None,
        Some(s) => {
            let ok = s
                .split(' ')
                .all(|v| matches!(v, "none" | "login" | "consent" | "select_account"));
            if !ok {
                p.add(
                    "logto.prompt",
                    format!("`{s}` must be space-separated values of none, login, consent, select_account"),
                );
            }
            Some(s)
        }
    };
    let clock_leeway = clock_leeway(&mut p, non_empty(raw.logto.clock_leeway));
    let organization_id = non_empty(raw.logto.organization_id);
    if let Some(org) = &organization_id {
        if !org.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            p.add(
                "logto.organization_id",
                format!("`{org}` is not a Logto organization id"),
            );
        }
        let s = "urn:logto:scope:organizations".to_owned();
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let first_screen = non_empty(raw.logto.first_screen);
    let direct_sign_in = non_empty(raw.logto.direct_sign_in);
    for (key, v) in [
        ("logto.first_screen", &first_screen),
        ("logto.direct_sign_in", &direct_sign_in),
    ] {
        if let Some(v) = v {
            if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)) {
                p.add(key, format!("`{v}` may only contain letters, digits and - _ : ."));
            }
        }
    }
    let post_logout_redirect_uri = match non_empty(raw.logto.post_logout_redirect_uri) {
        Some(v) => http_url(&mut p, "logto.post_logout_redirect_uri", &v, true).map(|u| u.to_string()),
        // A page that says the person is signed out, with "Sign in again": landing on the app's root instead would
        // start a new sign-in at once (silently, with direct_sign_in).
        None => public_url.as_ref().map(|pu| pu.join(crate::routes::paths::SIGNED_OUT)),
    };

    // session
    // Empty values count as unset (an environment variable for one of them blanks the others, see `SECRET_PAIRS`).
    let listed = raw.session.secrets.filter(|l| l.iter().any(|s| !s.trim().is_empty()));
    let inline = non_empty(raw.session.secret);
    let from_file = raw.session.secret_file.filter(|f| !f.as_os_str().is_empty());
    let secrets: Vec<String> = match (listed, &inline, &from_file) {
        (Some(list), None, None) if !list.is_empty() => list,
        (Some(_), _, _) => {
            p.add(
                "session.secrets",
                "set either session.secrets (a list) or session.secret / secret_file, not both",
            );
            Vec::new()
        }
        (None, _, _) => secret_from(&mut p, "session.secret", inline, from_file)
            .into_iter()
            .collect(),
    };
    for (i, s) in secrets.iter().enumerate() {
        let key = if i == 0 && secrets.len() == 1 {
            "session.secret".to_owned()
        } else {
            format!("session.secrets[{i}]")
        };
        refuse_placeholder(
            &mut p,
            &key,
            s,
            "generate one with `openssl rand -base64 48` (or put it in a file for session.secret_file)",
        );
        if s.len() < 32 {
            p.add(
                &key,
                format!(
                    "too short: {} bytes, at least 32 are needed (e.g. `openssl rand -base64 48`)",
                    s.len()
                ),
            );
        }
    }
    let secret = (!secrets.is_empty()).then_some(());
    let idle_timeout =
        non_empty(raw.session.idle_timeout).map(|v| duration(&mut p, "session.idle_timeout", Some(v), "0s"));
    let store = match non_empty(raw.session.store).as_deref() {
        None | Some("cookie") => StoreKind::Cookie,
        Some("redis") => StoreKind::Redis,
        Some(other) => {
            p.add("session.store", format!("`{other}` must be \"cookie\" or \"redis\""));
            StoreKind::Cookie
        }
    };
    let redis_url = non_empty(raw.session.redis_url);
    let redis_urls: Vec<String> = raw
        .session
        .redis_urls
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    let redis_sentinel_master = non_empty(raw.session.redis_sentinel_master);
    let redis_mode = match non_empty(raw.session.redis_mode).as_deref() {
        None | Some("standalone") => RedisMode::Standalone,
        Some("sentinel") => RedisMode::Sentinel,
        Some("cluster") => RedisMode::Cluster,
        Some(other) => {
            p.add(
                "session.redis_mode",
                format!("`{other}` must be \"standalone\", \"sentinel\" or \"cluster\""),
            );
            RedisMode::Standalone
        }
    };
    let check_url = |p: &mut Problems, key: &str, u: &str| {
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            p.add(key, format!("`{u}` must start with redis:// or rediss:// (TLS)"));
        } else if let Err(e) = redis::Client::open(u) {
            p.add(key, format!("`{u}` is not a usable Redis URL: {e}"));
        }
    };
    match redis_mode {
        RedisMode::Standalone => {
            match (&redis_url, store) {
                (None, StoreKind::Redis) => p.add("session.redis_url", "missing (session.store = \"redis\" needs it)"),
                (Some(u), _) => check_url(&mut p, "session.redis_url", u),
                _ => {}
            }
            if !redis_urls.is_empty() {
                p.add(
                    "session.redis_urls",
                    "is for redis_mode = \"sentinel\" or \"cluster\"; one server is session.redis_url",
                );
            }
        }
        RedisMode::Sentinel | RedisMode::Cluster => {
            let what = if redis_mode == RedisMode::Sentinel {
                "the sentinels' addresses"
            } else {
                "the cluster's seed nodes"
            };
            if redis_urls.is_empty() {
                p.add("session.redis_urls", format!("missing: {what}, as redis:// URLs"));
            }
            for u in &redis_urls {
                check_url(&mut p, "session.redis_urls", u);
            }
            if redis_url.is_some() {
                p.add(
                    "session.redis_url",
                    "is for one server (redis_mode = \"standalone\"); list the nodes in session.redis_urls",
                );
            }
        }
    }
    match (redis_mode, &redis_sentinel_master) {
        (RedisMode::Sentinel, None) => p.add("session.redis_sentinel_master", "missing: the name Sentinel monitors"),
        (RedisMode::Standalone | RedisMode::Cluster, Some(_)) => {
            p.add("session.redis_sentinel_master", "is only for redis_mode = \"sentinel\"")
        }
        _ => {}
    }
    let redis_key_prefix = raw.session.redis_key_prefix.unwrap_or_else(|| "logto-gate:".to_owned());
    let cookie_name = non_empty(raw.session.cookie_name).unwrap_or_else(|| "logto_gate".to_owned());
    if !cookie_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        || cookie_name.len() > 64
    {
        p.add(
            "session.cookie_name",
            format!("`{cookie_name}` may only contain letters, digits, _ and - (at most 64)"),
        );
    }
    let lifetime = duration(&mut p, "session.lifetime", raw.session.lifetime, "7d");
    let public_host = public_url
        .as_ref()
        .map(|u| crate::policy::normalise_host(u.host()))
        .unwrap_or_default();
    let cookie_domain = non_empty(raw.session.cookie_domain).map(|d| d.trim_start_matches('.').to_ascii_lowercase());
    if let Some(d) = &cookie_domain {
        if !d.contains('.') || !d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            p.add(
                "session.cookie_domain",
                format!("`{d}` is not a domain like \"example.com\" (browsers refuse cookies for a top-level domain)"),
            );
        } else if public_url.is_some() && !within(&public_host, d) {
            p.add(
                "session.cookie_domain",
                format!("`{d}` does not contain server.public_url's host `{public_host}`, where the callback sets the cookie"),
            );
        }
    }
    let allowed_redirect_hosts: Vec<String> = raw
        .server
        .allowed_redirect_hosts
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    for h in &allowed_redirect_hosts {
        let bare = h.trim_start_matches('.');
        let name = bare.split(':').next().unwrap_or(bare);
        if bare.contains('/') || bare.contains('@') || name.is_empty() {
            p.add(
                "server.allowed_redirect_hosts",
                format!("`{h}` is not a host like \"grafana.example.com\" or \".example.com\""),
            );
        } else if let Some(d) = &cookie_domain {
            if !within(name, d) {
                p.add(
                    "server.allowed_redirect_hosts",
                    format!("`{h}` is outside session.cookie_domain `{d}`: the session cookie would not reach it"),
                );
            }
        } else {
            p.add(
                "server.allowed_redirect_hosts",
                format!("`{h}` needs session.cookie_domain: a host-only cookie on server.public_url's host would not reach it"),
            );
        }
    }

    // headers
    let headers = match raw.headers {
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

    // server extras
    let mut trusted_proxies = Vec::new();
    for t in raw.server.trusted_proxies.unwrap_or_default() {
        match Cidr::parse(&t) {
            Ok(c) => trusted_proxies.push(c),
            Err(e) => p.add("server.trusted_proxies", e),
        }
    }

    let metrics_listen = non_empty(raw.server.metrics_listen).and_then(|m| match m.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "server.metrics_listen",
                format!("`{m}` is not an address like 127.0.0.1:9090"),
            );
            None
        }
    });
    let shutdown_timeout = duration(&mut p, "server.shutdown_timeout", raw.server.shutdown_timeout, "25s");
    let header_read_timeout = duration(
        &mut p,
        "server.header_read_timeout",
        raw.server.header_read_timeout,
        "30s",
    );
    let server_idle_timeout = duration(&mut p, "server.idle_timeout", raw.server.idle_timeout, "90s");
    let max_header_bytes = match raw.server.max_header_bytes {
        None => 65_536,
        Some(n) if (8_192..=1_048_576).contains(&n) => n as usize,
        Some(n) => {
            p.add("server.max_header_bytes", format!("{n} is outside 8192..=1048576"));
            65_536
        }
    };
    let workers = match raw.server.workers {
        None => crate::worker::default_count(),
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(n) => {
            p.add("server.workers", format!("{n} is outside 1..=1024"));
            1
        }
    };
    let tls = match (raw.server.tls_cert_file, raw.server.tls_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => match crate::tls::load(&c, &k) {
            Ok(_) => Some((c, k)),
            Err(e) => {
                p.0.push(e);
                None
            }
        },
        (Some(_), None) => {
            p.add("server.tls_key_file", "missing (server.tls_cert_file is set)");
            None
        }
        (None, Some(_)) => {
            p.add("server.tls_cert_file", "missing (server.tls_key_file is set)");
            None
        }
    };

    // access policy
    let case_insensitive_paths = raw.server.case_insensitive_paths.unwrap_or(false);
    let default_access = match &raw.access {
        None => Access::Require(Requirements::default()),
        Some(a) => {
            for (key, set) in [
                ("path", a.path.is_some()),
                ("prefix", a.prefix.is_some()),
                ("methods", a.methods.is_some()),
                ("host", a.host.is_some()),
            ] {
                if set {
                    p.add(
                        &format!("access.{key}"),
                        "the default applies to every path; use [[rules]] to match",
                    );
                }
            }
            access_of(&mut p, "access", a)
        }
    };
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
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
            (Some(re), None) => match regex::RegexBuilder::new(&format!("^(?:{re})"))
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
            (None, Some(prefix)) => {
                if prefix.starts_with('/') && case_insensitive_paths {
                    Some(PathMatch::Prefix(prefix.to_lowercase()))
                } else if prefix.starts_with('/') {
                    Some(PathMatch::Prefix(prefix.clone()))
                } else {
                    p.add(&format!("{key}.prefix"), format!("`{prefix}` must start with /"));
                    None
                }
            }
        };
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
        let host = r.host.as_deref().map(crate::policy::normalise_host);
        let access = access_of(&mut p, &key, r);
        if let Some(path) = path {
            rules.push(Rule {
                path,
                methods,
                host,
                access,
            });
        }
    }
    let policy = Policy {
        rules,
        default: default_access,
        case_insensitive: case_insensitive_paths,
    };
    for s in policy.needed_scopes() {
        if !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_owned());
        }
    }
    for (_, path) in &headers {
        if let Some(s) = scope_for_claim(path.root()) {
            if !scopes.iter().any(|have| have == s) {
                scopes.push(s.to_owned());
            }
        }
    }

    // assertion
    let assertion = if raw.assertion.enabled.unwrap_or(false) {
        let audience = p.required("assertion.audience", non_empty(raw.assertion.audience));
        let lifetime = duration(&mut p, "assertion.lifetime", raw.assertion.lifetime, "60s");
        if let Some(f) = &raw.assertion.signing_key_file {
            if !f.is_file() {
                p.add(
                    "assertion.signing_key_file",
                    format!("{} is not a readable file", f.display()),
                );
            }
        }
        audience.map(|audience| AssertionConfig {
            audience,
            signing_key_file: raw.assertion.signing_key_file.clone(),
            lifetime,
        })
    } else {
        None
    };

    // log
    let level = non_empty(raw.log.level).unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.add(
            "log.level",
            format!("`{level}` is not a level (error, warn, info, debug, trace) or filter"),
        );
    }
    let format = match non_empty(raw.log.format).as_deref() {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add("log.format", format!("`{other}` must be \"pretty\" or \"json\""));
            LogFormat::Pretty
        }
    };

    if !p.0.is_empty() {
        return Err(ConfigErrors(p.0));
    }
    // [upstream] is the default route (for any host, every path) when it has a URL; the shared settings in any case.
    let mut routes: Vec<UpstreamRoute> = routes.into_iter().map(|(r, _)| r).collect();
    let shared_url = default_upstream.clone().or_else(|| {
        routes
            .first()
            .map(|r| (r.upstream.url.clone(), r.upstream.base_path.clone()))
    });
    let Some((url, base_path)) = shared_url else {
        return Err(ConfigErrors(vec!["upstream.url: missing".to_owned()]));
    };
    let shared = UpstreamConfig {
        url,
        base_path,
        preserve_host,
        connect_timeout,
        response_timeout,
        pass_access_token: raw.upstream.pass_access_token.unwrap_or(false),
        pass_method_override: raw.upstream.pass_method_override.unwrap_or(false),
        upgrade_protocols,
        protected_app,
        tls_roots,
    };
    if default_upstream.is_some() {
        routes.push(UpstreamRoute {
            host: None,
            prefix: "/".to_owned(),
            strip_prefix: false,
            upstream: shared.clone(),
        });
    }
    // Every `None` below was reported as a problem above, so this only fails on a logic error.
    let (
        Some(listen),
        Some(public_url),
        Some(endpoint),
        Some(app_id),
        Some(app_secret),
        Some(()),
        Some(post_logout_redirect_uri),
    ) = (
        listen,
        public_url,
        endpoint,
        app_id,
        app_secret,
        secret,
        post_logout_redirect_uri,
    )
    else {
        return Err(ConfigErrors(vec!["config: incomplete after validation".to_owned()]));
    };
    let secure_cookies = public_url.is_https();
    Ok(Config {
        server: ServerConfig {
            listen,
            public_url,
            trusted_proxies,
            allow_encoded_slashes: raw.server.allow_encoded_slashes.unwrap_or(false),
            allowed_redirect_hosts,
            case_insensitive_paths,
            skip_auth_preflight: raw.server.skip_auth_preflight.unwrap_or(false),
            metrics_listen,
            shutdown_timeout,
            header_read_timeout,
            max_header_bytes,
            workers,
            idle_timeout: server_idle_timeout,
            tls,
        },
        upstream: shared,
        routes,
        logto: LogtoConfig {
            issuer: format!("{endpoint}/oidc"),
            endpoint,
            app_id,
            app_secret: Secret::new(app_secret),
            scopes,
            resources,
            prompt,
            first_screen,
            direct_sign_in,
            post_logout_redirect_uri,
            organization_id,
            clock_leeway,
        },
        session: SessionConfig {
            secrets: secrets.into_iter().map(Secret::new).collect(),
            cookie_name,
            lifetime,
            idle_timeout,
            secure_cookies,
            store,
            redis_url,
            redis_key_prefix,
            redis_mode,
            redis_urls,
            redis_sentinel_master,
            cookie_domain,
        },
        headers,
        policy,
        assertion,
        log: LogConfig { level, format },
    })
}

/// True when `host` is `domain` or one of its subdomains (on a label boundary: `badexample.com` is not in
/// `example.com`).
fn within(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// `logto.clock_leeway`: how far the gate's and Logto's clocks may disagree, for every token the gate verifies
/// (ID, access, organization and logout tokens). Zero is allowed; more than five minutes is refused, since a
/// short-lived token would then live on long after it expired.
fn clock_leeway(p: &mut Problems, raw: Option<String>) -> u64 {
    let Some(text) = raw else {
        return crate::oidc::jwt::DEFAULT_LEEWAY_SECS;
    };
    match humantime::parse_duration(&text) {
        Ok(d) if d <= Duration::from_secs(300) => d.as_secs(),
        Ok(_) => {
            p.add("logto.clock_leeway", format!("`{text}` is longer than 5m"));
            crate::oidc::jwt::DEFAULT_LEEWAY_SECS
        }
        Err(e) => {
            p.add(
                "logto.clock_leeway",
                format!("`{text}` is not a duration like \"30s\" ({e})"),
            );
            crate::oidc::jwt::DEFAULT_LEEWAY_SECS
        }
    }
}

/// `upstream.upgrade_protocols`: protocol names (RFC 9110 §16.7), lower-cased; `websocket` by default. `h2c` is
/// refused: an HTTP/2 connection inside the tunnel would carry requests the gate never sees (RFC 9113 §3.1).
fn upgrade_protocols(p: &mut Problems, raw: Option<Vec<String>>) -> Vec<String> {
    let list = raw.unwrap_or_else(|| vec!["websocket".to_owned()]);
    let mut out = Vec::new();
    for name in list {
        let lower = name.trim().to_ascii_lowercase();
        if lower.is_empty()
            || !lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            p.add(
                "upstream.upgrade_protocols",
                format!("`{name}` is not a protocol name like \"websocket\""),
            );
        } else if lower == "h2c" {
            p.add(
                "upstream.upgrade_protocols",
                "`h2c` cannot be allowed: requests inside an HTTP/2 tunnel would bypass the gate's rules",
            );
        } else if !out.contains(&lower) {
            out.push(lower);
        }
    }
    out
}

/// The Logto scope that makes a claim available.
fn scope_for_claim(root: &str) -> Option<&'static str> {
    match root {
        "email" | "email_verified" => Some("email"),
        "phone_number" | "phone_number_verified" => Some("phone"),
        "roles" => Some("roles"),
        "organizations" | "organization_data" => Some("urn:logto:scope:organizations"),
        "organization_roles" => Some("urn:logto:scope:organization_roles"),
        "custom_data" => Some("custom_data"),
        "identities" => Some("identities"),
        _ => None,
    }
}

fn lowered(v: &Option<Vec<String>>) -> Vec<String> {
    v.iter().flatten().map(|s| s.trim().to_ascii_lowercase()).collect()
}

fn kept(v: &Option<Vec<String>>) -> Vec<String> {
    v.iter().flatten().map(|s| s.trim().to_owned()).collect()
}

/// The access a rule (or `[access]`) grants.
fn access_of(p: &mut Problems, key: &str, r: &RawRule) -> Access {
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
    ]
    .iter()
    .any(|v| !v.is_empty());
    match r.allow.as_deref().map(str::trim) {
        None | Some("authenticated") => Access::Require(requirements),
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
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        public_url = "https://app.example.com"
        [upstream]
        url = "http://127.0.0.1:8080"
        [logto]
        endpoint = "https://tenant.logto.app/"
        app_id = "app"
        app_secret = "s3cret"
        [session]
        secret = "0123456789abcdef0123456789abcdef"
    "#;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:4180");
        assert_eq!(c.logto.issuer, "https://tenant.logto.app/oidc");
        // The default headers read email and roles, so those scopes are requested too.
        assert_eq!(
            c.logto.scopes,
            vec!["openid", "profile", "offline_access", "email", "roles"]
        );
        assert_eq!(c.logto.prompt.as_deref(), Some("consent"));
        assert_eq!(c.session.cookie_name, "logto_gate");
        assert_eq!(c.session.lifetime, Duration::from_secs(7 * 86400));
        assert!(c.session.secure_cookies);
        assert_eq!(
            c.logto.post_logout_redirect_uri,
            "https://app.example.com/_logto/signed-out"
        );
        assert_eq!(c.headers.len(), 4);
    }

    #[test]
    fn messages_say_what_to_write() {
        let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
        let typo = err(&MINIMAL.replace("[session]\n", "[session]\nlifetme = \"1d\"\n"));
        assert!(
            typo.iter()
                .any(|l| l.contains("unknown key `lifetme` (did you mean `lifetime`?)")),
            "{typo:?}"
        );
        let number = err(&MINIMAL.replace("[session]\n", "[session]\nidle_timeout = 30\n"));
        assert!(
            number
                .iter()
                .any(|l| l.starts_with("session.idle_timeout: found") && l.contains("like \"30s\"")),
            "{number:?}"
        );
        let rule = err(&format!(
            "{MINIMAL}\n[[rules]]\nprefix = \"/a\"\n[[rules]]\nprefix = \"/b\"\nroles = 3\n"
        ));
        assert!(rule.iter().any(|l| l.starts_with("rules[1].roles:")), "{rule:?}");
        let scheme = err(&MINIMAL.replace("https://app.example.com", "app.example.com"));
        assert!(
            scheme
                .iter()
                .any(|l| l.starts_with("server.public_url:") && l.contains("write it like https://app.example.com")),
            "{scheme:?}"
        );
    }

    #[test]
    fn workers_default_to_the_cpus_and_are_bounded() {
        let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
        assert_eq!(c.server.workers, crate::worker::default_count());
        let with = |n: &str| MINIMAL.replace("[server]\n", &format!("[server]\nworkers = {n}\n"));
        assert_eq!(
            Config::from_toml_str(&with("3"), no_env())
                .expect("valid")
                .server
                .workers,
            3
        );
        for bad in ["0", "1025"] {
            let text = Config::from_toml_str(&with(bad), no_env()).unwrap_err().to_string();
            assert!(
                text.contains(&format!("server.workers: {bad} is outside 1..=1024")),
                "{text}"
            );
        }
        let env = vec![("LOGTO_GATE_SERVER__WORKERS".to_owned(), "5".to_owned())];
        assert_eq!(Config::from_toml_str(MINIMAL, env).expect("valid").server.workers, 5);
    }

    #[test]
    fn every_missing_key_is_named_on_its_own_line() {
        let err = Config::from_toml_str("", no_env()).unwrap_err();
        let text = err.to_string();
        for key in [
            "server.public_url: missing",
            "upstream.url: missing",
            "logto.endpoint: missing",
            "logto.app_id: missing",
            "logto.app_secret: missing",
            "session.secret: missing",
        ] {
            assert!(text.contains(key), "{key} not in {text}");
        }
    }

    #[test]
    fn short_secret_and_bad_urls_are_reported_together() {
        let toml = MINIMAL
            .replace("0123456789abcdef0123456789abcdef", "short")
            .replace("http://127.0.0.1:8080", "ftp://x")
            .replace("https://app.example.com", "https://app.example.com/path");
        let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.0.iter().any(|l| l.starts_with("session.secret: too short")));
        assert!(err.0.iter().any(|l| l.starts_with("upstream.url:")));
        assert!(err.0.iter().any(|l| l.starts_with("server.public_url:")));
    }

    #[test]
    fn env_value_that_looks_like_a_number_stays_a_string() {
        let env = vec![
            ("LOGTO_GATE_LOGTO__APP_SECRET".to_owned(), "12345".to_owned()),
            ("LOGTO_GATE_LOGTO__APP_ID".to_owned(), "007".to_owned()),
            ("LOGTO_GATE_UPSTREAM__PRESERVE_HOST".to_owned(), "true".to_owned()),
            ("LOGTO_GATE_LOGTO__SCOPES".to_owned(), "email, roles".to_owned()),
        ];
        let c = Config::from_toml_str(MINIMAL, env).expect("valid");
        assert_eq!(c.logto.app_secret.expose(), "12345");
        assert_eq!(c.logto.app_id, "007");
        assert!(c.upstream.preserve_host);
        assert_eq!(
            c.logto.scopes,
            vec!["openid", "profile", "offline_access", "email", "roles"]
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let toml = MINIMAL.replace("app_id = \"app\"", "app_id = [1]");
        let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
        assert!(err.0[0].starts_with("logto.app_id:"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let toml = format!("{MINIMAL}\n[extra]\nx = 1\n");
        let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
        assert!(err.to_string().contains("unknown key `extra`"), "{err}");
    }

    #[test]
    fn secret_is_read_from_file_without_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file-secret\n").expect("write");
        let toml = MINIMAL.replace(
            "app_secret = \"s3cret\"",
            &format!("app_secret_file = {:?}", file.display().to_string()),
        );
        let c = Config::from_toml_str(&toml, no_env()).expect("valid");
        assert_eq!(c.logto.app_secret.expose(), "from-file-secret");
    }

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

    #[test]
    fn scopes_needed_by_rules_and_headers_are_requested() {
        let toml = format!(
            "{MINIMAL}\n[headers]\n\"X-Team\" = \"custom_data.team\"\n\n[[rules]]\nprefix = \"/o\"\n\
             organizations = [\"org\"]\n\n[[rules]]\nprefix = \"/g\"\ngithub_logins = [\"x\"]\n"
        );
        let c = Config::from_toml_str(&toml, no_env()).expect("valid");
        for s in ["custom_data", "urn:logto:scope:organizations", "identities"] {
            assert!(
                c.logto.scopes.iter().any(|have| have == s),
                "{s} missing from {:?}",
                c.logto.scopes
            );
        }
    }

    #[test]
    fn trusted_proxies_and_assertion_are_validated() {
        let toml = format!("{MINIMAL}\n[assertion]\nenabled = true\n",)
            .replace("[upstream]", "[upstream]\npass_access_token = true")
            .replace(
                "public_url = ",
                "trusted_proxies = [\"10.0.0.0/8\", \"bogus\"]\npublic_url = ",
            );
        let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
        assert!(
            err.0.iter().any(|l| l.starts_with("server.trusted_proxies: `bogus`")),
            "{err}"
        );
        assert!(err.0.iter().any(|l| l == "assertion.audience: missing"), "{err}");
    }

    #[test]
    fn secret_debug_output_is_redacted() {
        let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"));
        assert!(!dbg.contains("0123456789abcdef"));
    }
}
