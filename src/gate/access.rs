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
    /// The trace the request belongs to, read only for a request that is logged.
    pub(super) trace_id: Option<TraceId>,
}

impl AccessLine<'_> {
    /// Counts the request and logs its line with `status` and the user, if the pipeline knew one.
    pub(super) fn write(&mut self, status: u16) {
        self.finish(status, None);
    }

    /// [`AccessLine::write`] for a request head that could not be read, saying why it was `refused`.
    pub(super) fn write_refused(&mut self, status: u16, refused: &str) {
        self.finish(status, Some(refused));
    }

    fn finish(&mut self, status: u16, refused: Option<&str>) {
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
                    // Only on a request that named its trace.
                    trace_id = self.trace_id.as_ref().map(TraceId::as_str),
                    // Only on a head that could not be read.
                    refused,
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

/// The trace-id of a request's W3C Trace Context (`traceparent`, W3C Trace Context §3.2): on its access line, so that
/// the line can be found from a trace of the app, which receives the field as it came (the gate adds no span). Only
/// a field as the specification writes it is read (one `traceparent`, lower-case hexadecimal, neither id all zeros,
/// version `ff` never; a later version's field may go on after a `-`); anything else is no trace, not an error, as
/// a tracer treats it. The client chooses it, as every field: it finds lines, it proves nothing.
#[derive(Clone, Copy)]
pub(super) struct TraceId([u8; 32]);

impl TraceId {
    pub(super) fn of(headers: &http::HeaderMap) -> Option<TraceId> {
        let mut fields = headers.get_all("traceparent").iter();
        let field = fields.next()?.as_bytes();
        if fields.next().is_some() || field.len() < 55 {
            return None;
        }
        let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let zeros = |b: &[u8]| b.iter().all(|c| *c == b'0');
        let (version, trace, parent, flags) = (&field[..2], &field[3..35], &field[36..52], &field[53..55]);
        let dashes = field[2] == b'-' && field[35] == b'-' && field[52] == b'-';
        let ends = match version {
            b"00" => field.len() == 55,
            _ => field.len() == 55 || field[55] == b'-',
        };
        let well_formed = dashes
            && ends
            && hex(version)
            && version != b"ff"
            && hex(trace)
            && !zeros(trace)
            && hex(parent)
            && !zeros(parent)
            && hex(flags);
        let mut id = [0u8; 32];
        id.copy_from_slice(trace);
        well_formed.then_some(TraceId(id))
    }

    fn as_str(&self) -> &str {
        // Hexadecimal digits only, see `of`.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// A path as logged: at most 256 characters.
pub(super) fn log_path(path: &str) -> &str {
    match path.char_indices().nth(256) {
        Some((end, _)) => &path[..end],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::TraceId;

    fn of(fields: &[&str]) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        for f in fields {
            headers.append("traceparent", http::HeaderValue::from_str(f).unwrap());
        }
        TraceId::of(&headers).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn only_a_well_formed_traceparent_names_a_trace() {
        const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        let good = format!("00-{ID}-00f067aa0ba902b7-01");
        assert_eq!(of(&[&good]).as_deref(), Some(ID));
        // A later version may add fields after a dash.
        assert_eq!(of(&[&format!("01-{ID}-00f067aa0ba902b7-00-more")]).as_deref(), Some(ID));
        assert_eq!(of(&[&format!("01-{ID}-00f067aa0ba902b7-00")]).as_deref(), Some(ID));
        for bad in [
            good.to_uppercase(),
            format!("00-{ID}-00f067aa0ba902b7-01-more"),
            format!("01-{ID}-00f067aa0ba902b7-00more"),
            format!("ff-{ID}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{ID}-0000000000000000-01"),
            format!("00-{ID}-00f067aa0ba902b7-0g"),
            format!("00_{ID}-00f067aa0ba902b7-01"),
            format!("00-{ID}x00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", &ID[1..]),
            format!("00-{ID}-00f067aa0ba902b7-1"),
            String::new(),
        ] {
            assert_eq!(of(&[&bad]), None, "{bad}");
        }
        assert_eq!(of(&[&good, &good]), None, "two fields");
        assert_eq!(of(&[]), None);
    }
}
