//! The cookie store's revocation list when there is no Redis: sign-outs, back-channel logouts (OpenID Connect
//! Back-Channel Logout 1.0 §2.7) and the logout tokens' `jti`s already seen. It lives in the process's memory and,
//! with `session.revocation_file`, also in a file written after every change and read at start, so that a restart
//! does not accept again a copy of a cookie signed out or logged out before it.
//!
//! The file is JSON, replaced whole (written beside it, flushed to disk, then renamed over it, so a crash leaves
//! either the old list or the new one). Entries past their `until` are dropped on every read and write.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The list itself. Every map holds `until`: when the entry stops mattering (the revoked sessions would have
/// expired by then anyway).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct MemoryRevocations {
    /// Logto session id -> until.
    pub(super) sids: HashMap<String, u64>,
    /// Subject -> (logout time, until). Sessions of the subject issued at or before the logout time are revoked.
    pub(super) subs: HashMap<String, (u64, u64)>,
    /// Back-channel `jti`s seen -> until.
    pub(super) jtis: HashMap<String, u64>,
    /// Sessions signed out, by [`super::Session::revocation_name`] -> until.
    pub(super) signed_out: HashMap<String, u64>,
}

impl MemoryRevocations {
    /// Whether any session or subject is revoked (the `jti`s revoke nothing).
    pub(super) fn revokes_any(&self) -> bool {
        !self.sids.is_empty() || !self.subs.is_empty() || !self.signed_out.is_empty()
    }

    /// Drops what no longer matters at `now`.
    pub(super) fn drop_past(&mut self, now: u64) {
        self.sids.retain(|_, until| *until > now);
        self.subs.retain(|_, (_, until)| *until > now);
        self.jtis.retain(|_, until| *until > now);
        self.signed_out.retain(|_, until| *until > now);
    }
}

/// `session.revocation_file`: where the list is kept across restarts.
pub(super) struct RevocationFile {
    path: PathBuf,
    /// Held while a snapshot is taken and written: the last writer always writes the latest list, whatever order
    /// concurrent changes finish in.
    writing: tokio::sync::Mutex<()>,
}

impl RevocationFile {
    /// Reads the list at `path` (none yet: an empty list) without what is past at `now`, and writes it back, so
    /// that a file the gate cannot write is an error at start, not at the first sign-out. The error names the file
    /// and what is wrong; a file that does not parse is refused rather than replaced, since replacing it would
    /// forget every revocation in it.
    pub(super) fn open(path: &Path, now: u64) -> Result<(RevocationFile, MemoryRevocations), String> {
        let shown = path.display();
        let list = read(path, now)?;
        write_whole(path, &list).map_err(|e| format!("session.revocation_file {shown}: cannot be written: {e}"))?;
        let file = RevocationFile {
            path: path.to_owned(),
            writing: tokio::sync::Mutex::new(()),
        };
        Ok((file, list))
    }

    /// Writes the list as it is now. A failure is logged: the revocation holds in this process all the same, and
    /// the next change writes the whole list again.
    pub(super) async fn save(&self, list: &Mutex<MemoryRevocations>) {
        let _turn = self.writing.lock().await;
        let snapshot = match list.lock() {
            Ok(m) => serde_json::to_vec(&*m),
            Err(_) => return,
        };
        let path = self.path.clone();
        let written = match snapshot {
            Ok(bytes) => tokio::task::spawn_blocking(move || write_bytes(&path, &bytes))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = written {
            tracing::error!(
                file = %self.path.display(),
                error = %e,
                "the revocation list could not be written: a restart would forget the latest sign-outs and logouts"
            );
        }
    }
}

/// Reads the list at `path` without what is past at `now`; no file yet is an empty list. Errors name the file.
pub(super) fn read(path: &Path, now: u64) -> Result<MemoryRevocations, String> {
    let shown = path.display();
    let mut list = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<MemoryRevocations>(&bytes).map_err(|e| {
            format!(
                "session.revocation_file {shown}: not a revocation list the gate wrote ({e}); move it away to start \
                 with an empty one"
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => MemoryRevocations::default(),
        Err(e) => return Err(format!("session.revocation_file {shown}: cannot be read: {e}")),
    };
    list.drop_past(now);
    Ok(list)
}

fn write_whole(path: &Path, list: &MemoryRevocations) -> std::io::Result<()> {
    write_bytes(path, &serde_json::to_vec(list).map_err(std::io::Error::other)?)
}

/// Replaces `path` with `bytes`: a temporary file in the same directory, flushed, renamed over it, then the
/// directory flushed so that the rename itself survives a power loss (rename(2) is atomic, not durable).
fn write_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // Only the gate's user reads it: it names users (`sub`) and Logto sessions.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    // `mode` applies only to a file created now; one left behind by a crash keeps its own.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    let directory = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_list_written_is_read_back_without_what_is_past() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("written");
        // A temporary file a crash left behind, readable by others: the list written through it is not.
        use std::os::unix::fs::PermissionsExt;
        let leftover = dir.path().join("written.tmp");
        std::fs::write(&leftover, b"{}").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (file, list) = RevocationFile::open(&path, 100).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(list, MemoryRevocations::default());
        let mut m = MemoryRevocations::default();
        m.sids.insert("sid-live".into(), 500);
        m.sids.insert("sid-past".into(), 150);
        m.subs.insert("sub".into(), (120, 500));
        m.jtis.insert("jti".into(), 300);
        m.signed_out.insert("serial".into(), 500);
        let list = Mutex::new(m);
        file.save(&list).await;

        let (_, read) = RevocationFile::open(&path, 200).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut expected = list.into_inner().unwrap();
        expected.sids.remove("sid-past");
        assert_eq!(read, expected);
        assert!(read.revokes_any());
    }

    #[test]
    fn a_file_that_does_not_parse_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbled");
        std::fs::write(&path, b"{\"sids\": [").unwrap();
        let e = RevocationFile::open(&path, 0).err().unwrap();
        assert!(e.contains("session.revocation_file") && e.contains("garbled"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"sids\": [");
        std::fs::write(&path, b"{\"other\": {}}").unwrap();
        assert!(RevocationFile::open(&path, 0).is_err());
    }

    #[test]
    fn a_file_in_a_missing_directory_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-directory").join("list");
        let e = RevocationFile::open(&path, 0).err().unwrap();
        assert!(e.contains("cannot be written"), "{e}");
    }
}
