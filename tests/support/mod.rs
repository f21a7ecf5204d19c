//! The integration-test harness: a real IdP (oidc-provider), a real upstream, and the gate, all on loopback
//! ports chosen by the kernel, plus a cookie-keeping HTTP client that signs in the way a browser does.
#![allow(dead_code)]

pub mod caddy;
pub mod cert;
pub mod frameworks;
pub mod idp;
pub mod nginx;
pub mod protected_origin;
pub mod redis;
pub mod rogue;
pub mod upstream;

pub use cert::{client_trusting, der_of, make_cert, make_cert_naming, make_client_cert};

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode, Url};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use idp::{Idp, IdpOptions};
pub use upstream::Upstream;

pub const APP_ID: &str = "test-app";
pub const APP_SECRET: &str = "test-app-secret-0123456789";
pub const SESSION_SECRET: &str = "an-example-session-secret-of-at-least-32-bytes";

/// Answer fields a cache in front (a CDN, nginx's `proxy_cache`) reads instead of `Cache-Control`: an answer kept
/// from shared caches carries none of them.
pub const CACHE_TARGETED_FIELDS: [&str; 4] = [
    "x-accel-expires",
    "surrogate-control",
    "cdn-cache-control",
    "cloudflare-cdn-cache-control",
];

/// Sends raw bytes on a new connection and reads until the gate closes it (at most 10 s).
pub async fn exchange_until_closed(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the gate closes the connection")
        .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The `X-Request-Id` of a raw answer's head (as [`exchange_until_closed`] returns it); panics without one.
pub fn raw_request_id(answer: &str) -> String {
    answer
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id: {answer:.600}"))
        .to_owned()
}

/// Sends raw bytes on a new connection and returns the status code of the first response (0 when none can be
/// read within 10 s).
pub async fn first_status(port: u16, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A signed-in session cookie, the upstream's request count, and the stack.
pub async fn signed_in_stack() -> (Stack, String, usize) {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    (s, cookie, before)
}

/// Waits are bounded everywhere: nothing in the harness waits longer than this for a service to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Asserts that `toml` is refused at start with a line starting with `says` (the key, and what is wrong).
#[allow(dead_code)] // the benchmark, which includes this file too, needs none
pub fn assert_refused(toml: &str, says: &str) {
    let err = logto_gate::Config::from_toml_str(toml, Vec::new()).expect_err(says);
    assert!(err.0.iter().any(|l| l.starts_with(says)), "{says}: {err}");
}

/// The config every test gate starts from; `extra` is appended (whole sections, or keys for [headers]).
pub fn gate_toml(public_url: &str, upstream: &str, endpoint: &str, logto_extra: &str, extra: &str) -> String {
    let scopes = if logto_extra.contains("scopes") {
        ""
    } else {
        r#"scopes = ["email", "roles"]"#
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "{public_url}"

[upstream]
url = "{upstream}"
response_timeout = "5s"

[logto]
endpoint = "{endpoint}"
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
{scopes}
{logto_extra}

[session]
secret = "{SESSION_SECRET}"

[log]
level = "warn"
{extra}
"#
    )
}

/// A gate running in this process on an ephemeral port.
pub struct TestGate {
    pub port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl TestGate {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Binds port 0, registers the app with `idp`, starts the gate and waits until it has loaded Logto's keys.
    pub async fn start(idp: &Idp, upstream: &str, logto_extra: &str, extra: &str) -> TestGate {
        Self::start_edited(idp, upstream, logto_extra, extra, |t| t).await
    }

    /// Like [`TestGate::start`], with a last edit of the TOML text (to set keys in other sections).
    pub async fn start_edited(
        idp: &Idp,
        upstream: &str,
        logto_extra: &str,
        extra: &str,
        edit: impl FnOnce(String) -> String,
    ) -> TestGate {
        let gate = Self::start_unready(idp.endpoint().as_str(), upstream, logto_extra, extra, edit, |public| {
            idp.register_client(APP_ID, APP_SECRET, public)
        })
        .await;
        gate.wait_ready().await;
        gate
    }

    /// Starts without waiting for readiness (for tests where Logto is down).
    pub async fn start_unready(
        endpoint: &str,
        upstream: &str,
        logto_extra: &str,
        extra: &str,
        edit: impl FnOnce(String) -> String,
        register: impl FnOnce(&str),
    ) -> TestGate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let port = listener.local_addr().expect("gate addr").port();
        let public = format!("http://127.0.0.1:{port}");
        register(&public);
        let toml = edit(gate_toml(&public, upstream, endpoint, logto_extra, extra));
        let config = logto_gate::Config::from_toml_str(&toml, Vec::new())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{toml}"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(logto_gate::run_with_listener(config, listener, async {
            let _ = rx.await;
        }));
        TestGate {
            port,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn wait_ready(&self) {
        wait_for_status(&format!("{}/_logto/readyz", self.url()), 200).await;
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for TestGate {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The gate's Prometheus metrics, as text, from its `server.metrics_listen` port.
pub async fn metrics_text(metrics_port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The gate process's exit status, once it has exited (within 30 s).
pub async fn wait_exit(p: &mut GateProcess) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "the gate did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gate (the binary) logging JSON lines at `level` to its standard error, its configuration edited by `edit`.
pub async fn logging_json(
    idp: &Idp,
    upstream: &Upstream,
    level: &str,
    edit: impl FnOnce(String) -> String,
) -> BinaryGate {
    let level = level.to_owned();
    let json_logs = move |t: String| {
        edit(t.replace(
            "[log]\nlevel = \"warn\"",
            &format!("[log]\nlevel = \"{level}\"\nformat = \"json\""),
        ))
    };
    let register = |public: &str| idp.register_client(APP_ID, APP_SECRET, public);
    BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "",
        json_logs,
        register,
        &[("RUST_LOG", "")],
    )
    .await
}

/// Stops a [`logging_json`] gate and reads what it logged: the lines, and each parsed.
pub async fn stopped_log(gate: &mut BinaryGate) -> (Vec<String>, Vec<serde_json::Value>) {
    gate.sigterm();
    wait_exit(&mut gate.process).await;
    let lines: Vec<String> = gate.exited_log().lines().map(str::to_owned).collect();
    let parsed = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    (lines, parsed)
}

/// The metrics text once it holds `expected` (within 10 s).
pub async fn metrics_until(metrics_port: u16, expected: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = metrics_text(metrics_port).await;
        if metrics.contains(expected) {
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "{expected} in {metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `url` until it answers `status`, for at most [`READY_TIMEOUT`].
pub async fn wait_for_status(url: &str, status: u16) {
    let client = Client::new();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status().as_u16() == status {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer {status} within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The wall clock in whole seconds since the Unix epoch, as JWTs count time.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The payload of a JWT (unverified): what a test reads off a token the gate passed on or Logto issued.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// Polls `check` every 10 ms until it holds, for at most [`READY_TIMEOUT`]; fails naming `what` otherwise.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a system tool a test needs is installed. On a developer's machine a missing tool skips the test with
/// a message (the README's quick start needs only Rust and Node.js); under CI (`CI` set, as `.ci/run` runs) it is
/// a failure, so nothing is silently skipped there.
pub fn have_tool(name: &str, paths: &[&str], debian_package: &str) -> bool {
    if paths.iter().any(|p| std::path::Path::new(p).exists()) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is required in CI: apt-get install {debian_package} (.ci/run installs it)"
    );
    eprintln!("skipping: {name} is not installed here (apt-get install {debian_package}); CI runs this test");
    false
}

/// A TOML edit that adds `line` to the `[server]` section of the test template.
pub fn in_server(line: &'static str) -> impl FnOnce(String) -> String {
    move |t| t.replacen("[server]\n", &format!("[server]\n{line}\n"), 1)
}

/// An edit of the test gate's TOML for one sign-in across `example.test` subdomains: `server.public_url` on
/// `auth.example.test` (same port), `session.cookie_domain = "example.test"`, the `allowed_redirect_hosts` given
/// (a TOML array) and `server_lines` added to `[server]`. Requests still reach the gate on 127.0.0.1, naming a host
/// in `Host`.
pub fn on_subdomains(
    allowed_redirect_hosts: &'static str,
    server_lines: &'static str,
) -> impl FnOnce(String) -> String {
    move |t| {
        t.replace(
            "public_url = \"http://127.0.0.1:",
            "public_url = \"http://auth.example.test:",
        )
        .replace(
            "[server]\n",
            &format!("[server]\nallowed_redirect_hosts = {allowed_redirect_hosts}\n{server_lines}\n"),
        )
        .replace("[session]\n", "[session]\ncookie_domain = \"example.test\"\n")
    }
}

/// A client with no cookies that follows no redirects: an anonymous caller, each answer seen as it is.
pub fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// [`plain`] connecting from 127.0.0.2: a client on loopback that is no trusted proxy where the tests trust
/// 127.0.0.1 (Linux answers for all of 127.0.0.0/8).
pub fn plain_from_127_0_0_2() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("HTTP client")
}

/// A TOML edit that adds `line` to the `[upstream]` section of the test template.
pub fn in_upstream(line: &'static str) -> impl FnOnce(String) -> String {
    move |t| t.replacen("[upstream]\n", &format!("[upstream]\n{line}\n"), 1)
}

/// Whether Debian's redis-server is here (if not, the test says what to install and passes).
pub fn have_redis() -> bool {
    have_tool(
        "redis-server",
        &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        "redis-server",
    )
}

/// Two replicas ([`BinaryGate::two_replicas`]) sharing a fresh Redis, with the `[session]` lines `session` makes of
/// its URL, and the IdP and app they use; `None` without redis-server.
pub async fn replicas_on_redis(
    session: impl FnOnce(&str) -> String,
) -> Option<(redis::Redis, Idp, Upstream, BinaryGate, BinaryGate)> {
    replicas_on_redis_with(IdpOptions::default(), session, "").await
}

/// [`replicas_on_redis`] with an IdP started with `options`, and `extra` appended to the replicas' configuration
/// (whole sections: rules).
pub async fn replicas_on_redis_with(
    options: IdpOptions,
    session: impl FnOnce(&str) -> String,
    extra: &str,
) -> Option<(redis::Redis, Idp, Upstream, BinaryGate, BinaryGate)> {
    if !have_redis() {
        return None;
    }
    let redis = redis::Redis::start().await;
    let idp = Idp::start(options);
    let upstream = Upstream::start().await;
    let (one, two) = BinaryGate::two_replicas(&idp, &upstream, &session(&redis.url()), extra).await;
    Some((redis, idp, upstream, one, two))
}

/// An IdP whose access tokens live 2 s: a session is past its refresh point a second after each refresh.
pub fn two_second_tokens() -> IdpOptions {
    IdpOptions {
        access_token_ttl: Some(2),
        ..Default::default()
    }
}

/// A TOML edit that adds `line` to the `[session]` section of the test template.
pub fn in_session(line: &'static str) -> impl FnOnce(String) -> String {
    move |t| t.replacen("[session]\n", &format!("[session]\n{line}\n"), 1)
}

/// Waits (bounded) until something accepts TCP connections on a loopback port.
pub async fn wait_for_port(port: u16) {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port} after {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything a test usually needs: IdP, upstream, gate.
pub struct Stack {
    pub idp: Idp,
    pub upstream: Upstream,
    pub gate: TestGate,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::with("", "").await
    }

    pub async fn with(logto_extra: &str, extra: &str) -> Stack {
        Self::edited(IdpOptions::default(), logto_extra, extra, |t| t).await
    }

    /// A stack with IdP options and a last edit of the gate's TOML (for keys in sections the template has).
    pub async fn edited(
        options: IdpOptions,
        logto_extra: &str,
        extra: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Stack {
        let idp = Idp::start(options);
        let upstream = Upstream::start().await;
        let gate = TestGate::start_edited(&idp, &upstream.url(), logto_extra, extra, edit).await;
        Stack { idp, upstream, gate }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.idp)
    }

    /// A browser signed in to the gate (through the whole flow, at `/`) and its session cookie's value.
    pub async fn signed_in(&self) -> (Browser, String) {
        let b = self.browser();
        b.sign_in(&self.gate, "/").await;
        let cookie = b
            .cookie(&self.gate.url(), "logto_gate")
            .expect("a session cookie after signing in");
        (b, cookie)
    }
}

/// A request to the IdP's token endpoint as the app `client_id` (client_secret_basic): the answer's JSON.
pub async fn token_endpoint(idp: &Idp, (client_id, secret): (&str, &str), form: &[(&str, &str)]) -> serde_json::Value {
    plain()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(client_id, Some(secret))
        .form(form)
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token answer")
}

/// A Logto web app other than the gate (registered at the IdP by the caller, with `{callback_base}/_logto/callback`
/// as its redirect URI, which the browser then fetches: give it a server that answers, the test upstream say),
/// signing `login` in directly at the IdP with the authorization code flow and redeeming the code with
/// client_secret_basic: the token endpoint's answer. `extra` goes into the authorization request (`prompt`, ...).
pub async fn sign_in_at_idp(
    idp: &Idp,
    (client_id, secret): (&str, &str),
    callback_base: &str,
    login: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> serde_json::Value {
    let callback = format!("{callback_base}/_logto/callback");
    let browser = Browser::new(idp);
    browser.login_as(login);
    let mut query = vec![
        ("client_id", client_id),
        ("response_type", "code"),
        ("scope", scope),
        ("state", "direct-sign-in"),
        ("redirect_uri", &callback),
    ];
    query.extend_from_slice(extra);
    let authorize = Url::parse_with_params(&format!("{}/auth", idp.issuer()), &query).expect("url");
    let (hops, _) = browser.navigate(authorize.as_str()).await;
    let landed = Url::parse(&hops.last().expect("a hop").url).expect("url");
    let code = landed
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code: {hops:#?}"));
    token_endpoint(
        idp,
        (client_id, secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &callback),
        ],
    )
    .await
}

/// A cookie-keeping client that follows redirects itself, so each hop can be inspected.
pub struct Browser {
    pub client: Client,
    pub jar: Arc<Jar>,
    idp_endpoint: String,
}

/// Whether `text` names the tests' attacker (`evil.example`, `evil=1`, `'evil'`, escaped or not): "evil" beside a
/// character a random id cannot hold (base64url) or at an end, so that an IdP's interaction id, a token or a sealed
/// cookie that happens to spell it (`.../interaction/gXomYAWevil3qB...`) is not taken for it.
pub fn names_evil(text: &str) -> bool {
    let b = text.as_bytes();
    let in_id = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
    text.match_indices("evil")
        .any(|(i, _)| !in_id(i.checked_sub(1).and_then(|j| b.get(j))) || !in_id(b.get(i + 4)))
}

/// One hop of a redirect chain.
#[derive(Debug, Clone)]
pub struct Hop {
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
}

impl Hop {
    fn of(url: &Url, resp: &Response) -> Hop {
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Hop {
            url: url.to_string(),
            status: resp.status().as_u16(),
            location,
        }
    }
}

/// Anything a browser can be pointed at: an in-process gate or the gate binary.
pub trait GateUrl {
    fn url(&self) -> String;
}

impl GateUrl for TestGate {
    fn url(&self) -> String {
        TestGate::url(self)
    }
}

impl Browser {
    /// One GET with this browser's cookies (redirects not followed).
    pub async fn get(&self, url: impl reqwest::IntoUrl) -> Response {
        self.client.get(url).send().await.expect("GET through the browser")
    }

    /// [`Browser::get`] as a page's script would, accepting HTML (no navigation: a 401 page rather than a sign-in).
    pub async fn get_html(&self, url: impl reqwest::IntoUrl) -> Response {
        let req = self.client.get(url).header("accept", "text/html");
        req.send().await.expect("GET through the browser")
    }

    /// [`Browser::get`], then the body as JSON.
    pub async fn get_json(&self, url: impl reqwest::IntoUrl) -> serde_json::Value {
        self.get(url).await.json().await.expect("a JSON body")
    }

    pub fn new(idp: &Idp) -> Browser {
        Self::for_endpoint(idp.endpoint())
    }

    /// A browser that resolves each of `hosts` to 127.0.0.1:`port` (several host names for one gate on loopback).
    pub fn resolving(idp: &Idp, hosts: &[&str], port: u16) -> Browser {
        let jar = Arc::new(Jar::default());
        let mut builder = Client::builder()
            .redirect(Policy::none())
            .cookie_provider(jar.clone())
            .timeout(Duration::from_secs(30));
        for host in hosts {
            builder = builder.resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        }
        Browser {
            client: builder.build().expect("client"),
            jar,
            idp_endpoint: idp.endpoint(),
        }
    }

    /// A browser that also trusts the certificate in the PEM file `root` (a proxy in front ending TLS).
    pub fn trusting(idp: &Idp, root: &std::path::Path) -> Browser {
        let jar = Arc::new(Jar::default());
        let pem = std::fs::read(root).expect("the certificate");
        let client = Client::builder()
            .redirect(Policy::none())
            .cookie_provider(jar.clone())
            .timeout(Duration::from_secs(30))
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
            .build()
            .expect("client");
        Browser {
            client,
            jar,
            idp_endpoint: idp.endpoint(),
        }
    }

    /// A browser for a gate in front of any provider at `endpoint` (the misbehaving one, say).
    pub fn for_endpoint(endpoint: String) -> Browser {
        let jar = Arc::new(Jar::default());
        let client = Client::builder()
            .redirect(Policy::none())
            .cookie_provider(jar.clone())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Browser {
            client,
            jar,
            idp_endpoint: endpoint,
        }
    }

    /// Chooses the account the IdP signs in automatically (default "alice").
    pub fn login_as(&self, account: &str) {
        let url: Url = self.idp_endpoint.parse().expect("idp url");
        self.jar
            .add_cookie_str(&format!("idp_login_as={account}; Path=/"), &url);
    }

    /// GET as a browser navigation (Accept: text/html), following redirects; returns the hops and final response.
    pub async fn navigate(&self, url: &str) -> (Vec<Hop>, Response) {
        self.follow(url, true).await
    }

    pub async fn follow(&self, url: &str, html: bool) -> (Vec<Hop>, Response) {
        let mut hops = Vec::new();
        let mut current: Url = url.parse().expect("url");
        for _ in 0..20 {
            let mut req = self.client.get(current.clone());
            if html {
                req = req.header("accept", "text/html,application/xhtml+xml");
            }
            let resp = req.send().await.expect("request");
            let hop = Hop::of(&current, &resp);
            let next = hop.location.clone().filter(|_| resp.status().is_redirection());
            hops.push(hop);
            match next {
                Some(loc) => current = current.join(&loc).expect("location"),
                None => return (hops, resp),
            }
        }
        panic!("too many redirects: {hops:?}");
    }

    /// Signs in through the gate by navigating to `path`; asserts the browser ends up back at `path`.
    pub async fn sign_in(&self, gate: &impl GateUrl, path: &str) -> Response {
        let (hops, resp) = self.navigate(&format!("{}{path}", gate.url())).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "sign-in did not end on the app: {hops:#?}"
        );
        let last = hops.last().map(|h| h.url.clone()).unwrap_or_default();
        assert_eq!(last, format!("{}{path}", gate.url()), "{hops:#?}");
        resp
    }

    /// Follows a chain that may end on the IdP's auto-submitting logout form (a browser's script would submit it):
    /// submits the form; the last hop's location is where the form sends the browser.
    pub async fn follow_submitting_forms(&self, url: &str) -> Vec<Hop> {
        let (mut hops, resp) = self.follow(url, true).await;
        let page_url = hops.last().map(|h| h.url.clone()).unwrap_or_default();
        let html = resp.text().await.unwrap_or_default();
        if let Some(form) = parse_form(&html) {
            let action = Url::parse(&page_url)
                .and_then(|u| u.join(&form.0))
                .expect("form action");
            let resp = self
                .client
                .post(action.clone())
                .form(&form.1)
                .send()
                .await
                .expect("submit form");
            hops.push(Hop::of(&action, &resp));
        }
        hops
    }

    /// The gate's cookies this browser sends to `url`, as a `Cookie` field (the IdP's share the host on loopback:
    /// cookies do not depend on the port), to replay them from another client or replica.
    pub fn gate_cookies(&self, url: &str) -> String {
        let Ok(u) = url.parse::<Url>() else {
            return String::new();
        };
        let all = self
            .jar
            .cookies(&u)
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default();
        all.split("; ")
            .filter(|c| c.starts_with("logto_gate"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The value of a cookie the jar holds for `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url: Url = url.parse().ok()?;
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }
}

/// The status of a GET to `url` sending exactly `cookie` (an API client: `Accept: application/json`).
pub async fn status_with_cookie(url: &str, cookie: &str) -> StatusCode {
    plain()
        .get(url)
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET with a cookie")
        .status()
}

/// The path of the gate binary built by cargo for these tests.
pub fn gate_binary() -> &'static str {
    env!("CARGO_BIN_EXE_logto-gate")
}

/// A port for a server started later (the binary, which must know its public URL before it binds; an IdP that comes
/// up late; an address left dead), reserved for the rest of this test process: a socket stays bound to it, with
/// `SO_REUSEADDR` and not listening. Connections to it are refused until a server listens there; the servers the
/// tests start (the gate, Node.js, nginx, Redis, Python) bind with `SO_REUSEADDR` and so may; and the kernel gives
/// it to no other bind and to no outgoing connection as its local port, which between the choice and the start
/// could otherwise take it (a test holding hundreds of client connections makes that likely).
pub fn free_port() -> u16 {
    static RESERVED: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());
    let mut reserved = RESERVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("a free port");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("a bound port");
    reserved.push(socket);
    port
}

/// Runs the gate binary with arguments and environment; kills it on drop.
pub struct GateProcess {
    pub child: std::process::Child,
}

impl GateProcess {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> GateProcess {
        Self::spawn_limited(None, args, env)
    }

    /// Like [`GateProcess::spawn`], allowed at most `open_files` descriptors (soft and hard limit) when given.
    pub fn spawn_limited(open_files: Option<u64>, args: &[&str], env: &[(&str, &str)]) -> GateProcess {
        let mut cmd = match open_files {
            None => std::process::Command::new(gate_binary()),
            Some(limit) => {
                let mut sh = std::process::Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), gate_binary()]);
                sh
            }
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        GateProcess {
            child: cmd.spawn().expect("spawn logto-gate"),
        }
    }
}

/// The gate binary, configured from the test template (edited), on a port chosen now, started and ready.
pub struct BinaryGate {
    pub process: GateProcess,
    pub port: u16,
    pub config: std::path::PathBuf,
    /// What the gate logs (stderr), read as it comes: a pipe nobody read would fill and stop the gate mid-write.
    log: Option<std::thread::JoinHandle<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl BinaryGate {
    pub async fn start(
        endpoint: &str,
        upstream: &str,
        extra: &str,
        edit: impl FnOnce(String) -> String,
        register: impl FnOnce(&str),
        env: &[(&str, &str)],
    ) -> BinaryGate {
        Self::start_limited(None, endpoint, upstream, extra, edit, register, env).await
    }

    /// Like [`BinaryGate::start`], allowed at most `open_files` descriptors when given.
    pub async fn start_limited(
        open_files: Option<u64>,
        endpoint: &str,
        upstream: &str,
        extra: &str,
        edit: impl FnOnce(String) -> String,
        register: impl FnOnce(&str),
        env: &[(&str, &str)],
    ) -> BinaryGate {
        let port = free_port();
        let public = format!("http://127.0.0.1:{port}");
        register(&public);
        let toml = gate_toml(&public, upstream, endpoint, "", extra)
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gate.toml");
        std::fs::write(&config, edit(toml)).expect("write config");
        let mut process = GateProcess::spawn_limited(open_files, &["--config", &config.display().to_string()], env);
        let log = process.child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut log = Vec::new();
                let _ = std::io::Read::read_to_end(&mut stderr, &mut log);
                log
            })
        });
        wait_for_status(&format!("{public}/_logto/readyz"), 200).await;
        BinaryGate {
            process,
            port,
            config,
            log,
            _dir: dir,
        }
    }

    /// Everything the gate logged, once it has exited (the pipe's end).
    pub fn exited_log(&mut self) -> String {
        let bytes = self
            .log
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Two gate processes (replicas of one deployment) sharing one app registration, with `session` added to their
    /// `[session]` section (a shared store, say) and `extra` appended to their configuration.
    pub async fn two_replicas(idp: &Idp, upstream: &Upstream, session: &str, extra: &str) -> (BinaryGate, BinaryGate) {
        let section = format!("[session]\n{session}\n");
        let edit = move |t: String| t.replacen("[session]\n", &section, 1);
        let one = BinaryGate::start(
            &idp.endpoint(),
            &upstream.url(),
            extra,
            edit.clone(),
            |public| idp.register_client(APP_ID, APP_SECRET, public),
            &[],
        )
        .await;
        let two = BinaryGate::start(&idp.endpoint(), &upstream.url(), extra, edit, |_| {}, &[]).await;
        (one, two)
    }

    /// Stops the process and returns what it logged (stderr).
    pub fn stop_and_read_log(&mut self) -> String {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        self.exited_log()
    }

    /// Sends SIGTERM, as Kubernetes or `docker stop` does.
    pub fn sigterm(&self) {
        let pid = self.process.child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "kill -TERM {pid}");
    }
}

impl GateUrl for BinaryGate {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `<form>` of a page: its action and its hidden inputs.
pub fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let end = html[start..].find("</form>")? + start;
    let form = &html[start..end];
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let i = tag.find(&key)? + key.len();
        let j = tag[i..].find('"')? + i;
        Some(tag[i..j].replace("&amp;", "&"))
    };
    let action = attr(form, "action")?;
    let inputs = form
        .split("<input")
        .skip(1)
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default())))
        .collect();
    Some((action, inputs))
}

/// Sends sixteen 1 MiB binary messages through the WebSocket `ws` (to the upstream's echo) without waiting for their
/// echoes, which fills every buffer on the way again and again, and checks that each echo comes back whole and in
/// order; then closes the WebSocket and waits (bounded) for the tunnel to end: the upstream's close or its hang-up.
pub async fn echo_sixteen_megabytes<S>(ws: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut sink, mut stream) = ws.split();
    let message = |i: usize| -> Vec<u8> { (0..1 << 20).map(|j| ((i * 7 + j) % 251) as u8).collect() };
    let sender = tokio::spawn(async move {
        for i in 0..16 {
            sink.send(Message::binary(message(i))).await.unwrap();
        }
        sink
    });
    for i in 0..16 {
        let echo = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an echo")
            .expect("the tunnel is still open")
            .expect("no error");
        assert!(echo.into_data() == message(i), "echo {i} differs from what was sent");
    }
    let mut sink = sender.await.unwrap();
    sink.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await
    .expect("the tunnel ends after the close");
}

/// Reads one answer (head and `Content-Length` body) from `stream`; `None` at the end of the stream.
pub async fn read_answer(stream: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if pending.len() >= end + 4 + length {
                pending.drain(..end + 4 + length);
                return Some(head);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer or the end of the stream in time")
            .unwrap();
        if n == 0 {
            assert!(pending.is_empty(), "the stream ended inside an answer");
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP/2 (prior knowledge) connection to `port` on loopback (the gate's, or an app's), for requests with bodies
/// of type `B`: the request sender and the connection's task.
pub async fn h2_connection<B>(
    port: u16,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("an HTTP/2 handshake");
    (sender, tokio::spawn(conn))
}

pub fn healthz(port: u16) -> hyper::Request<http_body_util::Empty<bytes::Bytes>> {
    hyper::Request::get(format!("http://127.0.0.1:{port}/_logto/healthz"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// Asks for `/_logto/healthz` as request `n` of `sender`'s connection, once it can take one, and expects a 200.
pub async fn healthz_over_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    port: u16,
    n: usize,
) {
    sender
        .ready()
        .await
        .unwrap_or_else(|e| panic!("request {n}: the connection ended: {e}"));
    let resp = sender.send_request(healthz(port)).await.expect("an answer");
    assert_eq!(resp.status(), StatusCode::OK, "request {n}");
}

/// A Kubernetes secret volume in a directory of its own: each key a link `key -> ..data/key`, `..data` a link to
/// the current version's directory, which an update replaces in one rename, as the kubelet does.
pub struct SecretVolume {
    dir: tempfile::TempDir,
    versions: usize,
}

impl SecretVolume {
    /// The volume with `files` (key, text) as its first version.
    pub fn new(files: &[(&str, &str)]) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: tempfile::tempdir().expect("tempdir"),
            versions: 0,
        };
        volume.update(files);
        for (key, _) in files {
            std::os::unix::fs::symlink(format!("..data/{key}"), volume.path(key)).expect("link");
        }
        volume
    }

    /// Where the key `key` is read.
    pub fn path(&self, key: &str) -> std::path::PathBuf {
        self.dir.path().join(key)
    }

    /// The path of `key` as a TOML string.
    pub fn toml_path(&self, key: &str) -> String {
        format!("{:?}", self.path(key).display().to_string())
    }

    /// A new version with `files` (every key the volume has), swapped in.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        let d = self.dir.path();
        std::fs::create_dir(d.join(&version)).expect("version");
        for (key, text) in files {
            std::fs::write(d.join(&version).join(key), text).expect("write");
        }
        std::os::unix::fs::symlink(&version, d.join("..data_tmp")).expect("link");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");
    }

    /// Writes `text` to `key`'s file of the current version, in place.
    pub fn write_in_place(&self, key: &str, text: &str) {
        std::fs::write(self.path(key), text).expect("write");
    }
}

/// Of a stopped gate's log ([`stopped_log`]): `reloads` lines saying `message` (a file read again), and no line
/// holding any of `secrets`.
pub fn assert_reloads_and_no_secret(
    log: &(Vec<String>, Vec<serde_json::Value>),
    message: &str,
    reloads: usize,
    secrets: &[&str],
) {
    let (lines, parsed) = log;
    let found = parsed.iter().filter(|l| l["message"] == message).count();
    assert_eq!(found, reloads, "{message}: {lines:#?}");
    let all = lines.join("\n");
    for secret in secrets {
        assert!(!all.contains(secret), "a log line has a secret ({secret}):\n{all}");
    }
}

/// A browser's top-level navigation, without cookies or redirects followed: `method` to `url`, accepting HTML, with
/// `Sec-Fetch-Mode: navigate` (add `Sec-Fetch-Dest` and the rest to it).
pub fn navigation(method: reqwest::Method, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
    plain()
        .request(method, url)
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
}
