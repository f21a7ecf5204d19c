//! Prometheus metrics (text exposition format 0.0.4), served on their own listener (`server.metrics_listen`).
//!
//! Everything is a lock-free atomic so recording costs a few nanoseconds on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Route classes requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    App,
    SignIn,
    Callback,
    SignOut,
    UserInfo,
    Health,
    ForwardAuth,
    Jwks,
    BackchannelLogout,
    Unknown,
}

const ROUTES: [(RouteClass, &str); 10] = [
    (RouteClass::App, "app"),
    (RouteClass::SignIn, "sign_in"),
    (RouteClass::Callback, "callback"),
    (RouteClass::SignOut, "sign_out"),
    (RouteClass::UserInfo, "userinfo"),
    (RouteClass::Health, "health"),
    (RouteClass::ForwardAuth, "forward_auth"),
    (RouteClass::Jwks, "jwks"),
    (RouteClass::BackchannelLogout, "backchannel_logout"),
    (RouteClass::Unknown, "unknown"),
];

/// Upper bounds (seconds) of the upstream latency histogram buckets.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How a token refresh ended.
#[derive(Debug, Clone, Copy)]
pub enum RefreshResult {
    Refreshed,
    Ended,
    Failed,
}

pub struct Metrics {
    /// [route][status code 100..=599]
    requests: Vec<[AtomicU64; 500]>,
    upstream_buckets: [AtomicU64; BUCKETS.len()],
    upstream_count: AtomicU64,
    upstream_sum_micros: AtomicU64,
    sign_ins_started: AtomicU64,
    sign_ins_completed: AtomicU64,
    sign_ins_failed: AtomicU64,
    refreshes: [AtomicU64; 3],
    active_upgrades: AtomicI64,
    upgrades_done: tokio::sync::Notify,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..ROUTES.len())
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            upstream_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            upstream_count: AtomicU64::new(0),
            upstream_sum_micros: AtomicU64::new(0),
            sign_ins_started: AtomicU64::new(0),
            sign_ins_completed: AtomicU64::new(0),
            sign_ins_failed: AtomicU64::new(0),
            refreshes: std::array::from_fn(|_| AtomicU64::new(0)),
            active_upgrades: AtomicI64::new(0),
            upgrades_done: tokio::sync::Notify::new(),
        }
    }
}

fn route_index(r: RouteClass) -> usize {
    ROUTES.iter().position(|(c, _)| *c == r).unwrap_or(ROUTES.len() - 1)
}

impl Metrics {
    pub fn request(&self, route: RouteClass, status: u16) {
        if let (Some(row), Some(i)) = (self.requests.get(route_index(route)), status.checked_sub(100)) {
            if let Some(c) = row.get(usize::from(i)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Time from sending a request upstream to its response headers.
    pub fn upstream_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.upstream_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.upstream_count.fetch_add(1, Ordering::Relaxed);
        self.upstream_sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn sign_in_started(&self) {
        self.sign_ins_started.fetch_add(1, Ordering::Relaxed);
    }
    pub fn sign_in_completed(&self) {
        self.sign_ins_completed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn sign_in_failed(&self) {
        self.sign_ins_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refresh(&self, r: RefreshResult) {
        self.refreshes[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn upgrade_started(&self) {
        self.active_upgrades.fetch_add(1, Ordering::Relaxed);
    }
    pub fn upgrade_ended(&self) {
        if self.active_upgrades.fetch_sub(1, Ordering::AcqRel) <= 1 {
            self.upgrades_done.notify_waiters();
        }
    }

    /// Resolves once no upgraded connection is being relayed.
    pub async fn no_active_upgrades(&self) {
        loop {
            let notified = self.upgrades_done.notified();
            if self.active_upgrades() <= 0 {
                return;
            }
            notified.await;
        }
    }
    pub fn active_upgrades(&self) -> i64 {
        self.active_upgrades.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP logto_gate_requests_total Requests answered, by route class and status code.\n");
        out.push_str("# TYPE logto_gate_requests_total counter\n");
        for (row, (_, route)) in self.requests.iter().zip(ROUTES.iter()) {
            for (i, c) in row.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "logto_gate_requests_total{{route=\"{route}\",status=\"{}\"}} {n}",
                        i + 100
                    );
                }
            }
        }
        out.push_str("# HELP logto_gate_upstream_response_seconds Time to the upstream's response headers.\n");
        out.push_str("# TYPE logto_gate_upstream_response_seconds histogram\n");
        for (le, c) in BUCKETS.iter().zip(self.upstream_buckets.iter()) {
            let _ = writeln!(
                out,
                "logto_gate_upstream_response_seconds_bucket{{le=\"{le}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.upstream_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "logto_gate_upstream_response_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.upstream_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "logto_gate_upstream_response_seconds_sum {sum}");
        let _ = writeln!(out, "logto_gate_upstream_response_seconds_count {count}");
        out.push_str("# HELP logto_gate_sign_ins_total Sign-in attempts by outcome.\n");
        out.push_str("# TYPE logto_gate_sign_ins_total counter\n");
        for (outcome, c) in [
            ("started", &self.sign_ins_started),
            ("completed", &self.sign_ins_completed),
            ("failed", &self.sign_ins_failed),
        ] {
            let _ = writeln!(
                out,
                "logto_gate_sign_ins_total{{outcome=\"{outcome}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP logto_gate_token_refreshes_total Token refreshes with Logto by outcome.\n");
        out.push_str("# TYPE logto_gate_token_refreshes_total counter\n");
        for (outcome, c) in ["refreshed", "ended", "failed"].iter().zip(self.refreshes.iter()) {
            let _ = writeln!(
                out,
                "logto_gate_token_refreshes_total{{outcome=\"{outcome}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP logto_gate_active_upgrades Upgraded connections (WebSocket) being relayed now.\n");
        out.push_str("# TYPE logto_gate_active_upgrades gauge\n");
        let _ = writeln!(out, "logto_gate_active_upgrades {}", self.active_upgrades());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauge() {
        let m = Metrics::default();
        m.request(RouteClass::App, 200);
        m.request(RouteClass::App, 200);
        m.request(RouteClass::Callback, 302);
        m.request(RouteClass::App, 999);
        m.upstream_latency(Duration::from_millis(30));
        m.sign_in_started();
        m.refresh(RefreshResult::Ended);
        m.upgrade_started();
        let text = m.render();
        assert!(
            text.contains("logto_gate_requests_total{route=\"app\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("logto_gate_requests_total{route=\"callback\",status=\"302\"} 1\n"));
        assert!(text.contains("logto_gate_upstream_response_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("logto_gate_upstream_response_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("logto_gate_upstream_response_seconds_count 1\n"));
        assert!(text.contains("logto_gate_sign_ins_total{outcome=\"started\"} 1\n"));
        assert!(text.contains("logto_gate_token_refreshes_total{outcome=\"ended\"} 1\n"));
        assert!(text.contains("logto_gate_active_upgrades 1\n"));
    }
}
