//! Forward-auth mode (`/_logto/auth`) directly and behind a real nginx using deploy/examples/nginx-forward-auth.conf.

use reqwest::StatusCode;

use crate::support::nginx::Nginx;
use crate::support::*;

pub(crate) const RULES: &str = r#"
[[rules]]
prefix = "/public"
allow = "public"

[[rules]]
prefix = "/admin"
roles = ["admin"]
"#;

#[tokio::test]
async fn auth_endpoint_answers_202_401_403_and_ignores_forwarding_headers_from_untrusted_peers() {
    // No trusted proxies: X-Forwarded-Uri is ignored, the decision is about /_logto/auth itself.
    let s = Stack::with("", RULES).await;
    let anon = plain()
        .get(format!("{}/_logto/auth", s.gate.url()))
        .header("X-Forwarded-Uri", "/public/page")
        .header("X-Original-URI", "/public/page")
        .send()
        .await
        .unwrap();
    assert_eq!(
        anon.status(),
        StatusCode::UNAUTHORIZED,
        "an untrusted peer cannot claim a public URI"
    );

    // Trusted: the proxy's headers decide. The range is written in its IPv4-mapped IPv6 form, which must trust the
    // IPv4 peer all the same (the nginx test below writes the plain IPv4 form).
    let t = Stack::edited(
        IdpOptions::default(),
        "",
        RULES,
        in_server("trusted_proxies = [\"::ffff:127.0.0.1/128\"]"),
    )
    .await;
    let auth = format!("{}/_logto/auth", t.gate.url());
    let public = plain()
        .get(&auth)
        .header("X-Forwarded-Uri", "/public/page?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::ACCEPTED);
    assert!(public.headers().get("x-auth-request-user").is_none());
    let private = plain()
        .get(&auth)
        .header("X-Original-URI", "/private")
        .send()
        .await
        .unwrap();
    assert_eq!(private.status(), StatusCode::UNAUTHORIZED);
    assert!(private.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let sneaky = plain()
        .get(&auth)
        .header("X-Forwarded-Uri", "/public/../admin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        sneaky.status(),
        StatusCode::UNAUTHORIZED,
        "the forwarded URI is normalised too"
    );

    let alice = t.browser();
    alice.sign_in(&t.gate, "/").await;
    let ok = alice
        .client
        .get(&auth)
        .header("X-Forwarded-Uri", "/admin/x")
        .header("X-Forwarded-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    let h = ok.headers();
    assert_eq!(h["x-auth-request-user"], "u_alice0001");
    assert_eq!(h["x-auth-request-email"], "alice@example.com");
    assert_eq!(h["x-auth-request-preferred-username"], "alice");
    assert_eq!(h["x-auth-request-groups"], "admin,editor");
    assert_eq!(h["x-forwarded-user"], "u_alice0001");

    let bob = t.browser();
    bob.login_as("bob");
    bob.sign_in(&t.gate, "/").await;
    let denied = bob
        .client
        .get(&auth)
        .header("X-Forwarded-Uri", "/admin/x")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);

    // Envoy's HTTP ext_authz form: the original path appended, the original method, 200 when allowed.
    let envoy = alice.client.delete(format!("{auth}/admin/x?y=1")).send().await.unwrap();
    assert_eq!(envoy.status(), StatusCode::OK);
    assert_eq!(envoy.headers()["x-auth-request-user"], "u_alice0001");
    assert_eq!(
        bob.client.get(format!("{auth}/admin/x")).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        plain().get(format!("{auth}/public/x")).send().await.unwrap().status(),
        StatusCode::OK
    );
    // From an untrusted peer the appended path is not believed.
    let untrusted = plain()
        .get(format!("{}/_logto/auth/public/x", s.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(untrusted.status(), StatusCode::UNAUTHORIZED);
}

/// A proxy passes the client's own fields to the gate next to the ones it sets: a target field it does not set is
/// the client's to write. The gate reads no target, method or host field when they disagree, nor a field given
/// twice or not as text (another, perhaps the client's, would be read in its place), and answers 400: before, a
/// client's `X-Forwarded-Uri: /public/x` behind a proxy that set `X-Original-URI: /admin` had the gate rule on the
/// public path. A trusted proxy that names no request is answered about the request's own path, where the gate
/// ruled on `/`; ingress-nginx's `X-Original-URL` and `X-Original-Method` are read (with the same agreement), where
/// they were ignored.
#[tokio::test]
async fn a_target_a_client_could_have_written_is_refused_not_read() {
    let rules = format!(
        "{RULES}\n[[rules]]\nprefix = \"/\"\nhost = \"open.example.com\"\nallow = \"public\"\n\n[[rules]]\n\
         prefix = \"/reports\"\nmethods = [\"DELETE\"]\nallow = \"deny\"\n\n[[rules]]\npath = \"^/$\"\n\
         allow = \"public\"\n"
    );
    let t = Stack::edited(
        IdpOptions::default(),
        "",
        &rules,
        in_server("trusted_proxies = [\"127.0.0.1/32\"]"),
    )
    .await;
    let auth = format!("{}/_logto/auth", t.gate.url());
    let ask = |fields: Vec<(&'static str, &'static [u8])>| {
        let auth = auth.clone();
        async move {
            let mut request = plain().get(auth);
            for (name, value) in fields {
                request = request.header(name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
            }
            let resp = request.send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    let (status, body) = ask(vec![("X-Original-URI", b"/admin"), ("X-Forwarded-Uri", b"/public/x")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("X-Forwarded-Uri and X-Original-URI name different requests"),
        "{body}"
    );
    let (status, body) = ask(vec![("X-Original-URI", b"/public/x"), ("X-Original-URI", b"/admin")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("X-Original-URI is given more than once"), "{body}");
    let (status, body) = ask(vec![
        ("X-Original-URI", b"/admin/\xff"),
        ("X-Forwarded-Uri", b"/public/x"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not text"), "{body}");
    let (status, body) = ask(vec![
        ("X-Forwarded-Uri", b"/public/x"),
        ("X-Forwarded-Method", b"GET"),
        ("X-Forwarded-Method", b"DELETE"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("X-Forwarded-Method is given more than once"), "{body}");
    // Both fields naming the same request, as the shipped nginx example sets them: read.
    let (status, _) = ask(vec![
        ("X-Original-URI", b"/public/x"),
        ("X-Forwarded-Uri", b"/public/x"),
    ])
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // A trusted proxy that names no request is answered about its own, `/_logto/auth` (the default rule: 401),
    // as anyone else is, not as if it had asked about `/` (public here).
    let (status, _) = ask(vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = ask(vec![("X-Forwarded-Uri", b"/")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // ingress-nginx's external auth: the absolute X-Original-URL (its host too) and X-Original-Method, and Host the
    // gate's own name. A client's field that names another request, method or host is refused.
    let (status, _) = ask(vec![
        ("X-Original-URL", b"https://open.example.com/x?y=1"),
        ("Host", b"gate.svc"),
    ])
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "the host's public rule");
    let (status, _) = ask(vec![("X-Original-URL", b"https://app.example.com/public/x")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = ask(vec![("X-Original-URL", b"https://app.example.com/x")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = ask(vec![
        ("X-Original-URL", b"https://app.example.com/reports"),
        ("X-Original-Method", b"DELETE"),
    ])
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the method's deny rule");
    for (name, value) in [
        ("X-Forwarded-Uri", &b"/public/x"[..]),
        ("X-Original-URI", b"/public/x"),
        ("X-Forwarded-Host", b"open.example.com"),
        ("X-Forwarded-Method", b"GET"),
    ] {
        let (status, body) = ask(vec![
            ("X-Original-URL", b"https://app.example.com/reports"),
            ("X-Original-Method", b"DELETE"),
            (name, value),
        ])
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert!(body.contains("name different"), "{name}: {body}");
    }
    // The sign-in a proxy sends a browser to after a 401 reads its target the same way.
    let sign_in = plain()
        .get(format!("{}/_logto/sign-in", t.gate.url()))
        .header("X-Original-URI", "/admin")
        .header("X-Forwarded-Uri", "/elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), StatusCode::BAD_REQUEST);
}

/// Rules on the client's address for [`a_client_claims_no_other_address_through_the_shipped_nginx`] and its Caddy
/// twin: one network the client is not on, and the client's own address.
pub(crate) const ADDRESS_RULES: &str = r#"
[[rules]]
prefix = "/intranet"
client_ips = ["198.51.100.0/24"]
allow = "public"

[[rules]]
prefix = "/loopback-two"
client_ips = ["127.0.0.2/32"]
allow = "public"
"#;

/// Through the proxy at `url` (in front of `upstream`), from 127.0.0.2 (no trusted proxy in these tests): a client's
/// `X-Forwarded-For` claiming an allowed network reaches nothing, and the client's real address is the one ruled on.
pub(crate) async fn claims_no_other_address(url: &str, upstream: &Upstream) {
    claims_no_other_address_with(&plain_from_127_0_0_2(), url, upstream).await;
}

/// [`claims_no_other_address`] with `client`, which connects from 127.0.0.2.
pub(crate) async fn claims_no_other_address_with(client: &reqwest::Client, url: &str, upstream: &Upstream) {
    let count = upstream.count();
    for claimed in ["198.51.100.7", "198.51.100.7, 198.51.100.8"] {
        let resp = client
            .get(format!("{url}/intranet/x"))
            .header("X-Forwarded-For", claimed)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{claimed}");
    }
    assert_eq!(upstream.count(), count, "the app was not reached");
    for claimed in [None, Some("198.51.100.7")] {
        let mut request = client.get(format!("{url}/loopback-two/x"));
        if let Some(claimed) = claimed {
            request = request.header("X-Forwarded-For", claimed);
        }
        assert_eq!(request.send().await.unwrap().status(), StatusCode::OK, "{claimed:?}");
    }
}

/// Rules on the client's address (`client_ips`) through the shipped nginx configuration: nginx adds the address it
/// sees to a client's `X-Forwarded-For`, so the gate rules on that one. Before, the example passed the client's
/// field to the gate as it came, and a client writing an allowed address reached a rule meant for that network.
#[tokio::test]
async fn a_client_claims_no_other_address_through_the_shipped_nginx() {
    let rules = format!("{RULES}{ADDRESS_RULES}");
    let Some((_idp, upstream, _gate, nginx)) =
        behind_the_shipped_nginx_with(IdpOptions::default(), "", &rules, |t| t).await
    else {
        return;
    };
    claims_no_other_address(&nginx.url(), &upstream).await;
}

/// Through the proxy at `url` (in front of `upstream`): a request id a client chose reaches neither the gate's
/// answer nor the app; the proxy's own does, the same in both for one request through the gate.
pub(crate) async fn chooses_no_request_id(url: &str, upstream: &Upstream) {
    chooses_no_request_id_with(&plain(), url, upstream).await;
}

/// [`chooses_no_request_id`] with `client`.
pub(crate) async fn chooses_no_request_id_with(client: &reqwest::Client, url: &str, upstream: &Upstream) {
    const CHOSEN: &str = "req-of-another-user-0001";
    let own = client
        .get(format!("{url}/_logto/userinfo"))
        .header("X-Request-Id", CHOSEN)
        .send()
        .await
        .unwrap();
    let answered = own.headers()["x-request-id"].to_str().unwrap();
    assert!(
        answered != CHOSEN && answered.len() >= 16,
        "the gate answered with {answered}"
    );
    let public = client
        .get(format!("{url}/public/x"))
        .header("X-Request-Id", CHOSEN)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    let seen = upstream.last();
    let id = seen.header("x-request-id").unwrap_or_default();
    assert!(id != CHOSEN && id.len() >= 16, "the app got {id:?}");
    assert_eq!(seen.header_count("x-request-id"), 1);
}

/// Credentials of a scheme the gate does not read.
pub(crate) const BASIC: &str = "Basic dXNlcjpwdw==";

/// The answer to a GET of `url` by `client` with `Authorization: authorization` and the fields `also`.
pub(crate) async fn get_authorized(
    client: &reqwest::Client,
    url: &str,
    authorization: &str,
    also: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client.get(url).header("Authorization", authorization);
    for (name, value) in also {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Debian's nginx running deploy/examples/nginx-forward-auth.conf in front of a gate and the test app (`None`, after
/// saying what to install, without nginx).
async fn behind_the_shipped_nginx() -> Option<(Idp, Upstream, TestGate, Nginx)> {
    behind_the_shipped_nginx_with(IdpOptions::default(), "", RULES, |t| t).await
}

/// [`behind_the_shipped_nginx`] with an IdP started with `options` and `logto_extra`, `extra` in the gate's TOML,
/// which `edit` then changes.
async fn behind_the_shipped_nginx_with(
    options: IdpOptions,
    logto_extra: &str,
    extra: &str,
    edit: impl FnOnce(String) -> String,
) -> Option<(Idp, Upstream, TestGate, Nginx)> {
    if !have_tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx") {
        return None;
    }
    let nginx_port = free_port();
    let (idp, upstream, gate) = gate_behind_a_proxy(nginx_port, options, logto_extra, extra, edit).await;
    let nginx = the_shipped_nginx(nginx_port, &gate, &upstream.addr.to_string()).await;
    Some((idp, upstream, gate, nginx))
}

/// deploy/examples/`file`, an nginx configuration, asking `gate` in place of 127.0.0.1:4180.
pub(crate) fn nginx_example(file: &str, gate: &TestGate) -> String {
    let path = format!("{}/deploy/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .replace("127.0.0.1:4180", &format!("127.0.0.1:{}", gate.port))
}

/// Debian's nginx on 127.0.0.1:`port` running deploy/examples/nginx-forward-auth.conf, asking `gate` and passing
/// requests on to the app at `app` (`host:port`).
pub(crate) async fn the_shipped_nginx(port: u16, gate: &TestGate, app: &str) -> Nginx {
    let conf = nginx_example("nginx-forward-auth.conf", gate)
        .replace("127.0.0.1:8080", app)
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    Nginx::start(port, &conf).await
}

/// An IdP started with `options` and `logto_extra`, the test app, and a ready gate for a proxy in front on
/// 127.0.0.1:`proxy_port`: `server.public_url` is the proxy's origin, which the IdP has as the redirect URI, and
/// the proxy's address is in `server.trusted_proxies`; `extra` in the gate's TOML, which `edit` then changes.
pub(crate) async fn gate_behind_a_proxy(
    proxy_port: u16,
    options: IdpOptions,
    logto_extra: &str,
    extra: &str,
    edit: impl FnOnce(String) -> String,
) -> (Idp, Upstream, TestGate) {
    let public = format!("http://127.0.0.1:{proxy_port}");
    gate_behind_a_proxy_at(&public, options, logto_extra, extra, edit).await
}

/// [`gate_behind_a_proxy`] for a proxy whose origin is `public` (`https://127.0.0.1:<port>` for one ending TLS).
pub(crate) async fn gate_behind_a_proxy_at(
    public: &str,
    options: IdpOptions,
    logto_extra: &str,
    extra: &str,
    edit: impl FnOnce(String) -> String,
) -> (Idp, Upstream, TestGate) {
    let idp = Idp::start(options);
    let upstream = Upstream::start().await;
    let gate = TestGate::start_unready(
        &idp.endpoint(),
        &upstream.url(),
        logto_extra,
        extra,
        |t| {
            let t = t
                .lines()
                .map(|l| {
                    if l.starts_with("public_url") {
                        format!("public_url = \"{public}\"")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            edit(in_server("trusted_proxies = [\"127.0.0.1/32\"]")(t))
        },
        |_| idp.register_client(APP_ID, APP_SECRET, public),
    )
    .await;
    gate.wait_ready().await;
    (idp, upstream, gate)
}

#[tokio::test]
async fn nginx_auth_request_with_the_shipped_example_config() {
    let Some((idp, upstream, _gate, nginx)) = behind_the_shipped_nginx().await else {
        return;
    };

    // API client without a session: 401 from nginx, the app never sees it.
    let api = plain().get(format!("{}/api/items", nginx.url())).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    // Public route through nginx with a spoofed identity: passes, identity not believed.
    let public_resp = plain()
        .get(format!("{}/public/x", nginx.url()))
        .header("X-Forwarded-User", "mallory")
        .header("X_Forwarded_User", "mallory")
        .header("X-Auth-Request-User", "mallory")
        .header("X-Auth-Request-Access-Token", "forged")
        .header("Remote-User", "mallory")
        .header("X-Remote-User", "mallory")
        .header("X-Webauth-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(public_resp.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user").unwrap_or(""), "");
    assert_eq!(seen.header("x_forwarded_user"), None);
    // The commonest identity fields of other auth proxies, which the example clears.
    for name in ["remote-user", "x-remote-user", "x-webauth-user"] {
        assert_eq!(seen.header(name), None, "{name}");
    }
    // oauth2-proxy's names, which apps written for it read, are the gate's too.
    assert_eq!(seen.header("x-auth-request-user"), None);
    assert_eq!(seen.header("x-auth-request-access-token"), None);
    // A client's target field next to nginx's: nginx sets both, so the gate rules on the path asked for.
    for field in ["X-Forwarded-Uri", "X-Original-URI"] {
        let count = upstream.count();
        let spoofed = plain()
            .get(format!("{}/admin/secret", nginx.url()))
            .header(field, "/public/x")
            .header("X-Forwarded-Method", "OPTIONS")
            .send()
            .await
            .unwrap();
        assert_eq!(spoofed.status(), StatusCode::UNAUTHORIZED, "{field}");
        assert_eq!(upstream.count(), count, "{field}: the app was not reached");
    }
    chooses_no_request_id(&nginx.url(), &upstream).await;
    // The client's own credentials reach the app as they would through the gate itself (the example sets the
    // app's Authorization from the gate's answer, which repeats them).
    let basic = get_authorized(&plain(), &format!("{}/public/x", nginx.url()), BASIC, &[]).await;
    assert_eq!(basic.status(), StatusCode::OK);
    assert_eq!(upstream.last().header("authorization"), Some(BASIC));

    // A browser signs in through nginx and comes back to the exact URL.
    let b = Browser::new(&idp);
    let (hops, resp) = b.navigate(&format!("{}/reports?year=2026&q=x", nginx.url())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(
        hops.last().unwrap().url,
        format!("{}/reports?year=2026&q=x", nginx.url())
    );
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-groups"), Some("admin,editor"));
    assert_eq!(seen.path, "/reports?year=2026&q=x");
    // A person's request says no machine and no one acting for them, whatever the client sends.
    let spoofed = b
        .client
        .get(format!("{}/reports", nginx.url()))
        .header("X-Forwarded-Machine", "m2m-reporter")
        .header("X-Forwarded-Actor", "u_mallory")
        .header("X-Auth-Request-User", "u_mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-auth-request-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-machine"), None);
    assert_eq!(seen.header("x-forwarded-actor"), None);
    // Without upstream.pass_access_token a session's request keeps the client's Authorization, as through the gate.
    let with_basic = get_authorized(&b.client, &format!("{}/reports", nginx.url()), BASIC, &[]).await;
    assert_eq!(with_basic.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("authorization"), Some(BASIC));
    // An app's answer that says `public` still reaches the browser marked private, for any shared cache in front.
    let cacheable = b.client.get(format!("{}/cacheable", nginx.url())).send().await.unwrap();
    assert_eq!(cacheable.status(), StatusCode::OK);
    let cache_control: Vec<_> = cacheable.headers().get_all("cache-control").iter().collect();
    assert_eq!(cache_control, ["public, max-age=600, s-maxage=3600", "private"]);
    let cdn = b
        .client
        .get(format!("{}/cdn-cacheable", nginx.url()))
        .send()
        .await
        .unwrap();
    for targeted in CACHE_TARGETED_FIELDS {
        assert!(cdn.headers().get(targeted).is_none(), "{targeted}");
    }

    // Bob is signed in but not an admin: 403 through nginx.
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    let (_, resp) = bob.navigate(&format!("{}/", nginx.url())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let admin = bob.client.get(format!("{}/admin", nginx.url())).send().await.unwrap();
    assert_eq!(admin.status(), StatusCode::FORBIDDEN);
    drop(nginx);
}

/// A browser restoring forty tabs of the app starts a sign-in in each, one attempt cookie apiece (scoped to the
/// callback), and the one sign-in it finishes carries them all to the callback: through nginx, whose default limit
/// for one header field is 8 KiB (`large_client_header_buffers`), that `Cookie` field must still pass.
#[tokio::test]
async fn the_sign_in_of_a_browser_restoring_many_tabs_passes_nginx() {
    let Some((idp, _upstream, _gate, nginx)) = behind_the_shipped_nginx().await else {
        return;
    };
    let b = Browser::new(&idp);
    let mut to_logto = String::new();
    for tab in 0..40 {
        let resp = b
            .client
            .get(format!("{}/tab/{tab}", nginx.url()))
            .header("accept", "text/html")
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "tab {tab}");
        to_logto = resp.headers()["location"].to_str().unwrap().to_owned();
    }
    let (hops, resp) = b.follow(&to_logto, true).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(hops.last().unwrap().url, format!("{}/tab/39", nginx.url()));
}

/// Behind nginx's `auth_request` the gate renews a cookie session in its answer to the subrequest, and the shipped
/// configuration hands the new cookie to the browser: with refresh tokens Logto rotates at every use, the browser
/// must hold the new one, or its next refresh sends the consumed one and Logto ends the grant. Tested with a
/// session small enough for one cookie and one large enough to be cut into several.
async fn a_session_renewed_behind_nginx_reaches_the_browser(large: bool) {
    let options = IdpOptions {
        access_token_ttl: Some(4),
        refresh_tokens_aged: true,
        ..Default::default()
    };
    // A member of 400 organizations, which a rule reads: their ids make a session of several cookies, and no
    // header (which nginx would have to take in its 4 KiB buffer for the subrequest's answer).
    let extra = format!("{RULES}\n[[rules]]\nprefix = \"/team\"\norganizations = [\"org_team\"]\n");
    let Some((idp, upstream, _gate, nginx)) = behind_the_shipped_nginx_with(options, "", &extra, |t| t).await else {
        return;
    };
    let b = Browser::new(&idp);
    if large {
        idp.add_member_of_400_organizations();
        b.login_as("carol");
    }
    let (hops, resp) = b.navigate(&format!("{}/", nginx.url())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}\n{}", nginx.error_log());
    let signed_in = b.gate_cookies(&nginx.url());
    assert_eq!(signed_in.contains("logto_gate.2="), large, "{signed_in}");
    renewed_twice(&idp, &b, &upstream, &nginx.url()).await;
}

/// Two requests of the signed-in browser `b` through the proxy at `url` (in front of `upstream`), each after the
/// access token expired (the IdP's four seconds): each renews the session, the browser gets every new cookie and
/// nothing else, and the second renewal uses the refresh token the first brought (one grant, no reuse).
pub(crate) async fn renewed_twice(idp: &Idp, b: &Browser, upstream: &Upstream, url: &str) {
    for round in 1..=2 {
        let before = b.gate_cookies(url);
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        let resp = b.client.get(format!("{url}/round/{round}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "round {round}");
        let set: Vec<_> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|c| c.to_str().unwrap().to_owned())
            .collect();
        let held = b.gate_cookies(url);
        assert!(
            set.len() >= held.matches("logto_gate").count(),
            "round {round}: {set:?}"
        );
        assert!(
            set.iter().all(|c| c.starts_with("logto_gate")),
            "round {round}: {set:?}"
        );
        assert_ne!(held, before, "round {round}: the browser holds the renewed session");
        assert!(upstream.last().header("x-forwarded-user").is_some(), "round {round}");
    }
    assert_eq!(idp.stats()["grants"]["refresh_token"], 2, "{}", idp.stats());
    assert_eq!(idp.stats()["grants"]["refresh_token_error"], serde_json::Value::Null);
    assert_eq!(idp.live_grants(), 1);
}

#[tokio::test]
async fn a_session_in_one_cookie_renewed_behind_nginx_reaches_the_browser() {
    a_session_renewed_behind_nginx_reaches_the_browser(false).await;
}

#[tokio::test]
async fn a_session_in_several_cookies_renewed_behind_nginx_reaches_the_browser() {
    a_session_renewed_behind_nginx_reaches_the_browser(true).await;
}

/// With `upstream.pass_access_token`, a browser signs in through the proxy at `url` (in front of `upstream`; `log`
/// says what the proxy logged): the app gets the session's access token, also in place of a `Basic` the browser
/// adds, and its bare form as `X-Auth-Request-Access-Token`. The browser and the token.
pub(crate) async fn the_session_token_reaches_the_app(
    idp: &Idp,
    upstream: &Upstream,
    url: &str,
    log: impl Fn() -> String,
) -> (Browser, String) {
    let b = Browser::new(idp);
    let (hops, resp) = b.navigate(&format!("{url}/reports")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}\n{}", log());
    let session_token = upstream
        .last()
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("the session's access token reaches the app")
        .to_owned();
    let with_basic = get_authorized(&b.client, &format!("{url}/reports"), BASIC, &[]).await;
    assert_eq!(with_basic.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {session_token}").as_str())
    );
    assert_eq!(seen.header("x-auth-request-access-token"), Some(session_token.as_str()));
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    (b, session_token)
}

/// With `upstream.pass_access_token`, the app behind the shipped nginx gets the `Authorization` the gate itself
/// would send: a session's Logto access token for the API, in place of whatever the browser sent (`Basic`); an API
/// client's verified token as it came; a public route's field untouched. The answer also carries the bare token as
/// `X-Auth-Request-Access-Token`, oauth2-proxy's name for it.
#[tokio::test]
async fn the_shipped_nginx_passes_on_the_authorization_the_gate_would_send() {
    const RESOURCE: &str = "https://api.example.com";
    let options = IdpOptions {
        resources: Some(serde_json::json!({ RESOURCE: { "scopes": ["read:reports"] } })),
        ..Default::default()
    };
    let logto = format!("resources = [\"{RESOURCE}\"]\nscopes = [\"email\", \"roles\", \"read:reports\"]");
    let rules = format!("{RULES}\n[[rules]]\nprefix = \"/api/reports\"\nscopes = [\"read:reports\"]\n");
    let Some((idp, upstream, gate, nginx)) =
        behind_the_shipped_nginx_with(options, &logto, &rules, in_upstream("pass_access_token = true")).await
    else {
        return;
    };

    let (b, session_token) =
        the_session_token_reaches_the_app(&idp, &upstream, &nginx.url(), || nginx.error_log()).await;
    let claims = jwt_claims(&session_token);
    assert_eq!(
        (claims["aud"].as_str(), claims["sub"].as_str()),
        (Some(RESOURCE), Some("u_alice0001"))
    );
    // The answer to the proxy, asked directly.
    let auth = format!("{}/_logto/auth", gate.url());
    let answer = get_authorized(&b.client, &auth, BASIC, &[("X-Original-URI", "/reports")]).await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    assert_eq!(
        answer.headers()["authorization"],
        format!("Bearer {session_token}").as_str()
    );
    assert_eq!(answer.headers()["x-auth-request-access-token"], session_token.as_str());

    // An API client's token is verified and reaches the app as it came; a client cannot name its own token.
    let token = idp.sign(
        serde_json::json!({"iss": idp.issuer(), "aud": RESOURCE, "sub": "u_service01", "client_id": "m2m",
               "scope": "read:reports", "iat": now(), "exp": now() + 300}),
        serde_json::json!({}),
    );
    let bearer = format!("Bearer {token}");
    let url = format!("{}/api/reports/1", nginx.url());
    let api = get_authorized(&plain(), &url, &bearer, &[("X-Auth-Request-Access-Token", "forged")]).await;
    assert_eq!(api.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
    assert_eq!(seen.header("x-forwarded-user"), Some("u_service01"));
    assert_eq!(seen.header("x-auth-request-access-token"), Some(token.as_str()));
    let answer = get_authorized(&plain(), &auth, &bearer, &[("X-Original-URI", "/api/reports/1")]).await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    assert_eq!(answer.headers()["x-auth-request-access-token"], token.as_str());

    // A public route: the client's field is no one's identity, and passes untouched.
    let public = get_authorized(&plain(), &format!("{}/public/x", nginx.url()), BASIC, &[]).await;
    assert_eq!(public.status(), StatusCode::OK);
    assert_eq!(upstream.last().header("authorization"), Some(BASIC));
    let answer = get_authorized(&plain(), &auth, BASIC, &[("X-Original-URI", "/public/x")]).await;
    assert_eq!(answer.headers()["authorization"], BASIC);
    assert!(answer.headers().get("x-auth-request-access-token").is_none());
}
