//! Who may reach which part of the app: `[[rules]]` (first match wins), then the `[access]` default.
//!
//! A rule matches on the normalised path ([`path::normalise`]) by `prefix` (whole segments: `/admin` matches
//! `/admin` and `/admin/x`, not `/administrator`) or `path` (a regular expression anchored at the start), and
//! optionally on `methods` (compared case-insensitively, so `get` cannot slip past a `GET` rule) and `host`
//! (case-insensitive, port and trailing dot ignored). It then makes the route public, denies it, or requires a
//! signed-in identity that meets every condition kind it lists; within one kind any listed value is enough
//! (`all_roles` needs all of them, `scopes` needs every scope listed). A request is decided as strictly for its path
//! with the trailing slash added or removed, which most frameworks serve alike ([`Policy::slash_twin`]).

pub mod form;
pub mod path;

use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;
use serde_json::{Map, Value};

use crate::identity::ClaimPath;
use crate::proxy::trusted::{is_trusted, Cidr};

/// Where the GitHub login of a user who signed in through Logto's GitHub connector lives (userinfo only).
pub const GITHUB_LOGIN_PATH: &str = "identities.github.details.rawData.userInfo.login";

/// What a route allows.
#[derive(Debug, Clone)]
// Built once from the configuration and only ever read by reference: its size costs nothing per request.
#[allow(clippy::large_enum_variant)]
pub enum Access {
    /// No session needed; identity headers are still stripped and none are added.
    Public,
    /// Never reachable.
    Deny,
    /// A signed-in identity meeting the requirements (empty requirements: any signed-in user). Shared, so that a
    /// WebSocket tunnel can hold the requirements it was admitted under and check them again as its session's claims
    /// change (the gate's tunnel watch, `src/gate/watch.rs`).
    Require(Arc<Requirements>),
}

/// Conditions on the identity. An empty list is no condition.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    pub roles: Vec<String>,
    pub all_roles: Vec<String>,
    pub scopes: Vec<String>,
    pub organizations: Vec<String>,
    pub organization_roles: Vec<String>,
    /// Lower-cased.
    pub emails: Vec<String>,
    /// Lower-cased, without `@`.
    pub email_domains: Vec<String>,
    /// Lower-cased.
    pub github_logins: Vec<String>,
    /// Logto machine-to-machine apps (their ids) admitted here with their access tokens. A machine principal is
    /// refused wherever it is not listed; people are not affected by this list.
    pub m2m_apps: Vec<String>,
    /// API resources (of `logto.resources`) a bearer token here must have been issued for (its `aud`): with several
    /// APIs behind one gate, a token for one is then no key to another (RFC 9068 §4, RFC 8707). For a session,
    /// `scopes` are then read from what these APIs granted it ([`Subject::api_scopes`]), and the first one's token
    /// is the one `upstream.pass_access_token` sends.
    pub resources: Vec<String>,
    /// `max_age`, in seconds: the person must have signed in at Logto (entered a password, a code, or passed
    /// GitHub's sign-in) at most this long ago (OIDC Core §3.1.2.1 `max_age`, RFC 9470); an older sign-in is sent to
    /// sign in again ([`Decision::max_age`]).
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub path: PathMatch,
    /// Upper-cased; `None` matches every method.
    pub methods: Option<Vec<String>>,
    /// Lower-cased, without port or trailing dot.
    pub host: Option<String>,
    /// `client_ips`: the rule matches only a request whose client address ([`client_address`]) is in one of these
    /// ranges; `None` matches every client, a known address or not.
    pub client_ips: Option<Vec<Cidr>>,
    pub access: Access,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default: Access,
    /// `server.case_insensitive_paths`: rules match the lower-cased path (their prefixes are lower-cased and their
    /// regular expressions ignore case).
    pub case_insensitive: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            rules: Vec::new(),
            default: Access::Require(Arc::default()),
            case_insensitive: false,
        }
    }
}

/// The address a request came from, for `client_ips` rules: the peer's, or, from a trusted proxy (`trusted`), the
/// last address in `X-Forwarded-For` that is not itself one of `trusted_ranges` (the chain read from the right,
/// as nginx's `real_ip_recursive` does: a client may write anything on the left). `None` when that entry is not an
/// address, or a trusted proxy sent no `X-Forwarded-For`, so that no range admits a request whose origin the gate
/// cannot tell.
pub fn client_address(
    headers: &http::HeaderMap,
    peer: IpAddr,
    trusted: bool,
    trusted_ranges: &[Cidr],
) -> Option<IpAddr> {
    if !trusted {
        return Some(peer);
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in entries.iter().rev() {
        let ip = parse_forwarded_ip(entry)?;
        if !is_trusted(trusted_ranges, ip) {
            return Some(ip);
        }
    }
    // Every hop a trusted proxy: the first of them is the client. None listed: a proxy that does not say whom it
    // forwards for would make every client look like itself, so no range admits its requests.
    entries.first().and_then(|first| parse_forwarded_ip(first))
}

/// An `X-Forwarded-For` entry as an address: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, or either with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok()))
            .then(|| inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (ip, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The request fields some frameworks read to take a request as another method (Express's method-override,
/// Symfony, Laravel, Spring's HiddenHttpMethodFilter, ASP.NET): a `GET` that rules allowed becomes a `DELETE` in
/// the app. The gate removes them (in any spelling) unless `upstream.pass_method_override` keeps them; then the
/// rules decide on every method the request may be taken as.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// The methods the client asks the app to take the request as, from the fields of
/// [`METHOD_OVERRIDE_HEADERS`] in any spelling (`_` for `-`). A value that is not a method token is refused with
/// its field's name.
pub fn method_overrides(headers: &http::HeaderMap) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for (name, value) in headers {
        if !METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|o| crate::identity::same_normalised(name.as_str(), o))
        {
            continue;
        }
        let text = value.to_str().unwrap_or("").trim();
        if !add_method(&mut out, text) {
            return Err(format!(
                "{name}: `{}` is not an HTTP method",
                text.chars().take(32).collect::<String>()
            ));
        }
    }
    Ok(out)
}

/// Adds `text`, upper-cased, to `out` unless there already; false when it is no method name (letters only, 32 at
/// most), for the caller to refuse.
fn add_method(out: &mut Vec<String>, text: &str) -> bool {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphabetic()) || text.len() > 32 {
        return false;
    }
    let method = text.to_ascii_uppercase();
    if !out.contains(&method) {
        out.push(method);
    }
    true
}

/// The query parameter Express (`method-override('_method')`), Symfony, Laravel and Spring (`HiddenHttpMethodFilter`,
/// which reads request parameters, the query's among them) take a `POST`'s method from.
pub const METHOD_OVERRIDE_PARAMETER: &str = "_method";

/// Adds to `out` the methods a `POST` with this query may be taken as: every [`METHOD_OVERRIDE_PARAMETER`] it holds,
/// named as PHP reads names (leading spaces dropped, ` `, `.` and `[` read as `_`; escapes decoded). The gate cannot
/// take it out of the query without changing what the app reads, so the rules always decide on it. Only a `POST`
/// is taken as another method by those frameworks; a value that is not a method token is refused.
pub fn query_method_overrides(method: &str, query: Option<&str>, out: &mut Vec<String>) -> Result<(), String> {
    // Every query of a `POST` is read: any letter of the name may come as an escape (`_%6Dethod`).
    let Some(query) = query.filter(|_| method == "POST") else {
        return Ok(());
    };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if !is_method_parameter(name.as_bytes()) {
            continue;
        }
        if !add_method(out, value.trim()) {
            // Not echoed: decoded, it may hold anything, line breaks included.
            return Err(format!(
                "the query's {METHOD_OVERRIDE_PARAMETER} is not an HTTP method (letters only)"
            ));
        }
    }
    Ok(())
}

/// Whether a parameter `name` (decoded) is [`METHOD_OVERRIDE_PARAMETER`] as PHP, Rack or Express reads names. PHP:
/// up to a NUL (names are C strings), leading spaces dropped, ` `, `.` and `[` read as `_` (`_method\0x`,
/// `.method`). Rack (`normalize_params`): brackets around the name dropped (`[_method]`, `]]_method`, `_method]`).
/// Express: [`qs_names_method`].
fn is_method_parameter(name: &[u8]) -> bool {
    if qs_names_method(name) {
        return true;
    }
    let wanted = METHOD_OVERRIDE_PARAMETER.as_bytes();
    let php_name = name.split(|b| *b == 0).next().unwrap_or_default();
    let php_name = &php_name[php_name.iter().take_while(|b| **b == b' ').count()..];
    let php = |b: &u8| if matches!(b, b' ' | b'.' | b'[') { b'_' } else { *b };
    let rack_start = name.iter().take_while(|b| matches!(b, b'[' | b']')).count();
    let rack_name = &name[rack_start..];
    let rack_name = &rack_name[..rack_name.len() - rack_name.iter().rev().take_while(|b| **b == b']').count()];
    (php_name.len() == wanted.len() && php_name.iter().map(php).eq(wanted.iter().copied())) || rack_name == wanted
}

/// Whether Express's `qs` (6.16 and 6.17, `splitKeyIntoSegments` and `parseObject`) reads `name` as a top-level
/// `_method` whose value method-override takes (a string, or an array's first element): the name before its first
/// `[`, or when it starts with one, its first bracketed group's content; then groups qs reads from each next `[`
/// (the text between them and after the last is dropped), each an array's (`[]` or an index: arrays of strings
/// flatten into one). `_method[]`, `[_method]x`, `[_method][]x`, `_method[0]`, `_method[]x[]`; not `_method[x]`,
/// `_method[0` (objects). Counted a little wider than qs takes them: indexes in any spelling of digits, and an index
/// outside the last group (`_method[0][]`, an array of arrays).
fn qs_names_method(name: &[u8]) -> bool {
    let wanted = METHOD_OVERRIDE_PARAMETER.as_bytes();
    let rest = match name.strip_prefix(b"[") {
        Some(group) => group.strip_prefix(wanted).and_then(|n| n.strip_prefix(b"]")),
        None => name.strip_prefix(wanted).filter(|n| n.first() == Some(&b'[')),
    };
    let Some(mut rest) = rest else {
        return false;
    };
    while let Some(open) = rest.iter().position(|b| *b == b'[') {
        let group = &rest[open + 1..];
        // Unclosed, qs keeps the rest as an object's key; a group with anything but digits is one too.
        let Some(close) = group.iter().position(|b| *b == b']') else {
            return false;
        };
        if !group[..close].iter().all(u8::is_ascii_digit) {
            return false;
        }
        rest = &group[close + 1..];
    }
    true
}

/// A method no rule can name (it is no token), standing for every method no rule names.
const UNNAMED_METHOD: &str = "ANY OTHER";

/// What a request needs when it may be taken as several methods (its own and any override): refused if any of
/// them is denied, public only if all of them are public, else every requirement of the others.
pub enum Decision<'a> {
    Deny,
    Public,
    /// The first requirement met on the way, and the others (none, without overrides: nothing allocated).
    Require(&'a Arc<Requirements>, Vec<&'a Arc<Requirements>>),
}

impl<'a> Decision<'a> {
    /// Every requirement the identity must meet.
    pub fn requirements(&self) -> impl Iterator<Item = &'a Arc<Requirements>> + '_ {
        let (first, more) = match self {
            Decision::Require(first, more) => (Some(*first), more.as_slice()),
            _ => (None, &[][..]),
        };
        first.into_iter().chain(more.iter().copied())
    }

    /// The strictest `max_age` among the requirements, if any names one.
    pub fn max_age(&self) -> Option<u64> {
        self.requirements().filter_map(|r| r.max_age).min()
    }

    /// Whether `other` asks nothing of a request that this decision does not: it is public, this one denies, or
    /// each of its requirements is one of these.
    pub fn covers(&self, other: &Decision<'_>) -> bool {
        match (self, other) {
            (_, Decision::Public) | (Decision::Deny, _) => true,
            (_, Decision::Deny) | (Decision::Public, Decision::Require(..)) => false,
            (Decision::Require(..), Decision::Require(..)) => other
                .requirements()
                .all(|r| self.requirements().any(|mine| Arc::ptr_eq(r, mine))),
        }
    }

    /// The API resource the request is for: the first the requirements name (`resources`), if any.
    pub fn api(&self) -> Option<&'a str> {
        self.requirements()
            .find_map(|r| r.resources.first())
            .map(String::as_str)
    }
}

/// The identity a decision is made about: the session's (or bearer token's) claims and granted scopes.
pub struct Subject<'a> {
    pub claims: &'a Map<String, Value>,
    /// An organization the subject is a member of besides those its `organizations` claim lists: the one a Logto
    /// access token was issued for (its `organization_id`), which Logto issues to members only.
    pub member_of: Option<&'a str>,
    /// The organization whose permissions the `scope` claim holds, when they are not the API's own: a Logto access
    /// token issued for an organization (organization-level API resources) carries what the member's roles in that
    /// organization grant. `scopes` requirements do not read them, so that an administrator of one organization
    /// does not pass for an administrator of the API.
    pub scope_organization: Option<&'a str>,
    /// The permissions `scopes` requirements read instead of the `scope` claim: a session's for the APIs a rule
    /// names (`resources`), which Logto granted in each API's own access token, so that a permission of one API
    /// (names repeat across APIs) meets no rule written for another.
    pub api_scopes: Option<Vec<&'a str>>,
}

impl<'a> Subject<'a> {
    /// A subject known by its claims alone (a session's, or a token issued for no organization).
    pub fn of(claims: &'a Map<String, Value>) -> Self {
        Subject {
            claims,
            member_of: None,
            scope_organization: None,
            api_scopes: None,
        }
    }

    fn strings(&self, name: &str) -> Vec<&str> {
        match self.claims.get(name) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        }
    }

    fn scopes(&self) -> Vec<&str> {
        if let Some(granted) = &self.api_scopes {
            return granted.clone();
        }
        self.claims
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split(' ').filter(|p| !p.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The email, lower-cased, only when Logto says it is verified (as oauth2-proxy does by default).
    fn verified_email(&self) -> Option<String> {
        let verified = self.claims.get("email_verified").and_then(Value::as_bool) == Some(true);
        let email = self.claims.get("email").and_then(Value::as_str)?;
        verified.then(|| email.to_ascii_lowercase())
    }

    fn github_login(&self) -> Option<String> {
        ClaimPath::parse(GITHUB_LOGIN_PATH)
            .ok()?
            .lookup(self.claims)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    }
}

/// True for the hosts the gate decides on (`Host`, an absolute target's or HTTP/2's authority, a trusted proxy's
/// `X-Forwarded-Host`): a host name of letters, digits, `-`, `.` and `_`, an IPv4 address, or an IPv6 literal in
/// brackets, with an optional port of digits. RFC 3986 §3.2.2 also lets a reg-name hold sub-delimiters and percent
/// escapes, but no DNS name does, and each is a way to make one value name two hosts: `x,admin.example.com` is
/// no host to the rules while an app that reads `X-Forwarded-Host` as a list (Rails takes its last element, Express
/// its first) serves `admin.example.com` or `x`. No user information (`@`), no zone identifier.
pub fn is_host(value: &[u8]) -> bool {
    let (name_ok, rest) = match value {
        [b'[', inner @ ..] => match inner.iter().position(|b| *b == b']') {
            Some(end) => (
                end > 1
                    && inner[..end]
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')),
                &inner[end + 1..],
            ),
            None => return false,
        },
        _ => {
            let end = value.iter().position(|b| *b == b':').unwrap_or(value.len());
            (
                end > 0
                    && value[..end]
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
                &value[end..],
            )
        }
    };
    // RFC 3986 §3.2.3: `port = *DIGIT`.
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    name_ok && port_ok
}

/// Normalises a Host header value for comparison: lower case, no port, no trailing dot.
pub fn normalise_host(host: &str) -> String {
    let h = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(a, _)| a).trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

impl Rule {
    fn matches(&self, method: &str, host: Option<&str>, client: Option<IpAddr>, path: &str) -> bool {
        if let Some(ranges) = &self.client_ips {
            // An address the gate could not tell matches no range.
            if !client.is_some_and(|ip| ranges.iter().any(|r| r.contains(ip))) {
                return false;
            }
        }
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return false;
            }
        }
        if let Some(want) = &self.host {
            if host.map(normalise_host).as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        match &self.path {
            PathMatch::Prefix(p) => {
                path == p
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/') || path.as_bytes().get(p.len()) == Some(&b'/')))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

impl Policy {
    /// The rules as `logto-gate check` lists them, one line each in the order they are tried, then `[access]`: what
    /// a rule matches, and what it grants.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut lines: Vec<(String, String)> = self
            .rules
            .iter()
            .map(|r| {
                let mut matches = vec![match &r.path {
                    PathMatch::Prefix(p) => format!("prefix {p}"),
                    // Shown as written: the stored expression is anchored as `^(?:...)`.
                    PathMatch::Regex(re) => {
                        let written = re.as_str().strip_prefix("^(?:").and_then(|s| s.strip_suffix(')'));
                        format!("path {}", written.unwrap_or(re.as_str()))
                    }
                }];
                if let Some(methods) = &r.methods {
                    matches.push(format!("methods {}", methods.join(" ")));
                }
                if let Some(host) = &r.host {
                    matches.push(format!("host {host}"));
                }
                if let Some(ranges) = &r.client_ips {
                    let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
                    matches.push(format!("client_ips {}", ranges.join(" ")));
                }
                (matches.join(", "), r.access.describe())
            })
            .collect();
        lines.push(("[access] (every other request)".to_owned(), self.default.describe()));
        lines
    }

    /// The access for a request: the first matching rule's, else the default.
    pub fn route(&self, method: &str, host: Option<&str>, client: Option<IpAddr>, normalised_path: &str) -> &Access {
        self.rules
            .iter()
            .find(|r| r.matches(method, host, client, normalised_path))
            .map_or(&self.default, |r| &r.access)
    }

    /// The access for a request taken as `method` and as each of `overrides`, at `rule_path` and at its
    /// [`Policy::slash_twin`] (see [`Decision`]). A `HEAD` request is decided as a `GET` too: apps run their `GET`
    /// handler for it (Rails, Express, Flask, Django) and send its header fields (RFC 9110 §9.3.2), and nginx's
    /// `limit_except GET` covers `HEAD` as well, so a rule that names only `GET` covers `HEAD`.
    pub fn decide<'a>(
        &'a self,
        method: &str,
        overrides: &[String],
        host: Option<&str>,
        client: Option<IpAddr>,
        rule_path: &str,
    ) -> Decision<'a> {
        let mut decision = Decision::Public;
        let twin = self.slash_twin(rule_path);
        let as_get = method.eq_ignore_ascii_case("HEAD").then_some("GET");
        let methods = || {
            std::iter::once(method)
                .chain(as_get)
                .chain(overrides.iter().map(String::as_str))
        };
        // The path itself by its rule or the default; the twin by a rule only (it never adds the default).
        let accesses = methods().map(|m| Some(self.route(m, host, client, rule_path))).chain(
            twin.iter()
                .flat_map(|twin| methods().map(|m| self.rule_for(m, host, client, twin))),
        );
        for access in accesses.flatten() {
            match (access, &mut decision) {
                (Access::Deny, _) => return Decision::Deny,
                (Access::Public, _) => {}
                (Access::Require(r), Decision::Require(_, more)) => more.push(r),
                (Access::Require(r), _) => decision = Decision::Require(r, Vec::new()),
            }
        }
        decision
    }

    /// The decisions a `POST` decided as `decision` (with `overrides`) would get if its body named another method
    /// ([`form`]), those stricter than `decision` only: one for every method a rule names, one for all the methods
    /// none names (the rules tell those apart from no other). Empty when nothing a body names can change what the
    /// request needs, so that it need not be read.
    pub fn stricter_overrides<'a>(
        &'a self,
        decision: &Decision<'a>,
        overrides: &[String],
        host: Option<&str>,
        client: Option<IpAddr>,
        rule_path: &str,
    ) -> Vec<Decision<'a>> {
        if matches!(decision, Decision::Deny) {
            return Vec::new();
        }
        let mut candidates = vec![UNNAMED_METHOD];
        for method in self.rules.iter().filter_map(|r| r.methods.as_ref()).flatten() {
            if method != "POST" && !candidates.contains(&method.as_str()) && !overrides.contains(method) {
                candidates.push(method);
            }
        }
        candidates
            .into_iter()
            .filter_map(|method| {
                let mut with = overrides.to_vec();
                with.push(method.to_owned());
                let stricter = self.decide("POST", &with, host, client, rule_path);
                (!decision.covers(&stricter)).then_some(stricter)
            })
            .collect()
    }

    /// The access of the first rule that matches, without the default.
    fn rule_for(&self, method: &str, host: Option<&str>, client: Option<IpAddr>, path: &str) -> Option<&Access> {
        self.rules
            .iter()
            .find(|r| r.matches(method, host, client, path))
            .map(|r| &r.access)
    }

    /// `path` with its trailing slash removed or added (`/admin/` and `/admin`): Express, Rails and Spring before 6
    /// serve both alike, and Django redirects one to the other, so a rule that matches the twin decides the request
    /// too (as strictly as a method override does). A rule with `prefix = "/admin/"` would otherwise not cover
    /// `/admin`, the same page to such an app, and a regular expression ending in `$` not cover the path with a
    /// slash. The default access is not taken from the twin: a path a `$`-anchored rule makes public stays public
    /// though its twin matches no rule. `None` for `/`, and when no rule tells the two apart (a prefix without a
    /// trailing slash matches both or neither): nothing is computed for most policies.
    pub fn slash_twin<'p>(&self, path: &'p str) -> Option<std::borrow::Cow<'p, str>> {
        let tells_apart = |r: &Rule| match &r.path {
            PathMatch::Regex(_) => true,
            PathMatch::Prefix(p) => p.len() > 1 && p.ends_with('/'),
        };
        if path == "/" || !self.rules.iter().any(tells_apart) {
            return None;
        }
        Some(match path.strip_suffix('/') {
            Some(bare) => std::borrow::Cow::Borrowed(bare),
            None => std::borrow::Cow::Owned(format!("{path}/")),
        })
    }

    fn all_requirements(&self) -> impl Iterator<Item = &Requirements> {
        self.rules
            .iter()
            .map(|r| &r.access)
            .chain(std::iter::once(&self.default))
            .filter_map(|a| match a {
                Access::Require(r) => Some(&**r),
                _ => None,
            })
    }

    /// Claims the session must keep for these rules to be evaluated.
    pub fn claim_paths(&self) -> Vec<ClaimPath> {
        let mut names: Vec<&str> = Vec::new();
        for r in self.all_requirements() {
            if !r.roles.is_empty() || !r.all_roles.is_empty() {
                names.push("roles");
            }
            if !r.scopes.is_empty() {
                names.push("scope");
            }
            if !r.organizations.is_empty() {
                names.push("organizations");
            }
            if !r.organization_roles.is_empty() {
                names.push("organization_roles");
            }
            if !r.emails.is_empty() || !r.email_domains.is_empty() {
                names.extend(["email", "email_verified"]);
            }
            if !r.github_logins.is_empty() {
                names.push(GITHUB_LOGIN_PATH);
            }
        }
        names.sort_unstable();
        names.dedup();
        names.into_iter().filter_map(|n| ClaimPath::parse(n).ok()).collect()
    }

    /// Logto scopes that must be requested so the claims these rules read are issued.
    pub fn needed_scopes(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for r in self.all_requirements() {
            if !r.roles.is_empty() || !r.all_roles.is_empty() {
                out.push("roles");
            }
            if !r.organizations.is_empty() {
                out.push("urn:logto:scope:organizations");
            }
            if !r.organization_roles.is_empty() {
                out.push("urn:logto:scope:organization_roles");
            }
            if !r.emails.is_empty() || !r.email_domains.is_empty() {
                out.push("email");
            }
            if !r.github_logins.is_empty() {
                out.push("identities");
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Access {
    /// What the access grants, as `logto-gate check` shows it.
    pub fn describe(&self) -> String {
        match self {
            Access::Public => "public (no sign-in)".to_owned(),
            Access::Deny => "denied".to_owned(),
            Access::Require(r) => r.describe(),
        }
    }
}

impl Requirements {
    /// The conditions, `;`-separated in the order the configuration names them, or "any signed-in user".
    pub fn describe(&self) -> String {
        let lists = [
            ("roles (any of)", &self.roles),
            ("all_roles", &self.all_roles),
            ("scopes", &self.scopes),
            ("organizations", &self.organizations),
            ("organization_roles", &self.organization_roles),
            ("emails", &self.emails),
            ("email_domains", &self.email_domains),
            ("github_logins", &self.github_logins),
            ("m2m_apps", &self.m2m_apps),
            ("resources", &self.resources),
        ];
        let mut parts: Vec<String> = lists
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(name, values)| format!("{name} {}", values.join(" ")))
            .collect();
        if let Some(max_age) = self.max_age {
            parts.push(format!("a sign-in at Logto at most {max_age} s old (max_age)"));
        }
        if parts.is_empty() {
            "any signed-in user".to_owned()
        } else {
            format!("signed in, with {}", parts.join("; "))
        }
    }

    /// `Ok` when `who` meets every condition; otherwise the first unmet one, in words.
    pub fn check(&self, who: &Subject<'_>) -> Result<(), String> {
        let any = |have: &[&str], want: &[String]| want.iter().any(|w| have.contains(&w.as_str()));
        if !self.roles.is_empty() && !any(&who.strings("roles"), &self.roles) {
            return Err(format!("one of the roles {}", self.roles.join(", ")));
        }
        if !self.all_roles.is_empty() {
            let have = who.strings("roles");
            if !self.all_roles.iter().all(|r| have.contains(&r.as_str())) {
                return Err(format!("all of the roles {}", self.all_roles.join(", ")));
            }
        }
        if !self.scopes.is_empty() {
            if let Some(organization) = who.scope_organization {
                return Err(format!(
                    "the scopes {} of the API itself (this token's scopes are what the organization {organization} \
                     grants)",
                    self.scopes.join(" ")
                ));
            }
            let have = who.scopes();
            if !self.scopes.iter().all(|s| have.contains(&s.as_str())) {
                return Err(match (&who.api_scopes, self.resources.as_slice()) {
                    (Some(_), [_, ..]) => format!(
                        "the scopes {} granted for the API {}",
                        self.scopes.join(" "),
                        self.resources.join(" or ")
                    ),
                    _ => format!("the scopes {}", self.scopes.join(" ")),
                });
            }
        }
        if !self.organizations.is_empty() {
            let mut organizations = who.strings("organizations");
            organizations.extend(who.member_of);
            if !any(&organizations, &self.organizations) {
                return Err(format!(
                    "membership of one of the organizations {}",
                    self.organizations.join(", ")
                ));
            }
        }
        if !self.organization_roles.is_empty() && !any(&who.strings("organization_roles"), &self.organization_roles) {
            return Err(format!(
                "one of the organization roles {}",
                self.organization_roles.join(", ")
            ));
        }
        if !self.emails.is_empty() || !self.email_domains.is_empty() {
            let email = who.verified_email();
            let by_address = email.as_ref().is_some_and(|e| self.emails.contains(e));
            let by_domain = email
                .as_ref()
                .and_then(|e| e.rsplit_once('@'))
                .is_some_and(|(_, d)| self.email_domains.iter().any(|w| w == d));
            if !by_address && !by_domain {
                let mut wanted: Vec<String> = self.emails.clone();
                wanted.extend(self.email_domains.iter().map(|d| format!("@{d}")));
                return Err(format!("a verified email address matching {}", wanted.join(", ")));
            }
        }
        if !self.github_logins.is_empty() {
            let login = who.github_login();
            if !login.as_ref().is_some_and(|l| self.github_logins.contains(l)) {
                return Err(format!("one of the GitHub accounts {}", self.github_logins.join(", ")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
