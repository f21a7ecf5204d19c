//! Loading: the TOML file and the environment merged (the environment wins), parsed, validated
//! ([`super::validate`]), then the files the configuration names read ([`super::files`]).

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::Figment;

use super::env::{EnvOverrides, ENV_METADATA_NAME};
use super::raw::RawConfig;
use super::{files, Config, ConfigErrors};

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
        let mut config = super::validate(raw)?;
        files::load(&mut config)?;
        Ok(config)
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
