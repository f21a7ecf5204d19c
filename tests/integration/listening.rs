//! Where the gate takes its clients besides a TCP address: `server.listen = "unix:/path"`, behind a proxy on the
//! same host (Debian's nginx here), reached through a socket file that only the processes its permissions allow
//! can open; and the socket systemd passes (socket activation, through systemd's own `systemd-socket-activate`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use crate::support::nginx::Nginx;
use crate::support::*;

/// The gate on a socket file, started in this process.
struct OnSocket {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

fn socket_config(public: &str, idp: &Idp, upstream: &str, socket: &Path, server_extra: &str) -> logto_gate::Config {
    let public_rule = "[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n";
    let toml = gate_toml(public, upstream, &idp.endpoint(), "", public_rule).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"unix:{}\"\n{server_extra}", socket.display()),
    );
    logto_gate::Config::from_toml_str(&toml, Vec::new()).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

impl OnSocket {
    async fn start(config: logto_gate::Config) -> OnSocket {
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(logto_gate::run(config, async {
            let _ = rx.await;
        }));
        OnSocket { stop, task }
    }
}

/// What the gate says when it refuses to start with `config` (at once: it never serves).
async fn refused_at_start(config: logto_gate::Config) -> Result<(), String> {
    let run = logto_gate::run(config, std::future::pending());
    tokio::time::timeout(READY_TIMEOUT, run).await.expect("refused at once")
}

/// One HTTP/1.1 exchange over the socket, the connection closed after it: the whole answer.
async fn over_socket(socket: &Path, request: &str) -> String {
    let mut stream = UnixStream::connect(socket).await.expect("connect to the gate's socket");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(READY_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_proxy_on_the_same_host_reaches_the_gate_through_its_socket_file() {
    if !have_tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gate.sock");
    // What a gate that was killed leaves behind: a socket file nobody accepts on. It is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());

    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    idp.register_client(APP_ID, APP_SECRET, &public);
    let trusting = "trusted_proxies = [\"127.0.0.1\"]";
    let gate = OnSocket::start(socket_config(&public, &idp, &upstream.url(), &socket, trusting)).await;
    let nginx = Nginx::start(
        port,
        &format!(
            "server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://unix:{}:; \
             proxy_set_header Host $http_host; \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}",
            socket.display()
        ),
    )
    .await;
    wait_for_status(&format!("{public}/_logto/readyz"), 200).await;
    // Owner and group only, unless server.listen_mode says otherwise.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");

    // The whole sign-in through nginx and the socket; the app sees the identity, and the client's address as the
    // proxy in front (trusted: a process on this host counts as 127.0.0.1) wrote it.
    struct ViaNginx(String);
    impl GateUrl for ViaNginx {
        fn url(&self) -> String {
            self.0.clone()
        }
    }
    let browser = Browser::new(&idp);
    browser.sign_in(&ViaNginx(public.clone()), "/").await;
    let resp = browser
        .client
        .get(format!("{public}/page"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.path, "/page");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1, 127.0.0.1")
    );
    assert!(nginx.error_log().is_empty(), "{}", nginx.error_log());

    // A client on the socket itself: HTTP/1.1 (its identity fields removed, no session: 401) ...
    let answer = over_socket(
        &socket,
        "GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nX-Forwarded-User: mallory\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    // ... and HTTP/2 with prior knowledge, told apart by its first bytes as on TCP.
    let stream = UnixStream::connect(&socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake over the socket");
    tokio::spawn(conn);
    let request = hyper::Request::get("http://127.0.0.1/_logto/healthz")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);

    // A second gate on the same socket is refused while this one listens; a file that is no socket is never
    // replaced.
    let refused_on = |path: &Path| refused_at_start(socket_config(&public, &idp, &upstream.url(), path, ""));
    assert_eq!(
        refused_on(&socket).await,
        Err(format!(
            "server.listen: cannot listen on unix:{}: another process is listening on it",
            socket.display()
        ))
    );
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let refused = refused_on(&file).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.ends_with("it exists and is not a socket; remove it or choose another path")),
        "{refused:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    // Stopped, the gate removes its socket file.
    let _ = gate.stop.send(());
    assert_eq!(gate.task.await.unwrap(), Ok(()));
    assert!(!socket.exists(), "the socket file is left behind");
}

#[tokio::test]
async fn a_socket_file_gets_the_mode_asked_for_and_bad_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gate.sock");
    let idp = Idp::start(IdpOptions::default());
    let public = "http://127.0.0.1:9";
    idp.register_client(APP_ID, APP_SECRET, public);
    let upstream = Upstream::start().await;
    let config = socket_config(public, &idp, &upstream.url(), &socket, "listen_mode = \"600\"");
    let gate = OnSocket::start(config).await;
    eventually("the socket file", || socket.exists()).await;
    let answer = over_socket(
        &socket,
        "GET /_logto/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    // Without 127.0.0.1 among the trusted proxies, a client on the socket names no address of its own.
    let answer = over_socket(
        &socket,
        "GET /public/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(upstream.last().header("x-forwarded-for"), Some("127.0.0.1"));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let _ = gate.stop.send(());
    assert_eq!(gate.task.await.unwrap(), Ok(()));

    let toml = |listen: &str| {
        gate_toml(public, "http://127.0.0.1:9", &idp.endpoint(), "", "").replace("listen = \"127.0.0.1:0\"", listen)
    };
    for (listen, says) in [
        (
            "listen = \"unix:/run/gate.sock\"\nlisten_mode = \"0400\"",
            "server.listen_mode: `0400` is not a file mode",
        ),
        (
            "listen = \"unix:/run/gate.sock\"\nlisten_mode = \"rw\"",
            "server.listen_mode: `rw` is not a file mode",
        ),
        (
            "listen = \"unix:/run/gate.sock\"\nlisten_mode = \"4660\"",
            "server.listen_mode: `4660` is not a file mode",
        ),
        (
            "listen = \"127.0.0.1:0\"\nlisten_mode = \"660\"",
            "server.listen_mode: `660` is for a Unix socket",
        ),
        (
            "listen = \"unix:gate.sock\"",
            "server.listen: `unix:gate.sock` must be an absolute path",
        ),
        (
            "listen = \"gate.sock\"",
            "server.listen: `gate.sock` is not an address like 0.0.0.0:4180, or a socket",
        ),
    ] {
        assert_refused(&toml(listen), says);
    }
}

/// `systemd-socket-activate` listens as a `.socket` unit does, and on the first connection runs the gate with the
/// socket as its descriptor 3 (`LISTEN_FDS`, `LISTEN_PID`).
/// Whether systemd's `systemd-socket-activate` is here (a message says it is missing when it is not).
fn have_socket_activate() -> bool {
    have_tool(
        "systemd-socket-activate",
        &["/usr/bin/systemd-socket-activate"],
        "systemd",
    )
}

fn socket_activated(listen: &[&str], config: &Path) -> std::process::Child {
    socket_activated_named(listen, None, config)
}

/// [`socket_activated`] with the sockets' names (`FileDescriptorName=`, colon-separated), as separate `.socket`
/// units for one service pass them.
fn socket_activated_named(listen: &[&str], names: Option<&str>, config: &Path) -> std::process::Child {
    let mut cmd = Command::new("systemd-socket-activate");
    for l in listen {
        cmd.args(["-l", l]);
    }
    if let Some(names) = names {
        cmd.arg(format!("--fdname={names}"));
    }
    cmd.arg(gate_binary())
        .args(["--config", &config.display().to_string()])
        .env_remove("LOGTO_GATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate")
}

/// What a socket-activated gate runs with: an IdP with the test client registered for `public`, the test app, and
/// `gate.toml` (`toml`, with `rules`) in `dir`, whose `server.listen` names a port (`unused`) nothing may bind, so
/// that the socket passed is the one served.
struct ActivationSetup {
    idp: Idp,
    upstream: Upstream,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    toml: String,
    unused: u16,
}

impl ActivationSetup {
    async fn new(public: &str, rules: &str) -> ActivationSetup {
        let idp = Idp::start(IdpOptions::default());
        let upstream = Upstream::start().await;
        idp.register_client(APP_ID, APP_SECRET, public);
        let dir = tempfile::tempdir().unwrap();
        let unused = free_port();
        let config = dir.path().join("gate.toml");
        let toml = gate_toml(public, &upstream.url(), &idp.endpoint(), "", rules)
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{unused}\""));
        std::fs::write(&config, &toml).unwrap();
        ActivationSetup {
            idp,
            upstream,
            dir,
            config,
            toml,
            unused,
        }
    }
}

#[tokio::test]
async fn the_socket_systemd_passes_takes_the_place_of_server_listen() {
    if !have_socket_activate() {
        return;
    }
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let public_rule = "[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n";
    let ActivationSetup {
        idp: _idp,
        upstream,
        dir,
        config,
        unused,
        ..
    } = ActivationSetup::new(&public, public_rule).await;
    let mut activated = socket_activated(&[&format!("127.0.0.1:{port}")], &config);
    wait_for_port(port).await;
    wait_for_status(&format!("{public}/_logto/readyz"), 200).await;
    let resp = plain().get(format!("{public}/public/x")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.last().header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", unused)).is_err(),
        "server.listen's port was bound too"
    );
    let _ = activated.kill();
    let _ = activated.wait();

    // A Unix socket systemd made: served the same, and its file (systemd's) is left where it is.
    let socket = dir.path().join("passed.sock");
    let mut activated = socket_activated(&[&socket.display().to_string()], &config);
    eventually("systemd-socket-activate's socket", || socket.exists()).await;
    let answer = over_socket(
        &socket,
        "GET /_logto/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let term = Command::new("kill")
        .args(["-TERM", &activated.id().to_string()])
        .status();
    assert!(term.is_ok_and(|s| s.success()));
    let status = tokio::task::spawn_blocking(move || activated.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(socket.exists(), "the gate removed a socket file it did not make");

    // Two sockets for one gate: refused at start, saying why.
    let (one, two) = (free_port(), free_port());
    let activated = socket_activated(&[&format!("127.0.0.1:{one}"), &format!("127.0.0.1:{two}")], &config);
    wait_for_port(one).await;
    let (status, stderr) = exited(activated).await;
    assert!(!status.success());
    assert!(
        stderr.contains(
            "server.listen: systemd passed 2 sockets for clients (FileDescriptorName= unknown, unknown); logto-gate \
             serves one"
        ),
        "{stderr}"
    );
}

/// Run to its end: the exit status and what it wrote to stderr.
async fn exited(mut activated: std::process::Child) -> (std::process::ExitStatus, String) {
    let output = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        use std::io::Read;
        activated.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (activated.wait().unwrap(), stderr)
    });
    tokio::time::timeout(READY_TIMEOUT, output)
        .await
        .expect("exits")
        .unwrap()
}

/// Sockets named `http_redirect_listen` and `metrics_listen` (`FileDescriptorName=`, each in a `.socket` unit of its
/// own) take the places of those settings, so that a gate on ports 443 and 80 needs no capability; a socket of that
/// kind that cannot serve there is refused at start, saying why.
#[tokio::test]
async fn named_sockets_systemd_passes_take_the_places_of_the_side_listeners() {
    if !have_socket_activate() {
        return;
    }
    let (port, redirect, metrics) = (free_port(), free_port(), free_port());
    // TLS in front of the gate: the redirect sends browsers to the https origin. Neither side listener is
    // configured.
    let public = format!("https://127.0.0.1:{port}");
    let ActivationSetup {
        idp: _idp,
        upstream: _upstream,
        dir,
        config,
        toml,
        unused,
    } = ActivationSetup::new(&public, "").await;
    let mut activated = socket_activated_named(
        &[
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{redirect}"),
            &format!("127.0.0.1:{metrics}"),
        ],
        Some("logto-gate.socket:http_redirect_listen:metrics_listen"),
        &config,
    );
    wait_for_port(port).await;
    wait_for_status(&format!("http://127.0.0.1:{port}/_logto/readyz"), 200).await;
    let resp = plain()
        .post(format!("http://127.0.0.1:{redirect}/reports?year=2026"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("{public}/reports?year=2026")
    );
    let resp = plain()
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.contains("# TYPE logto_gate_requests_total counter"), "{text}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", unused)).is_err(),
        "server.listen's port was bound too"
    );
    let _ = activated.kill();
    let _ = activated.wait();

    // A redirect socket for a gate whose public_url is http: nothing to redirect to.
    std::fs::write(&config, toml.replace(&public, &format!("http://127.0.0.1:{port}"))).unwrap();
    let (one, two) = (free_port(), free_port());
    let activated = socket_activated_named(
        &[&format!("127.0.0.1:{one}"), &format!("127.0.0.1:{two}")],
        Some("logto-gate.socket:http_redirect_listen"),
        &config,
    );
    wait_for_port(one).await;
    let (status, stderr) = exited(activated).await;
    assert!(!status.success());
    assert!(
        stderr.contains(
            "server.http_redirect_listen: the socket systemd passed (FileDescriptorName=http_redirect_listen) \
             redirects to https, but server.public_url is http://127.0.0.1:"
        ),
        "{stderr}"
    );

    // A metrics socket that is a Unix socket: the side listeners serve TCP.
    let socket = dir.path().join("metrics.sock");
    let one = free_port();
    let activated = socket_activated_named(
        &[&format!("127.0.0.1:{one}"), &socket.display().to_string()],
        Some("logto-gate.socket:metrics_listen"),
        &config,
    );
    wait_for_port(one).await;
    let (status, stderr) = exited(activated).await;
    assert!(!status.success());
    assert!(
        stderr.contains(
            "server.metrics_listen: the socket systemd passed (FileDescriptorName=metrics_listen) is not a listening \
             TCP socket"
        ),
        "{stderr}"
    );
}
