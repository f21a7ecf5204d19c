//! Prometheus metrics (text exposition format 0.0.4), served on their own listener (`server.metrics_listen`).
//!
//! Everything is a lock-free atomic so recording costs a few nanoseconds on the request path. What every request
//! records (its count, the upstream's latency) is kept per connection worker ([`crate::worker`]) and summed when
//! rendered: counters that two cores increment in turn bounce their cache line between them on every request, and
//! a latency lands in one histogram bucket, made cumulative only for the exposition.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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

/// How a WebSocket tunnel's grant check at Logto ended: its session refreshed with Redis, else its refresh token
/// introspected ([`crate::oidc::Oidc::grant_stands`]).
#[derive(Debug, Clone, Copy)]
pub enum GrantCheckResult {
    Standing,
    Ended,
    Failed,
}

/// What one worker records per app (`config.routes` entry): its requests by status class, and its upstream's
/// response times.
struct AppShard {
    /// 1xx to 5xx.
    codes: [AtomicU64; 5],
    answered: AtomicU64,
    answer_micros: AtomicU64,
}

impl AppShard {
    fn new() -> Self {
        AppShard {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            answered: AtomicU64::new(0),
            answer_micros: AtomicU64::new(0),
        }
    }
}

/// What one worker records per request, aligned so that two workers' shards never share a cache line.
#[repr(align(128))]
struct Shard {
    /// [route][status code 100..=599]
    requests: Vec<[AtomicU64; 500]>,
    /// Latencies in each bucket alone (not cumulative); the last is above every bound.
    upstream_buckets: [AtomicU64; BUCKETS.len() + 1],
    upstream_sum_micros: AtomicU64,
    /// The client connections the worker serves now (kept by [`crate::connections::Connections`]).
    connections: Arc<AtomicUsize>,
    /// One per app, in the order of [`Metrics::apps`].
    apps: Box<[AppShard]>,
}

impl Shard {
    fn new(apps: usize) -> Self {
        Shard {
            apps: (0..apps).map(|_| AppShard::new()).collect(),
            requests: (0..ROUTES.len())
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            upstream_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            upstream_sum_micros: AtomicU64::new(0),
            connections: Arc::default(),
        }
    }
}

pub struct Metrics {
    /// One per connection worker.
    shards: Box<[Shard]>,
    /// The apps' labels (`config.routes` in order, as `check` lists them: `ci.example.com/`, `*/grafana`).
    apps: Box<[String]>,
    sign_ins_started: AtomicU64,
    sign_ins_completed: AtomicU64,
    sign_ins_failed: AtomicU64,
    refreshes: [AtomicU64; 3],
    grant_checks: [AtomicU64; 3],
    active_upgrades: AtomicI64,
    upgrades_done: tokio::sync::Notify,
    /// `server.max_connections` in effect (set when the server starts).
    max_connections: AtomicUsize,
    /// Idle connections asked to finish to make room ([`crate::connections::Connections::make_room`]).
    closed_for_room: AtomicU64,
    /// Bytes of forms held while they are read for `_method`, and the most that may be (`gate::form_method`).
    form_bytes_held: AtomicUsize,
    form_bytes_budget: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(1, vec!["*/".to_owned()])
    }
}

impl Metrics {
    /// Metrics for `workers` connection workers and the apps labelled `apps` (see [`Metrics::apps`]).
    pub fn new(workers: usize, apps: Vec<String>) -> Self {
        Metrics {
            shards: (0..workers.max(1)).map(|_| Shard::new(apps.len())).collect(),
            apps: apps.into_boxed_slice(),
            sign_ins_started: AtomicU64::new(0),
            sign_ins_completed: AtomicU64::new(0),
            sign_ins_failed: AtomicU64::new(0),
            refreshes: std::array::from_fn(|_| AtomicU64::new(0)),
            grant_checks: std::array::from_fn(|_| AtomicU64::new(0)),
            active_upgrades: AtomicI64::new(0),
            upgrades_done: tokio::sync::Notify::new(),
            max_connections: AtomicUsize::new(0),
            closed_for_room: AtomicU64::new(0),
            form_bytes_held: AtomicUsize::new(0),
            form_bytes_budget: AtomicUsize::new(0),
        }
    }

    /// Says how many bytes of forms read for `_method` may be held at once.
    pub fn set_form_bytes_budget(&self, bytes: usize) {
        self.form_bytes_budget.store(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` more of forms held while they are read for `_method`.
    pub fn form_bytes_taken(&self, bytes: usize) {
        self.form_bytes_held.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` of such forms given back (forwarded or dropped).
    pub fn form_bytes_given_back(&self, bytes: usize) {
        self.form_bytes_held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The gauge of the client connections worker `index` serves, for its connections to keep.
    pub fn worker_connections(&self, index: usize) -> Arc<AtomicUsize> {
        Arc::clone(&self.shards[index % self.shards.len()].connections)
    }

    /// The current worker's shard.
    fn shard(&self) -> &Shard {
        &self.shards[crate::worker::index() % self.shards.len()]
    }
}

/// A label value as the text format writes it: `\`, `"` and line feeds escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn route_index(r: RouteClass) -> usize {
    ROUTES.iter().position(|(c, _)| *c == r).unwrap_or(ROUTES.len() - 1)
}

impl Metrics {
    pub fn request(&self, route: RouteClass, status: u16) {
        if let (Some(row), Some(i)) = (self.shard().requests.get(route_index(route)), status.checked_sub(100)) {
            if let Some(c) = row.get(usize::from(i)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A request routed to app `app` (an index into [`Metrics::apps`]) was answered with `status`, by the app or by
    /// the gate for it (401, 403, 502, 504).
    pub fn app_request(&self, app: usize, status: u16) {
        let class = usize::from(status / 100).wrapping_sub(1);
        if let Some(c) = self.shard().apps.get(app).and_then(|a| a.codes.get(class)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Time from sending a request to app `app`'s upstream to its response headers.
    pub fn upstream_latency(&self, app: usize, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let secs = d.as_secs_f64();
        let bucket = BUCKETS.iter().position(|le| secs <= *le).unwrap_or(BUCKETS.len());
        let shard = self.shard();
        shard.upstream_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.upstream_sum_micros.fetch_add(micros, Ordering::Relaxed);
        if let Some(a) = shard.apps.get(app) {
            a.answered.fetch_add(1, Ordering::Relaxed);
            a.answer_micros.fetch_add(micros, Ordering::Relaxed);
        }
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

    pub fn grant_check(&self, r: GrantCheckResult) {
        self.grant_checks[r as usize].fetch_add(1, Ordering::Relaxed);
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

    /// Says which `server.max_connections` is in effect.
    pub fn set_max_connections(&self, max: usize) {
        self.max_connections.store(max, Ordering::Relaxed);
    }

    /// Counts idle connections asked to finish to make room.
    pub fn closed_for_room(&self, n: usize) {
        self.closed_for_room.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    /// Per app: its requests by status class, and its upstream's response times (a summary: sum and count).
    fn render_apps(&self, out: &mut String) {
        let sum = |f: &dyn Fn(&AppShard) -> &AtomicU64, app: usize| -> u64 {
            self.shards
                .iter()
                .filter_map(|s| s.apps.get(app))
                .map(|a| f(a).load(Ordering::Relaxed))
                .sum()
        };
        out.push_str(
            "# HELP logto_gate_app_requests_total Requests routed to each app ([[upstreams]] entry, or [upstream]), \
             by status class, answered by the app or by the gate for it.\n",
        );
        out.push_str("# TYPE logto_gate_app_requests_total counter\n");
        for (app, label) in self.apps.iter().enumerate() {
            let label = label_value(label);
            for class in 0..5 {
                let _ = writeln!(
                    out,
                    "logto_gate_app_requests_total{{upstream=\"{label}\",code=\"{}xx\"}} {}",
                    class + 1,
                    sum(&|a| &a.codes[class], app)
                );
            }
        }
        out.push_str("# HELP logto_gate_app_response_seconds Time to each app's response headers.\n");
        out.push_str("# TYPE logto_gate_app_response_seconds summary\n");
        for (app, label) in self.apps.iter().enumerate() {
            let label = label_value(label);
            let seconds = sum(&|a| &a.answer_micros, app) as f64 / 1e6;
            let _ = writeln!(
                out,
                "logto_gate_app_response_seconds_sum{{upstream=\"{label}\"}} {seconds}"
            );
            let _ = writeln!(
                out,
                "logto_gate_app_response_seconds_count{{upstream=\"{label}\"}} {}",
                sum(&|a| &a.answered, app)
            );
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP logto_gate_requests_total Requests, by route class and status code (499: the client went away first).\n");
        out.push_str("# TYPE logto_gate_requests_total counter\n");
        let sum = |f: &dyn Fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            for i in 0..500 {
                let n = sum(&|s| &s.requests[r][i]);
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
        // Cumulative, as Prometheus histograms are: each bound counts every latency at or below it.
        let mut count = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            count += sum(&|s| &s.upstream_buckets[i]);
            let _ = writeln!(
                out,
                "logto_gate_upstream_response_seconds_bucket{{le=\"{le}\"}} {count}"
            );
        }
        count += sum(&|s| &s.upstream_buckets[BUCKETS.len()]);
        let _ = writeln!(
            out,
            "logto_gate_upstream_response_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let seconds = sum(&|s| &s.upstream_sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "logto_gate_upstream_response_seconds_sum {seconds}");
        let _ = writeln!(out, "logto_gate_upstream_response_seconds_count {count}");
        self.render_apps(&mut out);
        by_outcome(
            &mut out,
            "logto_gate_sign_ins_total",
            "Sign-in attempts by outcome.",
            &[
                ("started", &self.sign_ins_started),
                ("completed", &self.sign_ins_completed),
                ("failed", &self.sign_ins_failed),
            ],
        );
        let [refreshed, ended, failed] = &self.refreshes;
        by_outcome(
            &mut out,
            "logto_gate_token_refreshes_total",
            "Token refreshes with Logto by outcome.",
            &[("refreshed", refreshed), ("ended", ended), ("failed", failed)],
        );
        let [standing, ended, failed] = &self.grant_checks;
        by_outcome(
            &mut out,
            "logto_gate_tunnel_grant_checks_total",
            "WebSocket tunnels asking Logto whether their session's grant still stands (with Redis by refreshing \
             the session, else by token introspection), by outcome.",
            &[("standing", standing), ("ended", ended), ("failed", failed)],
        );
        out.push_str("# HELP logto_gate_active_upgrades Upgraded connections (WebSocket) being relayed now.\n");
        out.push_str("# TYPE logto_gate_active_upgrades gauge\n");
        let _ = writeln!(out, "logto_gate_active_upgrades {}", self.active_upgrades());
        out.push_str(
            "# HELP logto_gate_max_connections The most client connections open at once (server.max_connections).\n",
        );
        out.push_str("# TYPE logto_gate_max_connections gauge\n");
        let max = self.max_connections.load(Ordering::Relaxed);
        let _ = writeln!(out, "logto_gate_max_connections {max}");
        out.push_str("# HELP logto_gate_connections_closed_for_room_total Idle client connections asked to close to make room for new ones.\n");
        out.push_str("# TYPE logto_gate_connections_closed_for_room_total counter\n");
        let closed = self.closed_for_room.load(Ordering::Relaxed);
        let _ = writeln!(out, "logto_gate_connections_closed_for_room_total {closed}");
        out.push_str(
            "# HELP logto_gate_form_method_bytes_held Bytes of POST bodies held now while the gate reads them for a \
             _method field.\n",
        );
        out.push_str("# TYPE logto_gate_form_method_bytes_held gauge\n");
        let held = self.form_bytes_held.load(Ordering::Relaxed);
        let _ = writeln!(out, "logto_gate_form_method_bytes_held {held}");
        out.push_str(
            "# HELP logto_gate_form_method_bytes_budget The most such bytes held at once (16 times \
             upstream.max_form_method_bytes; past it, 503).\n",
        );
        out.push_str("# TYPE logto_gate_form_method_bytes_budget gauge\n");
        let budget = self.form_bytes_budget.load(Ordering::Relaxed);
        let _ = writeln!(out, "logto_gate_form_method_bytes_budget {budget}");
        out.push_str("# HELP logto_gate_worker_connections Client connections each worker thread serves now.\n");
        out.push_str("# TYPE logto_gate_worker_connections gauge\n");
        for (worker, shard) in self.shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "logto_gate_worker_connections{{worker=\"{worker}\"}} {}",
                shard.connections.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// One counter family with an `outcome` label, in the Prometheus text format.
fn by_outcome(out: &mut String, name: &str, help: &str, counters: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (outcome, c) in counters {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {}", c.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family `/metrics` shows is named in the sample configuration's `metrics_listen` comment (as
    /// `logto_gate_<name>` or `_<name>`), the one place that lists them for operators.
    #[test]
    fn the_sample_configuration_names_every_metric() {
        let m = Metrics::default();
        m.upstream_latency(0, Duration::from_millis(30));
        let text = m.render();
        let config = include_str!("../config/logto-gate.toml");
        let families = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE logto_gate_"))
            .filter_map(|l| l.split(' ').next());
        let mut named = 0;
        for family in families {
            let short = format!("_{family}");
            assert!(
                config.contains(&short),
                "config/logto-gate.toml does not name logto_gate_{family}"
            );
            named += 1;
        }
        assert!(named >= 12, "{named} families in {text}");
    }

    #[test]
    fn renders_counters_histogram_and_gauge() {
        let m = Metrics::default();
        m.request(RouteClass::App, 200);
        m.request(RouteClass::App, 200);
        m.request(RouteClass::Callback, 302);
        m.request(RouteClass::App, 999);
        m.upstream_latency(0, Duration::from_millis(30));
        m.sign_in_started();
        m.refresh(RefreshResult::Ended);
        m.grant_check(GrantCheckResult::Failed);
        m.upgrade_started();
        m.set_max_connections(9936);
        m.closed_for_room(32);
        m.set_form_bytes_budget(16 << 20);
        m.form_bytes_taken(4096);
        m.form_bytes_taken(100);
        m.form_bytes_given_back(4096);
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
        assert!(text.contains("logto_gate_tunnel_grant_checks_total{outcome=\"failed\"} 1\n"));
        assert!(text.contains("logto_gate_tunnel_grant_checks_total{outcome=\"ended\"} 0\n"));
        assert!(text.contains("logto_gate_active_upgrades 1\n"));
        assert!(text.contains("logto_gate_max_connections 9936\n"));
        assert!(text.contains("logto_gate_connections_closed_for_room_total 32\n"));
        assert!(text.contains("logto_gate_form_method_bytes_held 100\n"), "{text}");
        assert!(
            text.contains("logto_gate_form_method_bytes_budget 16777216\n"),
            "{text}"
        );
    }

    #[test]
    fn workers_shards_add_up_and_the_histogram_is_cumulative() {
        let m = Metrics::new(3, vec!["*/".to_owned(), "ci.example.com/\"x\"".to_owned()]);
        for (worker, app, latency_ms, status) in [(0, 0, 3, 200), (1, 1, 30, 502), (2, 0, 30, 404), (1, 1, 20_000, 200)]
        {
            // Recorded from a thread that says it is that worker.
            let m = &m;
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    crate::worker::set_index(worker);
                    m.request(RouteClass::App, 200);
                    m.app_request(app, status);
                    m.upstream_latency(app, Duration::from_millis(latency_ms));
                });
            });
        }
        // Out of range: ignored, never a panic.
        m.app_request(7, 200);
        m.app_request(0, 99);
        m.app_request(0, 700);
        m.upstream_latency(7, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("logto_gate_requests_total{route=\"app\",status=\"200\"} 4\n"),
            "{text}"
        );
        for line in [
            "logto_gate_app_requests_total{upstream=\"*/\",code=\"2xx\"} 1\n",
            "logto_gate_app_requests_total{upstream=\"*/\",code=\"4xx\"} 1\n",
            "logto_gate_app_requests_total{upstream=\"*/\",code=\"5xx\"} 0\n",
            "logto_gate_app_requests_total{upstream=\"ci.example.com/\\\"x\\\"\",code=\"5xx\"} 1\n",
            "logto_gate_app_requests_total{upstream=\"ci.example.com/\\\"x\\\"\",code=\"2xx\"} 1\n",
            "logto_gate_app_response_seconds_sum{upstream=\"*/\"} 0.033\n",
            "logto_gate_app_response_seconds_count{upstream=\"*/\"} 2\n",
            "logto_gate_app_response_seconds_count{upstream=\"ci.example.com/\\\"x\\\"\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        for (le, n) in [("0.005", 2), ("0.025", 2), ("0.05", 4), ("10", 4), ("+Inf", 5)] {
            let line = format!("logto_gate_upstream_response_seconds_bucket{{le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains("logto_gate_upstream_response_seconds_count 5\n"));
        assert!(
            text.contains("logto_gate_upstream_response_seconds_sum 20.064\n"),
            "{text}"
        );
    }
}
