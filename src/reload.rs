//! Files the gate reads again when they change (the TLS certificate pairs, `request_headers_files`): each owner
//! checks its files every [`CHECK_INTERVAL`], for as long as something still holds what they feed.

use std::sync::Weak;
use std::time::Duration;

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
