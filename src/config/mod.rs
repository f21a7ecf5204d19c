//! Configuration: raw TOML + environment, parsed, then validated into an immutable [`Config`].
//!
//! Sources, later ones winning: the TOML file, then environment variables `LOGTO_GATE_<SECTION>__<KEY>`
//! (`LOGTO_GATE_LOGTO__APP_SECRET` sets `logto.app_secret`). Environment values are always read as strings and
//! converted only where the key wants a number or a boolean, so a secret made of digits stays a string.
//! Every secret may also come from a file (`logto.app_secret_file`, `session.secret_file`), as Kubernetes mounts
//! secrets. The rest of the program only ever sees a validated [`Config`]; every problem found is reported as one
//! line naming its key (`logto.app_id: missing`).
//!
//! The folder follows the steps: `raw` is the text as written, `env` the environment's overrides, `load`
//! merges and parses them; each section has its own `validate_<section>` (`server.rs`, `upstream.rs`, `logto.rs`,
//! `session.rs`, `headers.rs`, `policy.rs`, `assertion.rs`, `log.rs`, `pages.rs`) over the shared checks of
//! `checks`; `validate` below runs them and the checks that span sections; `files` reads the files a valid
//! configuration names. No validation step reads a file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;

use crate::identity::ClaimPath;
use crate::policy::Policy;
use crate::proxy::trusted::Cidr;

mod assertion;
mod checks;
mod env;
mod files;
mod headers;
mod load;
mod log;
mod logto;
mod pages;
mod policy;
mod raw;
mod response_headers;
mod server;
mod session;
mod upstream;

use checks::Problems;
pub(crate) use files::{app_secret_from_file, field_value_from_file, session_secret_from_file};
pub(crate) use logto::scope_for_claim;
use raw::RawConfig;

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
    /// `[response_headers]`: fields set on every answer to a client (replacing the app's), or with `None` removed
    /// from the app's.
    pub response_headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// `[[rules]]` and the `[access]` default.
    pub policy: Policy,
    /// `[assertion]`, when enabled.
    pub assertion: Option<AssertionConfig>,
    pub log: LogConfig,
    /// `[pages]`: how the gate's own pages look.
    pub pages: PagesConfig,
}

impl Config {
    /// What a valid configuration may still get wrong, depending on settings in Logto or the app the gate cannot see:
    /// one line each, naming the key, for a warning at start and in `logto-gate check`.
    pub fn caveats(&self) -> Vec<String> {
        logto::refresh_token_caveat(&self.logto, &self.upstream, self.passes_access_tokens())
            .into_iter()
            .chain(server::unix_socket_caveat(&self.server))
            .chain(policy::form_override_caveats(
                &self.policy,
                self.upstream.read_form_method,
            ))
            .collect()
    }

    /// Whether any app is sent the session's access token (`upstream.pass_access_token`, or an `[[upstreams]]`
    /// entry's): sessions then keep the tokens.
    pub fn passes_access_tokens(&self) -> bool {
        self.upstream.pass_access_token || self.routes.iter().any(|r| r.upstream.pass_access_token)
    }
}

/// The signed identity assertion sent to the upstream (`X-Logto-Gate-Assertion`).
#[derive(Debug, Clone)]
pub struct AssertionConfig {
    pub audience: String,
    /// PKCS#8 PEM file with an EC P-256 private key; `None` generates a key at start.
    pub signing_key_file: Option<PathBuf>,
    pub lifetime: Duration,
}

/// A request field whose value is a file's text (`request_headers_files`), with the key that named it.
#[derive(Debug, Clone)]
pub struct FieldFile {
    pub name: HeaderName,
    pub path: PathBuf,
    /// `upstream.request_headers_files.X-Api-Key`, for the problems reading it.
    pub key: String,
}

/// A secret's file: `session.secret_files[1]`'s path, say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The key naming it, for the problems reading it.
    pub key: String,
    pub path: PathBuf,
}

/// `server.listen`: where the gate takes its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    /// A Unix domain socket's file (`unix:/path`), made with the permissions `mode` (`server.listen_mode`).
    Unix {
        path: PathBuf,
        mode: u32,
    },
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Listen,
    pub public_url: PublicUrl,
    /// Peers whose X-Forwarded-* (and forward-auth X-Forwarded-Uri/-Method) headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Identity fields of another auth proxy in front (the names `identity::is_foreign_identity_name` knows) that the
    /// gate passes on as they come from a trusted proxy, where it removes them from every other request.
    pub trusted_identity_headers: Vec<HeaderName>,
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
    /// `http_redirect_listen`: a plain-HTTP address whose every request is sent to its https URL
    /// (`src/http_redirect.rs`); only with an `https` `public_url`.
    pub http_redirect_listen: Option<SocketAddr>,
    /// How long in-flight requests and upgraded connections may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers (HTTP/1, also the wait for the next request).
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// A connection with no traffic for this long is closed (after its current request, if any).
    pub idle_timeout: Duration,
    /// A connection closes after answering this many requests (0: never; HTTP/2: GOAWAY, then the streams under
    /// way are answered), so that clients reconnect and their connections are spread over the workers anew.
    pub max_requests_per_connection: u32,
    /// The most client connections open at once (WebSocket tunnels included); `None`: what the open-file limit
    /// allows (half of it, less 128 descriptors for the gate itself).
    pub max_connections: Option<usize>,
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
    /// `http://localhost` for an app on a Unix socket (the `Host` it receives, unless `preserve_host`).
    pub url: Uri,
    pub base_path: String,
    /// `unix:/path`: the socket file every connection to the app is opened on (`url` then only names the origin).
    pub unix_socket: Option<PathBuf>,
    /// `h2c://`: the app is spoken to over HTTP/2 without TLS, with prior knowledge (RFC 9113 §3.3), as gRPC
    /// servers expect; `url` is its `http://` form.
    pub http2: bool,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Send the session's Logto access token to the upstream as `Authorization: Bearer`.
    pub pass_access_token: bool,
    /// Keep `X-HTTP-Method-Override` and its kin (see [`crate::policy::METHOD_OVERRIDE_HEADERS`]); rules then
    /// decide on every method the request may be taken as. Off: they are removed.
    pub pass_method_override: bool,
    /// Read a form `POST`'s body for its `_method` field where the rules tell methods apart and the client would be
    /// refused one ([`crate::policy::form`]). Off: such a rule is a caveat at start.
    pub read_form_method: bool,
    /// The most of such a body the gate holds to read it; a larger one gets 413. All of them held at once share 16
    /// times this (503 beyond), one client a quarter of that (429 beyond); each must arrive within
    /// `server.header_read_timeout` and a second per 32 KiB of this (408 beyond).
    pub max_form_method_bytes: usize,
    /// Protocols a client may switch to through the gate (RFC 9110 §7.8), lower case; `h2c` never.
    pub upgrade_protocols: Vec<String>,
    /// `tls_ca_file`: PEM certificates trusted for an `https` upstream besides the Mozilla roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls_client_cert_file` and `tls_client_key_file`: the certificate chain and key the gate presents to an
    /// `https` upstream that asks for one (mutual TLS, RFC 8446 §4.4.2), re-read when the files change.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// The certificates of `tls_ca_file`, read after validation.
    pub tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// `request_headers`: fields set on every request to the app, replacing the client's (value `Some`), or removed
    /// from it (`None`): `[upstream]`'s, with an entry's own over them. Values are marked sensitive (never logged,
    /// never indexed by HPACK).
    pub request_headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// `request_headers_files`: fields whose values are read from files once the configuration is valid (then added
    /// to `request_headers`, merged with the inline ones as they are), and read again by the gate when they change.
    pub request_header_files: Vec<FieldFile>,
    /// `tls_server_name`: the name sent in SNI (RFC 6066 §3) and verified in the app's certificate (RFC 9110
    /// §4.3.4) in place of the URL's host, for an app reached at an address its certificate does not name.
    pub tls_server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// Speak Logto Cloud's Protected App contract to the app: `Authorization: Basic base64(appId:appSecret)`,
    /// `Logto-ID-Token`, `Logto-Host`.
    pub protected_app: bool,
}

/// One `[[upstreams]]` entry (or the `[upstream]` default): which requests it serves and the app that serves them.
#[derive(Debug, Clone)]
pub struct UpstreamRoute {
    /// The `Host` it serves, lower case without port; `None`: any host.
    pub host: Option<String>,
    /// The path prefix it serves, on whole segments, in the form rules compare
    /// ([`crate::policy::path::rule_prefix`]): starts with `/`, no trailing `/` but the root's.
    pub prefix: String,
    /// The prefix as `X-Forwarded-Prefix` sends it with `strip_prefix`: as written (letter case kept), normalised
    /// and percent-encoded as in a request's path.
    pub sent_prefix: String,
    /// Remove the prefix from the path sent upstream.
    pub strip_prefix: bool,
    pub upstream: UpstreamConfig,
    /// The fields set on the answers to requests it serves: `[response_headers]` with the entry's own over them.
    pub response_headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// What it serves, as `check` prints it and access lines name it: its host (`*` for any) and prefix,
    /// `ci.example.com/`, `*/grafana`.
    pub label: String,
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
    /// `logto.app_secret_file`, read again when it changes (the OIDC client's app credentials).
    pub app_secret_file: Option<std::path::PathBuf>,
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
            .field("app_secret_file", &self.app_secret_file)
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
    /// Cookie keys: the first encrypts, all decrypt (`session.secrets`, or `session.secret` alone, or the texts of
    /// `secret_files`).
    pub secrets: Vec<Secret>,
    /// `session.secret_files` (or `session.secret_file` alone): where `secrets` were read from, in their order.
    pub secret_files: Vec<SecretFile>,
    pub cookie_name: String,
    pub lifetime: Duration,
    /// Signed out after this long without a request; `None`: only the absolute lifetime holds.
    pub idle_timeout: Option<Duration>,
    /// How often an open WebSocket tunnel (any upgraded connection) asks whether the session that opened it still
    /// stands; it is closed once the session was signed out, logged out or reached its lifetime.
    pub tunnel_check_interval: Duration,
    /// How often an open WebSocket tunnel whose session is past its refresh point asks Logto whether the session's
    /// grant still stands (token introspection): a suspended user's or revoked grant's tunnels then close too.
    pub tunnel_grant_check_interval: Duration,
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
    /// `session.revocation_file`: where the cookie store without Redis keeps its revocation list (sign-outs,
    /// back-channel logouts, logout token ids) so that a restart does not forget it. `None`: in memory only.
    pub revocation_file: Option<std::path::PathBuf>,
    /// `session.sign_out_clear_site_data`: the `Clear-Site-Data` field (W3C Clear Site Data) a sign-out answers with,
    /// its directives quoted and joined; `None` when the list is empty (the default).
    pub sign_out_clear_site_data: Option<http::HeaderValue>,
    /// `session.keep_url_fragment`: a browser's navigation that needs a sign-in is answered with a page whose script
    /// carries the address's fragment (`#/reports/42`, which browsers never send) into the sign-in, so that the
    /// person comes back to it; `false` (the default): a redirect straight to Logto, the fragment lost.
    pub keep_url_fragment: bool,
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

/// `[pages]`: what the gate's own pages (403, 502, signed out, ...) show besides their message.
#[derive(Debug, Clone, Default)]
pub struct PagesConfig {
    /// What the pages show, the stylesheet's text read into it once the configuration is valid.
    pub(crate) look: crate::pages::Look,
    /// `pages.stylesheet_file`.
    pub stylesheet_file: Option<std::path::PathBuf>,
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

/// Validates every section, then what spans sections; returns the configuration and the files left to read.
fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();
    // A [server] key the rules need even when another [server] key has a problem.
    let case_insensitive_paths = raw.server.case_insensitive_paths.unwrap_or(false);
    let allow_encoded_slashes = raw.server.allow_encoded_slashes.unwrap_or(false);
    let server = server::validate_server(&mut p, raw.server);
    let public_url = server.as_ref().map(|s| &s.public_url);
    let headers = headers::validate_headers(&mut p, raw.headers);
    let identity_names: Vec<HeaderName> = headers.iter().flatten().map(|(name, _)| name.clone()).collect();
    let upstream = upstream::validate_upstream(
        &mut p,
        raw.upstream,
        &raw.upstreams,
        &identity_names,
        case_insensitive_paths,
        allow_encoded_slashes,
    );
    let logto = logto::validate_logto(&mut p, raw.logto, public_url);
    let session = session::validate_session(&mut p, raw.session, public_url);
    let response_headers =
        response_headers::validate_response_headers(&mut p, "response_headers", raw.response_headers);
    let policy = policy::validate_policy(
        &mut p,
        raw.access.as_ref(),
        &raw.rules,
        case_insensitive_paths,
        allow_encoded_slashes,
    );
    let assertion = assertion::validate_assertion(&mut p, raw.assertion);
    let log = log::validate_log(&mut p, raw.log);
    let pages = pages::validate_pages(&mut p, raw.pages);
    if let (Some(server), Some(session)) = (&server, &session) {
        check_redirect_hosts(&mut p, &server.allowed_redirect_hosts, session.cookie_domain.as_deref());
    }
    if let (Some(server), Some(headers)) = (&server, &headers) {
        check_kept_identity(&mut p, &server.trusted_identity_headers, headers);
    }
    if let (Some((upstream, routes)), Some(headers)) = (&upstream, &headers) {
        check_authorization_mapping(&mut p, upstream, routes, headers);
    }
    if let (Some(logto), Some(policy)) = (&logto, &policy) {
        check_rule_resources(&mut p, &logto.resources, policy);
    }
    p.into_result()?;
    // Every section without a problem is `Some`; this only fails on a logic error.
    let (
        Some(server),
        Some((upstream, routes)),
        Some(mut logto),
        Some(session),
        Some(headers),
        Some(response_headers),
        Some(policy),
        Ok(assertion),
        Some(log),
        Some(pages),
    ) = (
        server,
        upstream,
        logto,
        session,
        headers,
        response_headers,
        policy,
        assertion,
        log,
        pages,
    )
    else {
        return Err(ConfigErrors(vec!["config: incomplete after validation".to_owned()]));
    };
    // What the rules and the header mapping read must be asked of Logto.
    let scopes = &mut logto.scopes;
    for s in policy.needed_scopes() {
        if !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_owned());
        }
    }
    for (_, path) in &headers {
        if let Some(s) = logto::scope_for_claim(path.root()) {
            if !scopes.iter().any(|have| have == s) {
                scopes.push(s.to_owned());
            }
        }
    }

    // Each entry's fields over the shared ones (until here an entry holds only its own).
    let routes = routes
        .into_iter()
        .map(|mut r| {
            r.response_headers = response_headers::merged(&response_headers, std::mem::take(&mut r.response_headers));
            r
        })
        .collect();
    let config = Config {
        server,
        upstream,
        routes,
        logto,
        session,
        headers,
        response_headers,
        policy,
        assertion,
        log,
        pages,
    };
    Ok(config)
}

/// A rule's `resources` must be among `logto.resources`: tokens for any other resource are refused before any rule
/// is read, so the rule would admit no token at all, which its writer cannot have meant.
fn check_rule_resources(p: &mut Problems, accepted: &[String], policy: &Policy) {
    let rules = policy.rules.iter().map(|r| &r.access).enumerate();
    let keyed = rules
        .map(|(i, access)| (format!("rules[{i}].resources"), access))
        .chain([("access.resources".to_owned(), &policy.default)]);
    for (key, access) in keyed {
        let crate::policy::Access::Require(requirements) = access else {
            continue;
        };
        for resource in &requirements.resources {
            if !accepted.contains(resource) {
                p.add(
                    &key,
                    format!("`{resource}` is not in logto.resources, so no token for it is ever accepted"),
                );
            }
        }
    }
}

/// A claim mapped onto `Authorization` where the gate sends its own there (the access token, or the Protected App's
/// Basic credentials) would be replaced on every request: the mapping is refused instead of silently lost.
fn check_authorization_mapping(
    p: &mut Problems,
    upstream: &UpstreamConfig,
    routes: &[UpstreamRoute],
    headers: &[(HeaderName, ClaimPath)],
) {
    // The identity fields go to every app: one app sent the access token is enough.
    let sender = if upstream.pass_access_token || routes.iter().any(|r| r.upstream.pass_access_token) {
        "upstream.pass_access_token sends the access token"
    } else if upstream.protected_app {
        "upstream.protected_app sends the app's Basic credentials"
    } else {
        return;
    };
    for (name, _) in headers {
        if name == http::header::AUTHORIZATION {
            p.add(
                &format!("headers.{name}"),
                format!("{sender} in this header, so it cannot carry a claim"),
            );
        }
    }
}

/// `server.allowed_redirect_hosts` must lie inside `session.cookie_domain`, or the session cookie would not reach
/// them.
fn check_redirect_hosts(p: &mut Problems, hosts: &[String], cookie_domain: Option<&str>) {
    for h in hosts {
        let name = server::redirect_host_name(h);
        match cookie_domain {
            Some(d) if !checks::within(name, d) => p.add(
                "server.allowed_redirect_hosts",
                format!("`{h}` is outside session.cookie_domain `{d}`: the session cookie would not reach it"),
            ),
            Some(_) => {}
            None => p.add(
                "server.allowed_redirect_hosts",
                format!("`{h}` needs session.cookie_domain: a host-only cookie on server.public_url's host would not reach it"),
            ),
        }
    }
}

/// `server.trusted_identity_headers` names no field the gate sets itself (`[headers]`, or its default four without
/// the table): the gate's identity replaces whatever came.
fn check_kept_identity(p: &mut Problems, kept: &[HeaderName], headers: &[(HeaderName, ClaimPath)]) {
    for name in kept.iter().filter(|k| headers.iter().any(|(h, _)| h == *k)) {
        p.add(
            "server.trusted_identity_headers",
            format!("`{name}` is the gate's own identity field ([headers], or its default names without the table)"),
        );
    }
}

#[cfg(test)]
mod tests;
