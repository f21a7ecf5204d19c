//! Files the gate reads again when they change (the TLS certificate pairs, `request_headers_files`): each owner
//! checks its files every [`CHECK_INTERVAL`], for as long as something still holds what they feed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

/// How often files that can change are checked.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Calls `check` with what `held` points to every [`CHECK_INTERVAL`], the first time at once, until nothing else
/// holds it; on the runtime this is called from.
pub(crate) fn while_held<T>(held: Weak<T>, mut check: impl FnMut(&T) + Send + 'static)
where
    T: ?Sized + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let Some(held) = held.upgrade() else {
                return;
            };
            check(&held);
        }
    });
}

/// What a file's metadata says (following links): a change of any part means a new text to read. Kubernetes
/// replaces a mounted secret's or certificate's files by swapping a link (another device or inode, often the same
/// size), an operator may write a file in place (another modification time or size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stamp {
    File {
        modified: Option<SystemTime>,
        len: u64,
        dev: u64,
        ino: u64,
    },
    /// The metadata could not be read (the file is missing, or in the middle of a swap).
    Unreadable,
}

impl Stamp {
    /// `path`'s stamp now.
    pub(crate) fn of(path: &Path) -> Stamp {
        match std::fs::metadata(path) {
            Ok(m) => Stamp::File {
                modified: m.modified().ok(),
                len: m.len(),
                dev: m.dev(),
                ino: m.ino(),
            },
            Err(_) => Stamp::Unreadable,
        }
    }
}
