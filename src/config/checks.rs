//! Checks more than one section uses, and the list of problems they report into.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

/// Collects problems while building the validated config: one line each, naming its key.
#[derive(Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, key: &str, msg: impl fmt::Display) {
        self.0.push(format!("{key}: {msg}"));
    }

    pub(super) fn required<T>(&mut self, key: &str, v: Option<T>) -> Option<T> {
        if v.is_none() {
            self.add(key, "missing");
        }
        v
    }

    /// A problem whose line names its key already.
    pub(super) fn line(&mut self, line: String) {
        self.0.push(line);
    }

    /// How many problems there are so far (a section compares before and after).
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// `Err` with every problem, if there is any.
    pub(super) fn into_result(self) -> Result<(), super::ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(super::ConfigErrors(self.0))
        }
    }
}

/// The value, trimmed, unless it is empty.
pub(super) fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Where a secret comes from: its `key` inline, or the file of its `<key>_file` (read after validation,
/// [`super::files`]).
#[derive(Debug)]
pub(super) enum SecretSource {
    Inline(String),
    File(PathBuf),
}

/// The source of the secret `key`: exactly one of `key` and `<key>_file` must be set.
pub(super) fn secret_source(
    p: &mut Problems,
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Option<SecretSource> {
    let file_key = format!("{key}_file");
    // An empty path is no file (an environment variable for the inline secret blanks the file's `_file` key).
    let file = file.filter(|f| !f.as_os_str().is_empty());
    match (non_empty(inline), file) {
        (Some(_), Some(_)) => {
            p.add(key, format!("set both {key} and {file_key}; keep one"));
            None
        }
        (Some(v), None) => Some(SecretSource::Inline(v)),
        (None, Some(path)) => Some(SecretSource::File(path)),
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

pub(super) fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    v.starts_with("change-me") || v.starts_with("replace-with") || PLACEHOLDERS.contains(&v.as_str())
}

/// Reports `key` when its value is one of the examples' placeholders, saying how to get a real one.
pub(super) fn refuse_placeholder(p: &mut Problems, key: &str, value: &str, how: &str) {
    if is_placeholder(value) {
        p.add(key, placeholder_problem(how));
    }
}

/// What is said of a placeholder, with `how` to get a real value.
pub(super) fn placeholder_problem(how: &str) -> String {
    format!("still the placeholder from logto-gate's examples, which anyone can read: {how}")
}

/// The longest duration a key takes: far beyond any use, and short enough to be added to any clock reading (a
/// timeout of 500,000,000,000 years would overflow one, and the connection's task with it).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(super) fn duration(p: &mut Problems, key: &str, v: Option<String>, default: &str) -> Duration {
    let text = v.unwrap_or_else(|| default.to_owned());
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d > MAX_DURATION => {
            p.add(key, format!("`{text}` is longer than 100 years"));
            Duration::from_secs(1)
        }
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

/// An upstream URL: its origin as a URI, and its base path (no trailing slash).
pub(super) fn upstream_url(p: &mut Problems, key: &str, v: &str) -> Option<(Uri, String)> {
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
pub(super) fn http_url(p: &mut Problems, key: &str, v: &str, allow_path: bool) -> Option<url::Url> {
    let parsed = match url::Url::parse(v) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            // An app behind the gate usually speaks plain HTTP on loopback or the pod's network.
            let hint = if key.starts_with("upstream") {
                format!("http://{v} (https:// for an app that speaks TLS)")
            } else {
                format!("https://{v}")
            };
            p.add(
                key,
                format!("`{v}` is not a valid URL: it has no scheme; write it like {hint}"),
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
    if parsed.port() == Some(0) {
        p.add(key, format!("`{v}` has port 0, on which nothing can be reached"));
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

pub(super) fn origin_of(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}

/// True when `host` is `domain` or one of its subdomains (on a label boundary: `badexample.com` is not in
/// `example.com`).
pub(super) fn within(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// A host from the configuration in the form a request's `Host` is compared in ([`crate::policy::normalise_host`]):
/// lower case, without a port or a trailing dot, and a name outside ASCII in the ASCII form browsers send (IDNA,
/// RFC 5891: `bücher.example` is `xn--bcher-kva.example`), so that a rule or route written for it meets its
/// requests. The error names the value and what is wrong: no request names a host with `*`, a space or a path.
pub(super) fn host_name(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    let name = match trimmed.rsplit_once(':') {
        Some((name, port)) if !trimmed.starts_with('[') || name.ends_with(']') => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{value}` has a port that is not a number"));
            }
            name
        }
        _ => trimmed,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let not_a_host = || {
        let hint = if name.contains('*') {
            " (no wildcards: one entry per host)"
        } else {
            ""
        };
        format!("`{value}` is not a host name like \"app.example.com\"{hint}")
    };
    if name.is_empty() {
        return Err(not_a_host());
    }
    let ascii = match url::Host::parse(name).map_err(|_| not_a_host())? {
        url::Host::Domain(domain) => domain,
        // Addresses as written: requests' hosts are compared as text.
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => name.to_owned(),
    };
    if !crate::policy::is_host(ascii.as_bytes()) {
        return Err(not_a_host());
    }
    Ok(crate::policy::normalise_host(&ascii))
}

/// The longest path a Unix domain socket address holds on Linux (`sun_path` is 108 bytes with its final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The socket file `v` names when it is written `unix:/path` (or `unix:///path`, as oauth2-proxy writes it; the
/// scheme in any case): `None` when it is not, else the path or what is wrong with it, quoting `v`. `example` is a
/// path to suggest.
pub(super) fn unix_socket_path(v: &str, example: &str) -> Option<Result<PathBuf, String>> {
    let scheme_len = "unix:".len();
    let rest = v
        .get(..scheme_len)
        .filter(|s| s.eq_ignore_ascii_case("unix:"))
        .and_then(|_| v.get(scheme_len..))?;
    // `unix:///path` is `unix:` with an empty authority; `unix://app.sock` would name a host, which a socket has not.
    let path = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(_) => {
            let file = example.rsplit('/').next().unwrap_or(example);
            return Some(Err(format!(
                "`{v}` names no socket file: write unix:/absolute/path/to/{file}"
            )));
        }
        None => rest,
    };
    let problem = if !path.starts_with('/') {
        format!("must be an absolute path (unix:{example}): the gate's working directory is not the app's")
    } else if path.ends_with('/') {
        "names a directory, not a socket file".to_owned()
    } else if path.contains(['?', '#', '\0']) {
        "is a socket file path, without a query, fragment or NUL".to_owned()
    } else if path.len() > MAX_SOCKET_PATH {
        format!("is longer than the {MAX_SOCKET_PATH} bytes a Unix socket path may have")
    } else {
        return Some(Ok(PathBuf::from(path)));
    };
    Some(Err(format!("`{v}` {problem}")))
}

#[cfg(test)]
mod host_tests {
    use super::host_name;

    #[test]
    fn configured_hosts_take_the_form_requests_name_them_in() {
        for (written, want) in [
            ("app.example.com", "app.example.com"),
            ("App.Example.COM.", "app.example.com"),
            ("app.example.com:8443", "app.example.com"),
            ("b\u{fc}cher.example.com", "xn--bcher-kva.example.com"),
            ("B\u{dc}CHER.example.com:443", "xn--bcher-kva.example.com"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]:443", "::1"),
            ("[::1]", "::1"),
        ] {
            assert_eq!(host_name(written).as_deref(), Ok(want), "{written}");
        }
        for (written, says) in [
            ("*.example.com", "no wildcards"),
            ("", "is not a host name"),
            ("a b.example.com", "is not a host name"),
            ("example.com/x", "is not a host name"),
            ("user@example.com", "is not a host name"),
            ("example.com:http", "port that is not a number"),
            ("example.com:", "port that is not a number"),
        ] {
            let e = host_name(written).unwrap_err();
            assert!(e.contains(says), "{written}: {e}");
        }
    }
}
