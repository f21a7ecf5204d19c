//! Claims -> identity headers for the upstream, and removal of any identity a client tries to claim itself.
//!
//! Defaults follow oauth2-proxy so an app behind it can switch without change:
//! `X-Forwarded-User` = sub, `X-Forwarded-Email` = email, `X-Forwarded-Preferred-Username` = username,
//! `X-Forwarded-Groups` = roles joined with ",".

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// A claim named by a dotted path into the claims object: `email`, `identities.github.userId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    segments: Vec<String>,
}

impl ClaimPath {
    pub fn parse(text: &str) -> Result<ClaimPath, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the claim name is empty".to_owned());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!("`{text}` is not a claim name or dotted path"));
        }
        Ok(ClaimPath { segments })
    }

    /// The value at this path as the gate passes it on ([`passed_claim`]: not an email marked unverified).
    fn passed<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        match self.segments.as_slice() {
            [only] => passed_claim(claims, only),
            _ => self.lookup(claims),
        }
    }

    /// The top-level claim this path reads (kept in the session).
    pub fn root(&self) -> &str {
        self.segments.first().map(String::as_str).unwrap_or("")
    }

    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut v = claims.get(first)?;
        for seg in rest {
            v = match v {
                Value::Object(m) => m.get(seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

/// Whether `claims` say their email is not verified (`email_verified: false`, OpenID Connect Core 1.0 §5.1). Such an
/// email is never passed on (identity headers, forward-auth answers, the assertion): an app that keys accounts by
/// email would take anyone's word for someone else's address. As oauth2-proxy does, a missing `email_verified`
/// does not count against the email.
fn email_unverified(claims: &Map<String, Value>) -> bool {
    claims.get("email_verified").and_then(Value::as_bool) == Some(false)
}

/// The top-level claim `name` as the gate passes it on to an app (headers, forward-auth answers, the assertion):
/// as it is, except an `email` marked unverified (`email_verified: false`), which is not passed on at all.
pub fn passed_claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if name == "email" && email_unverified(claims) {
        return None;
    }
    claims.get(name)
}

/// A copy of `claims` holding only the values at `paths` (nested objects kept along each path), with `null`s
/// dropped. Sessions keep only what headers and rules read, so cookies stay small.
pub fn prune(claims: &Map<String, Value>, paths: &[ClaimPath]) -> Map<String, Value> {
    let mut out = Map::new();
    for path in paths {
        let Some(value) = path.lookup(claims).filter(|v| !v.is_null()) else {
            continue;
        };
        if !insert_at(&mut out, &path.segments, value.clone()) {
            // An array index on the way (`roles.0`): keep the whole top-level claim instead.
            if let Some(v) = claims.get(path.root()) {
                out.insert(path.root().to_owned(), v.clone());
            }
        }
    }
    out
}

fn insert_at(node: &mut Map<String, Value>, segments: &[String], value: Value) -> bool {
    match segments {
        [] => false,
        [last] => {
            node.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => match node.entry(first.clone()).or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(m) => insert_at(m, rest, value),
            _ => false,
        },
    }
}

/// The default header mapping (oauth2-proxy's names).
pub fn default_headers() -> Vec<(HeaderName, ClaimPath)> {
    [
        ("x-forwarded-user", "sub"),
        ("x-forwarded-email", "email"),
        ("x-forwarded-preferred-username", "username"),
        ("x-forwarded-groups", "roles"),
    ]
    .into_iter()
    .map(|(h, c)| {
        (
            HeaderName::from_static(h),
            ClaimPath {
                segments: vec![c.to_owned()],
            },
        )
    })
    .collect()
}

/// Forwarding headers only a proxy in front may set, removed from an untrusted peer's request (in any spelling,
/// `_` for `-`; `src/proxy/forwarded.rs`). Besides the standard ones:
/// - the client's address as apps and CDNs name it: `Client-IP` (which many PHP "real IP" helpers read before
///   `X-Forwarded-For`), `X-Client-IP`, `True-Client-IP`, `X-Cluster-Client-IP`, `CF-Connecting-IP`,
///   `Fastly-Client-IP`, `X-Original-Forwarded-For`, `X-Forwarded` and `Forwarded-For`: an app's IP allow-list or
///   audit log would take the client's word for its address;
/// - the scheme: `X-Forwarded-Ssl` (Rack reads it before `X-Forwarded-Proto`), `X-Forwarded-Scheme`,
///   `X-Url-Scheme`, `Front-End-Https` (CodeIgniter);
/// - the host and path: `X-Original-Host`, `X-Forwarded-Prefix`, `-Port`, `-Uri`, `-Method`, `X-Original-URI`.
pub(crate) const CLIENT_FORWARDING_HEADERS: [&str; 24] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-real-ip",
    "x-original-uri",
    "client-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-forwarded",
    "forwarded-for",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-original-host",
];

/// Headers the gate owns on the way upstream besides the identity mapping; a client's copies are removed (in any
/// spelling, `_` for `-`): the assertion (`crate::assertion::HEADER`), the forward-auth answer's identity fields,
/// `X-Original-URL` / `X-Rewrite-URL`, on which IIS's URL Rewrite and old Symfony route instead of the request
/// target (so the app would serve another path than the rules saw), the machine and actor fields and the Protected
/// App's (`src/gate/`, whose tests check these names against its own).
pub(crate) const GATE_OWNED_HEADERS: [&str; 12] = [
    "x-logto-gate-assertion",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-machine",
    "x-forwarded-actor",
    "logto-id-token",
    "logto-host",
];

/// Identity fields other auth proxies set, and the gate's own default names (a `[headers]` table may leave them
/// unmapped): an app moved from behind one of those proxies, or another app behind the gate, may still believe
/// them, so no client sets them. Removed in any spelling from every request, a trusted proxy's too (a proxy in front
/// passes a client's fields on as they came); one the `[headers]` table maps is the gate's to set, as any other.
pub(crate) const FOREIGN_IDENTITY_HEADERS: [&str; 28] = [
    // oauth2-proxy's, and the gate's defaults
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    // Authelia, Authentik and Caddy's forward_auth
    "remote-user",
    "remote-groups",
    "remote-email",
    "remote-name",
    // Kubernetes' request-header authentication (kube-rbac-proxy, OpenShift's OAuth proxy)
    "x-remote-user",
    "x-remote-group",
    // Grafana's and Gitea's reverse-proxy authentication
    "x-webauth-user",
    "x-webauth-email",
    "x-webauth-fullname",
    // Pomerium, Cloudflare Access, Google's IAP, AWS's load balancers, Azure App Service, Vouch
    "x-pomerium-jwt-assertion",
    "cf-access-jwt-assertion",
    "cf-access-authenticated-user-email",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-goog-iap-jwt-assertion",
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
    "x-ms-client-principal",
    "x-ms-client-principal-name",
    "x-ms-client-principal-id",
    "x-ms-client-principal-idp",
    "x-vouch-user",
];

/// Prefixes of such fields, each naming many: Pomerium's claims, Authentik's fields, Kubernetes' extra attributes,
/// Azure App Service's tokens, Vouch's claims.
const FOREIGN_IDENTITY_PREFIXES: [&str; 5] = [
    "x-pomerium-claim-",
    "x-authentik-",
    "x-remote-extra-",
    "x-ms-token-",
    "x-vouch-idp-claims-",
];

/// Whether `name` (lower case, as a [`HeaderName`]) is one of [`FOREIGN_IDENTITY_HEADERS`] or under one of their
/// prefixes: a field `server.trusted_identity_headers` may keep from trusted proxies.
pub(crate) fn is_foreign_identity_name(name: &str) -> bool {
    FOREIGN_IDENTITY_HEADERS.contains(&name)
        || FOREIGN_IDENTITY_PREFIXES
            .iter()
            .any(|p| name.len() > p.len() && name.starts_with(p))
}

/// Why a claim can never be mapped onto `name` (`[headers]`), or `None` when it can. Names are compared as PHP,
/// WSGI and CGI see them (`_` as `-`, any case).
///
/// - Fields that frame the request or belong to its connection (RFC 9110 §7.6.1, RFC 9112 §6): a claim there would
///   change how the app reads the body, or be dropped on the way.
/// - Fields the gate sets or removes for reasons of its own: cookies, proxy credentials, the request id, method
///   overrides, `CLIENT_FORWARDING_HEADERS` and `GATE_OWNED_HEADERS`. A claim there would be silently replaced
///   by the gate's value, or sent next to it, or be trusted for what the name means to apps (a client's address, a
///   method). (`Authorization` is refused only where the gate sends it, see `upstream.pass_access_token`.)
pub fn reserved_header(name: &HeaderName) -> Option<&'static str> {
    match reserved_kind(name)? {
        Reserved::Framing => Some("this header frames the request or its connection, so it cannot carry a claim"),
        Reserved::Managed => Some("this header is managed by the gate and cannot carry a claim"),
    }
}

/// Why no configuration may set a request field ([`reserved_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// It frames the request or belongs to its connection.
    Framing,
    /// The gate sets or removes it for reasons of its own.
    Managed,
}

/// Whether `name` is a field the gate frames by or manages ([`reserved_header`] says which), compared as PHP, WSGI
/// and CGI see names.
pub fn reserved_kind(name: &HeaderName) -> Option<Reserved> {
    const FRAMING: [&str; 13] = [
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "expect",
        "http2-settings",
    ];
    const MANAGED: [&str; 8] = [
        "cookie",
        "set-cookie",
        "proxy-authorization",
        "proxy-authenticate",
        "x-request-id",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ];
    let n = normalise_name(name.as_str());
    let n = n.as_str();
    if FRAMING.contains(&n) {
        Some(Reserved::Framing)
    } else if MANAGED.contains(&n) || CLIENT_FORWARDING_HEADERS.contains(&n) || GATE_OWNED_HEADERS.contains(&n) {
        Some(Reserved::Managed)
    } else {
        None
    }
}

/// The form under which servers such as PHP, WSGI and CGI expose a header: lower case with `_` read as `-`.
/// `X_Forwarded_User` reaches those apps as the same variable as `X-Forwarded-User`.
pub fn normalise_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' => '-',
            other => other.to_ascii_lowercase() as char,
        })
        .collect()
}

/// Renders a claim as a header value: strings as they are, numbers and booleans as text, arrays joined with ",".
/// Returns `None` for a missing or null claim, objects, and values a header cannot carry (CR, LF, NUL and other
/// control characters), so a claim can never inject a header. An array element that holds a `,` (or is empty, or
/// starts or ends with a space or tab) is left out: joined, it would read as two elements (or none, or another:
/// list parsers drop the whitespace around elements, RFC 9110 §5.6.1), so whoever chose the name (of a role, or of
/// a value in `custom_data`, which Logto's Account API may let users edit) could make one entry read as two, or as
/// ` admin` read as `admin`.
pub fn header_value(claim: &Value) -> Option<HeaderValue> {
    let text = match claim {
        Value::Null | Value::Object(_) => return None,
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) if is_list_element(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            parts.join(",")
        }
    };
    // A claim without a value (null, an empty list such as a user's roles when there are none, an empty string)
    // sends no header at all, never an empty one.
    if text.is_empty() || text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None;
    }
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

/// Whether `s` reads back as itself from a comma-separated list: not empty, no `,`, no whitespace at either end.
fn is_list_element(s: &str) -> bool {
    let padded = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    !s.is_empty() && !s.contains(',') && !padded(s.as_bytes().first()) && !padded(s.as_bytes().last())
}

/// The set of names the gate owns on requests to the upstream, normalised with [`normalise_name`], and the
/// identity fields other auth proxies set (`FOREIGN_IDENTITY_HEADERS`) and their prefixes.
#[derive(Debug, Clone)]
pub struct ManagedHeaders {
    normalised: Vec<String>,
    /// [`length_mask`] of `normalised`: this runs for every field of every request.
    lengths: u128,
    /// Names passed on as sent, in this exact spelling (`server.trusted_identity_headers` for a trusted proxy's
    /// requests); their other spellings (`_` for `-`) are still removed.
    kept: Box<[HeaderName]>,
}

/// The bit of a set of names' length mask ([`length_mask`]) for a name of `len` bytes (127 and longer share one).
pub(crate) const fn length_bit(len: usize) -> u128 {
    1 << if len < 127 { len } else { 127 }
}

/// A bit for each length of a name in `names` ([`length_bit`]): a field whose length has no bit is none of them,
/// which rules out most of a request's fields before any name is compared.
pub(crate) const fn length_mask(names: &[&str]) -> u128 {
    let mut mask = 0;
    let mut i = 0;
    while i < names.len() {
        mask |= length_bit(names[i].len());
        i += 1;
    }
    mask
}

/// True when `name` reads as `normalised` to PHP/WSGI/CGI: same length, equal ignoring case with `_` as `-`.
/// Compares without allocating; this runs for every header of every request.
pub fn same_normalised(name: &str, normalised: &str) -> bool {
    name.len() == normalised.len()
        && name.bytes().zip(normalised.bytes()).all(|(a, b)| {
            let a = if a == b'_' { b'-' } else { a.to_ascii_lowercase() };
            a == b
        })
}

impl ManagedHeaders {
    /// The fields named by `identity` (the `[headers]` mapping) and `extra`, and the other auth proxies', except
    /// `kept` as spelled there.
    pub fn new(identity: &[(HeaderName, ClaimPath)], extra: &[&str], kept: &[HeaderName]) -> Self {
        let mut normalised: Vec<String> = identity
            .iter()
            .map(|(h, _)| normalise_name(h.as_str()))
            .chain(extra.iter().map(|e| normalise_name(e)))
            .chain(FOREIGN_IDENTITY_HEADERS.iter().map(|e| normalise_name(e)))
            .collect();
        normalised.sort();
        normalised.dedup();
        let lengths = normalised.iter().fold(0, |bits, n| bits | length_bit(n.len()));
        ManagedHeaders {
            normalised,
            lengths,
            kept: kept.into(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        if !self.kept.is_empty() && self.kept.iter().any(|k| k.as_str() == name) {
            return false;
        }
        let named =
            self.lengths & length_bit(name.len()) != 0 && self.normalised.iter().any(|n| same_normalised(name, n));
        // Every prefix begins with `x-`.
        named
            || (name.as_bytes().first().is_some_and(|b| b.eq_ignore_ascii_case(&b'x'))
                && FOREIGN_IDENTITY_PREFIXES
                    .iter()
                    .any(|p| name.len() > p.len() && name.get(..p.len()).is_some_and(|head| same_normalised(head, p))))
    }
}

/// Removes every inbound header that could pose as an identity header the gate sets: all values, whatever the
/// case and with `_` for `-`. A client can never choose its own identity.
pub fn strip_spoofed_identity(headers: &mut HeaderMap, managed: &ManagedHeaders) {
    // Nothing to allocate in the usual case where the client sent none of them.
    if !headers.keys().any(|name| managed.contains(name.as_str())) {
        return;
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| managed.contains(name.as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(&name);
    }
}

/// The identity headers for one set of claims. A session keeps its rendering (see [`crate::session::Rendered`]),
/// so inserting them again costs reference-count increments, not allocations, and writing them into an HTTP/1.1
/// request head is one copy of [`IdentityHeaders::block`].
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    // Boxed slices, not vectors: every session holds one of these.
    fields: Box<[(HeaderName, HeaderValue)]>,
    block: Box<[u8]>,
}

impl IdentityHeaders {
    pub fn render(mapping: &[(HeaderName, ClaimPath)], claims: &Map<String, Value>) -> Self {
        let fields: Vec<(HeaderName, HeaderValue)> = mapping
            .iter()
            .filter_map(|(name, path)| Some((name.clone(), path.passed(claims).and_then(header_value)?)))
            .collect();
        let mut block = Vec::new();
        for (i, (name, value)) in fields.iter().enumerate() {
            // As `insert_into` leaves them: the last mapping of a name wins.
            if fields[i + 1..].iter().any(|(later, _)| later == name) {
                continue;
            }
            block.extend_from_slice(name.as_str().as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        IdentityHeaders {
            fields: fields.into_boxed_slice(),
            block: block.into_boxed_slice(),
        }
    }

    /// The same headers as HTTP/1.1 field lines (RFC 9112 §5), each ending in CRLF, exactly what
    /// [`IdentityHeaders::insert_into`] would leave in a map that holds none of them. Names and values were checked
    /// as `HeaderName`s and `HeaderValue`s, so no line can hold a CR, LF or NUL and split the head.
    pub fn block(&self) -> &[u8] {
        &self.block
    }

    /// Sets these headers, replacing any of the same name. Claims that are missing (or `null`) leave their header
    /// absent.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.fields.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests;
