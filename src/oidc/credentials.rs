//! The app's credentials at Logto (`logto.app_id`, `logto.app_secret`), kept current when the secret comes from a
//! file (`logto.app_secret_file`).
//!
//! Logto lets an app hold several secrets, each with an expiry, so that one can be rotated without downtime: add a
//! secret in the console, hand it to the app, then delete the old one. The gate takes its part without a restart:
//! the file is checked every [`crate::reload::CHECK_INTERVAL`] and read again once its metadata changed
//! ([`crate::reload::Stamp`]: a Kubernetes secret volume's link swap, a write in place). A new text that cannot be a
//! secret (empty, the examples' placeholder) or a file that cannot be read leaves the secret in use as it is, with a
//! warning naming the key and the file; the next change is read again. Secrets are never logged.
//!
//! The secret is used in two forms, both made once per secret rather than per request:
//! - client authentication at Logto's token, revocation and introspection endpoints, `client_secret_basic`
//!   (RFC 6749 §2.3.1: id and secret form-urlencoded, joined by `:`, then Base64);
//! - Logto Protected App's `Authorization: Basic base64(appId:appSecret)` to the app (`upstream.protected_app`),
//!   id and secret as they are.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use base64::Engine;
use http::HeaderValue;

use crate::config::{app_secret_from_file, LogtoConfig};
use crate::reload::Stamp;

/// The app's id and the `Authorization` values its current secret makes.
pub(crate) struct AppCredentials {
    app_id: String,
    /// `logto.app_secret_file`, when the secret comes from one.
    file: Option<PathBuf>,
    current: RwLock<Basics>,
}

/// The two `Authorization` values one secret makes (sensitive: never logged, never indexed by HTTP/2's HPACK).
struct Basics {
    client: HeaderValue,
    protected_app: HeaderValue,
}

impl Basics {
    fn of(app_id: &str, secret: &str) -> Result<Basics, String> {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = |pair: String| {
            let mut v = HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
            .map_err(|e| format!("the app's credentials make no Authorization value: {e}"))?;
            v.set_sensitive(true);
            Ok::<_, String>(v)
        };
        Ok(Basics {
            client: basic(format!("{}:{}", enc(app_id), enc(secret)))?,
            protected_app: basic(format!("{app_id}:{secret}"))?,
        })
    }
}

impl AppCredentials {
    /// The credentials of `config` (its secret as read at start).
    pub(crate) fn new(config: &LogtoConfig) -> Result<Arc<AppCredentials>, String> {
        Ok(Arc::new(AppCredentials {
            app_id: config.app_id.clone(),
            file: config.app_secret_file.clone(),
            current: RwLock::new(Basics::of(&config.app_id, config.app_secret.expose())?),
        }))
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Basics> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Authorization` for Logto's token, revocation and introspection endpoints (`client_secret_basic`).
    pub(crate) fn client_basic(&self) -> HeaderValue {
        self.current().client.clone()
    }

    /// Logto Protected App's `Authorization: Basic base64(appId:appSecret)` (on every request to the app in that
    /// mode: only this value is copied).
    pub(crate) fn protected_app_basic(&self) -> HeaderValue {
        self.current().protected_app.clone()
    }

    /// Checks `logto.app_secret_file` every [`crate::reload::CHECK_INTERVAL`] for as long as anything else holds
    /// the credentials, in the runtime this is called from; nothing to do for an inline secret. The first check reads
    /// the file once more: it may have changed since the configuration read it.
    pub(crate) fn watch(self: &Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        let mut seen = None;
        crate::reload::while_held(Arc::downgrade(self), move |credentials: &AppCredentials| {
            credentials.check(&mut seen);
        });
    }

    /// Reads the secret file again when its metadata changed since `seen`; true when a new secret is in use.
    fn check(&self, seen: &mut Option<Stamp>) -> bool {
        let Some(file) = &self.file else {
            return false;
        };
        let now = Stamp::of(file);
        if seen.as_ref() == Some(&now) {
            return false;
        }
        *seen = Some(now);
        let read = app_secret_from_file(file).and_then(|secret| Basics::of(&self.app_id, secret.expose()));
        match read {
            Ok(basics) => {
                let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                if current.client == basics.client {
                    return false;
                }
                *current = basics;
                tracing::info!(key = "logto.app_secret_file", file = %file.display(), "app secret reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(
                    key = "logto.app_secret_file",
                    %error,
                    "app secret file changed but cannot be used; keeping the secret in use"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config(secret: &str, file: Option<PathBuf>) -> LogtoConfig {
        let toml = "[server]\npublic_url = \"https://app.example.com\"\n\
             [logto]\nendpoint = \"http://127.0.0.1:9\"\napp_id = \"the app\"\napp_secret = \"s\"\n\
             [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             [upstream]\nurl = \"http://127.0.0.1:9\"\n";
        let mut logto = crate::config::Config::from_toml_str(toml, Vec::new())
            .expect("config")
            .logto;
        logto.app_secret = Secret::new(secret.to_owned());
        logto.app_secret_file = file;
        logto
    }

    fn decoded(v: &HeaderValue) -> String {
        let text = v.to_str().expect("ascii");
        let b64 = text.strip_prefix("Basic ").expect("Basic");
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("utf-8")
    }

    #[test]
    fn the_client_form_is_urlencoded_and_the_protected_app_form_is_not() {
        let c = AppCredentials::new(&config("p@ss:w/rd+", None)).expect("credentials");
        assert_eq!(decoded(&c.client_basic()), "the+app:p%40ss%3Aw%2Frd%2B");
        assert_eq!(decoded(&c.protected_app_basic()), "the app:p@ss:w/rd+");
        assert!(c.client_basic().is_sensitive() && c.protected_app_basic().is_sensitive());
        // Without a file there is nothing to read again.
        assert!(!c.check(&mut None));
    }

    #[test]
    fn a_changed_file_is_used_and_a_bad_one_kept_out() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("app_secret");
        std::fs::write(&file, "first\n").expect("write");
        let c = AppCredentials::new(&config("first", Some(file.clone()))).expect("credentials");
        let mut seen = None;
        // The first check reads the file; the same secret is no change.
        assert!(!c.check(&mut seen));
        assert!(!c.check(&mut seen));
        std::fs::write(&file, "second-secret\n").expect("write");
        assert!(c.check(&mut seen));
        assert_eq!(decoded(&c.client_basic()), "the+app:second-secret");
        assert_eq!(decoded(&c.protected_app_basic()), "the app:second-secret");
        // Empty, the examples' placeholder, missing: the secret in use stays.
        for bad in ["\n", "change-me-app-secret"] {
            std::fs::write(&file, bad).expect("write");
            assert!(!c.check(&mut seen), "{bad:?}");
            assert_eq!(decoded(&c.client_basic()), "the+app:second-secret");
        }
        std::fs::remove_file(&file).expect("remove");
        assert!(!c.check(&mut seen));
        assert_eq!(seen, Some(Stamp::Unreadable));
        std::fs::write(&file, "third").expect("write");
        assert!(c.check(&mut seen));
        assert_eq!(decoded(&c.client_basic()), "the+app:third");
    }
}
