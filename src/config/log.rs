//! `[log]`: how much the gate logs, and in which form.

use super::checks::{non_empty, Problems};
use super::raw::RawLog;
use super::{LogConfig, LogFormat};

/// Validates `[log]`; `None` when a key of it has a problem.
pub(super) fn validate_log(p: &mut Problems, raw: RawLog) -> Option<LogConfig> {
    let before = p.len();
    let level = non_empty(raw.level).unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.add(
            "log.level",
            format!("`{level}` is not a level (error, warn, info, debug, trace) or filter"),
        );
    }
    let format = match non_empty(raw.format).as_deref() {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add("log.format", format!("`{other}` must be \"pretty\" or \"json\""));
            LogFormat::Pretty
        }
    };

    (p.len() == before).then_some(LogConfig { level, format })
}
