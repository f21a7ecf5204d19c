//! The session's secrets kept current from their files (`session.secret_files`, or `session.secret_file` alone):
//! a rotation written to a Kubernetes secret, or a key taken away, takes effect without a restart.
//!
//! The files are checked every [`crate::reload::CHECK_INTERVAL`] ([`crate::reload::Stamp`]); a change is read once
//! the files have stood still for one more check, so that files written one after the other (the new secret, then
//! the old one moved second) are taken together rather than with the new secret alone, which would sign out every
//! session sealed with the old one. The secrets then replace the keys in use, in the files' order: the first seals,
//! every one opens, and a cookie opened before with a key now gone no longer opens (the cache of opened sessions is
//! keyed by the keys' generation). A file that cannot be read or holds no usable secret (empty, the examples'
//! placeholder, under 32 bytes) leaves the keys in use as they are, with a warning naming the key and the file;
//! secrets are never logged.

use std::sync::Arc;

use crate::config::{session_secret_from_file, SecretFile};
use crate::reload::Stamp;

use super::cookies::Replaced;
use super::Sessions;

/// Where the watch stands: the files' stamps when their secrets were last read, and a change waiting to stand still.
#[derive(Default)]
struct Watch {
    read: Option<Vec<Stamp>>,
    changed: Option<Vec<Stamp>>,
}

impl Sessions {
    /// Checks `files` (the configuration's `session.secret_files`) for as long as anything else holds the sessions,
    /// in the runtime this is called from; nothing to do for inline secrets. The first check reads the files once
    /// more: they may have changed since the configuration read them.
    pub(crate) fn watch_secret_files(self: &Arc<Self>, files: &[SecretFile]) {
        if files.is_empty() {
            return;
        }
        let files = files.to_vec();
        let mut watch = Watch::default();
        crate::reload::while_held(Arc::downgrade(self), move |sessions: &Sessions| {
            sessions.check_secret_files(&files, &mut watch);
        });
    }

    /// One check of `files`; true when new keys are in use.
    fn check_secret_files(&self, files: &[SecretFile], watch: &mut Watch) -> bool {
        self.read_secret_files(files, watch).is_some()
    }

    /// [`Sessions::check_secret_files`], saying what the new keys changed.
    fn read_secret_files(&self, files: &[SecretFile], watch: &mut Watch) -> Option<Replaced> {
        let now: Vec<Stamp> = files.iter().map(|f| Stamp::of(&f.path)).collect();
        if watch.read.as_ref() == Some(&now) {
            watch.changed = None;
            return None;
        }
        // The first check reads at once (nothing to wait for); a later change once it stood still for a check.
        if watch.read.is_some() && watch.changed.as_ref() != Some(&now) {
            watch.changed = Some(now);
            return None;
        }
        watch.read = Some(now);
        watch.changed = None;
        let mut secrets = Vec::with_capacity(files.len());
        for file in files {
            match session_secret_from_file(&file.path) {
                Ok(secret) => secrets.push(secret),
                Err(error) => {
                    tracing::warn!(
                        key = %file.key,
                        %error,
                        "session secret file changed but cannot be used; keeping the session keys in use"
                    );
                    return None;
                }
            }
        }
        let replaced = self.codec().replace_keys(&secrets)?;
        if replaced.sealing_key_dropped {
            tracing::warn!(
                keys = secrets.len(),
                "session secrets reloaded without the key that sealed sessions until now: every session it sealed is \
                 signed out; to rotate without that, list the new secret first and keep the old one second \
                 (session.secret_files) until sessions have been resealed"
            );
        } else {
            tracing::info!(keys = secrets.len(), "session secrets reloaded");
        }
        Some(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn sessions(dir: &std::path::Path) -> (Sessions, Vec<SecretFile>) {
        let toml = format!(
            "[server]\npublic_url = \"https://app.example.com\"\n\
             [logto]\nendpoint = \"http://127.0.0.1:9\"\napp_id = \"a\"\napp_secret = \"s\"\n\
             [session]\nsecret_files = [{:?}, {:?}]\n\
             [upstream]\nurl = \"http://127.0.0.1:9\"\n",
            dir.join("new").display().to_string(),
            dir.join("old").display().to_string(),
        );
        let config = Config::from_toml_str(&toml, Vec::new()).expect("valid");
        let sessions = Sessions::new(&config.session, 1).expect("sessions");
        (sessions, config.session.secret_files)
    }

    #[test]
    fn a_change_is_read_once_it_stands_still_and_a_bad_one_is_kept_out() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        std::fs::write(d.join("new"), "first-session-secret-0123456789abcdef").expect("write");
        std::fs::write(d.join("old"), "first-session-secret-0123456789abcdef").expect("write");
        let (sessions, files) = sessions(d);
        let sealed = sessions.codec().seal_sign_out_return("/first", 0).expect("sealed");
        let mut watch = Watch::default();
        // A change is seen at one check and read at the next (it stood still).
        let settled = |watch: &mut Watch| {
            assert!(!sessions.check_secret_files(&files, watch), "a change waits a check");
            sessions.read_secret_files(&files, watch)
        };
        let kept_sealing_key = Some(Replaced {
            sealing_key_dropped: false,
        });
        // The first check reads the files: the same secrets, no change.
        assert!(!sessions.check_secret_files(&files, &mut watch));
        assert_eq!(sessions.codec().generation(), 0);

        // A rotation: the new secret first, the old one second, written one after the other.
        // Read a check later: new = second, old = first.
        std::fs::write(d.join("new"), "second-session-secret-0123456789abcdef").expect("write");
        assert_eq!(settled(&mut watch), kept_sealing_key);
        assert_eq!(sessions.codec().generation(), 1);
        assert_eq!(
            sessions.codec().open_sign_out_return(&sealed, 0).as_deref(),
            Some("/first"),
            "the old key still opens"
        );
        let resealed = sessions.codec().seal_sign_out_return("/second", 0).expect("sealed");

        // The old key taken away: what it sealed no longer opens; the new key's does, and seals on.
        std::fs::write(d.join("old"), "second-session-secret-0123456789abcdef").expect("write");
        assert_eq!(settled(&mut watch), kept_sealing_key);
        assert_eq!(sessions.codec().open_sign_out_return(&sealed, 0), None);
        assert_eq!(
            sessions.codec().open_sign_out_return(&resealed, 0).as_deref(),
            Some("/second")
        );

        // Too short, a placeholder, empty, missing: the keys in use stay.
        for bad in ["short", "change-me-please-to-a-long-random-value", "\n"] {
            std::fs::write(d.join("new"), bad).expect("write");
            assert_eq!(settled(&mut watch), None, "{bad:?}");
            assert!(sessions.codec().open_sign_out_return(&resealed, 0).is_some(), "{bad:?}");
        }
        std::fs::remove_file(d.join("new")).expect("remove");
        assert_eq!(settled(&mut watch), None);
        assert_eq!(sessions.codec().generation(), 2);
        // Mended: read again.
        std::fs::write(d.join("new"), "third-session-secret-0123456789abcdef").expect("write");
        assert_eq!(settled(&mut watch), kept_sealing_key);
        assert_eq!(sessions.codec().generation(), 3);
        // Both files replaced by one new secret: the key that sealed is gone (the warning's case).
        for file in ["new", "old"] {
            std::fs::write(d.join(file), "fourth-session-secret-0123456789abcdef").expect("write");
        }
        let dropped = Some(Replaced {
            sealing_key_dropped: true,
        });
        assert_eq!(settled(&mut watch), dropped);
    }
}
