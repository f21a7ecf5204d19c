//! Environment overrides: `LOGTO_GATE_<SECTION>__<KEY>` variables as a figment provider whose values are all
//! strings (converted only where a key wants a number or a boolean, so a secret made of digits stays a string).

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::{ENV_CONFIG_PATH, ENV_PREFIX};

pub(super) const ENV_METADATA_NAME: &str = "environment variable";

/// Environment variables `LOGTO_GATE_<SECTION>__<KEY>` as a figment provider whose values are all strings.
pub(super) struct EnvOverrides {
    vars: Vec<(String, String)>,
}

/// Secrets that may come inline or from a file: an environment variable for one of the pair replaces whatever the
/// file set for the other, so `LOGTO_GATE_LOGTO__APP_SECRET_FILE` overrides an inline `app_secret` (and the
/// other way round) instead of clashing with it. `session.secrets` and `session.secret_files` (the rotation lists)
/// are of the session secret's group.
const SECRET_PAIRS: [(&str, &[&str]); 2] = [
    ("logto__app_secret", &["logto__app_secret_file"]),
    (
        "session__secret",
        &["session__secret_file", "session__secrets", "session__secret_files"],
    ),
];

impl EnvOverrides {
    pub(super) fn from_iter(vars: impl IntoIterator<Item = (String, String)>) -> Self {
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
    pub(super) fn is_empty(&self) -> bool {
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
