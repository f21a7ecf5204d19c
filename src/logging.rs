//! Logging setup: `log.level` (overridden by `RUST_LOG`) and `log.format` ("pretty" or "json"); warnings that
//! may repeat many times a second, throttled.

use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init(config: &LogConfig) {
    // RUST_LOG wins when set to something; an empty RUST_LOG means "not set".
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = from_env
        .ok_or(())
        .and_then(|v| EnvFilter::try_new(v).map_err(|_| ()))
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // Colour only for a person at a terminal: files, pipes and journald get plain text.
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// How often a repeated warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning that may repeat many times a second (an accept loop out of descriptors), logged at most once per
/// [`WARN_EVERY`].
#[derive(Default)]
pub(crate) struct Throttled {
    last: Option<std::time::Instant>,
    /// Times it happened since it was last logged.
    times: u64,
}

impl Throttled {
    /// Counts one more time; `Some(times)` (this one included) when the warning is to be logged now.
    pub(crate) fn due(&mut self) -> Option<u64> {
        self.times += 1;
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.times))
    }
}

/// A [`Throttled`] warning shared by many tasks (every WebSocket tunnel's watch): one line per [`WARN_EVERY`] for
/// all of them, with how many times it happened.
#[derive(Default)]
pub(crate) struct SharedThrottled(std::sync::Mutex<Throttled>);

impl SharedThrottled {
    /// As [`Throttled::due`].
    pub(crate) fn due(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).due()
    }
}

/// The warnings an outage of Redis or Logto repeats for every tunnel or session (ten thousand lines per check or
/// retry otherwise), each logged once per period for all of them with its count ([`SharedThrottled`]).
#[derive(Default)]
pub(crate) struct OutageWarnings {
    /// A tunnel's watch could not check whether its session stands (Redis).
    pub(crate) tunnel_standing: SharedThrottled,
    /// A tunnel's watch could not ask Logto about its grant.
    pub(crate) tunnel_grant: SharedThrottled,
    /// Logto did not refresh a session's tokens, which is served as it is meanwhile.
    pub(crate) refresh: SharedThrottled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_is_due_at_first_then_once_per_period_with_its_count() {
        let mut warning = Throttled::default();
        assert_eq!(warning.due(), Some(1));
        assert_eq!(warning.due(), None);
        assert_eq!(warning.due(), None);
        warning.last = warning.last.and_then(|last| last.checked_sub(WARN_EVERY));
        assert_eq!(warning.due(), Some(3), "the two not logged and this one");
        assert_eq!(warning.due(), None);
    }

    #[test]
    fn a_shared_warning_is_due_once_for_all_its_tasks() {
        let warning = std::sync::Arc::new(SharedThrottled::default());
        let due: Vec<Option<u64>> = (0..4)
            .map(|_| {
                let w = std::sync::Arc::clone(&warning);
                std::thread::spawn(move || w.due()).join().unwrap_or(None)
            })
            .collect();
        assert_eq!(due.iter().flatten().count(), 1, "{due:?}");
        assert_eq!(due[0], Some(1));
    }
}
