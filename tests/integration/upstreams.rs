//! Several apps behind one gate: `[[upstreams]]` routed by host and path prefix (an entry for the request's host
//! before one for every host, then the longest prefix), `strip_prefix`, `[upstream]` as the default, and the errors a routing table can have.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

fn routes(grafana: &Upstream, admin: &Upstream, ci: &Upstream) -> String {
    format!(
        r#"
[[upstreams]]
prefix = "/grafana"
strip_prefix = true
url = "{}"
[[upstreams]]
prefix = "/grafana/admin"
url = "{}"
response_timeout = "2s"
[[upstreams]]
host = "ci.example.test"
url = "{}"
[[rules]]
prefix = "/grafana/admin"
roles = ["admin"]
"#,
        grafana.url(),
        admin.url(),
        ci.url()
    )
}

/// `method` to `url` with the session `cookie`, as a signed-in browser's request.
async fn with_cookie(method: &str, url: String, cookie: &str) -> reqwest::Response {
    let req = plain().request(method.parse().unwrap(), url).header("cookie", cookie);
    req.send().await.unwrap()
}

#[tokio::test]
async fn requests_go_to_the_most_specific_upstream() {
    let idp = Idp::start(IdpOptions::default());
    let (default, grafana, admin, ci) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let gate = TestGate::start(&idp, &default.url(), "", &routes(&grafana, &admin, &ci)).await;
    let alice = Browser::new(&idp);
    alice.sign_in(&gate, "/start").await;
    assert_eq!(default.last().path, "/start");
    for (path, app, seen_path) in [
        ("/grafana/d/1?x=2", &grafana, "/d/1?x=2"),
        ("/grafana", &grafana, "/"),
        ("/grafana;jsessionid=1/d", &grafana, "/d"),
        // A segment of parameters alone is no segment to the rules, and goes with the prefix.
        ("/;x/grafana/d", &grafana, "/d"),
        ("/grafanax", &default, "/grafanax"),
        ("/grafana/admin/users", &admin, "/grafana/admin/users"),
        ("/other", &default, "/other"),
    ] {
        let r = alice.get(format!("{}{path}", gate.url())).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let seen = app.last();
        assert_eq!(seen.path, seen_path, "{path}");
        assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"), "{path}");
    }
    // The stripped prefix reaches its app as X-Forwarded-Prefix (a client's own is not believed); other apps get none.
    let r = alice
        .client
        .get(format!("{}/grafana/d/2", gate.url()))
        .header("x-forwarded-prefix", "/evil")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(grafana.last().header("x-forwarded-prefix"), Some("/grafana"));
    assert_eq!(admin.last().header("x-forwarded-prefix"), None);
    assert_eq!(default.last().header("x-forwarded-prefix"), None);
    // By host: every path on ci.example.test goes to the CI app.
    let cookie = alice.cookie(&gate.url(), "logto_gate").unwrap();
    let answer = exchange_until_closed(
        gate.port,
        format!(
            "GET /grafana/d/1 HTTP/1.1\r\nHost: ci.example.test\r\nCookie: logto_gate={cookie}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(ci.last().path, "/grafana/d/1");

    // The rules still decide by path: bob may not reach the admin app.
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    bob.sign_in(&gate, "/").await;
    let before = admin.count();
    let r = bob.get(format!("{}/grafana/admin/users", gate.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(admin.count(), before);
}

/// Without `[upstream]`, a path no entry serves is not found; and the routing table's mistakes are refused at
/// start, naming the entry.
#[tokio::test]
async fn without_a_default_unserved_paths_are_not_found_and_bad_tables_are_refused() {
    let idp = Idp::start(IdpOptions::default());
    let app = Upstream::start().await;
    let only = format!("[[upstreams]]\nprefix = \"/app\"\nurl = \"{}\"\n", app.url());
    let gate = TestGate::start_edited(&idp, "", "", &only, |t| t.replace("url = \"\"\n", "")).await;
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/app/home").await;
    let r = b.get(format!("{}/elsewhere", gate.url())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let base = gate_toml(
        "https://a.example.com",
        "http://127.0.0.1:1",
        "https://t.logto.app",
        "",
        "",
    );
    for (extra, line) in [
        (
            "[[upstreams]]\nprefix = \"/a\"\nurl = \"http://127.0.0.1:2\"\n[[upstreams]]\nprefix = \"/a/\"\nurl = \"http://127.0.0.1:3\"\n",
            "upstreams[1]: serves the same host and prefix as upstreams[0]",
        ),
        ("[[upstreams]]\nprefix = \"/a\"\n", "upstreams[0].url: missing"),
        (
            "[[upstreams]]\nurl = \"http://127.0.0.1:2\"\nstrip_prefix = true\nhost = \"x.example.com\"\n",
            "upstreams[0].strip_prefix: needs a prefix",
        ),
        ("[[upstreams]]\nurl = \"ftp://x\"\nprefix = \"/b\"\n", "upstreams[0].url:"),
        ("[[upstreams]]\nurl = \"http://127.0.0.1:2\"\nprefix = \"b\"\n", "upstreams[0].prefix:"),
    ] {
        assert_refused(&format!("{base}\n{extra}"), line);
    }
}

/// `check` lists the routing table, most specific first.
#[tokio::test]
async fn check_lists_the_routing_table() {
    let idp = Idp::start(IdpOptions::default());
    idp.register_client(APP_ID, APP_SECRET, "http://127.0.0.1:4180");
    let (default, grafana) = (Upstream::start().await, Upstream::start().await);
    let dead = free_port();
    let toml = gate_toml(
        "http://127.0.0.1:4180",
        &default.url(),
        &idp.endpoint(),
        "",
        &format!(
            "[[upstreams]]\nprefix = \"/grafana\"\nstrip_prefix = true\nurl = \"{}/base\"\n\
             [[upstreams]]\nhost = \"ci.example.com\"\nurl = \"http://127.0.0.1:{dead}\"\n",
            grafana.url()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout) = check_routes(dir.path(), toml).await;
    // An app that does not answer is a warning: it may start after the gate.
    assert!(ok, "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains(" -> ")).map(str::trim).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let ci = format!("ci.example.com/ -> http://127.0.0.1:{dead}/ (warning: ");
    assert!(
        lines[0].starts_with(&ci)
            && lines[0].contains("Connection refused")
            && lines[0].ends_with("; requests get 502 until it answers)"),
        "{stdout}"
    );
    assert_eq!(
        lines[1..],
        [
            format!(
                "*/grafana (prefix stripped) -> {}/base (answers HEAD with 200)",
                grafana.url()
            ),
            format!("*/ -> {}/ (answers HEAD with 200)", default.url()),
        ],
        "{stdout}"
    );
    // Each app was asked once, as the gate asks it: at its base path, naming its own host.
    for (app, path) in [(&grafana, "/base/"), (&default, "/")] {
        assert_eq!(app.count(), 1);
        let seen = app.last();
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("HEAD", path));
        assert_eq!(seen.header("host"), Some(app.addr.to_string().as_str()));
        assert!(seen.header("user-agent").is_some_and(|ua| ua.ends_with(" check")));
    }
}

/// Runs `logto-gate check` on `toml` (written into `dir`): whether it passed, and what it printed.
async fn check_routes(dir: &std::path::Path, toml: String) -> (bool, String) {
    let path = dir.join("gate.toml");
    std::fs::write(&path, toml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(gate_binary())
            .args(["check", "--config", &path.display().to_string()])
            .env_remove("LOGTO_GATE_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An HTTPS upstream with a certificate of its own (a private CA, or self-signed): `tls_ca_file` trusts it, for
/// `[upstream]` and per `[[upstreams]]` entry; without it the gate refuses the connection (502).
#[tokio::test]
async fn tls_ca_file_trusts_an_upstreams_own_certificate() {
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "upstream");
    let port = https_upstream(&cert, &key).await;
    let idp = Idp::start(IdpOptions::default());
    let public = "[[rules]]\nprefix = \"/\"\nallow = \"public\"\n";
    let url = format!("https://127.0.0.1:{port}");
    let ca = format!("tls_ca_file = {:?}", cert.display().to_string());
    let ca_line: &'static str = Box::leak(ca.clone().into_boxed_str());

    let trusting = TestGate::start_edited(&idp, &url, "", public, in_upstream(ca_line)).await;
    let r = plain().get(format!("{}/x", trusting.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "secure:/x");

    let strict = TestGate::start(&idp, &url, "", public).await;
    let r = plain().get(format!("{}/x", strict.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);

    let app = Upstream::start().await;
    let per_entry = format!("{public}\n[[upstreams]]\nprefix = \"/secure\"\nurl = \"{url}\"\n{ca}\n");
    let mixed = TestGate::start(&idp, &app.url(), "", &per_entry).await;
    let r = plain().get(format!("{}/secure/y", mixed.url())).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "secure:/secure/y");
    let r = plain().get(format!("{}/plain", mixed.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.last().path, "/plain");

    let bad = gate_toml("https://a.example.com", &url, "https://t.logto.app", "", "")
        .replace("[upstream]\n", "[upstream]\ntls_ca_file = \"/nonexistent/ca.pem\"\n");
    assert_refused(&bad, "upstream.tls_ca_file: cannot read");
}

/// An app reached at an address its certificate does not name (a Kubernetes service's IP, a load balancer's
/// address): `tls_server_name` sends the certificate's name in SNI and verifies it, for `[upstream]` and for an
/// entry (never inherited by another entry); the request's `Host` stays the URL's. Without it, or with another
/// name, the connection is refused (502): the name is verified, not just sent.
#[tokio::test]
async fn tls_server_name_verifies_an_app_reached_by_address() {
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert_naming(dir.path(), "named", "DNS:app.internal");
    let port = https_upstream(&cert, &key).await;
    let idp = Idp::start(IdpOptions::default());
    let url = format!("https://127.0.0.1:{port}");
    let ca = format!("tls_ca_file = {:?}\n", cert.display().to_string());
    let gate_with = |name: &'static str, entries: String| {
        let idp = &idp;
        let url = url.clone();
        let ca = ca.clone();
        async move {
            let upstream = format!("{ca}{name}");
            let upstream: &'static str = Box::leak(upstream.into_boxed_str());
            let extra = format!("[[rules]]\nprefix = \"/\"\nallow = \"public\"\n{entries}");
            TestGate::start_edited(idp, &url, "", &extra, in_upstream(upstream)).await
        }
    };
    let get =
        |gate: String, path: &'static str| async move { plain().get(format!("{gate}{path}")).send().await.unwrap() };

    // By address only: the certificate does not name 127.0.0.1.
    let unnamed = gate_with("", String::new()).await;
    assert_eq!(get(unnamed.url(), "/x").await.status(), StatusCode::BAD_GATEWAY);
    // Another name than the certificate's: sent, and refused.
    let wrong = gate_with("tls_server_name = \"other.internal\"", String::new()).await;
    assert_eq!(get(wrong.url(), "/x").await.status(), StatusCode::BAD_GATEWAY);

    let entries = format!(
        "[[upstreams]]\nprefix = \"/named\"\nurl = \"{url}\"\ntls_server_name = \"app.internal\"\n\
         [[upstreams]]\nprefix = \"/unnamed\"\nurl = \"{url}\"\n"
    );
    let named = gate_with("tls_server_name = \"app.internal\"", entries.clone()).await;
    for path in ["/x", "/named/y"] {
        let r = get(named.url(), path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["x-sni"], "app.internal", "{path}");
        assert_eq!(r.headers()["x-host"], format!("127.0.0.1:{port}").as_str(), "{path}");
        assert_eq!(r.text().await.unwrap(), format!("secure:{path}"));
    }
    // A POST goes the same way (hyper's client either way for https, with a body here).
    let r = plain()
        .post(format!("{}/named/form", named.url()))
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-sni"], "app.internal");
    // [upstream]'s name is its own URL's: an entry without one is verified for its URL's host, and refused.
    assert_eq!(get(named.url(), "/unnamed/z").await.status(), StatusCode::BAD_GATEWAY);

    // `check` names what each app is verified as, and reaches it that way.
    idp.register_client(APP_ID, APP_SECRET, "http://127.0.0.1:4180");
    let toml = gate_toml("http://127.0.0.1:4180", &url, &idp.endpoint(), "", &entries).replace(
        "[upstream]\n",
        &format!("[upstream]\n{ca}tls_server_name = \"app.internal\"\n"),
    );
    let (ok, stdout) = check_routes(dir.path(), toml).await;
    assert!(ok, "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains(" -> ")).map(str::trim).collect();
    assert!(
        lines[0].starts_with(&format!("*/unnamed -> {url}/ (warning: "))
            && lines[0].contains("certificate not valid for name \"127.0.0.1\""),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        format!("*/named -> {url}/ [TLS name app.internal] (answers HEAD with 200)"),
        "{stdout}"
    );
    assert_eq!(
        lines[2],
        format!("*/ -> {url}/ [TLS name app.internal] (answers HEAD with 200)"),
        "{stdout}"
    );
}

/// A small HTTPS server answering `secure:<path>`, with the given certificate; returns its port.
async fn https_upstream(cert: &std::path::Path, key: &std::path::Path) -> u16 {
    tls_upstream(cert, key, &[]).await
}

/// An app that builds absolute URLs from `Host` (the gate sends the upstream's own host unless
/// `upstream.preserve_host`) redirects to its own address; the browser gets a path on the gate instead, as nginx's
/// `proxy_redirect default` does: in `Location` and `Refresh`, through the lean client (`GET`) and hyper's (`POST`),
/// with a route's stripped prefix and its upstream's base path mapped back. An address that would read as another
/// host once shortened (`//evil.example`) is left alone, and so is any other URL.
#[tokio::test]
async fn an_apps_redirect_to_its_own_address_comes_back_as_a_path_on_the_gate() {
    let idp = Idp::start(IdpOptions::default());
    let (default, grafana) = (Upstream::start().await, Upstream::start().await);
    let routes = format!(
        "[[upstreams]]\nprefix = \"/grafana\"\nstrip_prefix = true\nurl = \"{}/base\"\n",
        grafana.url()
    );
    let gate = TestGate::start(&idp, &default.url(), "", &routes).await;
    let alice = Browser::new(&idp);
    alice.sign_in(&gate, "/").await;
    let cookie = alice.cookie(&gate.url(), "logto_gate").unwrap();
    let client = plain();
    let own = |app: &Upstream| app.url().trim_start_matches("http://").to_owned();
    for (method, path, to, location) in [
        (
            "GET",
            "/self-redirect",
            "/login?next=%2Fx",
            "/login?next=%2Fx".to_owned(),
        ),
        ("POST", "/self-redirect", "/saved", "/saved".to_owned()),
        // A path holding UTF-8 as it is (browsers read such a field as UTF-8).
        (
            "GET",
            "/self-redirect",
            "/caf\u{e9}?q=\u{e9}",
            "/caf\u{e9}?q=\u{e9}".to_owned(),
        ),
        ("POST", "/self-redirect", "/caf\u{e9}", "/caf\u{e9}".to_owned()),
        (
            "GET",
            "/grafana/self-redirect",
            "/base/login",
            "/grafana/login".to_owned(),
        ),
        (
            "GET",
            "/grafana/self-redirect",
            "/elsewhere",
            format!("http://{}/elsewhere", own(&grafana)),
        ),
        (
            "GET",
            "/self-redirect",
            "//evil.example/",
            format!("http://{}//evil.example/", own(&default)),
        ),
    ] {
        let enc: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
        let resp = client
            .request(method.parse().unwrap(), format!("{}{path}?to={enc}", gate.url()))
            .header("cookie", format!("logto_gate={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{method} {path} {to}");
        let field = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap())
        };
        assert_eq!(
            field("location").as_deref(),
            Some(location.as_str()),
            "{method} {path} {to}"
        );
        assert_eq!(
            field("refresh"),
            Some(format!("0; url={location}")),
            "{method} {path} {to}"
        );
    }
}

/// An entry's prefix is compared as the rules compare paths: written with letters outside ASCII or escapes, it
/// serves every spelling of its path, and `X-Forwarded-Prefix` carries it as a browser spells it.
#[tokio::test]
async fn a_prefix_serves_every_spelling_of_its_path() {
    let idp = Idp::start(IdpOptions::default());
    let (default, shop) = (Upstream::start().await, Upstream::start().await);
    let routes = format!(
        "[[upstreams]]\nprefix = \"/stra\u{df}e\"\nstrip_prefix = true\nurl = \"{}\"\n",
        shop.url()
    );
    let gate = TestGate::start(&idp, &default.url(), "", &routes).await;
    let alice = Browser::new(&idp);
    alice.sign_in(&gate, "/start").await;
    for path in ["/stra%C3%9Fe/x", "/stra%c3%9fe/x", "/stra\u{df}e/x"] {
        let r = alice.get(format!("{}{path}", gate.url())).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let seen = shop.last();
        assert_eq!(seen.path, "/x", "{path}");
        assert_eq!(seen.header("x-forwarded-prefix"), Some("/stra%C3%9Fe"), "{path}");
    }
    let r = alice.get(format!("{}/strasse/x", gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(default.last().path, "/strasse/x");
}

/// An app on a Unix domain socket (`url = "unix:/path"`), for `[upstream]` and an `[[upstreams]]` entry: signed-in
/// `GET` and `HEAD` (the lean client), a streamed `POST` (hyper's client) and a WebSocket reach it with the
/// identity, asked for as `localhost`; its redirects to `http://localhost/...` come back as paths on the gate;
/// without its socket file an app's requests get 502 and the others are served; `check` names the sockets and warns
/// of a missing one.
#[tokio::test]
async fn an_app_on_a_unix_socket_is_served_like_one_on_a_port() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let idp = Idp::start(IdpOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (main_socket, grafana_socket) = (dir.path().join("app.sock"), dir.path().join("grafana.sock"));
    let app = Upstream::on_socket(&main_socket);
    let grafana = Upstream::on_socket(&grafana_socket);
    // An app that has not created its socket (not started, or stopped).
    let gone = dir.path().join("gone.sock");
    let routes = format!(
        "[[upstreams]]\nprefix = \"/grafana\"\nstrip_prefix = true\nurl = \"{}\"\n\
         [[upstreams]]\nprefix = \"/gone\"\nurl = \"unix:{}\"\n",
        grafana.url(),
        gone.display()
    );
    let gate = TestGate::start(&idp, &app.url(), "", &routes).await;
    let alice = Browser::new(&idp);
    let r = alice.sign_in(&gate, "/start").await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen = app.last();
    assert_eq!(seen.path, "/start");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("host"), Some("localhost"));

    let r = alice.client.head(format!("{}/page", gate.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.last().method, "HEAD");
    let r = alice.get(format!("{}/grafana/d/1", gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen = grafana.last();
    assert_eq!(seen.path, "/d/1");
    assert_eq!(seen.header("x-forwarded-prefix"), Some("/grafana"));
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));

    // A request body, streamed through hyper's client over the socket.
    let body = vec![7u8; 3 * 1024 * 1024];
    let r = alice
        .client
        .post(format!("{}/upload", gate.url()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let counted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(counted["bytes"], 3 * 1024 * 1024);
    assert_eq!(app.last().header("x-forwarded-user"), Some("u_alice0001"));

    // The app's redirect to the address it was asked under is a path on the gate, on both clients.
    let cookie = alice.cookie(&gate.url(), "logto_gate").unwrap();
    for (method, path, location) in [
        ("GET", "/self-redirect?to=%2Flogin", "/login"),
        ("POST", "/self-redirect?to=%2Fsaved", "/saved"),
        ("GET", "/grafana/self-redirect?to=%2Fhome", "/grafana/home"),
    ] {
        let r = plain()
            .request(method.parse().unwrap(), format!("{}{path}", gate.url()))
            .header("cookie", format!("logto_gate={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{method} {path}");
        assert_eq!(r.headers()["location"], location, "{method} {path}");
    }

    // A WebSocket over the socket.
    let mut request = format!("ws://127.0.0.1:{}/ws", gate.port)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("logto_gate={cookie}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(request).await.expect("a tunnel");
    assert_eq!(resp.status().as_u16(), 101);
    ws.send(Message::text("over a socket")).await.unwrap();
    let echo = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an echo")
        .expect("open")
        .expect("no error");
    assert_eq!(echo.into_text().unwrap().as_str(), "over a socket");
    ws.close(None).await.unwrap();
    assert_eq!(app.last().path, "/ws");

    // No socket file: 502 on both clients, and the other apps are still served.
    let r = alice.get(format!("{}/gone/d/2", gate.url())).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let r = alice
        .client
        .post(format!("{}/gone/save", gate.url()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let r = alice.get(format!("{}/still", gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.last().path, "/still");
    let r = alice.get(format!("{}/grafana/d/3", gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(grafana.last().path, "/d/3");

    // `check` names the socket files, and warns of the missing one.
    idp.register_client(APP_ID, APP_SECRET, "http://127.0.0.1:4180");
    let toml = gate_toml("http://127.0.0.1:4180", &app.url(), &idp.endpoint(), "", &routes);
    let (ok, stdout) = check_routes(dir.path(), toml).await;
    assert!(ok, "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains(" -> ")).map(str::trim).collect();
    assert_eq!(
        lines,
        [
            format!(
                "*/grafana (prefix stripped) -> unix:{} (answers HEAD with 200)",
                grafana_socket.display()
            ),
            format!(
                "*/gone -> unix:{} (warning: client error (Connect): cannot connect to unix:{}: No such file or \
                 directory (os error 2); requests get 502 until it answers)",
                gone.display(),
                gone.display()
            ),
            format!("*/ -> unix:{} (answers HEAD with 200)", main_socket.display()),
        ],
        "{stdout}"
    );
}

/// Mutual TLS to the app (RFC 8446 §4.4.2): with `tls_client_cert_file` and `tls_client_key_file` the gate presents
/// that certificate to an upstream that requires one (without it the handshake fails: 502), for `[upstream]` and
/// per `[[upstreams]]` entry; a certificate replaced on disk (cert-manager's renewal) is presented on the next
/// connections without a restart; an unreadable pair stops the start naming the key.
#[tokio::test]
async fn a_client_certificate_is_presented_to_an_upstream_that_requires_one() {
    use base64::Engine;
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key) = make_cert(dir.path(), "upstream");
    let (one_cert, one_key) = make_client_cert(dir.path(), "gate-one");
    let (two_cert, two_key) = make_client_cert(dir.path(), "gate-two");
    let port = tls_upstream(&server_cert, &server_key, &[&one_cert, &two_cert]).await;
    let presented = |cert: &std::path::Path| {
        format!(
            "client:{}",
            base64::engine::general_purpose::STANDARD.encode(der_of(cert))
        )
    };
    // The files the gate reads, as a certificate manager keeps them.
    let (cert, key) = (dir.path().join("gate.crt"), dir.path().join("gate.key"));
    std::fs::copy(&one_cert, &cert).unwrap();
    std::fs::copy(&one_key, &key).unwrap();
    let idp = Idp::start(IdpOptions::default());
    let public = "[[rules]]\nprefix = \"/\"\nallow = \"public\"\n";
    let url = format!("https://127.0.0.1:{port}");
    let ca = format!("tls_ca_file = {:?}\n", server_cert.display().to_string());
    let pair = format!(
        "tls_client_cert_file = {:?}\ntls_client_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );

    let without = TestGate::start_edited(&idp, &url, "", public, |t| {
        t.replace("[upstream]\n", &format!("[upstream]\n{ca}"))
    })
    .await;
    let r = plain().get(format!("{}/x", without.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "no certificate, no connection");

    let gate = TestGate::start_edited(&idp, &url, "", public, |t| {
        t.replace("[upstream]\n", &format!("[upstream]\n{ca}{pair}"))
    })
    .await;
    for method in ["GET", "POST"] {
        let r = plain()
            .request(method.parse().unwrap(), format!("{}/x", gate.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{method}");
        assert_eq!(r.text().await.unwrap(), presented(&one_cert), "{method}");
    }
    // Renewed on disk: the next connections present the new certificate (the upstream closes each one).
    std::fs::copy(&two_key, &key).unwrap();
    std::fs::copy(&two_cert, &cert).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = plain().get(format!("{}/x", gate.url())).send().await.unwrap();
        let body = r.text().await.unwrap();
        if body == presented(&two_cert) {
            break;
        }
        assert_eq!(
            body,
            presented(&one_cert),
            "the old certificate until the new one is read"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never presented"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And only the new one from then on: no connection resumes a TLS session made under the old one.
    for _ in 0..5 {
        let r = plain().get(format!("{}/x", gate.url())).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), presented(&two_cert));
    }

    // An entry's own pair, next to an app that asks for none.
    let app = Upstream::start().await;
    let entry = format!(
        "{public}\n[[upstreams]]\nprefix = \"/secure\"\nurl = \"{url}\"\n{ca}tls_client_cert_file = {:?}\n\
         tls_client_key_file = {:?}\n",
        one_cert.display().to_string(),
        one_key.display().to_string()
    );
    let mixed = TestGate::start(&idp, &app.url(), "", &entry).await;
    let r = plain().get(format!("{}/secure/y", mixed.url())).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), presented(&one_cert));
    let r = plain().get(format!("{}/plain", mixed.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A pair that does not load stops the start, naming its key.
    let toml = |pair: &str| {
        gate_toml("https://a.example.com", &url, "https://t.logto.app", "", "")
            .replace("[upstream]\n", &format!("[upstream]\n{pair}"))
    };
    for (pair, says) in [
        (
            "tls_client_cert_file = \"/nonexistent/c.pem\"\ntls_client_key_file = \"/nonexistent/k.pem\"\n".to_owned(),
            "upstream.tls_client_cert_file: cannot read certificates from /nonexistent/c.pem",
        ),
        (
            format!(
                "tls_client_cert_file = {:?}\ntls_client_key_file = {:?}\n",
                one_cert.display().to_string(),
                two_key.display().to_string()
            ),
            "upstream.tls_client_key_file does not belong to upstream.tls_client_cert_file",
        ),
    ] {
        assert_refused(&toml(&pair), says);
    }
}

/// A small HTTPS server with the given certificate; returns its port. Its answers carry the name the client sent in
/// SNI (`X-Sni`, empty without one) and the request's `Host` (`X-Host`). Without `clients` it answers
/// `secure:<path>`; with them it requires a client certificate signed by (here: one of) them, answers
/// `client:<the certificate presented, base64 DER>` and closes each connection after its answer.
async fn tls_upstream(cert: &std::path::Path, key: &std::path::Path, clients: &[&std::path::Path]) -> u16 {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mutual = !clients.is_empty();
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        for client in clients {
            roots
                .add(rustls::pki_types::CertificateDer::from(der_of(client)))
                .unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(c.as_ref())
                });
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = match &presented {
                        Some(presented) => format!("client:{presented}"),
                        None => format!("secure:{}", req.uri().path()),
                    };
                    let host = req.headers().get("host").cloned();
                    let sni = sni.clone();
                    async move {
                        let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                        resp.headers_mut().insert("x-sni", sni.parse().unwrap());
                        if let Some(host) = host {
                            resp.headers_mut().insert("x-host", host);
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(!mutual)
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// An `[[upstreams]]` entry's `response_headers` go over `[response_headers]` on the answers to the requests it
/// serves (the app's, and the gate's own pages for them), on both client paths; the other apps keep the shared
/// fields; an entry's field is checked like a shared one.
#[tokio::test]
async fn an_entry_sets_its_own_response_headers_over_the_shared_ones() {
    let idp = Idp::start(IdpOptions::default());
    let (default, grafana) = (Upstream::start().await, Upstream::start().await);
    let extra = format!(
        "[response_headers]\n\"Content-Security-Policy\" = \"default-src 'self'\"\n\
         \"Strict-Transport-Security\" = \"max-age=600\"\n\
         [[upstreams]]\nprefix = \"/grafana\"\nstrip_prefix = true\nurl = \"{}\"\n\
         response_headers = {{ \"Content-Security-Policy\" = \"frame-ancestors https://wiki.example.com\", \
         \"X-App-Version\" = \"\" }}\n\
         [[rules]]\nprefix = \"/grafana/admin\"\nroles = [\"nobody-has-this\"]\n",
        grafana.url()
    );
    let gate = TestGate::start(&idp, &default.url(), "", &extra).await;
    let cookie = signed_in_cookie(&idp, &gate).await;
    let field = |r: &reqwest::Response, name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    for method in ["GET", "POST"] {
        let r = with_cookie(method, format!("{}/grafana/branded", gate.url()), &cookie).await;
        assert_eq!(r.status(), StatusCode::OK, "{method}");
        assert_eq!(
            field(&r, "content-security-policy").as_deref(),
            Some("frame-ancestors https://wiki.example.com"),
            "{method}"
        );
        assert_eq!(
            field(&r, "strict-transport-security").as_deref(),
            Some("max-age=600"),
            "{method}"
        );
        assert_eq!(field(&r, "x-app-version"), None, "{method}: removed for this app");
        let r = with_cookie(method, format!("{}/branded", gate.url()), &cookie).await;
        assert_eq!(
            field(&r, "content-security-policy").as_deref(),
            Some("default-src 'self'"),
            "{method}"
        );
        assert_eq!(
            field(&r, "x-app-version").as_deref(),
            Some("7"),
            "{method}: kept for the other app"
        );
    }
    assert_eq!(grafana.last().path, "/branded");
    // The gate's own page for a request to the entry (a 403 here) gets the entry's fields it does not set itself.
    let r = plain()
        .get(format!("{}/grafana/admin", gate.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(field(&r, "strict-transport-security").as_deref(), Some("max-age=600"));
    assert!(field(&r, "content-security-policy").is_some_and(|csp| csp.contains("frame-ancestors 'none'")));

    let base = gate_toml(
        "https://a.example.com",
        "http://127.0.0.1:1",
        "https://t.logto.app",
        "",
        "",
    );
    let bad = format!(
        "{base}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"http://127.0.0.1:2\"\nresponse_headers = {{ \"Set-Cookie\" = \"x=1\" }}\n"
    );
    assert_refused(&bad, "upstreams[0].response_headers.Set-Cookie: ");
}

/// `request_headers` set fields on every request to the app (a legacy app's fixed credentials, an API key that
/// proves the request came through the gate) and remove others: `[upstream]`'s for every app, an entry's own over
/// them. A client's copy never reaches the app, in any spelling, on either client path (bodiless `GET` through the
/// lean client, `POST` through hyper's), signed in or on a public path; and a field the gate owns cannot be set.
#[tokio::test]
async fn request_headers_are_set_on_every_request_to_the_app() {
    let idp = Idp::start(IdpOptions::default());
    let (default, grafana) = (Upstream::start().await, Upstream::start().await);
    let extra = format!(
        "[[upstreams]]\nprefix = \"/grafana\"\nstrip_prefix = true\nurl = \"{}\"\n\
         request_headers = {{ \"X-Api-Key\" = \"grafana-key\", \"X-Grafana-Org\" = \"2\" }}\n\
         [[rules]]\nprefix = \"/open\"\nallow = \"public\"\n",
        grafana.url()
    );
    let gate = TestGate::start_edited(
        &idp,
        &default.url(),
        "",
        &extra,
        in_upstream("request_headers = { \"X-Api-Key\" = \"shared key\", \"X-Debug\" = \"\" }"),
    )
    .await;
    let cookie = signed_in_cookie(&idp, &gate).await;
    for (path, app, key, org) in [
        ("/page", &default, "shared key", None),
        ("/open/page", &default, "shared key", None),
        ("/grafana/page", &grafana, "grafana-key", Some("2")),
    ] {
        for method in ["GET", "POST"] {
            // The client's own copies, as sent and in the `_` spelling PHP reads as the same variable.
            let r = plain()
                .request(method.parse().unwrap(), format!("{}{path}", gate.url()))
                .header("cookie", &cookie)
                .header("x-api-key", "forged")
                .header("x_api_key", "forged too")
                .header("x-debug", "1")
                .header("x-grafana-org", "1")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{method} {path}");
            let seen = app.last();
            assert_eq!(seen.method, method);
            assert_eq!(seen.header_count("x-api-key"), 1, "{method} {path}: {:?}", seen.headers);
            assert_eq!(seen.header("x-api-key"), Some(key), "{method} {path}");
            assert_eq!(seen.header("x_api_key"), None, "{method} {path}");
            assert_eq!(seen.header("x-debug"), None, "{method} {path}: removed for every app");
            assert_eq!(
                seen.header("x-grafana-org"),
                Some(org.unwrap_or("1")),
                "{method} {path}"
            );
            // The gate's own fields are untouched.
            if path != "/open/page" {
                assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"), "{method} {path}");
            }
        }
    }

    // The fields the gate owns, and an identity field in any spelling, are refused at start, naming the key.
    for (table, says) in [
        (
            "{ \"X_Forwarded_User\" = \"admin\" }",
            "upstream.request_headers.X_Forwarded_User: the gate sends the user's identity in this header",
        ),
        (
            "{ \"X-Forwarded-For\" = \"10.0.0.1\" }",
            "upstream.request_headers.X-Forwarded-For: the gate sets or removes this header itself",
        ),
        (
            "{ \"Content-Length\" = \"0\" }",
            "upstream.request_headers.Content-Length: this header frames the request",
        ),
    ] {
        let toml = gate_toml("https://a.example.com", &default.url(), "https://t.logto.app", "", "")
            .replace("[upstream]\n", &format!("[upstream]\nrequest_headers = {table}\n"));
        assert_refused(&toml, says);
    }
}

/// A field's value can live in a file (a Kubernetes secret, a systemd credential) instead of the configuration:
/// read at start without its final line break, merged with the inline fields as they are (an entry's over
/// `[upstream]`'s, whichever table either is in), and refused naming the key when it cannot be a field.
#[tokio::test]
async fn request_header_values_can_come_from_files() {
    let idp = Idp::start(IdpOptions::default());
    let (default, grafana, ci) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let (api_key, ci_token) = (dir.path().join("api-key"), dir.path().join("ci-token"));
    std::fs::write(&api_key, "key-from-a-secret\n").unwrap();
    std::fs::write(&ci_token, "Bearer ci-token").unwrap();
    let extra = format!(
        "[[upstreams]]\nprefix = \"/grafana\"\nurl = \"{}\"\nrequest_headers = {{ \"X-Api-Key\" = \"grafana-key\" }}\n\
         [[upstreams]]\nprefix = \"/ci\"\nurl = \"{}\"\nrequest_headers_files = {{ \"X-Ci-Token\" = \"{}\" }}\n",
        grafana.url(),
        ci.url(),
        ci_token.display()
    );
    let shared = format!(
        "request_headers_files = {{ \"X-Api-Key\" = \"{}\" }}",
        api_key.display()
    );
    let edit = |t: String| t.replace("[upstream]\n", &format!("[upstream]\n{shared}\n"));
    let gate = TestGate::start_edited(&idp, &default.url(), "", &extra, edit).await;
    let cookie = signed_in_cookie(&idp, &gate).await;
    for (path, app, key, token) in [
        ("/page", &default, "key-from-a-secret", None),
        ("/grafana/page", &grafana, "grafana-key", None),
        ("/ci/page", &ci, "key-from-a-secret", Some("Bearer ci-token")),
    ] {
        let r = plain()
            .get(format!("{}{path}", gate.url()))
            .header("cookie", &cookie)
            .header("x-api-key", "forged")
            .header("x-ci-token", "forged")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let seen = app.last();
        assert_eq!(seen.header_count("x-api-key"), 1, "{path}: {:?}", seen.headers);
        assert_eq!(seen.header("x-api-key"), Some(key), "{path}");
        assert_eq!(seen.header("x-ci-token"), Some(token.unwrap_or("forged")), "{path}");
    }

    let broken = dir.path().join("broken");
    std::fs::write(&broken, "two\nlines\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path().join("missing");
    for (table, says) in [
        (
            format!(
                "request_headers_files = {{ \"X-Api-Key\" = \"{}\" }}",
                missing.display()
            ),
            "upstream.request_headers_files.X-Api-Key: cannot read",
        ),
        (
            format!("request_headers_files = {{ \"X-Api-Key\" = \"{}\" }}", broken.display()),
            "upstream.request_headers_files.X-Api-Key: ",
        ),
        (
            format!("request_headers_files = {{ \"X-Api-Key\" = \"{}\" }}", empty.display()),
            "upstream.request_headers_files.X-Api-Key: ",
        ),
        (
            format!(
                "request_headers = {{ \"X-Api-Key\" = \"k\" }}\nrequest_headers_files = {{ \"x-api-key\" = \"{}\" }}",
                api_key.display()
            ),
            "upstream.request_headers_files.x-api-key: x-api-key is in upstream.request_headers too",
        ),
        (
            format!(
                "request_headers_files = {{ \"X-Forwarded-User\" = \"{}\" }}",
                api_key.display()
            ),
            "upstream.request_headers_files.X-Forwarded-User: the gate sends the user's identity",
        ),
    ] {
        let toml = gate_toml("https://a.example.com", &default.url(), "https://t.logto.app", "", "")
            .replace("[upstream]\n", &format!("[upstream]\n{table}\n"));
        assert_refused(&toml, says);
    }
    let err = logto_gate::Config::from_toml_str(
        &gate_toml("https://a.example.com", &default.url(), "https://t.logto.app", "", "").replace(
            "[upstream]\n",
            &format!(
                "[upstream]\nrequest_headers_files = {{ \"X-Api-Key\" = \"{}\" }}\n",
                broken.display()
            ),
        ),
        Vec::new(),
    )
    .expect_err("two lines");
    assert!(err.to_string().contains("is not a valid header value"), "{err}");
}

/// A field's file that changes is read again without a restart, whether Kubernetes updates the mounted secret (a
/// link swapped in one rename) or an operator writes it in place; a new text that cannot be a field keeps the value
/// in use, with a warning naming the key and the file. No value is ever logged.
#[tokio::test]
async fn a_request_field_file_that_changes_is_read_again_without_a_restart() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let mut volume = SecretVolume::new(&[("api-key", "secret-one\n")]);
    // A second file, in place: once its change is seen, every change made before it has been checked too.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "m0").unwrap();
    let files = format!(
        "request_headers_files = {{ \"X-Api-Key\" = {}, \"X-Marker\" = \"{}\" }}",
        volume.toml_path("api-key"),
        marker.display()
    );
    let mut gate = logging_json(&idp, &upstream, "info", |t| {
        format!(
            "{}\n[[rules]]\nprefix = \"/\"\nallow = \"public\"\n",
            t.replace("[upstream]\n", &format!("[upstream]\n{files}\n"))
        )
    })
    .await;
    let url = gate.url();
    let seen = || async {
        let r = plain().get(format!("{url}/page")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let last = upstream.last();
        let field = |name| last.header(name).unwrap_or("").to_owned();
        (field("x-api-key"), field("x-marker"))
    };
    // Each change within 10 s (the files are checked every 2 s).
    let until = |key: &'static str, mark: &'static str| {
        let seen = &seen;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let now = seen().await;
                if now == (key.to_owned(), mark.to_owned()) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still {now:?}, not {key}, {mark}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(seen().await, ("secret-one".to_owned(), "m0".to_owned()));
    // Kubernetes' update: a new directory, then the link swapped in one rename.
    volume.update(&[("api-key", "secret-two\n")]);
    until("secret-two", "m0").await;
    // Written in place.
    volume.write_in_place("api-key", "secret-three");
    until("secret-three", "m0").await;
    // Two lines, then an empty file: neither is a value; the one in use stays.
    for (bad, mark) in [("two\nlines\n", "m1"), ("\n", "m2")] {
        volume.write_in_place("api-key", bad);
        std::fs::write(&marker, mark).unwrap();
        until("secret-three", mark).await;
    }
    // Mended: read again.
    volume.write_in_place("api-key", "secret-four");
    until("secret-four", "m2").await;
    let (lines, parsed) = stopped_log(&mut gate).await;
    let warnings: Vec<&serde_json::Value> = parsed
        .iter()
        .filter(|l| l["level"] == "WARN" && l["key"] == "upstream.request_headers_files.X-Api-Key")
        .collect();
    assert_eq!(warnings.len(), 2, "{lines:#?}");
    assert!(
        warnings[0]["error"]
            .as_str()
            .unwrap()
            .contains("is not a valid header value")
            && warnings[1]["error"].as_str().unwrap().contains("is empty"),
        "{warnings:#?}"
    );
    // secret-two, -three, -four, and the marker's m1 and m2.
    let values = ["secret-one", "secret-two", "secret-three", "secret-four", "lines"];
    assert_reloads_and_no_secret(&(lines, parsed), "request field value reloaded", 5, &values);
}

/// The access token is a credential for Logto's APIs: only the apps that need it should get it. An
/// `[[upstreams]]` entry's `pass_access_token` decides for its app, over `[upstream]`'s, both ways; sessions keep
/// the token when any app is sent it.
#[tokio::test]
async fn an_entry_chooses_whether_its_app_is_sent_the_access_token() {
    let idp = Idp::start(IdpOptions::default());
    let (default, api, other) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let entries = format!(
        "[[upstreams]]\nprefix = \"/api\"\nurl = \"{}\"\npass_access_token = true\n\
         [[upstreams]]\nprefix = \"/other\"\nurl = \"{}\"\n",
        api.url(),
        other.url()
    );
    let bearer = |seen: &crate::support::upstream::Seen| {
        seen.header("authorization")
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 20)
    };
    for (shared, want) in [("false", [false, true, false]), ("true", [true, true, true])] {
        let line: &'static str = Box::leak(format!("pass_access_token = {shared}").into_boxed_str());
        let gate = TestGate::start_edited(&idp, &default.url(), "", &entries, in_upstream(line)).await;
        let cookie = signed_in_cookie(&idp, &gate).await;
        for ((path, app), want) in [("/x", &default), ("/api/x", &api), ("/other/x", &other)]
            .into_iter()
            .zip(want)
        {
            for method in ["GET", "POST"] {
                let r = with_cookie(method, format!("{}{path}", gate.url()), &cookie).await;
                assert_eq!(r.status(), StatusCode::OK, "{shared} {method} {path}");
                let seen = app.last();
                assert_eq!(
                    bearer(&seen),
                    want,
                    "[upstream] {shared}, {method} {path}: {:?}",
                    seen.headers
                );
            }
        }
    }
    // And the other way: an entry keeps its app from the token [upstream] sends the rest.
    let entries = format!(
        "[[upstreams]]\nprefix = \"/other\"\nurl = \"{}\"\npass_access_token = false\n",
        other.url()
    );
    let gate = TestGate::start_edited(
        &idp,
        &default.url(),
        "",
        &entries,
        in_upstream("pass_access_token = true"),
    )
    .await;
    let cookie = signed_in_cookie(&idp, &gate).await;
    for (path, app, want) in [("/x", &default, true), ("/other/x", &other, false)] {
        let r = plain()
            .get(format!("{}{path}", gate.url()))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(bearer(&app.last()), want, "{path}");
    }
}

/// What an HTTP/2 test app saw of a request: its version, path, and the fields asked about.
#[derive(Debug, Clone)]
struct SeenH2 {
    version: http::Version,
    path: String,
    te: Option<String>,
    host: Option<String>,
    forwarded_user: Option<String>,
    body: Vec<u8>,
    /// The request's trailer fields, by name.
    trailers: Vec<String>,
}

/// A gRPC-like app speaking HTTP/2 without TLS (prior knowledge only): it answers `h2:<path>` with the trailers
/// `grpc-status: 0` and `grpc-message: ok`, and records each request. Returns its port and the record.
async fn h2c_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<SeenH2>>>) {
    use http_body_util::BodyExt;
    let seen: std::sync::Arc<std::sync::Mutex<Vec<SeenH2>>> = std::sync::Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = std::sync::Arc::clone(&record);
                    async move {
                        let field = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
                        let (version, path) = (req.version(), req.uri().path().to_owned());
                        let (te, host, forwarded_user) = (field("te"), field("host"), field("x-forwarded-user"));
                        let collected = req.into_body().collect().await.ok();
                        let trailers = collected
                            .as_ref()
                            .and_then(|c| c.trailers())
                            .map(|t| t.keys().map(|name| name.as_str().to_owned()).collect())
                            .unwrap_or_default();
                        let body = collected.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        record.lock().unwrap().push(SeenH2 {
                            version,
                            path: path.clone(),
                            te,
                            host,
                            forwarded_user,
                            body,
                            trailers,
                        });
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        trailers.insert("grpc-message", http::HeaderValue::from_static("ok"));
                        let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                            Ok(hyper::body::Frame::data(bytes::Bytes::from(format!("h2:{path}")))),
                            Ok(hyper::body::Frame::trailers(trailers)),
                        ];
                        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                        let mut resp = hyper::Response::new(body);
                        resp.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (port, seen)
}

/// An `h2c://` upstream (a gRPC service) is spoken to over HTTP/2 with prior knowledge: a client speaking HTTP/2 to
/// the gate gets the app's trailers (gRPC's status) and the app gets `te: trailers`, the host in `:authority`, the
/// body whole, and never a client's identity field; an HTTP/1.1 client is served too (without trailers). A
/// WebSocket cannot be opened to it (HTTP/2 has no upgrade): 502. `preserve_host` cannot go with it.
#[tokio::test]
async fn an_h2c_upstream_is_spoken_to_over_http2_with_its_trailers() {
    use http_body_util::BodyExt;
    let (port, seen) = h2c_upstream().await;
    let idp = Idp::start(IdpOptions::default());
    let app = Upstream::start().await;
    let extra = format!(
        "[[upstreams]]\nprefix = \"/grpc\"\nurl = \"h2c://127.0.0.1:{port}\"\n\
         [[rules]]\nprefix = \"/grpc\"\nallow = \"public\"\n"
    );
    let gate = TestGate::start(&idp, &app.url(), "", &extra).await;

    // HTTP/2 to the gate with prior knowledge (as gRPC clients connect to a plain port).
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://127.0.0.1:{}/grpc/echo.Echo/Say", gate.port))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-forwarded-user", "admin")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"\0\0\0\0\x03abc")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("the app's trailers reach an HTTP/2 client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes().as_ref(), b"h2:/grpc/echo.Echo/Say");
    let got = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(got.path, "/grpc/echo.Echo/Say");
    assert_eq!(got.te.as_deref(), Some("trailers"));
    assert_eq!(got.host, None, "the host travels in :authority");
    assert_eq!(
        got.forwarded_user, None,
        "a client's identity field never reaches the app"
    );
    assert_eq!(got.body, b"\0\0\0\0\x03abc");

    // An HTTP/1.1 client: served over HTTP/2 behind the gate, without trailers or `te`.
    let r = plain().get(format!("{}/grpc/plain", gate.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "h2:/grpc/plain");
    let got = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((got.version, got.te), (http::Version::HTTP_2, None));
    // The other app is unchanged.
    let r = plain()
        .get(format!("{}/_logto/healthz", gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // No WebSocket to an HTTP/2 app.
    let upgrade = format!(
        "GET /grpc/ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gate.port
    );
    assert_eq!(first_status(gate.port, upgrade.as_bytes()).await, 502);

    // `check` asks it over HTTP/2 too.
    idp.register_client(APP_ID, APP_SECRET, "http://127.0.0.1:4180");
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout) = check_routes(
        dir.path(),
        gate_toml("http://127.0.0.1:4180", &app.url(), &idp.endpoint(), "", &extra),
    )
    .await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!("*/grpc -> h2c://127.0.0.1:{port}/ (answers HEAD with 200)")),
        "{stdout}"
    );

    let toml = gate_toml(
        "https://a.example.com",
        &format!("h2c://127.0.0.1:{port}"),
        "https://t.logto.app",
        "",
        "",
    )
    .replace("[upstream]\n", "[upstream]\npreserve_host = true\n");
    assert_refused(&toml, "upstream.preserve_host: cannot go with an h2c:// upstream");
}

/// A request's trailer fields are never passed on to an `h2c://` app either (HTTP/2 carries them to the app's
/// request, where an HTTP/1.1 app gets none): a client cannot send identity fields after its body, over HTTP/2 or over
/// HTTP/1.1 chunked, on the HTTP/1 front or on hyper's server after a hand-over. The body still arrives whole.
#[tokio::test]
async fn request_trailers_never_reach_an_h2c_upstream() {
    use http_body_util::BodyExt;
    let (port, seen) = h2c_upstream().await;
    let idp = Idp::start(IdpOptions::default());
    let app = Upstream::start().await;
    let extra = format!("[[upstreams]]\nprefix = \"/grpc\"\nurl = \"h2c://127.0.0.1:{port}\"\n");
    let gate = TestGate::start(&idp, &app.url(), "", &extra).await;
    let cookie = signed_in_cookie(&idp, &gate).await;

    // The control: the app reads trailers sent to it directly.
    let (mut direct, _) = h2_connection(port).await;
    let with_trailers = |uri: String| {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-forwarded-user", http::HeaderValue::from_static("admin"));
        trailers.insert("x-sum", http::HeaderValue::from_static("532"));
        let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
            Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"hello"))),
            Ok(hyper::body::Frame::trailers(trailers)),
        ];
        hyper::Request::post(uri)
            .header("cookie", &cookie)
            .header("te", "trailers")
            .body(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap()
    };
    let resp = direct
        .send_request(with_trailers(format!("http://127.0.0.1:{port}/grpc/direct")))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let got = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        got.trailers,
        ["x-forwarded-user", "x-sum"],
        "the control: the app reads trailers"
    );

    // HTTP/2 to the gate.
    let (mut send, _) = h2_connection(gate.port).await;
    let resp = send
        .send_request(with_trailers(format!("http://127.0.0.1:{}/grpc/h2", gate.port)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().map(|t| t["grpc-status"].clone()),
        Some("0".parse().unwrap())
    );
    let got = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((got.path.as_str(), got.body.as_slice()), ("/grpc/h2", &b"hello"[..]));
    assert_eq!(
        got.trailers,
        Vec::<String>::new(),
        "HTTP/2: a client's trailers reached the app"
    );

    // HTTP/1.1 chunked with trailers, on the HTTP/1 front and on hyper's server after a hand-over.
    let hand_over = "GET /_logto/healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n";
    for before in ["", hand_over] {
        let request = format!(
            "{before}POST /grpc/h1 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked\r\n\
             Trailer: X-Forwarded-User, X-Sum\r\nConnection: close\r\n\r\n\
             5\r\nhello\r\n0\r\nX-Forwarded-User: admin\r\nX-Sum: 532\r\n\r\n"
        );
        let text = exchange_until_closed(gate.port, request.as_bytes()).await;
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("h2:/grpc/h1"),
            "{before:?}: {text}"
        );
        let got = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(got.body, b"hello", "{before:?}");
        assert_eq!(
            got.trailers,
            Vec::<String>::new(),
            "HTTP/1.1 {before:?}: a client's trailers reached the app"
        );
    }
}

/// Signs alice in at `gate` and returns her session cookie as a `Cookie` field's value.
async fn signed_in_cookie(idp: &Idp, gate: &TestGate) -> String {
    let alice = Browser::new(idp);
    alice.sign_in(gate, "/").await;
    format!("logto_gate={}", alice.cookie(&gate.url(), "logto_gate").unwrap())
}
