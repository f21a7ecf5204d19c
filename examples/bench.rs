//! The benchmark behind bench/README.md. Run it with `bash bench/run.sh` (release build).
//!
//! It starts a static upstream (nginx), nginx `proxy_pass` in front of it as the reference (plain, and with TLS and
//! HTTP/2), the test IdP and the gate binary (release) in front of the same upstream with a session obtained through
//! the real sign-in flow, and runs gate and nginx in turn, round by round, in balanced orders: HTTP/1.1 with wrk
//! (also against the upstream directly and a one-worker gate), HTTP/1.1 and HTTP/2 inside TLS and a 64 MiB download
//! with h2load.
//! Then it opens up to 10,000 idle connections (HTTP/1.1 keep-alive, HTTP/2, WebSocket tunnels) to a fresh nginx and
//! a fresh gate and reports the memory each costs. It prints medians and gate/nginx ratios, and how much the sign-in
//! callback adds over the IdP's own token time. A benchmark, not a test: it never fails on speed.
//! `--perf` measures CPU time, syscalls (and mallocs) per request and records a profile instead; `--callgrind`
//! counts user-space instructions per request under valgrind; `--http1`, `--memory` and `--only tls|h2|download`
//! run some rows alone. `BENCH_SECOND_GATE` puts another build in the one-worker gate's row, `BENCH_NGINX_GATE_WIRE`
//! nginx doing the gate's forwarding (bench/README.md).

#[path = "../tests/support/cert.rs"]
mod cert;
#[path = "../tests/support/idp.rs"]
mod idp;
#[path = "bench/rows.rs"]
mod rows;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Rounds of the comparisons unless `BENCH_ROUNDS` says otherwise: six, so that the HTTP/1.1 proxies run in each of
/// their orders once ([`ORDERS`]) and the TLS rows' two sides go first equally often.
const ROUNDS: usize = 6;
/// The orders the three proxies of the HTTP/1.1 rows (indices into the targets) run in, one per round, after the
/// upstream alone: each proxy runs first, second and third twice in six rounds, and before each other one as often
/// as after it, so that no proxy gains from its place or from what ran just before it.
const ORDERS: [[usize; 3]; 6] = [[1, 2, 3], [3, 2, 1], [2, 3, 1], [1, 3, 2], [3, 1, 2], [2, 1, 3]];
const SECONDS: u32 = 5;
const CONNECTIONS: u32 = 32;
const APP_ID: &str = "bench-app";
const APP_SECRET: &str = "bench-app-secret";
/// The identity fields the gate sends the upstream for the benchmark's signed-in user (the test IdP's alice):
/// `BENCH_NGINX_GATE_WIRE`'s nginx sends the same, and the run stops if the gate's answer says otherwise.
const WIRE_IDENTITY: [(&str, &str); 4] = [
    ("X-Forwarded-User", "u_alice0001"),
    ("X-Forwarded-Email", "alice@example.com"),
    ("X-Forwarded-Preferred-Username", "alice"),
    ("X-Forwarded-Groups", "admin,editor"),
];

fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports: every listener is held until all have their port (the kernel may hand a port just
/// released to the next bind, and two services on one port would measure the wrong one).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    std::array::from_fn(|i| {
        listeners
            .get(i)
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    })
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gate process, stopped the way an operator stops it (SIGTERM: it drains and exits) so that a build instrumented
/// for profile-guided optimisation writes its profile on the way out (`bash bench/run.sh --pgo`); killed if it takes
/// more than ten seconds. The bench's gates drain for at most two ([`GATE_SHUTDOWN`]).
struct GateProcess(Child);
impl Drop for GateProcess {
    fn drop(&mut self) {
        if !terminate(&mut self.0, Duration::from_secs(10)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends `child` SIGTERM and waits up to `within` for it to exit; whether it did.
fn terminate(child: &mut Child, within: Duration) -> bool {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `server.shutdown_timeout` of the bench's gates: connections a row left open (WebSocket tunnels) do not hold the
/// end of the run.
const GATE_SHUTDOWN: &str = "2s";

/// An nginx master and its workers, in a process group of their own. Killed outright, the master would leave its
/// workers running (and holding their ports) after the benchmark: it is asked to stop them first (SIGTERM, nginx's
/// fast shutdown, which reaps them), and only if that takes more than five seconds is the whole group killed.
struct NginxGroup(Child);
impl Drop for NginxGroup {
    fn drop(&mut self) {
        if !terminate(&mut self.0, Duration::from_secs(5)) {
            let group = format!("-{}", self.0.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.0.wait();
        }
    }
}

fn nginx(dir: &Path, name: &str, workers: &str, server: &str) -> NginxGroup {
    use std::os::unix::process::CommandExt;
    let (path, prefix) = nginx_conf(dir, name, workers, server, true);
    let child = Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("nginx (apt-get install nginx)");
    NginxGroup(child)
}

/// Writes an nginx configuration under `dir/name`; returns its path and the prefix directory.
fn nginx_conf(dir: &Path, name: &str, workers: &str, server: &str, master: bool) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    std::fs::create_dir_all(&prefix).expect("nginx dir");
    let p = prefix.display();
    let conf = format!(
        "daemon off; master_process {}; worker_processes {workers}; pid {p}/nginx.pid; error_log {p}/error.log crit;\n\
         worker_rlimit_nofile 65536; events {{ worker_connections 30000; }}\n\
         http {{ access_log off; client_body_temp_path {p}/b; proxy_temp_path {p}/p; fastcgi_temp_path {p}/f;\n\
         uwsgi_temp_path {p}/u; scgi_temp_path {p}/s; keepalive_requests 1000000;\n{server}\n}}\n",
        if master { "on" } else { "off" }
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    (path, prefix)
}

/// CPU ticks (user and system) per thread of process `pid`, as (thread name, ticks), sorted by name: how evenly a
/// proxy's workers share the load.
fn thread_ticks(pid: &str) -> Vec<(String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = dir
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned();
            let (user, system) = user_and_system_ticks(&stat)?;
            Some((name, user + system))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// utime and stime, in clock ticks (100 per second on Linux), from a process's or thread's `/proc/.../stat` line.
fn user_and_system_ticks(stat: &str) -> Option<(f64, f64)> {
    ticks_at(stat, 11)
}

/// The two tick counts at `at` and after it among a `/proc/.../stat` line's fields after the command name.
fn ticks_at(stat: &str, at: usize) -> Option<(f64, f64)> {
    // After the command name, which may hold spaces and parentheses itself.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some((fields.get(at)?.parse().ok()?, fields.get(at + 1)?.parse().ok()?))
}

/// CPU ticks (user and system) of this process's children that have ended and been waited for (cutime and cstime):
/// a wrk run's own cost, read before and after it.
fn waited_children_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    ticks_at(&stat, 13).map_or(0.0, |(user, system)| user + system)
}

/// The count in the environment variable `name` (1 or more), or `default` when it is not set; exits with a message
/// naming the variable on anything else.
fn count_from_env(name: &str, default: usize) -> usize {
    let Ok(v) = std::env::var(name) else {
        return default;
    };
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => {
            eprintln!("{name}: expected a whole number of 1 or more, got `{v}`");
            std::process::exit(2);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Run {
    rps: f64,
    /// Requests completed in the run.
    requests: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_ms(v: &str) -> f64 {
    let v = v.trim();
    if let Some(us) = v.strip_suffix("us") {
        us.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(ms) = v.strip_suffix("ms") {
        ms.parse().unwrap_or(0.0)
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk(url: &str, cookie: Option<&str>) -> Run {
    wrk_with(url, cookie, CONNECTIONS, SECONDS)
}

fn wrk_with(url: &str, cookie: Option<&str>, connections: u32, seconds: u32) -> Run {
    run_wrk(wrk_command(url, cookie, connections, seconds), url)
}

/// wrk's command line for a run of `seconds` over `connections` connections.
fn wrk_command(url: &str, cookie: Option<&str>, connections: u32, seconds: u32) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(c) = cookie {
        cmd.args(["-H", &format!("Cookie: {c}")]);
    }
    cmd.arg(url);
    cmd
}

/// Runs `cmd` (wrk, or a command that runs it and passes its report through) and reads wrk's report.
fn run_wrk(mut cmd: Command, url: &str) -> Run {
    let out = cmd.output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = Run::default();
    for line in text.lines() {
        let t = line.trim();
        if t.contains(" requests in ") {
            run.requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            run.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            run.p99_ms = parse_ms(v);
        } else if t.starts_with("Non-2xx") {
            eprintln!("warning: {url}: {t}");
        }
    }
    run
}

/// The middle value; of an even count, the mean of the two middle ones.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// This process's limit on open files (the soft one).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(1024)
}

/// What `--perf` counts of the load generator and the upstream: how often each asked its event loop for work
/// (`epoll_wait`; fewer calls per request, more answers found per call) and how often it left its CPU (slept, or was
/// preempted). A proxy decides how its writes reach them: in bursts or one at a time.
const WAKE_EVENTS: &str = "context-switches,syscalls:sys_enter_epoll_wait";

/// What `--perf` counts of the whole machine per request, besides context switches and migrations, where the kernel
/// has the tracepoint: each CPU's idle periods (`power:cpu_idle` fires on entering and on leaving one) and the
/// interrupts sent to wake or kick another CPU (`ipi:*` since Linux 6.3). One unknown event would fail the count.
const MACHINE_TRACEPOINTS: [&str; 4] = [
    "power:cpu_idle",
    "ipi:ipi_send_cpu",
    "ipi:ipi_send_cpumask",
    "irq_vectors:reschedule_entry",
];

/// Whether `perf list` knows `event`.
fn perf_knows(event: &str) -> bool {
    Command::new("perf")
        .args(["list", event])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(event))
}

/// `cmd` run under `perf stat` counting `events` of it and its children into the file `out` (CSV).
fn under_perf_stat(cmd: Command, events: &str, out: &Path) -> Command {
    let mut wrapped = Command::new("perf");
    wrapped
        .args(["stat", "-x,", "-e", events, "-o"])
        .arg(out)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    wrapped
}

/// The count of `event` in `perf stat -x,` output (0 when it is missing or was not counted). Each line is
/// `value,unit,event,...`; the event is matched whole, so that `ipi:ipi_send_cpu` is not `ipi:ipi_send_cpumask`.
fn perf_count(text: &str, event: &str) -> f64 {
    text.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|fields| fields.get(2) == Some(&event))
        .find_map(|fields| fields[0].trim().parse().ok())
        .unwrap_or(0.0)
}

/// The child processes of `pid` (an nginx master's workers).
fn children(pid: u32) -> Vec<u32> {
    Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Stops the run unless the gate's forward-auth answer at `auth` (`/_logto/auth`, which carries the identity fields
/// the gate sends the upstream) for the session behind `cookie` has the values `BENCH_NGINX_GATE_WIRE`'s nginx
/// sends ([`WIRE_IDENTITY`]): that row must send the upstream the bytes the gate sends.
async fn check_wire_identity(auth: &str, cookie: &str) {
    let r = reqwest::Client::new()
        .get(auth)
        .header("cookie", cookie)
        .send()
        .await
        .expect("forward-auth");
    assert!(r.status().is_success(), "{auth}: {}", r.status());
    for (field, value) in WIRE_IDENTITY {
        let sent = r
            .headers()
            .get(field)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        assert_eq!(
            sent.as_deref(),
            Some(value),
            "the gate sends {field}: {sent:?}; BENCH_NGINX_GATE_WIRE's nginx would send {value} (WIRE_IDENTITY)"
        );
    }
}

/// Follows redirects by hand (cookie jar included) until a URL starting with `stop` is next.
async fn follow_until(client: &reqwest::Client, start: &str, stop: &str) -> String {
    let mut url: reqwest::Url = start.parse().expect("url");
    for _ in 0..20 {
        if url.as_str().starts_with(stop) {
            return url.to_string();
        }
        let r = client
            .get(url.clone())
            .header("accept", "text/html")
            .send()
            .await
            .expect("request");
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a redirect")
            .to_owned();
        url = url.join(&loc).expect("location");
    }
    panic!("never reached {stop}");
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--websocket-echo") {
        return rows::serve_websocket_echo().await;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // `BENCH_ROUNDS`: more rounds narrow the medians (single rounds scatter by several per cent here).
    let rounds_wanted = count_from_env("BENCH_ROUNDS", ROUNDS);
    // `BENCH_GATE`: another build of the gate to measure (two builds compare under the same harness).
    let gate_bin = std::env::var_os("BENCH_GATE").map_or_else(|| root.join("target/release/logto-gate"), PathBuf::from);
    assert!(
        gate_bin.exists(),
        "build the gate first: cargo build --release (bench/run.sh does)"
    );
    // `BENCH_SECOND_GATE`: a build for the second gate's row, which then runs with the default gate's workers, so
    // that two builds compare round by round in one run (runs on different days or hours of this machine differ
    // more than two builds usually do).
    let second_bin = std::env::var_os("BENCH_SECOND_GATE").map(PathBuf::from);
    if let Some(bin) = &second_bin {
        assert!(bin.exists(), "BENCH_SECOND_GATE: no file at {}", bin.display());
    }
    // `BENCH_SECOND_GATE_WORKERS`: see the second gate below.
    let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let second_workers = count_from_env(
        "BENCH_SECOND_GATE_WORKERS",
        if second_bin.is_some() { default_workers } else { 1 },
    );
    let dir = tempfile::tempdir().expect("tempdir");

    // Static upstream and the nginx reference proxy.
    let [up_port, proxy_port, gate_port, gate1_port, proxy_tls_port, gate_tls_port, proxy_h2_port, gate_h2_port, wire_port] =
        free_ports();
    let (cert, key) = cert::make_cert(dir.path(), "bench");
    // The large download: 64 MiB the upstream serves from disk.
    std::fs::write(dir.path().join("big.bin"), vec![0x5a_u8; 64 << 20]).expect("big file");
    let (ws_port, ws_echo) = rows::websocket_echo_process();
    let _ws_echo = Killed(ws_echo);
    std::fs::write(
        dir.path().join("index.html"),
        "<!DOCTYPE html><p>hello from the upstream</p>\n",
    )
    .expect("html");
    let _upstream = nginx(
        dir.path(),
        "upstream",
        "1",
        &format!(
            "server {{ listen 127.0.0.1:{up_port}; root {}; location / {{ }} }}",
            dir.path().display()
        ),
    );
    // The reference proxy closes a client connection after 1000 requests, its default `keepalive_requests` (the
    // http block raises it for the upstream, whose pooled connections must not churn), as the gate does by default
    // (`server.max_requests_per_connection`). Not on the HTTP/2 row's port: h2load does not reconnect after a GOAWAY,
    // so there both proxies keep their connections (the gate's HTTP/2 instance has no limit either).
    let proxied = "proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\";";
    let proxy_server = |port: u16| {
        format!(
            "upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}\n\
             server {{ listen 127.0.0.1:{port}; keepalive_requests 1000; location / {{ {proxied} }} }}"
        )
    };
    // `BENCH_NGINX_GATE_WIRE`: nginx doing the gate's wire work without its checks, in the second gate's row. wrk
    // sends it the same session cookie; it drops the cookie and sends the upstream what the gate sends (the
    // client's `Host`, a request id, the `X-Forwarded-*` fields and the identity fields with the values of the
    // benchmark's signed-in user of the test IdP) and answers with the request id. Where the gate falls behind
    // nginx without authentication, this row separates what that forwarding costs from what the gate's code costs.
    let wire_row = std::env::var_os("BENCH_NGINX_GATE_WIRE").is_some();
    assert!(
        !(wire_row && second_bin.is_some()),
        "BENCH_NGINX_GATE_WIRE and BENCH_SECOND_GATE both take the second gate's row: set one"
    );
    // nginx's `$request_id` is 32 hexadecimal digits; the gate's ids are 24, and so are the ones sent here.
    let identity: String = WIRE_IDENTITY
        .iter()
        .map(|(field, value)| format!(" proxy_set_header {field} {value};"))
        .collect();
    let wire_server = format!(
        "map $request_id $gate_request_id {{ \"~^(?<id>[0-9a-f]{{24}})\" $id; }}\n\
         server {{ listen 127.0.0.1:{wire_port}; keepalive_requests 1000; location / {{ {proxied}\n\
         proxy_set_header Host $http_host;\n\
         proxy_set_header Cookie \"\"; proxy_set_header X-Request-Id $gate_request_id;\n\
         proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;\n\
         proxy_set_header X-Forwarded-Host $http_host;{identity}\n\
         add_header X-Request-Id $gate_request_id always; }} }}"
    );
    let tls_server = |port: u16, requests: u32| {
        format!(
            "server {{ listen 127.0.0.1:{port} ssl http2; ssl_certificate {}; ssl_certificate_key {};\n\
             keepalive_requests {requests}; location / {{ {proxied} }} }}",
            cert.display(),
            key.display()
        )
    };
    let _proxy = nginx(
        dir.path(),
        "proxy",
        "auto",
        &format!(
            "{}\n{wire_server}\n{}\n{}",
            proxy_server(proxy_port),
            tls_server(proxy_tls_port, 1000),
            tls_server(proxy_h2_port, 1_000_000)
        ),
    );
    // For the memory rows, a fresh nginx for each kind of connection, with the WebSocket tunnel, HTTP/2 without TLS
    // and HTTP/1.1 inside TLS: its plain, HTTP/2 and TLS ports.
    let websocket = format!(
        "location /ws/ {{ proxy_pass http://127.0.0.1:{ws_port}; proxy_http_version 1.1;\n\
         proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; proxy_read_timeout 300s; }}"
    );
    let fresh_nginx = |name: &str| {
        let [plain, h2, tls] = free_ports();
        let group = nginx(
            dir.path(),
            name,
            "auto",
            &format!(
                "upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}\n\
                 server {{ listen 127.0.0.1:{plain}; location / {{ {proxied} }} {websocket} }}\n\
                 server {{ listen 127.0.0.1:{h2} http2; location / {{ {proxied} }} }}\n\
                 server {{ listen 127.0.0.1:{tls} ssl; ssl_certificate {}; ssl_certificate_key {};\n\
                 location / {{ {proxied} }} }}",
                cert.display(),
                key.display()
            ),
        );
        for port in [plain, h2, tls] {
            wait_port(port);
        }
        (group, plain, h2, tls)
    };
    for port in [up_port, proxy_port, proxy_tls_port, proxy_h2_port, wire_port] {
        wait_port(port);
    }

    // The IdP and the gate (release binary) with the access log off, as nginx's.
    let idp = idp::Idp::start(idp::IdpOptions::default());
    let public = format!("http://127.0.0.1:{gate_port}");
    idp.register_client(APP_ID, APP_SECRET, &public);
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{gate_port}\"\npublic_url = \"{public}\"\n[upstream]\nurl = \"http://127.0.0.1:{up_port}\"\n\
             [logto]\nendpoint = \"{}\"\napp_id = \"{APP_ID}\"\napp_secret = \"{APP_SECRET}\"\n\
             [session]\nsecret = \"bench-session-secret-bench-session-secret-0123\"\n[log]\nlevel = \"warn\"\n",
            idp.endpoint()
        ),
    )
    .expect("gate config");
    // A gate process of the build `bin` with `config` and settings from the environment (`LOGTO_GATE_SERVER__*`).
    let spawn_build = |bin: &Path, config: &Path, env: &[(&str, std::ffi::OsString)]| {
        GateProcess(
            Command::new(bin)
                .arg("--config")
                .arg(config)
                .env("LOGTO_GATE_SERVER__SHUTDOWN_TIMEOUT", GATE_SHUTDOWN)
                .envs(env.iter().map(|(name, value)| (name, value)))
                .stdout(Stdio::null())
                .spawn()
                .expect("gate binary"),
        )
    };
    let spawn_gate = |config: &Path, env: &[(&str, std::ffi::OsString)]| spawn_build(&gate_bin, config, env);
    let listen = |port: u16| ("LOGTO_GATE_SERVER__LISTEN", format!("127.0.0.1:{port}").into());
    let tls_on = |port: u16| {
        vec![
            listen(port),
            ("LOGTO_GATE_SERVER__TLS_CERT_FILE", cert.clone().into_os_string()),
            ("LOGTO_GATE_SERVER__TLS_KEY_FILE", key.clone().into_os_string()),
        ]
    };
    let gate = spawn_gate(&config, &[]);
    let gate_pid = gate.0.id();
    // The same gate with one worker thread (`server.workers = 1`), on its own port: what the default gate's placement
    // of plain connections on one worker is compared with (bench/README.md). It reads the session cookie the first
    // one issues (same session secret). `BENCH_SECOND_GATE_WORKERS` gives it another count: with the default's, the
    // two rows measure one build twice, which shows how far apart this machine puts equal work; `BENCH_SECOND_GATE`
    // makes it another build.
    let _gate1 = spawn_build(
        second_bin.as_deref().unwrap_or(&gate_bin),
        &config,
        &[
            listen(gate1_port),
            ("LOGTO_GATE_SERVER__WORKERS", second_workers.to_string().into()),
        ],
    );
    // The same gate terminating TLS, and a fresh one for the memory rows with the WebSocket route.
    let gate_tls = spawn_gate(&config, &tls_on(gate_tls_port));
    // The HTTP/2 row's gate: the same, keeping its connections (see the reference proxy above).
    let mut h2_env = tls_on(gate_h2_port);
    h2_env.push(("LOGTO_GATE_SERVER__MAX_REQUESTS_PER_CONNECTION", "0".into()));
    let _gate_h2 = spawn_gate(&config, &h2_env);
    let config_mem = dir.path().join("gate-mem.toml");
    // Room for every idle connection measured: the default `server.max_connections` (half the open-file limit)
    // would close the first ones to make room for the last.
    let mem_toml = std::fs::read_to_string(&config).expect("gate config").replacen(
        "[server]\n",
        "[server]\nmax_connections = 1000000\n",
        1,
    ) + &format!("[[upstreams]]\nprefix = \"/ws\"\nurl = \"http://127.0.0.1:{ws_port}\"\n");
    std::fs::write(&config_mem, mem_toml).expect("gate config");
    // `tls`: terminating TLS.
    let fresh_gate = |tls: bool| {
        let port = free_port();
        let gate = spawn_gate(&config_mem, &if tls { tls_on(port) } else { vec![listen(port)] });
        wait_port(port);
        (gate, port)
    };
    for port in [gate_port, gate1_port, gate_tls_port, gate_h2_port] {
        wait_port(port);
    }

    // A session through the real sign-in flow, and the callback's cost over the IdP's own token time.
    let mut callback_ms = Vec::new();
    let mut token_ms = Vec::new();
    let mut cookie = String::new();
    for _ in 0..15 {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .build()
            .expect("client");
        let callback = follow_until(&client, &format!("{public}/"), &format!("{public}/_logto/callback")).await;
        let t = Instant::now();
        let r = client.get(&callback).send().await.expect("callback");
        callback_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let set = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("logto_gate="));
        cookie = set.and_then(|v| v.split(';').next()).unwrap_or_default().to_owned();

        // The same exchange done directly against the IdP (no PKCE; the test IdP does not require it).
        let auth = format!(
            "{}/auth?response_type=code&client_id={APP_ID}&redirect_uri={}&scope=openid%20profile%20offline_access&state=bench&nonce=n&prompt=consent",
            idp.issuer(),
            url_encode(&format!("{public}/_logto/callback"))
        );
        let cb = follow_until(&client, &auth, &format!("{public}/_logto/callback")).await;
        let code = reqwest::Url::parse(&cb)
            .expect("cb")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("code");
        let t = Instant::now();
        let tok = client
            .post(format!("{}/token", idp.issuer()))
            .basic_auth(APP_ID, Some(APP_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", &format!("{public}/_logto/callback")),
            ])
            .send()
            .await
            .expect("token");
        assert!(
            tok.status().is_success(),
            "direct token request failed: {}",
            tok.status()
        );
        let _ = tok.bytes().await;
        token_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    assert!(!cookie.is_empty(), "no session cookie from the sign-in");
    if wire_row {
        check_wire_identity(&format!("{public}/_logto/auth"), &cookie).await;
    }

    // Warm up, then A B A B.
    let second_label = match &second_bin {
        Some(bin) => format!("logto-gate {}, workers = {second_workers} (signed in)", bin.display()),
        None if wire_row => "nginx proxy_pass with the gate's wire work (no auth)".to_owned(),
        None => format!("logto-gate, workers = {second_workers} (signed in)"),
    };
    let second_url = if wire_row {
        format!("http://127.0.0.1:{wire_port}/index.html")
    } else {
        format!("http://127.0.0.1:{gate1_port}/index.html")
    };
    let targets = [
        (
            "upstream direct",
            format!("http://127.0.0.1:{up_port}/index.html"),
            None,
        ),
        (
            "nginx proxy_pass",
            format!("http://127.0.0.1:{proxy_port}/index.html"),
            None,
        ),
        (
            "logto-gate (signed in)",
            format!("{public}/index.html"),
            Some(cookie.as_str()),
        ),
        (second_label.as_str(), second_url, Some(cookie.as_str())),
    ];
    for (_, url, c) in &targets {
        let _ = Command::new("wrk")
            .args(["-t1", "-c8", "-d1s"])
            .args(
                c.map(|c| vec!["-H".to_owned(), format!("Cookie: {c}")])
                    .unwrap_or_default(),
            )
            .arg(url)
            .output();
    }
    if std::env::args().any(|a| a == "--callgrind") {
        // User-space instructions per request under valgrind's callgrind, one worker each: unlike CPU time they do
        // not drift with what else the machine does, so two builds compare to a fraction of a per cent.
        let [gate_port, nginx_port] = free_ports();
        let (nginx_conf, nginx_prefix) =
            nginx_conf(dir.path(), "proxy-callgrind", "1", &proxy_server(nginx_port), false);
        let mut gate = Command::new("valgrind");
        gate.args(callgrind_args(&root, "gate"))
            .arg(&gate_bin)
            .arg("--config")
            .arg(&config)
            .env("LOGTO_GATE_SERVER__WORKERS", "1")
            .env("LOGTO_GATE_SERVER__LISTEN", format!("127.0.0.1:{gate_port}"));
        let mut nginx = Command::new("valgrind");
        nginx
            .args(callgrind_args(&root, "nginx"))
            .arg("/usr/sbin/nginx")
            .arg("-p")
            .arg(&nginx_prefix)
            .arg("-c")
            .arg(&nginx_conf);
        for (name, mut cmd, port, cookie) in [
            ("nginx proxy_pass", nginx, nginx_port, None),
            ("logto-gate (signed in)", gate, gate_port, Some(cookie.as_str())),
        ] {
            let child = Killed(
                cmd.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("valgrind (apt-get install valgrind)"),
            );
            let pid = child.0.id().to_string();
            wait_port(port);
            let url = format!("http://127.0.0.1:{port}/index.html");
            // Warm up (pools, the session cache), then count only the measured load.
            let _ = wrk_with(&url, cookie, 4, 2);
            let control = |on: &str| {
                let _ = Command::new("callgrind_control")
                    .args(["-i", on, &pid])
                    .stdout(Stdio::null())
                    .status();
            };
            control("on");
            let r = wrk_with(&url, cookie, 4, SECONDS);
            control("off");
            let instructions = callgrind_total(child, &root, if cookie.is_some() { "gate" } else { "nginx" });
            println!(
                "{name}: {:.0} instructions per request in user space ({:.0} requests)",
                instructions / r.requests.max(1.0),
                r.requests
            );
        }
        println!(
            "annotate: callgrind_annotate {}",
            root.join("target/bench-callgrind.gate.out").display()
        );
        return;
    }
    if std::env::args().any(|a| a == "--perf") {
        // Syscalls per request, the gate against nginx's proxy workers: where the kernel time goes. With a uprobe on
        // glibc's malloc (as root: perf probe -x /lib/x86_64-linux-gnu/libc.so.6 malloc), allocations per request too.
        let malloc_probe = perf_knows("probe_libc:malloc");
        let machine_tracepoints: Vec<&str> = MACHINE_TRACEPOINTS
            .into_iter()
            .filter(|event| perf_knows(event))
            .collect();
        let machine_events = std::iter::once("context-switches,cpu-migrations")
            .chain(machine_tracepoints.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        let mut events = "task-clock,context-switches,raw_syscalls:sys_enter".to_owned();
        if malloc_probe {
            events.push_str(",probe_libc:malloc");
        }
        // `BENCH_PERF_SYSCALLS`: also count each kind of system call a proxy makes, per request.
        const SYSCALLS: [&str; 18] = [
            "read",
            "write",
            "readv",
            "writev",
            "recvfrom",
            "sendto",
            "recvmsg",
            "sendmsg",
            "epoll_wait",
            "epoll_pwait",
            "epoll_ctl",
            "futex",
            "ioctl",
            "clock_gettime",
            "getsockopt",
            "setsockopt",
            "accept4",
            "close",
        ];
        let per_syscall = std::env::var_os("BENCH_PERF_SYSCALLS").is_some();
        if per_syscall {
            for call in SYSCALLS {
                events.push_str(&format!(",syscalls:sys_enter_{call}"));
            }
        }
        let pid_list = |pid: u32| -> String { children(pid).iter().map(u32::to_string).collect::<Vec<_>>().join(",") };
        let (proxy_workers, upstream_workers) = (pid_list(_proxy.0.id()), pid_list(_upstream.0.id()));
        let tls_url = |port: u16| format!("https://127.0.0.1:{port}/index.html");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // With `BENCH_NGINX_GATE_WIRE`, nginx doing the gate's wire work too: what the product's bytes cost the
        // proxy, wrk and the upstream, apart from the gate's code.
        let wire = wire_row.then(|| {
            (
                "nginx with the gate's wire work",
                proxy_workers.clone(),
                &targets[3],
                None,
            )
        });
        let rows = [
            ("nginx proxy_pass", proxy_workers.clone(), &targets[1], None),
            ("logto-gate", gate_pid.to_string(), &targets[2], None),
            (
                "nginx proxy_pass, TLS",
                proxy_workers.clone(),
                &targets[1],
                Some(tls_url(proxy_tls_port)),
            ),
            (
                "logto-gate, TLS",
                gate_tls.0.id().to_string(),
                &targets[2],
                Some(tls_url(gate_tls_port)),
            ),
        ];
        let (plain, tls_rows) = rows.split_at(2);
        for (name, pids, target, tls) in plain.iter().cloned().chain(wire).chain(tls_rows.iter().cloned()) {
            let stat = Command::new("perf")
                .args(["stat", "-x,", "-e", &events, "-p", &pids])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("perf (apt-get install linux-perf)");
            // The same counts for the whole machine: wakeups the proxy causes in wrk and the upstream, and how often
            // a CPU had nothing to run and a thread woken on it had to be interrupted awake (on a virtual machine each
            // idle period is a halt that the host sees, and each such interrupt a costly exit).
            let wide = Command::new("perf")
                .args(["stat", "-x,", "-a", "-e", &machine_events])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("perf (apt-get install linux-perf)");
            // And the upstream's own wakeups (the load generator's are counted around its run, below).
            let upstream_stat = Command::new("perf")
                .args(["stat", "-x,", "-e", WAKE_EVENTS, "-p", &upstream_workers])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("perf (apt-get install linux-perf)");
            let load_counts = dir.path().join("load-generator.perf");
            let _ = std::fs::remove_file(&load_counts);
            let times = |pids: &str| -> (f64, f64) {
                // utime and stime of the processes, summed.
                pids.split(',')
                    .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
                    .filter_map(|stat| user_and_system_ticks(&stat))
                    .fold((0.0, 0.0), |(u, s), (du, ds)| (u + du, s + ds))
            };
            // Busy time of the whole machine, then of each CPU, in clock ticks: the proxy's cost includes what it
            // makes wrk, the upstream and the kernel's softirqs do (wakeups, packets); the CPUs' shares show which
            // one limits the rate.
            let machine = || -> Vec<f64> {
                let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
                stat.lines()
                    .take_while(|l| l.starts_with("cpu"))
                    .map(|line| {
                        let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
                        // user nice system idle iowait irq softirq steal: all but idle and iowait.
                        ticks.iter().take(8).sum::<f64>()
                            - ticks.get(3).copied().unwrap_or(0.0)
                            - ticks.get(4).copied().unwrap_or(0.0)
                    })
                    .collect()
            };
            // TCP segments sent on the whole machine (loopback: each one is also received): data and bare ACKs.
            let segments = || -> f64 {
                let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
                let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
                let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
                names
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .find(|(n, _)| *n == "OutSegs")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0.0)
            };
            let first_pid = pids.split(',').next().unwrap_or("").to_owned();
            let threads_before = thread_ticks(&first_pid);
            let segments_before = segments();
            let before = times(&pids);
            let machine_before = machine();
            let upstream_before = times(&upstream_workers);
            let load_before = waited_children_ticks();
            let counted = |cmd: Command| under_perf_stat(cmd, WAKE_EVENTS, &load_counts);
            // HTTP/1.1 inside TLS through h2load, as the table's row.
            let (r, cut_off) = match &tls {
                None => (
                    run_wrk(
                        counted(wrk_command(&target.1, target.2, CONNECTIONS, SECONDS)),
                        &target.1,
                    ),
                    0,
                ),
                Some(url) => {
                    let load = rows::h2load_wrapped(&["--h1", "-c32", "-D5"], url, target.2, counted);
                    let run = Run {
                        rps: load.rps,
                        ..Run::default()
                    };
                    (run, load.cut_off)
                }
            };
            let after = times(&pids);
            let segments_after = segments();
            let machine_after = machine();
            let upstream_after = times(&upstream_workers);
            let load_after = waited_children_ticks();
            let stopped = |perf: Child| -> String {
                let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
                let out = perf.wait_with_output().expect("perf stat");
                String::from_utf8_lossy(&out.stderr).into_owned()
            };
            let (text, wide_text, upstream_text) = (stopped(stat), stopped(wide), stopped(upstream_stat));
            let load_text = std::fs::read_to_string(&load_counts).unwrap_or_default();
            let wide_count = |event: &str| perf_count(&wide_text, event);
            let count = |event: &str| perf_count(&text, event);
            let requests = (r.rps * SECONDS as f64).max(1.0);
            print!(
                "{name}: {:.1} µs CPU, {:.2} syscalls and {:.2} context switches per request",
                count("task-clock") * 1000.0 / requests,
                count("raw_syscalls:sys_enter") / requests,
                count("context-switches") / requests
            );
            print!(
                " ({:.1} µs user, {:.1} µs kernel)",
                (after.0 - before.0) * 10_000.0 / requests,
                (after.1 - before.1) * 10_000.0 / requests
            );
            let busy_ticks: Vec<f64> = machine_after
                .iter()
                .zip(&machine_before)
                .map(|(after, before)| after - before)
                .collect();
            let per_cpu: Vec<String> = busy_ticks
                .iter()
                .skip(1)
                .map(|ticks| format!("{:.0}", ticks / SECONDS as f64))
                .collect();
            print!(
                "; machine {:.1} µs ({:.0} % busy: {} % per CPU), {:.2} TCP segments, {:.2} context switches, {:.3} migrations, upstream {:.1} µs, load generator {:.1} µs",
                busy_ticks.first().copied().unwrap_or(0.0) * 10_000.0 / requests,
                busy_ticks.first().copied().unwrap_or(0.0) / (SECONDS as f64 * cores as f64),
                per_cpu.join(" and "),
                (segments_after - segments_before) / requests,
                wide_count("context-switches") / requests,
                wide_count("cpu-migrations") / requests,
                (upstream_after.0 + upstream_after.1 - upstream_before.0 - upstream_before.1) * 10_000.0 / requests,
                (load_after - load_before) * 10_000.0 / requests
            );
            // A tracepoint this kernel lacks is not counted, and says so rather than showing as none.
            if machine_tracepoints.len() == MACHINE_TRACEPOINTS.len() {
                print!(
                    "; {:.2} idle periods and {:.2} interprocessor interrupts ({:.2} to reschedule)",
                    wide_count("power:cpu_idle") / 2.0 / requests,
                    (wide_count("ipi:ipi_send_cpu") + wide_count("ipi:ipi_send_cpumask")) / requests,
                    wide_count("irq_vectors:reschedule_entry") / requests
                );
            } else {
                print!(
                    "; idle periods and interprocessor interrupts not counted (this kernel lacks their tracepoints)"
                );
            }
            print!(
                "; per request the load generator called epoll_wait {:.2} times and left its CPU {:.2} times, the upstream {:.2} and {:.2}",
                perf_count(&load_text, "syscalls:sys_enter_epoll_wait") / requests,
                perf_count(&load_text, "context-switches") / requests,
                perf_count(&upstream_text, "syscalls:sys_enter_epoll_wait") / requests,
                perf_count(&upstream_text, "context-switches") / requests
            );
            if malloc_probe {
                print!(", {:.1} mallocs per request", count("probe_libc:malloc") / requests);
            }
            if per_syscall {
                let calls: Vec<String> = SYSCALLS
                    .iter()
                    .map(|call| (call, count(&format!("syscalls:sys_enter_{call}")) / requests))
                    .filter(|(_, n)| *n >= 0.005)
                    .map(|(call, n)| format!("{call} {n:.2}"))
                    .collect();
                print!(" {{{}}}", calls.join(", "));
            }
            let busy: Vec<String> = thread_ticks(&first_pid)
                .into_iter()
                .zip(threads_before)
                .filter(|((_, after), (_, before))| after - before > 10.0)
                .map(|((name, after), (_, before))| format!("{name} {:.1} s", (after - before) / 100.0))
                .collect();
            if !busy.is_empty() {
                print!(" [{}]", busy.join(", "));
            }
            println!(" ({:.0} req/s)", r.rps);
            if cut_off > 0 {
                println!("  (not to be read: h2load was cut off {cut_off} time(s) and run again, and the counts cover those runs)");
            }
        }
        // Profile the gate under load instead of comparing: software clock samples (works without hardware
        // counters), call graphs, written to target/bench-perf.data for `perf report`.
        let out = root.join("target/bench-perf.data");
        // `BENCH_PERF_TLS`: profile the gate terminating TLS under h2load instead.
        let profile_tls = std::env::var_os("BENCH_PERF_TLS").is_some();
        // `BENCH_PERF_NGINX`: profile nginx's proxy workers under the same load, for comparison.
        let profile_nginx = std::env::var_os("BENCH_PERF_NGINX").is_some();
        let profiled = if profile_nginx {
            proxy_workers.clone()
        } else if profile_tls {
            gate_tls.0.id().to_string()
        } else {
            gate_pid.to_string()
        };
        // `BENCH_PERF_WIDE`: the whole machine (wrk, the upstream, softirqs), not only the proxy.
        let scope = if std::env::var_os("BENCH_PERF_WIDE").is_some() {
            vec!["-a".to_owned()]
        } else {
            vec!["-p".to_owned(), profiled]
        };
        let mut perf = Killed(
            Command::new("perf")
                .arg("record")
                // A sampling rate for clock events, or every n-th event (`BENCH_PERF_PERIOD`) for counted ones such
                // as a uprobe, where perf's frequency mode records next to nothing.
                .args(match std::env::var("BENCH_PERF_PERIOD") {
                    Ok(n) => ["-c".to_owned(), n],
                    Err(_) => [
                        "-F".to_owned(),
                        std::env::var("BENCH_PERF_FREQ").unwrap_or_else(|_| "499".to_owned()),
                    ],
                })
                .args([
                    "-e",
                    &std::env::var("BENCH_PERF_EVENT").unwrap_or_else(|_| "cpu-clock".to_owned()),
                    "--call-graph",
                    &std::env::var("BENCH_PERF_CALL_GRAPH").unwrap_or_else(|_| "dwarf,16384".to_owned()),
                ])
                .args(&scope)
                .arg("-o")
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf (apt-get install linux-perf)"),
        );
        let r = if profile_tls {
            Run {
                rps: rows::h2load(&["--h1", "-c32", "-D10"], &tls_url(gate_tls_port), targets[2].2).rps,
                ..Run::default()
            }
        } else if profile_nginx {
            wrk(&targets[1].1, targets[1].2)
        } else {
            wrk(&targets[2].1, targets[2].2)
        };
        let _ = Command::new("kill").args(["-INT", &perf.0.id().to_string()]).status();
        // perf writes its data after SIGINT; give it up to a minute before the drop kills it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && matches!(perf.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "profiled {:.0} req/s; see: perf report -i {} --no-children",
            r.rps,
            out.display()
        );
        return;
    }
    let tls = |port: u16, path: &str| format!("https://127.0.0.1:{port}{path}");
    // Inside TLS, gate and nginx each: HTTP/1.1, HTTP/2 with ten streams per connection, and the large download.
    let tls_rows: [(&str, &[&str], String, String); 3] = [
        (
            "HTTP/1.1 inside TLS (h2load --h1 -c32), req/s",
            &["--h1", "-c32", "-D5"],
            tls(proxy_tls_port, "/index.html"),
            tls(gate_tls_port, "/index.html"),
        ),
        (
            "HTTP/2 over TLS (h2load -c32 -m10), req/s",
            &["-c32", "-m10", "-D5"],
            tls(proxy_h2_port, "/index.html"),
            tls(gate_h2_port, "/index.html"),
        ),
        (
            "64 MiB download through the proxy (TLS, HTTP/1.1), MB/s",
            &["--h1", "-c1", "-n4"],
            tls(proxy_tls_port, "/big.bin"),
            tls(gate_tls_port, "/big.bin"),
        ),
    ];
    let http1_only = std::env::args().any(|a| a == "--http1");
    // `--only tls|h2|download`: that row of the TLS table alone (no wrk rounds, no memory rows), for a row that needs
    // many rounds.
    let args: Vec<String> = std::env::args().collect();
    let only = match args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).map(String::as_str))
    {
        None => None,
        Some(Some("tls")) => Some(0),
        Some(Some("h2")) => Some(1),
        Some(Some("download")) => Some(2),
        Some(other) => {
            eprintln!("--only takes tls, h2 or download, not {:?}", other.unwrap_or(""));
            std::process::exit(2);
        }
    };
    let tls_row_runs = |row: usize| !http1_only && only.is_none_or(|o| o == row);
    // `--memory`: the memory rows alone.
    let rounds = if std::env::args().any(|a| a == "--memory") {
        0
    } else {
        rounds_wanted
    };
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    let mut tls_runs: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; tls_rows.len()];
    for round in 0..rounds {
        // The upstream alone first, then the proxies in this round's order (`ORDERS`).
        let order = std::iter::once(0).chain(ORDERS[round % ORDERS.len()]);
        for i in order.filter(|_| only.is_none()) {
            let (name, url, c) = &targets[i];
            // For the default gate, how its worker threads shared the round (placement, `src/placement.rs`).
            let before = (i == 2).then(|| thread_ticks(&gate_pid.to_string()));
            let r = wrk(url, *c);
            let split = before.map_or(String::new(), |before| {
                let workers: Vec<f64> = thread_ticks(&gate_pid.to_string())
                    .into_iter()
                    .zip(before)
                    .filter(|((name, _), _)| name.starts_with("logto-gate-"))
                    .map(|((_, after), (_, before))| after - before)
                    .collect();
                let total = workers.iter().sum::<f64>().max(1.0);
                let shares: Vec<String> = workers.iter().map(|t| format!("{:.0} %", 100.0 * t / total)).collect();
                format!(" (CPU by worker: {})", shares.join(", "))
            });
            eprintln!(
                "round {}: {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms{split}",
                round + 1,
                r.rps,
                r.p50_ms,
                r.p99_ms
            );
            runs[i].push(r);
        }
        // `--http1`: the HTTP/1.1 rows alone.
        for (row, (name, args, nginx_url, gate_url)) in
            tls_rows.iter().enumerate().filter(|(row, _)| tls_row_runs(*row))
        {
            let sides = [(0, nginx_url, None), (1, gate_url, Some(cookie.as_str()))];
            let order = match round % 2 {
                0 => [sides[0], sides[1]],
                _ => [sides[1], sides[0]],
            };
            for (side, url, c) in order {
                let load = rows::h2load(args, url, c);
                let value = if row == 2 { load.mb_per_s } else { load.rps };
                eprintln!("round {}: {name}: {} {value:.0}", round + 1, ["nginx", "gate"][side]);
                tls_runs[row][side].push(value);
            }
        }
    }

    // Memory per idle connection, on the fresh nginx and gate: 10,000 of each kind, or as many as the descriptor
    // limit allows (each needs one here and one in the proxy, and a tunnel one more in the proxy, to the upstream).
    let limit = open_files_limit().saturating_sub(2000);
    let mut memory = Vec::new();
    let tls_client = cert::client_trusting(&cert::der_of(&cert));
    for (i, kind) in [
        rows::Idle::Http1,
        rows::Idle::Http1Post,
        rows::Idle::Http1Chunked,
        rows::Idle::Http1Tls,
        rows::Idle::Http2,
        rows::Idle::WebSocket,
    ]
    .into_iter()
    .enumerate()
    .filter(|_| !http1_only && only.is_none())
    {
        // Fresh processes each time: memory another kind's connections left free would hide this kind's.
        let (proxy_mem, plain, h2, tls) = fresh_nginx(&format!("proxy-mem-{i}"));
        let nginx_port = match kind {
            rows::Idle::Http2 => h2,
            rows::Idle::Http1Tls => tls,
            rows::Idle::Http1 | rows::Idle::Http1Post | rows::Idle::Http1Chunked | rows::Idle::WebSocket => plain,
        };
        let nginx_pids: Vec<u32> = std::iter::once(proxy_mem.0.id())
            .chain(children(proxy_mem.0.id()))
            .collect();
        let (gate_mem, gate_mem_port) = fresh_gate(matches!(kind, rows::Idle::Http1Tls));
        let gate_pids = [gate_mem.0.id()];
        let idle_count = match kind {
            rows::Idle::WebSocket => limit / 2,
            _ => limit,
        }
        .min(10_000);
        let nginx_kib = rows::per_idle_connection(kind, &nginx_pids, nginx_port, None, idle_count, &tls_client).await;
        let gate_kib = rows::per_idle_connection(
            kind,
            &gate_pids,
            gate_mem_port,
            Some(cookie.as_str()),
            idle_count,
            &tls_client,
        )
        .await;
        eprintln!("memory, idle {kind:?}: nginx {nginx_kib:.2} KiB, gate {gate_kib:.2} KiB per connection");
        memory.push((kind, idle_count, nginx_kib, gate_kib));
    }

    let med: Vec<(f64, f64, f64)> = runs
        .iter()
        .map(|r| {
            (
                median(r.iter().map(|r| r.rps).collect()),
                median(r.iter().map(|r| r.p50_ms).collect()),
                median(r.iter().map(|r| r.p99_ms).collect()),
            )
        })
        .collect();
    println!();
    println!("| benchmark (medians of {rounds} rounds) | nginx (no auth) | logto-gate (signed in) | gate / nginx |");
    println!("|---|---:|---:|---:|");
    if only.is_none() {
        println!(
            "| HTTP/1.1, wrk -t1 -c{CONNECTIONS} -d{SECONDS}s | {:.0} req/s, p99 {:.2} ms | {:.0} req/s, p99 {:.2} ms | {:.2} |",
            med[1].0,
            med[1].2,
            med[2].0,
            med[2].2,
            med[2].0 / med[1].0.max(1.0)
        );
    }
    for (row, (name, ..)) in tls_rows.iter().enumerate().filter(|(row, _)| tls_row_runs(*row)) {
        let (n, g) = (median(tls_runs[row][0].clone()), median(tls_runs[row][1].clone()));
        println!("| {name} | {n:.0} | {g:.0} | {:.2} |", g / n.max(1.0));
    }
    for (kind, idle_count, n, g) in &memory {
        let what = match kind {
            rows::Idle::Http1 => "HTTP/1.1 keep-alive connection after one request",
            rows::Idle::Http1Post => "HTTP/1.1 keep-alive connection after one POST",
            rows::Idle::Http1Chunked => "HTTP/1.1 keep-alive connection after one chunked POST",
            rows::Idle::Http1Tls => "HTTP/1.1 keep-alive connection inside TLS after one request",
            rows::Idle::Http2 => "HTTP/2 connection after one request",
            rows::Idle::WebSocket => "WebSocket tunnel after one message",
        };
        println!(
            "| memory per idle {what} ({idle_count} connections), KiB | {n:.2} | {g:.2} | {:.2} |",
            g / n.max(0.01)
        );
    }
    // Each TLS row's rounds' own ratios: how far they scatter around the medians.
    for (row, (name, ..)) in tls_rows.iter().enumerate().filter(|(row, _)| tls_row_runs(*row)) {
        let ratios: Vec<f64> = tls_runs[row][1]
            .iter()
            .zip(&tls_runs[row][0])
            .map(|(gate, nginx)| gate / nginx.max(1.0))
            .collect();
        if !ratios.is_empty() {
            let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "{name}, gate / nginx round by round: {} (median {:.2})",
                shown.join(", "),
                median(ratios)
            );
        }
    }
    if only.is_some() {
        return;
    }
    println!();
    println!("| HTTP/1.1 target (wrk -t1 -c{CONNECTIONS}, {rounds}x{SECONDS}s, medians) | req/s | p50 | p99 |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _, _)) in targets.iter().enumerate() {
        println!("| {name} | {:.0} | {:.2} ms | {:.2} ms |", med[i].0, med[i].1, med[i].2);
    }
    println!(
        "{second_label} / nginx: {:.2}x req/s, p99 {:.2} ms vs {:.2} ms",
        med[3].0 / med[1].0.max(1.0),
        med[3].2,
        med[1].2
    );
    // Each round's own ratio: how far single rounds scatter around the medians above.
    // With another build in the second row, also that build against the default gate.
    let pairs: &[(&str, usize, usize)] = if second_bin.is_some() {
        &[("gate", 2, 1), (&second_label, 3, 1), ("second build / gate", 3, 2)]
    } else if wire_row {
        &[
            ("gate", 2, 1),
            (&second_label, 3, 1),
            ("gate / nginx with the gate's wire work", 2, 3),
        ]
    } else {
        &[("gate", 2, 1), (&second_label, 3, 1)]
    };
    for &(label, i, against) in pairs {
        let ratios: Vec<f64> = runs[i]
            .iter()
            .zip(&runs[against])
            .map(|(gate, other)| gate.rps / other.rps.max(1.0))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{label}{} round by round: {} (median {:.2})",
            if against == 1 { " / nginx" } else { "" },
            shown.join(", "),
            median(ratios)
        );
    }
    println!("gate RSS after the load: {} KiB", rss_kib(gate_pid));
    let (cb, tk) = (median(callback_ms), median(token_ms));
    println!(
        "sign-in callback: {cb:.2} ms at the gate, {tk:.2} ms for the IdP's token request alone: {:.2} ms added",
        cb - tk
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model()
    );
    drop(gate);
}

/// valgrind's arguments for callgrind, counting nothing until `callgrind_control -i on`.
fn callgrind_args(root: &Path, name: &str) -> Vec<String> {
    vec![
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        // Source lines of inlined functions, for a build with line tables
        // (CARGO_PROFILE_RELEASE_DEBUG=line-tables-only bash bench/run.sh --callgrind).
        "--read-inline-info=yes".to_owned(),
        format!(
            "--callgrind-out-file={}",
            root.join(format!("target/bench-callgrind.{name}.out")).display()
        ),
    ]
}

/// Stops a process under callgrind (SIGTERM, up to a minute to write its profile) and reads the instructions it
/// counted from the profile's `totals:` line.
fn callgrind_total(mut child: Killed, root: &Path, name: &str) -> f64 {
    terminate(&mut child.0, Duration::from_secs(60));
    let out = root.join(format!("target/bench-callgrind.{name}.out"));
    std::fs::read_to_string(&out)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("totals:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0.0)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
