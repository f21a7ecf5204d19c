//! `request_headers_files` kept current: a field whose value is a file's text (an API key in a Kubernetes secret, a
//! systemd credential) takes the file's new text once it changes, without a restart, as the server's certificate
//! does ([`crate::reload`]): the file is read only once its metadata changed ([`crate::reload::Stamp`]), which is
//! checked every interval.
//!
//! A new text that cannot be a field value (empty, more than one line, control characters), or a file that cannot be
//! read (in the middle of a swap), leaves the value in use as it is, with a warning naming the key and the file; the
//! next change is read again. Values are never logged.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{field_value_from_file, Config};
use crate::reload::Stamp;

/// One file's value, shared by every field (of every entry) that names the file.
struct Watched {
    path: PathBuf,
    /// The first key naming the file (`upstreams[0].request_headers_files.X-Api-Key`), for warnings.
    key: String,
    value: RwLock<HeaderValue>,
}

/// The request fields of every route (as `config.routes`) whose value comes from a file, with the file's value in
/// use now.
pub(super) struct FieldFiles {
    routes: Vec<Vec<(HeaderName, Arc<Watched>)>>,
    /// Each file once.
    files: Arc<[Arc<Watched>]>,
}

impl FieldFiles {
    /// The files of `config`'s routes, with the values the configuration read from them.
    pub(super) fn new(config: &Config) -> FieldFiles {
        let mut files: Vec<Arc<Watched>> = Vec::new();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let upstream = &route.upstream;
                upstream
                    .request_header_files
                    .iter()
                    .filter_map(|file| {
                        // The value read at start, which the route's `request_headers` holds (none: the file did
                        // not load, and the configuration was refused).
                        let (_, value) = upstream.request_headers.iter().rev().find(|(n, _)| *n == file.name)?;
                        let value = value.clone()?;
                        let watched = match files.iter().find(|w| w.path == file.path) {
                            Some(watched) => Arc::clone(watched),
                            None => {
                                let watched = Arc::new(Watched {
                                    path: file.path.clone(),
                                    key: file.key.clone(),
                                    value: RwLock::new(value),
                                });
                                files.push(Arc::clone(&watched));
                                watched
                            }
                        };
                        Some((file.name.clone(), watched))
                    })
                    .collect()
            })
            .collect();
        FieldFiles {
            routes,
            files: files.into(),
        }
    }

    /// Sets the fields of `route` whose values come from files to the files' values now, replacing what is there
    /// (after the route's `request_headers`, which set the values read at start).
    pub(super) fn apply(&self, route: usize, headers: &mut HeaderMap) {
        for (name, watched) in self.routes.get(route).into_iter().flatten() {
            let value = watched
                .value
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            headers.insert(name.clone(), value);
        }
    }

    /// Checks the files every [`crate::reload::CHECK_INTERVAL`] for as long as the gate holds them, then stops. The
    /// first check reads each file once more: it may have changed since the configuration read it.
    pub(super) fn watch(&self) {
        if self.files.is_empty() {
            return;
        }
        let held: Weak<[Arc<Watched>]> = Arc::downgrade(&self.files);
        let mut seen: Vec<Option<Stamp>> = vec![None; self.files.len()];
        crate::reload::while_held(held, move |files: &[Arc<Watched>]| {
            for (watched, seen) in files.iter().zip(seen.iter_mut()) {
                check(watched, seen);
            }
        });
    }
}

/// Reads `watched`'s file again when its metadata changed since `seen`.
fn check(watched: &Watched, seen: &mut Option<Stamp>) {
    let now = Stamp::of(&watched.path);
    if seen.as_ref() == Some(&now) {
        return;
    }
    *seen = Some(now);
    match field_value_from_file(&watched.path) {
        Ok(value) => {
            let mut current = watched.value.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *current != value {
                *current = value;
                tracing::info!(key = %watched.key, file = %watched.path.display(), "request field value reloaded");
            }
        }
        Err(error) => tracing::warn!(
            key = %watched.key,
            %error,
            "request field file changed but cannot be used; keeping the value in use"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        let (shared, own) = (dir.join("shared"), dir.join("own"));
        std::fs::write(&shared, "shared-1\n").expect("write");
        std::fs::write(&own, "own-1").expect("write");
        let toml = format!(
            "[server]\npublic_url = \"https://app.example.com\"\n\
             [upstream]\nurl = \"http://127.0.0.1:9\"\nrequest_headers_files = {{ \"X-Key\" = \"{shared}\" }}\n\
             [[upstreams]]\nprefix = \"/a\"\nurl = \"http://127.0.0.1:9\"\n\
             [[upstreams]]\nprefix = \"/b\"\nurl = \"http://127.0.0.1:9\"\n\
             request_headers_files = {{ \"X-Key\" = \"{own}\", \"X-Also\" = \"{shared}\" }}\n\
             [[upstreams]]\nprefix = \"/c\"\nurl = \"http://127.0.0.1:9\"\nrequest_headers = {{ \"X-Key\" = \"\" }}\n\
             [logto]\nendpoint = \"http://127.0.0.1:9\"\napp_id = \"a\"\napp_secret = \"s\"\n\
             [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
            shared = shared.display(),
            own = own.display(),
        );
        Config::from_toml_str(&toml, Vec::new()).expect("valid")
    }

    /// The fields `route` gets, as `name=value` sorted.
    fn fields(files: &FieldFiles, route: usize) -> Vec<String> {
        let mut headers = HeaderMap::new();
        files.apply(route, &mut headers);
        let mut v: Vec<String> = headers
            .iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn each_route_gets_its_files_each_file_read_once_for_all_of_them() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(dir.path());
        let files = FieldFiles::new(&config);
        let route = |prefix: &str| config.routes.iter().position(|r| r.prefix == prefix).expect(prefix);
        assert_eq!(files.files.len(), 2);
        assert_eq!(fields(&files, route("/a")), ["x-key=shared-1"]);
        assert_eq!(fields(&files, route("/b")), ["x-also=shared-1", "x-key=own-1"]);
        // An entry that removes the field has none from the file.
        assert!(fields(&files, route("/c")).is_empty());
        assert!(fields(&files, usize::MAX).is_empty());
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_text_that_is_no_value_keeps_the_one_in_use() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(dir.path());
        let files = FieldFiles::new(&config);
        let a = config.routes.iter().position(|r| r.prefix == "/a").expect("/a");
        let shared = files.files.iter().find(|w| w.path.ends_with("shared")).expect("shared");
        let mut seen = None;
        check(shared, &mut seen);
        assert_eq!(fields(&files, a), ["x-key=shared-1"]);
        for (text, expected) in [
            ("shared-2\r\n", "shared-2"),
            ("two\nlines", "shared-2"),
            ("", "shared-2"),
            ("bell\x07", "shared-2"),
            ("shared-3", "shared-3"),
        ] {
            std::fs::write(dir.path().join("shared"), text).expect("write");
            check(shared, &mut seen);
            assert_eq!(fields(&files, a), [format!("x-key={expected}")], "{text:?}");
        }
        // Gone (in the middle of a swap): kept; back: read.
        std::fs::remove_file(dir.path().join("shared")).expect("remove");
        check(shared, &mut seen);
        assert_eq!(seen, Some(Stamp::Unreadable));
        assert_eq!(fields(&files, a), ["x-key=shared-3"]);
        std::fs::write(dir.path().join("shared"), "shared-4").expect("write");
        check(shared, &mut seen);
        assert_eq!(fields(&files, a), ["x-key=shared-4"]);
    }
}
