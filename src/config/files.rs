//! The files a configuration names, read once it is valid: secret files, upstream CA files, the TLS certificate
//! and key, the assertion's signing key. Validation itself reads nothing, so a problem in the text is reported
//! without touching the file system, and a file is only opened for a configuration that will be used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use super::checks::{is_placeholder, Problems};
use super::logto::APP_CREDENTIALS;
use super::{Config, ConfigErrors, Secret};

/// Reads the files `config` names into it; every problem names its key.
pub(super) fn load(config: &mut Config) -> Result<(), ConfigErrors> {
    let mut p = Problems::default();
    if let Some(path) = &config.logto.app_secret_file {
        match app_secret_from_file(path) {
            Ok(secret) => config.logto.app_secret = secret,
            Err(e) => p.add("logto.app_secret_file", e),
        }
    }
    if !config.session.secret_files.is_empty() {
        let mut secrets = Vec::new();
        for file in &config.session.secret_files {
            match session_secret_from_file(&file.path) {
                Ok(secret) => secrets.push(secret),
                Err(e) => p.add(&file.key, e),
            }
        }
        config.session.secrets = secrets;
    }
    load_upstream_roots(&mut p, config);
    load_request_field_files(&mut p, config);
    check_upstream_client_certs(&mut p, config);
    if let Some((cert, key)) = &config.server.tls {
        if let Err(e) = crate::tls::load(cert, key) {
            p.line(e);
        }
    }
    if let Some(f) = config.assertion.as_ref().and_then(|a| a.signing_key_file.as_ref()) {
        if !f.is_file() {
            p.add(
                "assertion.signing_key_file",
                format!("{} is not a readable file", f.display()),
            );
        }
    }
    if let Some(path) = config.pages.stylesheet_file.clone() {
        if let Some(css) = read_stylesheet(&mut p, &path) {
            config.pages.look.stylesheet = css;
        }
    }
    p.into_result()
}

/// `pages.stylesheet_file`'s text: UTF-8, at most [`super::pages::MAX_STYLESHEET`] bytes, checked by
/// [`super::pages::check_stylesheet`].
fn read_stylesheet(p: &mut Problems, path: &Path) -> Option<String> {
    const KEY: &str = "pages.stylesheet_file";
    let max = super::pages::MAX_STYLESHEET;
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max => {
            p.add(
                KEY,
                format!("{} is {} bytes; at most {max} fit", path.display(), m.len()),
            );
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            p.add(KEY, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    }
    match std::fs::read_to_string(path) {
        Ok(css) => {
            let before = p.len();
            super::pages::check_stylesheet(p, path, &css);
            (p.len() == before).then_some(css)
        }
        Err(e) => {
            p.add(KEY, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// A secret file's text, without the trailing newline Kubernetes secret files often end with; the error names the
/// file and says what is wrong (unreadable, empty).
fn secret_text(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim_end_matches(['\r', '\n']).to_owned()),
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// `logto.app_secret_file`'s secret, read at start and whenever the file changes ([`crate::oidc::AppCredentials`]);
/// the error names the file and says what is wrong (unreadable, empty, the examples' placeholder).
pub(crate) fn app_secret_from_file(path: &Path) -> Result<Secret, String> {
    let secret = secret_text(path)?;
    if is_placeholder(&secret) {
        return Err(format!(
            "{} holds the placeholder from logto-gate's examples, which anyone can read: {APP_CREDENTIALS}",
            path.display()
        ));
    }
    Ok(Secret::new(secret))
}

/// A session secret's file (`session.secret_file`, an entry of `session.secret_files`), read at start and whenever
/// it changes (`Sessions::watch_secret_files`); the error names the file and says what is wrong (unreadable, empty,
/// the examples' placeholder, too short).
pub(crate) fn session_secret_from_file(path: &Path) -> Result<Secret, String> {
    let secret = secret_text(path)?;
    let problems = super::session::secret_problems(&secret);
    if problems.is_empty() {
        Ok(Secret::new(secret))
    } else {
        Err(format!("{}: {}", path.display(), problems.join("; ")))
    }
}

/// Every upstream's `tls_ca_file`, each file read once: `[upstream]`'s under its key, an `[[upstreams]]` entry's
/// own under the entry's.
fn load_upstream_roots(p: &mut Problems, config: &mut Config) {
    let mut read: HashMap<PathBuf, Vec<CertificateDer<'static>>> = HashMap::new();
    let mut roots = |p: &mut Problems, key: &str, file: &Path| -> Vec<CertificateDer<'static>> {
        read.entry(file.to_owned())
            .or_insert_with(|| load_tls_roots(p, key, Some(file)))
            .clone()
    };
    let shared = config.upstream.tls_ca_file.clone();
    if let Some(file) = &shared {
        config.upstream.tls_roots = roots(p, "upstream.tls_ca_file", file);
    }
    for (i, route) in config.routes.iter_mut().enumerate() {
        if let Some(file) = route.upstream.tls_ca_file.clone() {
            let key = if Some(&file) == shared.as_ref() {
                "upstream.tls_ca_file".to_owned()
            } else {
                format!("upstreams[{i}].tls_ca_file")
            };
            route.upstream.tls_roots = roots(p, &key, &file);
        }
    }
}

/// Every upstream's `request_headers_files`, read once each (the same file may serve several entries) into its
/// `request_headers` ([`field_value_from_file`]). The list stays: the gate re-reads the files when they change.
fn load_request_field_files(p: &mut Problems, config: &mut Config) {
    let mut read: HashMap<PathBuf, Option<http::HeaderValue>> = HashMap::new();
    let upstreams = std::iter::once(&mut config.upstream).chain(config.routes.iter_mut().map(|r| &mut r.upstream));
    for upstream in upstreams {
        for file in &upstream.request_header_files {
            let value = read
                .entry(file.path.clone())
                .or_insert_with(|| field_value_from_file(&file.path).map_err(|e| p.add(&file.key, e)).ok())
                .clone();
            if let Some(value) = value {
                upstream.request_headers.push((file.name.clone(), Some(value)));
            }
        }
    }
}

/// A request field's value from the file at `path`: its text without the line break a secret file often ends with,
/// as a sensitive field value. The error says what is wrong with the file, naming it.
pub(crate) fn field_value_from_file(path: &Path) -> Result<http::HeaderValue, String> {
    let text = secret_text(path)?;
    match http::HeaderValue::from_str(&text) {
        Ok(mut v) => {
            v.set_sensitive(true);
            Ok(v)
        }
        Err(_) => Err(format!("{} {}", path.display(), super::upstream::NOT_A_FIELD_VALUE)),
    }
}

/// Every upstream's client certificate and key load, and belong together: a problem is named with `[upstream]`'s
/// keys when the pair is the shared one, else with the entry's.
fn check_upstream_client_certs(p: &mut Problems, config: &Config) {
    let shared = config.upstream.tls_client_cert.as_ref();
    let mut checked: Vec<&(PathBuf, PathBuf)> = Vec::new();
    let routes = config.routes.iter().enumerate().map(|(i, r)| (Some(i), &r.upstream));
    for (i, upstream) in std::iter::once((None, &config.upstream)).chain(routes) {
        let Some(pair) = upstream.tls_client_cert.as_ref() else {
            continue;
        };
        if checked.contains(&pair) {
            continue;
        }
        checked.push(pair);
        let (cert, key) = match i {
            Some(i) if Some(pair) != shared => (
                format!("upstreams[{i}].tls_client_cert_file"),
                format!("upstreams[{i}].tls_client_key_file"),
            ),
            _ => (
                "upstream.tls_client_cert_file".to_owned(),
                "upstream.tls_client_key_file".to_owned(),
            ),
        };
        if let Err(e) = crate::tls::load_named(&pair.0, &pair.1, &cert, &key) {
            p.line(e);
        }
    }
}

/// The certificates of a `tls_ca_file` (PEM): a private CA or an upstream's self-signed certificate, trusted for
/// that upstream next to the Mozilla roots. A file that cannot be read or holds no certificate is refused.
fn load_tls_roots(p: &mut Problems, key: &str, file: Option<&Path>) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let Some(file) = file else {
        return Vec::new();
    };
    match CertificateDer::pem_file_iter(file) {
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

#[cfg(test)]
mod tests {
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::Config;

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

    /// `session.secret_files`, the rotation list from files (Kubernetes secrets): read in order, the first to
    /// encrypt; from the environment as a list too (replacing the file's secret); alone among the ways to give the
    /// session's secrets.
    #[test]
    fn session_secret_files_are_read_in_order_and_set_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (new, old) = (dir.path().join("new"), dir.path().join("old"));
        std::fs::write(&new, "new-session-secret-0123456789abcdef\n").expect("write");
        std::fs::write(&old, "old-session-secret-0123456789abcdef").expect("write");
        let session = "secret = \"0123456789abcdef0123456789abcdef\"";
        let list = format!(
            "secret_files = [{:?}, {:?}]",
            new.display().to_string(),
            old.display().to_string()
        );
        let c = Config::from_toml_str(&MINIMAL.replace(session, &list), no_env()).expect("valid");
        let secrets: Vec<&str> = c.session.secrets.iter().map(|s| s.expose()).collect();
        assert_eq!(
            secrets,
            [
                "new-session-secret-0123456789abcdef",
                "old-session-secret-0123456789abcdef"
            ]
        );
        let keys: Vec<&str> = c.session.secret_files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["session.secret_files[0]", "session.secret_files[1]"]);
        assert_eq!(c.session.secret_files[1].path, old);

        let env = vec![(
            "LOGTO_GATE_SESSION__SECRET_FILES".to_owned(),
            format!("{},{}", old.display(), new.display()),
        )];
        // It replaces the file's inline secret.
        let c = Config::from_toml_str(MINIMAL, env).expect("valid");
        assert_eq!(c.session.secrets[0].expose(), "old-session-secret-0123456789abcdef");

        for other in [
            session.to_owned(),
            "secrets = [\"0123456789abcdef0123456789abcdef\"]".to_owned(),
            format!("secret_file = {:?}", new.display().to_string()),
        ] {
            let found = problems(&MINIMAL.replace(session, &format!("{list}\n{other}")));
            assert_eq!(
                found,
                [
                    "session.secret_files: set either session.secret_files (a list) or session.secret / secret_file / \
                  secrets, not several"
                ],
                "{other}"
            );
        }
        let found = problems(&MINIMAL.replace(
            session,
            &format!("secret_files = [{:?}, \" \"]", new.display().to_string()),
        ));
        assert_eq!(
            found,
            ["session.secret_files[1]: is empty: name a file holding one secret"]
        );
    }

    /// The problems a configuration reports, one line each.
    fn problems(toml: &str) -> Vec<String> {
        match Config::from_toml_str(toml, no_env()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    #[test]
    fn every_file_is_read_after_validation_and_its_problems_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| format!("{:?}", dir.path().join(name).display().to_string());
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        std::fs::write(dir.path().join("short"), "short\n").expect("write");
        std::fs::write(dir.path().join("placeholder"), "change-me\n").expect("write");
        std::fs::write(dir.path().join("new"), "new-session-secret-0123456789abcdef\n").expect("write");
        let with = |from: &str, to: String| MINIMAL.replace(from, &to);
        let app = "app_secret = \"s3cret\"";
        let session = "secret = \"0123456789abcdef0123456789abcdef\"";
        let cases = [
            (
                with(app, format!("app_secret_file = {}", path("absent"))),
                "logto.app_secret_file: cannot read",
            ),
            (
                with(session, format!("secret_file = {}", path("empty"))),
                "session.secret_file: ",
            ),
            (
                with(session, format!("secret_file = {}", path("short"))),
                "session.secret_file: ",
            ),
            (
                with(session, format!("secret_files = [{}, {}]", path("new"), path("short"))),
                "session.secret_files[1]: ",
            ),
            (
                with(session, format!("secret_files = [{}, {}]", path("absent"), path("new"))),
                "session.secret_files[0]: cannot read",
            ),
            (
                with(
                    "[upstream]",
                    format!(
                        "tls_cert_file = {}\ntls_key_file = {}\n[upstream]",
                        path("c"),
                        path("k")
                    ),
                ),
                "server.tls_cert_file",
            ),
            (
                format!(
                    "{MINIMAL}\n[assertion]\nenabled = true\naudience = \"app\"\nsigning_key_file = {}\n",
                    path("k")
                ),
                "assertion.signing_key_file: ",
            ),
            (
                format!(
                    "{MINIMAL}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"https://a.internal\"\ntls_ca_file = {}\n",
                    path("ca")
                ),
                "upstreams[0].tls_ca_file: cannot read",
            ),
        ];
        for (toml, expected) in cases {
            let found = problems(&toml);
            assert!(found.iter().any(|l| l.starts_with(expected)), "{expected}: {found:?}");
        }
        let short = problems(&with(
            session,
            format!("secret_files = [{}, {}]", path("new"), path("short")),
        ));
        assert!(
            short[0].ends_with("short: too short: 5 bytes, at least 32 are needed (e.g. `openssl rand -base64 48`)")
        );
        let placeholder = problems(&with(app, format!("app_secret_file = {}", path("placeholder"))));
        assert!(
            placeholder
                .iter()
                .any(|l| l.starts_with("logto.app_secret_file: ") && l.contains("holds the placeholder")),
            "{placeholder:?}"
        );
        // A problem in the text is reported without any file being opened (the secret file does not exist).
        let both = with(app, format!("app_secret_file = {}", path("absent"))).replace("app_id = \"app\"", "");
        assert_eq!(problems(&both), ["logto.app_id: missing"]);
    }
}
