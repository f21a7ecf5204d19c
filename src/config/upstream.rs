//! `[upstream]` and `[[upstreams]]`: where signed-in requests go, and how.

use std::collections::BTreeMap;
use std::path::PathBuf;

use http::header::{HeaderName, HeaderValue};
use http::Uri;

use crate::identity::Reserved;

use super::checks::{duration, non_empty, refuse_placeholder, unix_socket_path, upstream_url, Problems};
use super::raw::{RawUpstream, RawUpstreamRoute};
use super::{FieldFile, UpstreamConfig, UpstreamRoute};

/// Where an upstream is, as `url` names it: an `http(s)://` origin with its base path, or a Unix domain socket.
#[derive(Clone)]
struct Address {
    /// The origin requests are addressed to (`http://localhost` for a socket: the `Host` the app receives).
    url: Uri,
    base_path: String,
    unix_socket: Option<PathBuf>,
    /// `h2c://`: HTTP/2 without TLS, with prior knowledge (RFC 9113 §3.3).
    http2: bool,
    /// As written, for messages.
    written: String,
}

/// Why `preserve_host` cannot go with an `h2c://` upstream.
const PRESERVE_HOST_OVER_H2C: &str = "cannot go with an h2c:// upstream: HTTP/2 names the host in :authority, \
     which must be the address the gate connects to (RFC 9113 §8.3.1); X-Forwarded-Host carries the public host";

/// An upstream's `url`: `http://host:port/base`, `https://...`, or `unix:/path/to/app.sock` (also written
/// `unix:///path/to/app.sock`, as oauth2-proxy does): an app on the same host listening on a socket file, which
/// only processes allowed by the file's permissions can reach, where any local process reaches a loopback port.
fn upstream_address(p: &mut Problems, key: &str, v: &str) -> Option<Address> {
    // `h2c://host:port/base`: an http:// address the app is spoken to over HTTP/2 at (gRPC), as Pomerium writes it.
    let h2c = "h2c://";
    if let Some(rest) = v
        .get(..h2c.len())
        .filter(|s| s.eq_ignore_ascii_case(h2c))
        .and_then(|_| v.get(h2c.len()..))
    {
        let (url, base_path) = upstream_url(p, key, &format!("http://{rest}"))?;
        return Some(Address {
            url,
            base_path,
            unix_socket: None,
            http2: true,
            written: v.to_owned(),
        });
    }
    let path = match unix_socket_path(v, "/run/app/app.sock") {
        None => {
            let (url, base_path) = upstream_url(p, key, v)?;
            return Some(Address {
                url,
                base_path,
                unix_socket: None,
                http2: false,
                written: v.to_owned(),
            });
        }
        Some(Err(problem)) => {
            p.add(key, problem);
            return None;
        }
        Some(Ok(path)) => path,
    };
    Some(Address {
        url: Uri::from_static("http://localhost"),
        base_path: String::new(),
        unix_socket: Some(path),
        http2: false,
        written: v.to_owned(),
    })
}

/// `upstream.max_form_method_bytes`: 1 MiB unless set (nginx's default `client_max_body_size`), from 4 KiB to 64 MiB;
/// refused with `read_form_method = false`, where it would change nothing.
fn form_method_bytes(p: &mut Problems, read: bool, raw: Option<u64>) -> usize {
    const DEFAULT: usize = 1 << 20;
    match raw {
        None => DEFAULT,
        Some(_) if !read => {
            p.add(
                "upstream.max_form_method_bytes",
                "has no effect with upstream.read_form_method = false",
            );
            DEFAULT
        }
        Some(n) => match usize::try_from(n) {
            Ok(n) if (4_096..=64 << 20).contains(&n) => n,
            _ => {
                p.add(
                    "upstream.max_form_method_bytes",
                    format!("{n} is outside 4096..=67108864"),
                );
                DEFAULT
            }
        },
    }
}

/// Validates `[upstream]` and `[[upstreams]]`: the shared settings (with the default app, if any) and every
/// route, most specific first once sorted by the caller's lookups; `None` when a key has a problem.
pub(super) fn validate_upstream(
    p: &mut Problems,
    raw: RawUpstream,
    upstreams: &[RawUpstreamRoute],
    identity_names: &[HeaderName],
    case_insensitive_paths: bool,
    allow_encoded_slashes: bool,
) -> Option<(UpstreamConfig, Vec<UpstreamRoute>)> {
    let before = p.len();
    // With [[upstreams]], [upstream].url is optional: the default for requests no entry serves.
    let default_url = match non_empty(raw.url) {
        Some(v) => Some(v),
        None if upstreams.is_empty() => p.required("upstream.url", None),
        None => None,
    };
    let default_upstream = default_url.and_then(|v| upstream_address(p, "upstream.url", &v));
    let connect_timeout = duration(p, "upstream.connect_timeout", raw.connect_timeout, "5s");
    let upgrade_protocols = upgrade_protocols(p, raw.upgrade_protocols);
    let protected_app = raw.protected_app.unwrap_or(false);
    let read_form_method = raw.read_form_method.unwrap_or(true);
    let max_form_method_bytes = form_method_bytes(p, read_form_method, raw.max_form_method_bytes);
    if protected_app && raw.pass_access_token == Some(true) {
        p.add(
            "upstream.protected_app",
            "sends Authorization: Basic (the Protected App contract), so it cannot go with upstream.pass_access_token",
        );
    }
    let response_timeout = duration(p, "upstream.response_timeout", raw.response_timeout, "60s");
    let preserve_host = raw.preserve_host.unwrap_or(false);
    let tls_ca_file = raw.tls_ca_file.clone().filter(|f| !f.as_os_str().is_empty());
    // A CA file only http:// upstreams would use is never read by a TLS handshake: the operator would believe the
    // connection verified and encrypted when it is neither.
    let https = |uri: &http::Uri| uri.scheme_str() == Some("https");
    let mut shared_ca_over_tls = false;
    let client_cert = client_cert_pair(p, "upstream", &raw.tls_client_cert_file, &raw.tls_client_key_file);
    let mut shared_cert_over_tls = false;
    // Who else writes `Authorization` to an app: a static field there would be replaced, or replace theirs.
    // [upstream]'s fields go to every app, so any app that is sent the access token counts for them.
    let shared_passes = raw.pass_access_token == Some(true);
    let entry_passes = upstreams
        .iter()
        .position(|r| r.pass_access_token.unwrap_or(shared_passes));
    let authorization_sender = |passes: bool, key: &str| {
        if passes {
            Some(format!("{key}.pass_access_token sends the access token in this header"))
        } else if protected_app {
            Some("upstream.protected_app sends the app's Basic credentials in this header".to_owned())
        } else {
            None
        }
    };
    let shared_sender = match entry_passes {
        Some(i) if !shared_passes => authorization_sender(true, &format!("upstreams[{i}]")),
        _ => authorization_sender(shared_passes, "upstream"),
    };
    let (request_headers, request_header_files) = request_fields(
        p,
        "upstream",
        &raw.request_headers,
        &raw.request_headers_files,
        identity_names,
        shared_sender.as_deref(),
    );
    // A name belongs to one app's address, so [upstream]'s is [upstream].url's alone, never an entry's.
    let server_name = tls_server_name(p, "upstream", &raw.tls_server_name);
    if server_name.is_some() && !default_upstream.as_ref().is_some_and(|at| https(&at.url)) {
        let url = default_upstream.as_ref().map_or("not set", |at| at.written.as_str());
        p.add(
            "upstream.tls_server_name",
            format!("is for an https:// upstream.url; upstream.url is {url}, which sends no TLS server name"),
        );
    }
    // The routes: every [[upstreams]] entry with its own URL and timeouts (the rest shared with [upstream]).
    let mut routes: Vec<(UpstreamRoute, String)> = Vec::new();
    for (i, r) in upstreams.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        let url = p
            .required(&format!("{key}.url"), non_empty(r.url.clone()))
            .and_then(|v| upstream_address(p, &format!("{key}.url"), &v));
        // Compared with the path the rules see, like a rule's prefix.
        let written = non_empty(r.prefix.clone()).unwrap_or_else(|| "/".to_owned());
        let prefix = crate::policy::path::rule_prefix(&written, allow_encoded_slashes, case_insensitive_paths)
            .unwrap_or_else(|problem| {
                p.add(&format!("{key}.prefix"), problem);
                written.clone()
            });
        let without_slash = |prefix: String| {
            if prefix.len() > 1 {
                prefix.trim_end_matches('/').to_owned()
            } else {
                prefix
            }
        };
        let prefix = without_slash(prefix);
        // X-Forwarded-Prefix: as written, encoded as a browser sends it.
        let sent_prefix = without_slash(
            crate::policy::path::normalise(&written, allow_encoded_slashes)
                .map_or_else(|_| written.clone(), Into::into),
        );
        let strip_prefix = r.strip_prefix.unwrap_or(false);
        if strip_prefix && prefix == "/" {
            p.add(&format!("{key}.strip_prefix"), "needs a prefix other than /");
        }
        let host = non_empty(r.host.clone()).map(|h| {
            super::checks::host_name(&h).unwrap_or_else(|problem| {
                p.add(&format!("{key}.host"), problem);
                h
            })
        });
        if host.is_none() && prefix == "/" {
            p.add(
                &key,
                "needs a host or a prefix (an entry for every request is what [upstream] is for)",
            );
        }
        let connect = duration(p, &format!("{key}.connect_timeout"), r.connect_timeout.clone(), "5s");
        let response = duration(p, &format!("{key}.response_timeout"), r.response_timeout.clone(), "60s");
        // An entry's own TLS setting is refused on a plain upstream (`never` says what would not happen); without
        // one, an https:// entry uses [upstream]'s (true).
        let uses_shared = |p: &mut Problems, setting: &str, own: bool, never: &str| match &url {
            Some(at) if own && !https(&at.url) => {
                p.add(
                    &format!("{key}.{setting}"),
                    format!("is for an https:// upstream; {key}.url is {}, {never}", at.written),
                );
                false
            }
            Some(at) => !own && https(&at.url),
            None => false,
        };
        let own_ca = r.tls_ca_file.as_ref().filter(|f| !f.as_os_str().is_empty());
        shared_ca_over_tls |= uses_shared(p, "tls_ca_file", own_ca.is_some(), "which the CA would never check");
        let own_cert = client_cert_pair(p, &key, &r.tls_client_cert_file, &r.tls_client_key_file);
        shared_cert_over_tls |= uses_shared(
            p,
            "tls_client_cert_file",
            own_cert.is_some(),
            "where no TLS handshake would present it",
        );
        // An entry's own choice whether its app is sent the access token, else [upstream]'s.
        let pass_access_token = r.pass_access_token.unwrap_or(shared_passes);
        if protected_app && r.pass_access_token == Some(true) {
            p.add(
                &format!("{key}.pass_access_token"),
                "upstream.protected_app sends Authorization: Basic (the Protected App contract) to every app, so it \
                 cannot go with pass_access_token",
            );
        }
        let sender = if r.pass_access_token.is_some() {
            authorization_sender(pass_access_token, &key)
        } else {
            authorization_sender(pass_access_token, "upstream")
        };
        let (own_request_fields, own_field_files) = request_fields(
            p,
            &key,
            &r.request_headers,
            &r.request_headers_files,
            identity_names,
            sender.as_deref(),
        );
        let own_name = tls_server_name(p, &key, &r.tls_server_name);
        // Never [upstream]'s: only whether the entry's own is on a plain upstream matters.
        uses_shared(
            p,
            "tls_server_name",
            own_name.is_some(),
            "which sends no TLS server name",
        );
        let own_fields = super::response_headers::validate_response_headers(
            p,
            &format!("{key}.response_headers"),
            r.response_headers.clone(),
        );
        if let (
            Some(Address {
                url,
                base_path,
                unix_socket,
                http2,
                ..
            }),
            Some(response_headers),
        ) = (url, own_fields)
        {
            let (fields, field_files) = merged_request_fields(
                (&request_headers, &request_header_files),
                (own_request_fields, own_field_files),
            );
            let entry_preserves_host = r.preserve_host.unwrap_or(preserve_host);
            if entry_preserves_host && http2 {
                p.add(&format!("{key}.preserve_host"), PRESERVE_HOST_OVER_H2C);
            }
            routes.push((
                UpstreamRoute {
                    label: format!("{}{prefix}", host.as_deref().unwrap_or("*")),
                    host,
                    prefix,
                    sent_prefix,
                    strip_prefix,
                    response_headers,
                    upstream: UpstreamConfig {
                        url,
                        base_path,
                        unix_socket,
                        http2,
                        preserve_host: entry_preserves_host,
                        connect_timeout: connect,
                        response_timeout: response,
                        pass_access_token,
                        pass_method_override: raw.pass_method_override.unwrap_or(false),
                        read_form_method,
                        max_form_method_bytes,
                        upgrade_protocols: upgrade_protocols.clone(),
                        protected_app,
                        // Read after validation (`super::files`).
                        tls_ca_file: r.tls_ca_file.clone().or_else(|| tls_ca_file.clone()),
                        tls_client_cert: own_cert.or_else(|| client_cert.clone()),
                        tls_roots: Vec::new(),
                        tls_server_name: own_name,
                        request_headers: fields,
                        request_header_files: field_files,
                    },
                },
                key,
            ));
        }
    }
    if tls_ca_file.is_some() && !default_upstream.as_ref().is_some_and(|at| https(&at.url)) && !shared_ca_over_tls {
        p.add(
            "upstream.tls_ca_file",
            "is for https:// upstreams, and no upstream using it is one: the CA would never be checked",
        );
    }
    if client_cert.is_some() && !default_upstream.as_ref().is_some_and(|at| https(&at.url)) && !shared_cert_over_tls {
        p.add(
            "upstream.tls_client_cert_file",
            "is for https:// upstreams, and no upstream using it is one: no TLS handshake would present it",
        );
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

    if preserve_host && default_upstream.as_ref().is_some_and(|at| at.http2) {
        p.add("upstream.preserve_host", PRESERVE_HOST_OVER_H2C);
    }
    if p.len() > before {
        return None;
    }
    // [upstream] is the default route (for any host, every path) when it has a URL; the shared settings in any case.
    let mut routes: Vec<UpstreamRoute> = routes.into_iter().map(|(r, _)| r).collect();
    let shared_url = default_upstream
        .clone()
        .map(|at| (at.url, at.base_path, at.unix_socket, at.http2))
        .or_else(|| {
            routes.first().map(|r| {
                (
                    r.upstream.url.clone(),
                    r.upstream.base_path.clone(),
                    r.upstream.unix_socket.clone(),
                    r.upstream.http2,
                )
            })
        });
    let Some((url, base_path, unix_socket, http2)) = shared_url else {
        p.add("upstream.url", "missing");
        return None;
    };
    let shared = UpstreamConfig {
        url,
        base_path,
        unix_socket,
        http2,
        preserve_host,
        connect_timeout,
        response_timeout,
        pass_access_token: raw.pass_access_token.unwrap_or(false),
        pass_method_override: raw.pass_method_override.unwrap_or(false),
        read_form_method,
        max_form_method_bytes,
        upgrade_protocols,
        protected_app,
        tls_ca_file,
        tls_client_cert: client_cert,
        tls_roots: Vec::new(),
        tls_server_name: server_name,
        request_headers,
        request_header_files,
    };
    if default_upstream.is_some() {
        routes.push(UpstreamRoute {
            label: "*/".to_owned(),
            host: None,
            prefix: "/".to_owned(),
            sent_prefix: "/".to_owned(),
            strip_prefix: false,
            upstream: shared.clone(),
            response_headers: Vec::new(),
        });
    }
    Some((shared, routes))
}

/// `<at>.tls_client_cert_file` and `<at>.tls_client_key_file`: both or neither (a certificate is presented with the
/// key that proves it).
fn client_cert_pair(
    p: &mut Problems,
    at: &str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Option<(PathBuf, PathBuf)> {
    let given = |f: &Option<PathBuf>| f.clone().filter(|f| !f.as_os_str().is_empty());
    match (given(cert), given(key)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            p.add(
                &format!("{at}.tls_client_cert_file"),
                format!("needs {at}.tls_client_key_file, the private key of the certificate"),
            );
            None
        }
        (None, Some(_)) => {
            p.add(
                &format!("{at}.tls_client_key_file"),
                format!("needs {at}.tls_client_cert_file, the certificate it belongs to"),
            );
            None
        }
    }
}

/// `<at>.tls_server_name`: a DNS name or an IP address (IPv6 with or without brackets), sent in SNI and verified in
/// the app's certificate instead of the URL's host (nginx's `proxy_ssl_name`, Pomerium's `tls_server_name`).
fn tls_server_name(p: &mut Problems, at: &str, raw: &Option<String>) -> Option<rustls::pki_types::ServerName<'static>> {
    let written = raw.as_deref().map(str::trim).filter(|v| !v.is_empty())?;
    let bare = written
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(written);
    match rustls::pki_types::ServerName::try_from(bare.to_owned()) {
        Ok(name) => Some(name),
        Err(_) => {
            p.add(
                &format!("{at}.tls_server_name"),
                format!(
                    "`{written}` is not a DNS name or an IP address: write the name the app's certificate \
                     carries, such as app.internal (no scheme, port or path)"
                ),
            );
            None
        }
    }
}

/// A request field as configured: set to the value, or removed (`None`).
type Field = (HeaderName, Option<HeaderValue>);

/// `<at>.request_headers`: `name = "value"` sets a field on every request to the app (replacing the client's), `""`
/// removes the client's (Pomerium's `set_request_headers` and `remove_request_headers`); and
/// `<at>.request_headers_files`: `name = "/path"` sets it to the file's text, read once the configuration is valid
/// and again by the gate when it changes (a credential kept in a Kubernetes secret or a systemd credential, as
/// oauth2-proxy's `fromFile`). Refused for the
/// fields the gate frames by or sets itself (`crate::identity::reserved_kind`), an identity field of `[headers]`
/// and, where the gate sends its own there, `Authorization`; names are compared as PHP, WSGI and CGI read them (`_`
/// as `-`), since `X_Forwarded_User` reaches such an app as `X-Forwarded-User`. A name in both tables is refused.
fn request_fields(
    p: &mut Problems,
    at: &str,
    inline: &Option<BTreeMap<String, String>>,
    files: &Option<BTreeMap<String, PathBuf>>,
    identity_names: &[HeaderName],
    authorization_sender: Option<&str>,
) -> (Vec<Field>, Vec<FieldFile>) {
    let mut out = Vec::new();
    for (name, value) in inline.iter().flatten() {
        let key = format!("{at}.request_headers.{name}");
        let Some(header) = request_field_name(p, &key, name, identity_names, authorization_sender) else {
            continue;
        };
        if value.is_empty() {
            out.push((header, None));
            continue;
        }
        if super::checks::is_placeholder(value) {
            refuse_placeholder(p, &key, value, "set the value the app expects");
            continue;
        }
        match HeaderValue::from_str(value) {
            Ok(mut v) => {
                // Often a credential (an API key, Basic credentials): kept out of debug output and HPACK tables.
                v.set_sensitive(true);
                out.push((header, Some(v)));
            }
            Err(_) => p.add(&key, NOT_A_FIELD_VALUE),
        }
    }
    let mut from_files = Vec::new();
    for (name, path) in files.iter().flatten() {
        let key = format!("{at}.request_headers_files.{name}");
        let Some(header) = request_field_name(p, &key, name, identity_names, authorization_sender) else {
            continue;
        };
        if path.as_os_str().is_empty() {
            p.add(&key, "names no file: write the path of the file holding the value");
            continue;
        }
        if out.iter().any(|(inline, _)| inline == header) {
            p.add(
                &key,
                format!("{header} is in {at}.request_headers too; keep one of them"),
            );
            continue;
        }
        from_files.push(FieldFile {
            name: header,
            path: path.clone(),
            key,
        });
    }
    (out, from_files)
}

/// What a request field's value may not be: RFC 9110 §5.5's field values, without obs-text.
pub(super) const NOT_A_FIELD_VALUE: &str =
    "is not a valid header value (visible ASCII and spaces; no line breaks or control characters)";

/// The name of a request field `key` sets, unless the gate writes that field itself (see [`request_fields`]).
fn request_field_name(
    p: &mut Problems,
    key: &str,
    name: &str,
    identity_names: &[HeaderName],
    authorization_sender: Option<&str>,
) -> Option<HeaderName> {
    let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
        p.add(key, "not a valid HTTP header name");
        return None;
    };
    let normalised = crate::identity::normalise_name(header.as_str());
    let why = match crate::identity::reserved_kind(&header) {
        Some(Reserved::Framing) => Some("this header frames the request or its connection: the gate writes it"),
        Some(Reserved::Managed) => Some("the gate sets or removes this header itself"),
        None if identity_names
            .iter()
            .any(|i| crate::identity::same_normalised(i.as_str(), &normalised)) =>
        {
            Some("the gate sends the user's identity in this header ([headers])")
        }
        None if normalised == "authorization" => authorization_sender,
        None => None,
    };
    match why {
        Some(why) => {
            p.add(key, why);
            None
        }
        None => Some(header),
    }
}

/// An `[[upstreams]]` entry's request fields over `[upstream]`'s: where both name a field, in either table
/// (inline or from a file), the entry's; the rest of each.
fn merged_request_fields(
    (shared, shared_files): (&[Field], &[FieldFile]),
    (own, own_files): (Vec<Field>, Vec<FieldFile>),
) -> (Vec<Field>, Vec<FieldFile>) {
    let own_names: Vec<HeaderName> = own
        .iter()
        .map(|(name, _)| name.clone())
        .chain(own_files.iter().map(|f| f.name.clone()))
        .collect();
    let mut fields: Vec<Field> = shared
        .iter()
        .filter(|(name, _)| !own_names.contains(name))
        .cloned()
        .collect();
    fields.extend(own);
    let mut files: Vec<FieldFile> = shared_files
        .iter()
        .filter(|f| !own_names.contains(&f.name))
        .cloned()
        .collect();
    files.extend(own_files);
    (fields, files)
}

/// `upstream.upgrade_protocols`: the `Upgrade` protocols passed to the app (RFC 9110 §7.8), lower case.
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
