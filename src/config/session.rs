//! `[session]`: the session cookie, its keys, and where sessions are kept.

use super::checks::{
    duration, is_placeholder, non_empty, placeholder_problem, secret_source, within, Problems, SecretSource,
};
use super::raw::RawSession;
use super::{PublicUrl, RedisMode, Secret, SecretFile, SessionConfig, StoreKind};

/// Validates `[session]`; `None` when a key of it has a problem. The cookie domain must contain `public_url`'s
/// host (where the callback sets the cookie); the secret files (`secret_file`, `secret_files`) are named in it, to be
/// read once the whole configuration is valid.
pub(super) fn validate_session(
    p: &mut Problems,
    raw: RawSession,
    public_url: Option<&PublicUrl>,
) -> Option<SessionConfig> {
    let before = p.len();
    // Empty values count as unset (an environment variable for one of them blanks the others, see `SECRET_PAIRS`).
    let listed = raw.secrets.filter(|l| l.iter().any(|s| !s.trim().is_empty()));
    let listed_files = raw.secret_files.filter(|l| l.iter().any(|s| !s.trim().is_empty()));
    let inline = non_empty(raw.secret);
    let from_file = raw.secret_file.filter(|f| !f.as_os_str().is_empty());
    let mut secret_files = Vec::new();
    let secrets: Vec<String> = match (listed, listed_files, &inline, &from_file) {
        (None, Some(files), None, None) => {
            for (i, file) in files.iter().enumerate() {
                let key = format!("session.secret_files[{i}]");
                if file.trim().is_empty() {
                    p.add(&key, "is empty: name a file holding one secret");
                }
                secret_files.push(SecretFile {
                    key,
                    path: file.trim().into(),
                });
            }
            Vec::new()
        }
        (_, Some(_), _, _) => {
            p.add(
                "session.secret_files",
                "set either session.secret_files (a list) or session.secret / secret_file / secrets, not several",
            );
            Vec::new()
        }
        (Some(list), None, None, None) if !list.is_empty() => list,
        (Some(_), None, _, _) => {
            p.add(
                "session.secrets",
                "set either session.secrets (a list) or session.secret / secret_file, not both",
            );
            Vec::new()
        }
        (None, None, _, _) => match secret_source(p, "session.secret", inline, from_file) {
            Some(SecretSource::Inline(v)) => vec![v],
            Some(SecretSource::File(path)) => {
                secret_files.push(SecretFile {
                    key: "session.secret_file".to_owned(),
                    path,
                });
                Vec::new()
            }
            None => Vec::new(),
        },
    };
    let single = secrets.len() == 1;
    for (i, s) in secrets.iter().enumerate() {
        let key = if single {
            "session.secret".to_owned()
        } else {
            format!("session.secrets[{i}]")
        };
        check_secret(p, &key, s);
    }
    let idle_timeout = non_empty(raw.idle_timeout).map(|v| duration(p, "session.idle_timeout", Some(v), "0s"));
    // A tunnel's checks: under a second they would be work without a use.
    let tunnel_check = |p: &mut Problems, key: &str, v: Option<String>, default: &str| {
        let every = duration(p, key, non_empty(v), default);
        if every < std::time::Duration::from_secs(1) {
            p.add(key, "must be at least 1s");
        }
        every
    };
    let tunnel_check_interval = tunnel_check(p, "session.tunnel_check_interval", raw.tunnel_check_interval, "15s");
    let tunnel_grant_check_interval = tunnel_check(
        p,
        "session.tunnel_grant_check_interval",
        raw.tunnel_grant_check_interval,
        "1h",
    );
    let store = match non_empty(raw.store).as_deref() {
        None | Some("cookie") => StoreKind::Cookie,
        Some("redis") => StoreKind::Redis,
        Some(other) => {
            p.add("session.store", format!("`{other}` must be \"cookie\" or \"redis\""));
            StoreKind::Cookie
        }
    };
    let redis_url = non_empty(raw.redis_url);
    let redis_urls: Vec<String> = raw
        .redis_urls
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    let redis_sentinel_master = non_empty(raw.redis_sentinel_master);
    let redis_mode = match non_empty(raw.redis_mode).as_deref() {
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
                (Some(u), _) => check_url(p, "session.redis_url", u),
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
                check_url(p, "session.redis_urls", u);
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
    let revocation_file = non_empty(raw.revocation_file).map(std::path::PathBuf::from);
    if revocation_file.is_some() && (redis_url.is_some() || !redis_urls.is_empty()) {
        p.add(
            "session.revocation_file",
            "is for the cookie store without Redis; with Redis the revocation list lives there (remove one of the two)",
        );
    }
    let redis_key_prefix = raw.redis_key_prefix.unwrap_or_else(|| "logto-gate:".to_owned());
    // A cluster hashes `{<prefix>}` as every key's slot; `{}` is no hash tag, so a session and its indexes would
    // land on different nodes and the commands that write them together fail (CROSSSLOT).
    if redis_mode == RedisMode::Cluster && redis_key_prefix.is_empty() {
        p.add(
            "session.redis_key_prefix",
            "must not be empty with redis_mode = \"cluster\": it is the hash tag that keeps the gate's keys on one slot",
        );
    }
    let cookie_name = non_empty(raw.cookie_name).unwrap_or_else(|| "logto_gate".to_owned());
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
    let lifetime = duration(p, "session.lifetime", raw.lifetime, "7d");
    let public_host = public_url
        .map(|u| crate::policy::normalise_host(u.host()))
        .unwrap_or_default();
    // As browsers compare it: a name outside ASCII in its ASCII form (IDNA).
    let cookie_domain = non_empty(raw.cookie_domain).map(|d| {
        let bare = d.trim().trim_start_matches('.');
        match super::checks::host_name(bare) {
            Ok(name) if !bare.contains(':') => name,
            _ => bare.to_ascii_lowercase(),
        }
    });
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
    check_cookie_prefix(
        p,
        &cookie_name,
        public_url.map(|u| u.is_https()),
        cookie_domain.is_some(),
    );
    let sign_out_clear_site_data = clear_site_data(p, raw.sign_out_clear_site_data.unwrap_or_default());
    if p.len() > before {
        return None;
    }
    if secrets.is_empty() && secret_files.is_empty() {
        return None;
    }
    Some(SessionConfig {
        secrets: secrets.into_iter().map(Secret::new).collect(),
        secret_files,
        cookie_name,
        lifetime,
        idle_timeout,
        tunnel_check_interval,
        tunnel_grant_check_interval,
        secure_cookies: public_url?.is_https(),
        store,
        redis_url,
        redis_key_prefix,
        redis_mode,
        redis_urls,
        redis_sentinel_master,
        cookie_domain,
        revocation_file,
        sign_out_clear_site_data,
        keep_url_fragment: raw.keep_url_fragment.unwrap_or(false),
    })
}

/// The directives of W3C Clear Site Data §3.1 (`*` is every one of them, those to come included).
const CLEAR_SITE_DATA: [&str; 8] = [
    "cache",
    "cookies",
    "storage",
    "executionContexts",
    "clientHints",
    "prefetchCache",
    "prerenderCache",
    "*",
];

/// `session.sign_out_clear_site_data` as the field a sign-out sends: `"cache", "storage"`. Each entry must be one
/// of [`CLEAR_SITE_DATA`] as the specification spells it (browsers ignore a directive they do not know, so a typo
/// would clear nothing without a word); an entry named twice is refused as a slip. `None` for an empty list.
fn clear_site_data(p: &mut Problems, listed: Vec<String>) -> Option<http::HeaderValue> {
    const KEY: &str = "session.sign_out_clear_site_data";
    let mut seen: Vec<&str> = Vec::new();
    for entry in &listed {
        let entry = entry.trim();
        match CLEAR_SITE_DATA.iter().find(|d| **d == entry) {
            Some(d) if seen.contains(d) => p.add(KEY, format!("`{entry}` is listed twice")),
            Some(d) => seen.push(d),
            None => p.add(
                KEY,
                format!(
                    "`{entry}` is not a Clear-Site-Data directive; expected one of {}",
                    CLEAR_SITE_DATA.map(|d| format!("\"{d}\"")).join(", ")
                ),
            ),
        }
    }
    if seen.is_empty() {
        return None;
    }
    let field = seen.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
    // Every directive is a token of ASCII letters or `*`: always a valid field value.
    http::HeaderValue::from_str(&field).ok()
}

/// Reports a session key that is an example's placeholder or shorter than 32 bytes.
pub(super) fn check_secret(p: &mut Problems, key: &str, s: &str) {
    for problem in secret_problems(s) {
        p.add(key, problem);
    }
}

/// What keeps `s` from being a session secret: the examples' placeholder, fewer than 32 bytes.
pub(super) fn secret_problems(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if is_placeholder(s) {
        problems.push(placeholder_problem(
            "generate one with `openssl rand -base64 48` (or put it in a file for session.secret_file)",
        ));
    }
    if s.len() < 32 {
        problems.push(format!(
            "too short: {} bytes, at least 32 are needed (e.g. `openssl rand -base64 48`)",
            s.len()
        ));
    }
    problems
}

/// A cookie name prefix (RFC 6265bis §4.1.3) is a promise browsers hold the gate to: they drop a `__Secure-` cookie
/// that is not `Secure`, and a `__Host-` one that is not `Secure`, has a `Domain` or another `Path` than `/`. The
/// gate's cookies are `Secure` only with an https `server.public_url`, and take `session.cookie_domain` as their
/// `Domain`; a name that cannot keep its promise would have every browser drop the session (browsers compare the
/// prefix in any letter case). `https` is `None` when the public URL is itself invalid (reported there).
fn check_cookie_prefix(p: &mut Problems, name: &str, https: Option<bool>, has_domain: bool) {
    let lower = name.to_ascii_lowercase();
    let prefix = if lower.starts_with("__host-") {
        "__Host-"
    } else if lower.starts_with("__secure-") {
        "__Secure-"
    } else {
        return;
    };
    if https == Some(false) {
        p.add(
            "session.cookie_name",
            format!("`{name}` starts with {prefix}, which browsers accept only on Secure cookies: server.public_url must be https"),
        );
    }
    if prefix == "__Host-" && has_domain {
        p.add(
            "session.cookie_name",
            format!("`{name}` starts with __Host-, which browsers refuse with a Domain: remove session.cookie_domain or the prefix"),
        );
    }
}
