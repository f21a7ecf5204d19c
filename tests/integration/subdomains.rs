//! One sign-in across subdomains: `session.cookie_domain` and `server.allowed_redirect_hosts`, with several host
//! names resolved to one gate on loopback. The callback stays on `server.public_url`'s host.

use reqwest::StatusCode;

use crate::support::*;

/// A gate in this process whose `server.public_url` is `http://auth.example.test:<port>`, with
/// `session.cookie_domain = "example.test"`, `server_lines` and `session_lines` added to their sections and `extra`
/// (whole sections) to the end.
struct OnExampleTest {
    port: u16,
    public: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl OnExampleTest {
    async fn start(
        idp: &Idp,
        upstream: &Upstream,
        server_lines: &str,
        session_lines: &str,
        extra: &str,
    ) -> OnExampleTest {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let public = format!("http://auth.example.test:{port}");
        idp.register_client(APP_ID, APP_SECRET, &public);
        let toml = gate_toml(&public, &upstream.url(), &idp.endpoint(), "", extra)
            .replace("[server]\n", &format!("[server]\n{server_lines}\n"))
            .replace(
                "[session]\n",
                &format!("[session]\ncookie_domain = \"example.test\"\n{session_lines}\n"),
            );
        let config = logto_gate::Config::from_toml_str(&toml, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(logto_gate::run_with_listener(config, listener, async {
            let _ = rx.await;
        }));
        wait_for_status(&format!("http://127.0.0.1:{port}/_logto/readyz"), 200).await;
        OnExampleTest {
            port,
            public,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl GateUrl for OnExampleTest {
    fn url(&self) -> String {
        self.public.clone()
    }
}

#[tokio::test]
async fn one_sign_in_serves_every_allowed_host_and_one_sign_out_ends_it_everywhere() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = OnExampleTest::start(
        &idp,
        &upstream,
        "allowed_redirect_hosts = [\"grafana.example.test\", \".apps.example.test\"]",
        "",
        "",
    )
    .await;
    let (port, public) = (gate.port, gate.public.clone());

    let hosts = [
        "auth.example.test",
        "grafana.example.test",
        "ci.apps.example.test",
        "evil.example.org",
    ];
    let b = Browser::resolving(&idp, &hosts, port);
    let grafana = format!("http://grafana.example.test:{port}");
    let (hops, resp) = b.navigate(&format!("{grafana}/dash?x=1")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert!(
        hops.iter()
            .any(|h| h.url.starts_with(&format!("{public}/_logto/callback"))),
        "the callback stays on the public host: {hops:#?}"
    );
    assert_eq!(hops.last().unwrap().url, format!("{grafana}/dash?x=1"), "{hops:#?}");
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(format!("grafana.example.test:{port}").as_str())
    );
    let authorizations = idp.stats()["authorizations"].as_u64().unwrap();

    // Another allowed host: already signed in, no second trip to Logto.
    let ci = format!("http://ci.apps.example.test:{port}");
    let r = b.get(format!("{ci}/builds")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(idp.stats()["authorizations"].as_u64().unwrap(), authorizations);

    // A return URL on a host not allowed falls back to the public origin's root.
    let r = b
        .get(format!(
            "{public}/_logto/sign-in?redirect=http%3A%2F%2Fevil.example.org%3A{port}%2Fsteal"
        ))
        .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let (hops, _) = b.follow(r.headers()["location"].to_str().unwrap(), true).await;
    let back = hops
        .iter()
        .filter_map(|h| h.location.as_deref())
        .next_back()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(back, format!("{public}/"), "{hops:#?}");

    // One sign-out, on any host, ends the session for every host.
    let out = b.get(format!("{grafana}/_logto/sign-out")).await;
    assert_eq!(out.status(), StatusCode::FOUND);
    for origin in [&grafana, &ci, &public] {
        let r = b
            .client
            .get(format!("{origin}/api"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{origin}");
    }
    gate.stop().await;
}

/// Behind a trusted proxy that sends the app's host as `X-Forwarded-Host` (and its own name as `Host`), a browser
/// sent to sign in comes back to the host the proxy names, the one the rules and routing saw; from anyone else that
/// field is not believed and the sign-in comes back to the public origin.
#[tokio::test]
async fn the_sign_in_returns_to_the_host_a_trusted_proxy_names() {
    let navigation = "GET /dash?x=1 HTTP/1.1\r\nHost: gate.internal:4180\r\nX-Forwarded-Host: grafana.example.test\r\n\
                      Accept: text/html\r\nConnection: close\r\n\r\n";
    for (trusted, back) in [
        (
            "trusted_proxies = [\"127.0.0.1/32\"]",
            "redirect=http%3A%2F%2Fgrafana.example.test%2Fdash%3Fx%3D1",
        ),
        ("", "redirect=%2Fdash%3Fx%3D1"),
    ] {
        let s = Stack::edited(
            IdpOptions::default(),
            "",
            "",
            on_subdomains(r#"["grafana.example.test"]"#, trusted),
        )
        .await;
        let answer = exchange_until_closed(s.gate.port, navigation.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 302"), "{answer}");
        assert!(answer.contains(back), "{trusted}: {back} not in\n{answer}");
    }
}

/// Configurations that could not work are refused at start, naming the key.
#[test]
fn cookie_domain_and_redirect_hosts_are_checked_against_each_other() {
    let base = |server: &str, session: &str| {
        gate_toml(
            "https://auth.example.com",
            "http://127.0.0.1:1",
            "https://t.logto.app",
            "",
            "",
        )
        .replace("[server]\n", &format!("[server]\n{server}\n"))
        .replace("[session]\n", &format!("[session]\n{session}\n"))
    };
    let problems = |toml: String| {
        logto_gate::Config::from_toml_str(&toml, Vec::new())
            .expect_err("refused")
            .0
    };
    for (server, session, key, why) in [
        (
            "",
            "cookie_domain = \"other.org\"",
            "session.cookie_domain",
            "does not contain",
        ),
        ("", "cookie_domain = \"com\"", "session.cookie_domain", "not a domain"),
        (
            "allowed_redirect_hosts = [\"grafana.example.com\"]",
            "",
            "server.allowed_redirect_hosts",
            "needs session.cookie_domain",
        ),
        (
            "allowed_redirect_hosts = [\"grafana.other.org\"]",
            "cookie_domain = \"example.com\"",
            "server.allowed_redirect_hosts",
            "outside session.cookie_domain",
        ),
        (
            "allowed_redirect_hosts = [\"https://x.example.com/\"]",
            "cookie_domain = \"example.com\"",
            "server.allowed_redirect_hosts",
            "not a host",
        ),
    ] {
        let p = problems(base(server, session));
        assert!(
            p.iter().any(|l| l.starts_with(key) && l.contains(why)),
            "{server} {session}: {p:?}"
        );
    }
    let ok = base(
        "allowed_redirect_hosts = [\"grafana.example.com\", \".apps.example.com\"]",
        "cookie_domain = \".example.com\"",
    );
    let c = logto_gate::Config::from_toml_str(&ok, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.session.cookie_domain.as_deref(), Some("example.com"));
}

/// A browser can hold the session cookie twice: for the gate's host, from before `session.cookie_domain` was set,
/// and for the domain. It sends both, the older first. The gate reads the copy that stands, writes it again for the
/// domain and removes the host's copy (a `Set-Cookie` without `Domain` for each name), so the next request carries
/// one. Before, it took the first copy that opened: once that one was signed out, every sign-in ended on the sign-in
/// again, a loop (the gate cleared only the domain's copy). Sign-out removes both copies. With the cookie and the
/// Redis stores, and a session large enough for four cookies a copy (a member of 400 organizations a rule reads).
#[tokio::test]
async fn a_session_cookie_held_twice_is_read_from_the_copy_that_stands() {
    for (on_redis, large) in [(false, false), (true, false), (false, true)] {
        let redis = match on_redis {
            true if !have_redis() => continue,
            true => Some(redis::Redis::start().await),
            false => None,
        };
        let session_lines = redis
            .as_ref()
            .map(|r| format!("store = \"redis\"\nredis_url = \"{}\"", r.url()))
            .unwrap_or_default();
        let idp = Idp::start(IdpOptions::default());
        let upstream = Upstream::start().await;
        let rules = "[[rules]]\nprefix = \"/team\"\norganizations = [\"org_team\"]\n";
        let gate = OnExampleTest::start(&idp, &upstream, "", &session_lines, rules).await;
        let b = Browser::resolving(&idp, &["auth.example.test"], gate.port);
        let (user, names) = if large {
            idp.add_member_of_400_organizations();
            b.login_as("carol");
            (
                "u_carol03",
                vec!["logto_gate.0", "logto_gate.1", "logto_gate.2", "logto_gate.3"],
            )
        } else {
            ("u_alice0001", vec!["logto_gate"])
        };
        let public = gate.public.clone();
        b.sign_in(&gate, "/").await;
        let old = b.gate_cookies(&public);
        let out = b.get(format!("{public}/_logto/sign-out")).await;
        assert_eq!(out.status(), StatusCode::FOUND);
        b.sign_in(&gate, "/").await;
        let new = b.gate_cookies(&public);
        assert_ne!(old, new);
        assert_eq!(new.matches("logto_gate").count(), names.len(), "{new}");

        // Requests sending exactly the cookies given (a client without a jar).
        let bare = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(
                "auth.example.test",
                std::net::SocketAddr::from(([127, 0, 0, 1], gate.port)),
            )
            .build()
            .unwrap();
        let get = |cookie: String| {
            bare.get(format!("{public}/app"))
                .header("accept", "text/html")
                .header("cookie", cookie)
                .send()
        };
        for held in [format!("{old}; {new}"), format!("{new}; {old}")] {
            let what = format!("redis {on_redis}, large {large}");
            let r = get(held).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{what}");
            assert_eq!(upstream.last().header("x-forwarded-user"), Some(user));
            let set = set_cookies(&r);
            let written: Vec<&str> = set.iter().copied().filter(|c| !c.contains("Max-Age=0")).collect();
            assert_eq!(
                written.len(),
                names.len(),
                "{what}, the session is written again: {set:?}"
            );
            assert!(
                written.iter().all(|c| c.contains("; Domain=example.test")),
                "{written:?}"
            );
            for name in &names {
                assert!(
                    set.iter().any(|c| c.starts_with(&format!("{name}=;"))
                        && c.contains("Max-Age=0")
                        && c.contains("Path=/")
                        && !c.contains("Domain")),
                    "{what}, the host's {name} is removed: {set:?}"
                );
            }
            // The copy written again is the one that stood.
            let once: Vec<&str> = written.iter().map(|c| c.split(';').next().unwrap()).collect();
            assert_eq!(get(once.join("; ")).await.unwrap().status(), StatusCode::OK, "{what}");
        }

        // Sign-out removes the domain's copy and the host's.
        let out = bare
            .get(format!("{public}/_logto/sign-out"))
            .header("cookie", new)
            .send()
            .await
            .unwrap();
        let set = set_cookies(&out);
        for (name, domain) in names.iter().flat_map(|n| [(n, true), (n, false)]) {
            assert!(
                set.iter().any(|c| c.starts_with(&format!("{name}=;"))
                    && c.contains("Max-Age=0")
                    && c.contains("; Domain=example.test") == domain),
                "{name}, domain {domain}: {set:?}"
            );
        }
        gate.stop().await;
    }
}

/// Two copies of the session cookie that both stand (a browser keeps a parent domain's copy after
/// `session.cookie_domain` was removed, each from its own sign-in): sign-out ends both, so neither signs the person
/// in again afterwards. Before, it ended the copy it read and the other went on serving, a sign-out that did not
/// sign out. Cookie and Redis stores.
#[tokio::test]
async fn sign_out_ends_every_copy_of_a_session_cookie_held_twice() {
    for on_redis in [false, true] {
        let redis = match on_redis {
            true if !have_redis() => continue,
            true => Some(redis::Redis::start().await),
            false => None,
        };
        let edit = |t: String| match &redis {
            Some(r) => t.replace(
                "[session]\n",
                &format!("[session]\nstore = \"redis\"\nredis_url = \"{}\"\n", r.url()),
            ),
            None => t,
        };
        let s = Stack::edited(IdpOptions::default(), "", "", edit).await;
        // Two sign-ins, each in its own browser, so that both sessions stand.
        let (_, first) = s.signed_in().await;
        let (_, second) = s.signed_in().await;
        let url = format!("{}/api", s.gate.url());
        for alone in [&first, &second] {
            assert_eq!(
                status_with_cookie(&url, &format!("logto_gate={alone}")).await,
                StatusCode::OK
            );
        }
        let out = plain()
            .get(format!("{}/_logto/sign-out", s.gate.url()))
            .header("cookie", format!("logto_gate={first}; logto_gate={second}"))
            .send()
            .await
            .unwrap();
        assert_eq!(out.status(), StatusCode::FOUND);
        for (which, alone) in [("first", &first), ("second", &second)] {
            assert_eq!(
                status_with_cookie(&url, &format!("logto_gate={alone}")).await,
                StatusCode::UNAUTHORIZED,
                "redis {on_redis}: the {which} copy after sign-out"
            );
        }
    }
}

/// A new sign-in ends the session the browser had, every copy of its cookie that stands: two sign-ins' cookies reach
/// the callback together (one set for the callback's path, which the browser sends first), and neither signs anyone
/// in afterwards; the new session does.
#[tokio::test]
async fn a_new_sign_in_ends_every_copy_of_the_session_it_replaces() {
    let s = Stack::start().await;
    let (_, first) = s.signed_in().await;
    let (b, second) = s.signed_in().await;
    let gate: reqwest::Url = s.gate.url().parse().unwrap();
    b.jar
        .add_cookie_str(&format!("logto_gate={first}; Path=/_logto/callback"), &gate);
    let (hops, resp) = b
        .navigate(&format!("{}/_logto/sign-in?redirect=%2Fagain", s.gate.url()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert!(hops.iter().any(|h| h.url.contains("/_logto/callback")), "{hops:#?}");
    let url = format!("{}/api", s.gate.url());
    for (which, alone) in [("first", &first), ("second", &second)] {
        assert_eq!(
            status_with_cookie(&url, &format!("logto_gate={alone}")).await,
            StatusCode::UNAUTHORIZED,
            "the {which} session after the new sign-in"
        );
    }
    let new = b.cookie(&s.gate.url(), "logto_gate").unwrap();
    assert_eq!(
        status_with_cookie(&url, &format!("logto_gate={new}")).await,
        StatusCode::OK
    );
}

/// The `Set-Cookie` fields of an answer.
fn set_cookies(r: &reqwest::Response) -> Vec<&str> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}
