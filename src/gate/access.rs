//! The access line: one per request, written once, and the request's count in the requests metric.
//!
//! Lines log under the target `logto_gate::access`, health probes' (`/_logto/healthz`, `/_logto/readyz`) under
//! `logto_gate::access::probes`, so that a filter such as `info,logto_gate::access::probes=off` silences a prober's
//! line every few seconds and no other.

use std::net::SocketAddr;

use http::header::HeaderValue;

use super::{Decided, Gate};
use crate::error::CLIENT_CLOSED_REQUEST;
use crate::routes::Route;

/// Whether a request on `route` gets an access line (its target enabled at info).
pub(super) fn wanted(route: Route) -> bool {
    if route.is_probe() {
        tracing::enabled!(target: "logto_gate::access::probes", tracing::Level::INFO)
    } else {
        tracing::enabled!(target: "logto_gate::access", tracing::Level::INFO)
    }
}

/// A request's access line and its count in the requests metric, written once: with the answer's status when the
/// pipeline decides it ([`AccessLine::write`]), or with 499 when the request's future is dropped first (nginx's
/// "client closed request"): the client went away before its answer (its connection closed or failed, its HTTP/2
/// stream reset), or shutdown ended the request. Without it such requests were neither logged nor counted.
pub(super) struct AccessLine<'a> {
    pub(super) gate: &'a Gate,
    pub(super) route: Route,
    pub(super) method: &'a str,
    pub(super) request_id: &'a HeaderValue,
    /// The request's path as it came (without the query, which may carry codes and states).
    pub(super) path: &'a str,
    pub(super) peer: SocketAddr,
    pub(super) started: Option<std::time::Instant>,
    /// Held here, so that a line written when the request is dropped still has the user; whether the line is
    /// written at all is its `logged`.
    pub(super) decided: Decided,
    pub(super) pending: bool,
}

impl AccessLine<'_> {
    /// Counts the request and logs its line with `status` and the user, if the pipeline knew one.
    pub(super) fn write(&mut self, status: u16) {
        self.pending = false;
        self.gate.metrics.request(self.route.class(), status);
        if let Some(app) = self.decided.upstream {
            self.gate.metrics.app_request(app, status);
        }
        if !self.decided.logged {
            return;
        }
        // One call per target: a target must be a constant.
        macro_rules! line {
            ($target:literal) => {
                tracing::info!(
                    target: $target,
                    request_id = self.request_id.to_str().unwrap_or(""),
                    peer = %self.peer.ip(),
                    method = %self.method,
                    path = %log_path(self.path),
                    status,
                    route = ?self.route.class(),
                    user = self.decided.user.as_deref().unwrap_or(""),
                    // The app that served it (or whose request the gate answered), as `check` lists it.
                    upstream = self.decided.upstream.and_then(|i| self.gate.config.routes.get(i)).map(|r| r.label.as_str()),
                    // Only on a request someone made for the user (recorded only when there is one).
                    actor = self.decided.actor.as_deref(),
                    // Microseconds, as milliseconds with three decimals (0.993, not 0.9925780000000001).
                    duration_ms = self.started.map_or(0.0, |s| s.elapsed().as_micros() as f64 / 1000.0),
                    "request"
                )
            };
        }
        if self.route.is_probe() {
            line!("logto_gate::access::probes");
        } else {
            line!("logto_gate::access");
        }
    }
}

impl Drop for AccessLine<'_> {
    fn drop(&mut self) {
        if self.pending {
            self.write(CLIENT_CLOSED_REQUEST);
        }
    }
}

/// A path as logged: at most 256 characters.
pub(super) fn log_path(path: &str) -> &str {
    match path.char_indices().nth(256) {
        Some((end, _)) => &path[..end],
        None => path,
    }
}
