//! The `logto-gate` binary: configuration errors, environment overrides, secrets from files, `check`, SIGTERM.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(gate_binary());
    cmd.args(args).stdin(Stdio::null()).env_remove("LOGTO_GATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run logto-gate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("logto-gate.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[test]
fn bad_config_exits_non_zero_with_one_line_per_problem_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
[server]
public_url = "not a url"
header_read_timeout = "500000000000y"
trusted_proxies = ["192.168.1.5/24"]
[upstream]
url = "ftp://example.com"
[logto]
endpoint = "https://tenant.logto.app"
[session]
secret = "too-short"
lifetime = "forever"
tunnel_check_interval = "500ms"
tunnel_grant_check_interval = "900ms"
"#,
    );
    let (code, _, stderr) = run_to_end(&["--config", &path], &[]);
    assert_eq!(code, 2, "{stderr}");
    for line in [
        "server.public_url: `not a url` is not a valid URL",
        "upstream.url: `ftp://example.com` must start with http:// or https://",
        "logto.app_id: missing",
        "logto.app_secret: missing",
        "session.secret: too short: 9 bytes",
        "session.lifetime: `forever` is not a duration",
        "session.tunnel_check_interval: must be at least 1s",
        "session.tunnel_grant_check_interval: must be at least 1s",
        "server.header_read_timeout: `500000000000y` is longer than 100 years",
        "server.trusted_proxies: `192.168.1.5/24` has bits set after its prefix: write `192.168.1.0/24` for the \
         range or `192.168.1.5` for the one address",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// A valid configuration whose Logto refuses connections at once: `check` validates it, then fails to reach Logto.
const CHECKABLE: &str = r#"
[server]
public_url = "https://app.example.com"
[upstream]
url = "http://127.0.0.1:8080"
[logto]
endpoint = "http://127.0.0.1:1"
app_id = "app"
app_secret = "secret"
[session]
secret = "0123456789abcdef0123456789abcdef0123456789"
"#;

/// A condition list left empty (a template whose values went missing) stops the start: read as "no condition" it
/// would let every signed-in user through, read as "nobody" it would shut the path.
#[test]
fn empty_condition_lists_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            r#"{CHECKABLE}
[[rules]]
prefix = "/admin"
roles = []
[[rules]]
prefix = "/items"
methods = []
allow = "deny"
"#
        ),
    );
    // `check` reads the configuration as a start does (were it accepted, a start would serve, not exit).
    let (code, _, stderr) = run_to_end(
        &["check", "--config", &path],
        &[("LOGTO_GATE_ACCESS__EMAIL_DOMAINS", "[]")],
    );
    assert_eq!(code, 2, "{stderr}");
    for line in [
        "rules[0].roles: is an empty list: list at least one value, or leave the key out for no condition",
        "rules[1].methods: is an empty list, so the rule would never apply",
        "access.email_domains: is an empty list",
    ] {
        assert!(stderr.lines().any(|l| l.starts_with(line)), "no {line:?} in:\n{stderr}");
    }
}

/// A prompt without consent where the refresh token is needed works only if the Logto app always issues refresh
/// tokens, a setting the gate cannot see: `check` and the start accept it with a warning naming both ways out,
/// however the configuration says so (file or environment).
#[test]
fn a_prompt_without_consent_where_a_refresh_token_is_needed_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let text = CHECKABLE.replace("[logto]\n", "[logto]\nprompt = \"login\"\n");
    for (text, env, needs) in [
        (
            text.clone(),
            vec![("LOGTO_GATE_LOGTO__RESOURCES", "https://api.example.com")],
            "logto.resources (the API resource's token) needs one",
        ),
        (
            text.replace("[upstream]\n", "[upstream]\npass_access_token = true\n"),
            vec![],
            "upstream.pass_access_token (a renewed access token) needs one",
        ),
    ] {
        let path = write_config(&dir, &text);
        let (_, stdout, stderr) = run_to_end(&["check", "--config", &path], &env);
        assert!(stdout.starts_with("configuration: ok\n"), "{stdout}\n{stderr}");
        let warning = stdout
            .lines()
            .find(|l| l.starts_with("  warning: logto.prompt: `login` lacks consent"))
            .unwrap_or_else(|| panic!("no warning in:\n{stdout}"));
        assert!(warning.contains(needs), "{warning}");
        assert!(warning.contains("\"Always issue Refresh Token\""), "{warning}");
    }
}

/// A rule for `DELETE` but not `POST` is only as strict as what decides the `POST` where an app takes a form's
/// `_method` field for the method and the gate reads no bodies (`upstream.read_form_method = false`): `check` says
/// so, naming the rule. Read (the default), nothing is said.
#[test]
fn a_rule_for_delete_but_not_post_is_a_warning_when_form_bodies_go_unread() {
    let dir = tempfile::tempdir().unwrap();
    let rule = "[[rules]]\nprefix = \"/items\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n";
    let path = write_config(&dir, &format!("{CHECKABLE}\n{rule}"));
    let (_, stdout, stderr) = run_to_end(&["check", "--config", &path], &[]);
    assert!(stdout.starts_with("configuration: ok\n"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("warning: rules[0]"), "{stdout}");
    let unread = CHECKABLE.replace("[upstream]\n", "[upstream]\nread_form_method = false\n");
    assert_ne!(unread, CHECKABLE);
    let path = write_config(&dir, &format!("{unread}\n{rule}"));
    let (_, stdout, stderr) = run_to_end(&["check", "--config", &path], &[]);
    assert!(stdout.starts_with("configuration: ok\n"), "{stdout}\n{stderr}");
    let warning = stdout
        .lines()
        .find(|l| l.starts_with("  warning: rules[0].methods: names DELETE but not POST."))
        .unwrap_or_else(|| panic!("no warning in:\n{stdout}"));
    assert!(warning.contains("add POST to this rule"), "{warning}");
}

/// Values Logto would take without a word and then ignore or fail on, at the callback or on its own page, stop the
/// start instead: a first screen or direct sign-in it does not know (it shows its usual page), a cluster without a
/// hash tag (every session write would fail with CROSSSLOT), a CA file for an upstream spoken to in plain HTTP.
#[test]
fn values_logto_or_redis_would_ignore_or_fail_on_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str, env: &[(&str, &str)], lines: &[&str]| {
        let path = write_config(&dir, text);
        let (code, _, stderr) = run_to_end(&["check", "--config", &path], env);
        assert_eq!(code, 2, "{stderr}");
        for line in lines {
            assert!(stderr.lines().any(|l| l.starts_with(line)), "no {line:?} in:\n{stderr}");
        }
    };
    let text = CHECKABLE
        .replace(
            "[logto]\n",
            "[logto]\nfirst_screen = \"signUp\"\ndirect_sign_in = \"github\"\n",
        )
        .replace(
            "[session]\n",
            "[session]\nstore = \"redis\"\nredis_mode = \"cluster\"\nredis_urls = [\"redis://127.0.0.1:1\"]\n",
        );
    check(
        &text,
        &[("LOGTO_GATE_SESSION__REDIS_KEY_PREFIX", "")],
        &[
            "logto.first_screen: `signUp` is not one of Logto's first screens",
            "logto.direct_sign_in: `github` names no method: write social:<connector target>",
            "session.redis_key_prefix: must not be empty with redis_mode = \"cluster\"",
        ],
    );
    // A CA for an upstream spoken to in plain HTTP: no handshake would ever check it.
    check(
        &CHECKABLE.replace("[upstream]\n", "[upstream]\ntls_ca_file = \"/nonexistent/ca.pem\"\n"),
        &[],
        &["upstream.tls_ca_file: is for https:// upstreams, and no upstream using it is one"],
    );
}

/// A claim mapped onto a header the gate frames by or sets itself stops the start: it would be replaced by the
/// gate's value, sent next to it, or trusted as what the name means to apps (a client address, a method).
#[test]
fn a_claim_on_a_header_the_gate_owns_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = CHECKABLE
        .replace("[upstream]\n", "[upstream]\npass_access_token = true\n")
        .replace("[logto]\n", "[logto]\nresources = [\"https://api.example.com\"]\n");
    let path = write_config(
        &dir,
        &format!(
            r#"{text}
[headers]
"X-Real-IP" = "sub"
"X-HTTP-Method-Override" = "custom_data.method"
"Authorization" = "sub"
"TE" = "sub"
"#
        ),
    );
    let (code, _, stderr) = run_to_end(&["check", "--config", &path], &[]);
    assert_eq!(code, 2, "{stderr}");
    for line in [
        "headers.X-Real-IP: this header is managed by the gate and cannot carry a claim",
        "headers.X-HTTP-Method-Override: this header is managed by the gate and cannot carry a claim",
        "headers.TE: this header frames the request or its connection",
    ] {
        assert!(stderr.lines().any(|l| l.starts_with(line)), "no {line:?} in:\n{stderr}");
    }
    // Those gone, the one the gate sends the access token in.
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("\"X-") && !l.starts_with("\"TE"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, kept).unwrap();
    let (code, _, stderr) = run_to_end(&["check", "--config", &path], &[]);
    assert_eq!(code, 2, "{stderr}");
    let line = "headers.authorization: upstream.pass_access_token sends the access token in this header";
    assert!(stderr.lines().any(|l| l.starts_with(line)), "{stderr}");
}

#[test]
fn wrong_types_and_unknown_keys_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[logto]\napp_id = 42\n");
    let (code, _, stderr) = run_to_end(&["--config", &path], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("logto.app_id:"), "{stderr}");
    let path = write_config(&dir, "[sesion]\nsecret = \"x\"\n");
    let (code, _, stderr) = run_to_end(&["--config", &path], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown key `sesion`"), "{stderr}");
    let (code, _, stderr) = run_to_end(&["--config", "/nonexistent/logto-gate.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not found"), "{stderr}");
    let (code, _, stderr) = run_to_end(&[], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--config"), "{stderr}");
}

/// Starts the binary with `toml` (its public URL on `port`) and waits until it is ready.
async fn spawn_ready(port: u16, path: &str, env: &[(&str, &str)]) -> GateProcess {
    let mut all: Vec<(&str, &str)> = vec![("LOGTO_GATE_CONFIG", path)];
    all.extend_from_slice(env);
    let p = GateProcess::spawn(&[], &all);
    wait_for_status(&format!("http://127.0.0.1:{port}/_logto/readyz"), 200).await;
    p
}

/// A free port, the public URL on it (registered at `idp` with `app_secret`), and the test gate's TOML listening
/// there in front of `upstream`.
fn on_a_free_port(idp: &Idp, upstream: &str, app_secret: &str) -> (u16, String, String) {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    idp.register_client(APP_ID, app_secret, &public);
    let toml =
        gate_toml(&public, upstream, &idp.endpoint(), "", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    (port, public, toml)
}

#[tokio::test]
async fn environment_overrides_the_file_and_numeric_looking_values_stay_strings() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    // A secret made only of digits: it must arrive as the string "0012345678", not a number.
    let (port, public, toml) = on_a_free_port(&idp, &upstream.url(), "0012345678");
    let dir = tempfile::tempdir().unwrap();
    let toml = toml.replace(APP_SECRET, "the-wrong-secret-in-the-file");
    let path = write_config(&dir, &toml);
    let _gate = spawn_ready(port, &path, &[("LOGTO_GATE_LOGTO__APP_SECRET", "0012345678")]).await;
    let b = Browser::new(&idp);
    let (hops, resp) = b.navigate(&format!("{public}/from-env")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
}

/// A list in the environment written as JSON, as Helm's `toJson` writes it, configures the running gate: the
/// trusted proxy it names has its `X-Forwarded-For` kept. Before, the brackets and quotes became part of the first
/// and last items and the gate refused to start.
#[tokio::test]
async fn a_list_in_the_environment_may_be_json() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let (port, public, toml) = on_a_free_port(&idp, &upstream.url(), APP_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &toml);
    let _gate = spawn_ready(
        port,
        &path,
        &[
            (
                "LOGTO_GATE_SERVER__TRUSTED_PROXIES",
                r#"["10.0.0.0/8", "127.0.0.1/32"]"#,
            ),
            ("LOGTO_GATE_ACCESS__ALLOW", "public"),
        ],
    )
    .await;
    let resp = plain()
        .get(format!("{public}/behind-a-proxy"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let forwarded = upstream.last().header("x-forwarded-for").map(str::to_owned);
    assert_eq!(forwarded.as_deref(), Some("203.0.113.9, 127.0.0.1"));
}

#[tokio::test]
async fn secrets_can_come_from_files() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let (port, public, toml) = on_a_free_port(&idp, &upstream.url(), "secret-from-a-mounted-file");
    let dir = tempfile::tempdir().unwrap();
    let app_secret = dir.path().join("app_secret");
    let session_secret = dir.path().join("session_secret");
    std::fs::write(&app_secret, "secret-from-a-mounted-file\n").unwrap();
    std::fs::write(&session_secret, "a-session-secret-from-a-file-of-enough-length\n").unwrap();
    let toml = toml
        .replace(
            &format!("app_secret = \"{APP_SECRET}\""),
            &format!("app_secret_file = {:?}", app_secret.display().to_string()),
        )
        .replace(
            &format!("secret = \"{SESSION_SECRET}\""),
            &format!("secret_file = {:?}", session_secret.display().to_string()),
        );
    let path = write_config(&dir, &toml);
    let _gate = spawn_ready(port, &path, &[]).await;
    let (hops, resp) = Browser::new(&idp).navigate(&format!("{public}/")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
}

#[tokio::test]
async fn check_reports_discovery_and_keys_and_fails_when_logto_is_unreachable() {
    let idp = Idp::start(IdpOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let toml = gate_toml(
        "http://127.0.0.1:4180",
        "http://127.0.0.1:8080",
        &idp.endpoint(),
        "",
        "",
    );
    idp.register_client(APP_ID, APP_SECRET, "http://127.0.0.1:4180");
    let path = write_config(&dir, &toml);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run_to_end(&["check", "--config", &path], &[]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Logto discovery: ok"), "{stdout}");
    assert!(stdout.contains("app credentials: ok"), "{stdout}");
    assert!(stdout.contains(&format!("issuer:       {}", idp.issuer())), "{stdout}");
    assert!(stdout.contains("signing keys: 1"), "{stdout}");
    assert!(stdout.contains("EllipticCurve"), "{stdout}");
    assert!(stdout.contains("\n  listening:    127.0.0.1:0\n"), "{stdout}");
    // A socket file is named with the mode it will get (check does not make it).
    let rules =
        "[[rules]]\nprefix = \"/admin\"\nmethods = [\"DELETE\"]\nroles = [\"admin\", \"ops\"]\nmax_age = \"15m\"\n\
                 [[rules]]\npath = \"/api/v[0-9]+/\"\nclient_ips = [\"10.0.0.0/8\"]\nallow = \"public\"\n";
    let on_socket = format!("{toml}\n{rules}").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"unix:/run/logto-gate/gate.sock\"\nlisten_mode = \"0600\"",
    );
    let path = write_config(&dir, &on_socket);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run_to_end(&["check", "--config", &path], &[]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("\n  listening:    unix:/run/logto-gate/gate.sock (mode 600)\n"),
        "{stdout}"
    );
    // The rules in the order they are tried, each with what it matches and grants.
    let listed = "  access rules (the first that matches a request decides):\n\
         \x20   prefix /admin, methods DELETE: signed in, with roles (any of) admin ops; a sign-in at Logto at most 900 s \
         old (max_age)\n\
         \x20   path /api/v[0-9]+/, client_ips 10.0.0.0/8: public (no sign-in)\n\
         \x20   [access] (every other request): any signed-in user\n";
    assert!(stdout.contains(listed), "{stdout}");
    // Its clients count as 127.0.0.1, which this configuration does not trust: check says what that means.
    assert!(
        stdout.contains("  warning: server.trusted_proxies: the gate listens on unix:/run/logto-gate/gate.sock"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(APP_SECRET) && !stdout.contains(SESSION_SECRET),
        "check never prints secrets"
    );

    // A wrong app secret: check proves the credentials with a made-up code (invalid_client vs invalid_grant).
    let wrong = toml.replace(APP_SECRET, "not-the-app-secret-0000");
    let path = write_config(&dir, &wrong);
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run_to_end(&["check", "--config", &path], &[]))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("app credentials: FAILED") && l.contains("logto.app_secret")),
        "{stderr}"
    );

    let dead = gate_toml(
        "http://127.0.0.1:4180",
        "http://127.0.0.1:8080",
        &format!("http://127.0.0.1:{}", free_port()),
        "",
        "",
    );
    let path = write_config(&dir, &dead);
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run_to_end(&["check", "--config", &path], &[]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(stderr.contains("Logto discovery: FAILED"), "{stderr}");
}

#[tokio::test]
async fn sigterm_stops_the_gate_cleanly() {
    let idp = Idp::start(IdpOptions::default());
    let (port, _, toml) = on_a_free_port(&idp, "http://127.0.0.1:9", APP_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &toml);
    let mut gate = spawn_ready(port, &path, &[]).await;
    let pid = gate.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = gate.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gate did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
    let mut stderr = String::new();
    gate.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_shipped_example_config_is_refused_until_its_placeholders_are_replaced_and_documents_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/logto-gate.toml");
    let text = std::fs::read_to_string(path).unwrap();
    // As shipped it holds placeholders, which are refused by name (anyone can read them); with real values put in
    // from the environment it is valid as it is.
    let refused = logto_gate::Config::from_toml_str(&text, Vec::new()).expect_err("placeholders are refused");
    let keys: Vec<&str> = refused.0.iter().filter_map(|l| l.split(':').next()).collect();
    assert_eq!(
        keys,
        ["logto.app_id", "logto.app_secret", "session.secret"],
        "{refused}"
    );
    assert!(refused.0.iter().all(|l| l.contains("placeholder")), "{refused}");
    assert!(refused.0[2].contains("openssl rand"), "{refused}");
    let env = [
        ("LOGTO_GATE_LOGTO__APP_ID", "k3m1x0appid"),
        ("LOGTO_GATE_LOGTO__APP_SECRET", "a-real-app-secret-from-the-console"),
        (
            "LOGTO_GATE_SESSION__SECRET",
            "bG9uZy1yYW5kb20tc2Vzc2lvbi1zZWNyZXQtZm9yLXRlc3Rz",
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    logto_gate::Config::from_toml_str(&text, env.to_vec()).unwrap_or_else(|e| panic!("{e}"));
    for key in [
        "listen",
        "public_url",
        "url",
        "preserve_host",
        "connect_timeout",
        "response_timeout",
        "endpoint",
        "app_id",
        "app_secret",
        "app_secret_file",
        "scopes",
        "resources",
        "prompt",
        "first_screen",
        "direct_sign_in",
        "post_logout_redirect_uri",
        "secret",
        "secret_file",
        "cookie_name",
        "lifetime",
        "level",
        "format",
    ] {
        assert!(
            text.contains(&format!("{key} = ")),
            "config/logto-gate.toml does not document `{key}`"
        );
    }
}

/// An operator who overrides only the endpoint and the app's credentials of the shipped config (as the container
/// image bakes it in) gets no gate sealing sessions with a publicly known key: `check` and a start both refuse,
/// naming the key and how to make a secret.
#[test]
fn the_shipped_placeholder_session_secret_is_refused_at_start_and_in_check() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/logto-gate.toml");
    let env = [
        ("LOGTO_GATE_LOGTO__ENDPOINT", "https://tenant.logto.app"),
        ("LOGTO_GATE_LOGTO__APP_ID", "k3m1x0appid"),
        ("LOGTO_GATE_LOGTO__APP_SECRET", "a-real-app-secret-from-the-console"),
    ];
    for args in [vec!["check", "--config", path], vec!["--config", path]] {
        let (code, _, stderr) = run_to_end(&args, &env);
        assert_ne!(code, 0, "{args:?}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("session.secret: still the placeholder") && l.contains("openssl rand")),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("logto.app_secret"), "{stderr}");
    }
}

#[test]
fn init_prints_the_annotated_example_and_help_names_the_environment() {
    let (code, stdout, _) = run_to_end(&["init"], &[]);
    assert_eq!(code, 0);
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/logto-gate.toml")).unwrap();
    assert_eq!(stdout.trim_end(), shipped.trim_end());
    let (code, stdout, _) = run_to_end(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("LOGTO_GATE_<SECTION>__<KEY>"), "{stdout}");
}

/// `logto-gate check | head -1`: a closed pipe ends the output quietly, never a panic.
#[tokio::test]
async fn check_into_a_closed_pipe_does_not_panic() {
    let idp = Idp::start(IdpOptions::default());
    idp.register_client(APP_ID, APP_SECRET, "http://127.0.0.1:4180");
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &gate_toml(
            "http://127.0.0.1:4180",
            "http://127.0.0.1:8080",
            &idp.endpoint(),
            "",
            "",
        ),
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(gate_binary())
            .args(["check", "--config", &path])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then close our end, as `head -1` does.
        let mut first = [0u8; 16];
        let _ = child.stdout.as_mut().unwrap().read(&mut first);
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

/// Configuration from the environment alone; with nothing configured the error lists the keys to set. An
/// environment `..._FILE` replaces a file's inline secret instead of clashing with it.
#[test]
fn the_environment_alone_configures_the_gate_and_file_secrets_override_inline_ones() {
    let (code, _, stderr) = run_to_end(&["check"], &[]);
    assert_eq!(code, 2);
    for var in [
        "LOGTO_GATE_SERVER__PUBLIC_URL",
        "LOGTO_GATE_LOGTO__APP_ID",
        "LOGTO_GATE_SESSION__SECRET",
    ] {
        assert!(stderr.contains(var), "{stderr}");
    }
    let env = |extra: Vec<(&str, String)>| {
        let mut v: Vec<(String, String)> = [
            ("LOGTO_GATE_SERVER__PUBLIC_URL", "https://app.example.com"),
            ("LOGTO_GATE_UPSTREAM__URL", "http://127.0.0.1:8080"),
            ("LOGTO_GATE_LOGTO__ENDPOINT", "https://tenant.logto.app"),
            ("LOGTO_GATE_LOGTO__APP_ID", "k3m1x0appid"),
            ("LOGTO_GATE_LOGTO__APP_SECRET", "a-real-app-secret-from-the-console"),
            (
                "LOGTO_GATE_SESSION__SECRET",
                "bG9uZy1yYW5kb20tc2Vzc2lvbi1zZWNyZXQtZm9yLXRlc3Rz",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        v.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        v
    };
    let c = logto_gate::Config::from_env(env(vec![])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.logto.issuer, "https://tenant.logto.app/oidc");

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("app_secret");
    std::fs::write(&secret_file, "secret-from-a-mounted-file\n").unwrap();
    let file_env = vec![("LOGTO_GATE_LOGTO__APP_SECRET_FILE", secret_file.display().to_string())];
    let toml = r#"
[server]
public_url = "https://app.example.com"
[upstream]
url = "http://127.0.0.1:8080"
[logto]
endpoint = "https://tenant.logto.app"
app_id = "k3m1x0appid"
app_secret = "inline-secret-in-the-file"
[session]
secret = "bG9uZy1yYW5kb20tc2Vzc2lvbi1zZWNyZXQtZm9yLXRlc3Rz"
"#;
    let c = logto_gate::Config::from_toml_str(toml, file_env.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.logto.app_secret.expose(), "secret-from-a-mounted-file");
}

/// Log lines an operator can use: no colour codes when stderr is not a terminal, the failed request's line
/// carries its request id and path (to match the access line), and the access line says who it was (also on a
/// forward-auth check, a refusal and a failure), with a duration of at most three decimals.
#[tokio::test]
async fn log_lines_match_their_access_line_and_carry_no_colour_codes() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let mut gate = BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "[[rules]]\nprefix = \"/owners\"\nroles = [\"owner\"]\n",
        |t| {
            t.replace("level = \"warn\"", "level = \"info\"")
                .replace("response_timeout = \"5s\"", "response_timeout = \"300ms\"")
        },
        |public| idp.register_client(APP_ID, APP_SECRET, public),
        &[],
    )
    .await;
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/signed-in").await;
    let slow = b.get(format!("{}/slow?ms=2000", gate.url())).await;
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    // Refused by the rules: alice has no `owner` role.
    let refused = b.get(format!("{}/owners/list", gate.url())).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let checked = b.get(format!("{}/_logto/auth", gate.url())).await;
    assert_eq!(checked.status(), StatusCode::ACCEPTED);
    let id = slow.headers()["x-request-id"].to_str().unwrap().to_owned();
    let log = gate.stop_and_read_log();
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a non-terminal log:\n{log}");
    let access = log
        .lines()
        .find(|l| l.contains("path=/signed-in") && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no access line for /signed-in:\n{log}"));
    assert!(access.contains("user=\"u_alice0001\""), "{access}");
    // Forward-auth's answer names who it let in, and an answer that is an error still names who asked: a refusal by
    // the rules, and the upstream's timeout.
    for (path, status) in [("/_logto/auth", 202), ("/owners/list", 403), ("/slow", 504)] {
        let line = log
            .lines()
            .find(|l| l.contains("logto_gate::access") && l.contains(&format!("path={path} ")))
            .unwrap_or_else(|| panic!("no access line for {path}:\n{log}"));
        assert!(line.contains(&format!("status={status}")), "{line}");
        assert!(line.contains("user=\"u_alice0001\""), "{line}");
    }
    let ms = access
        .split("duration_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("");
    assert!(
        !ms.is_empty() && ms.split('.').nth(1).is_none_or(|d| d.len() <= 3),
        "{access}"
    );
    let failed = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("request failed"))
        .unwrap_or_else(|| panic!("no warning for the timeout:\n{log}"));
    assert!(failed.contains(&id), "the warning names the request id {id}: {failed}");
    assert!(failed.contains("path=/slow"), "{failed}");
    assert!(!failed.contains("ms=2000"), "no query in the log: {failed}");
}

/// A warning from deep in a request (here a token refresh that fails because Logto went away) carries the
/// request's id, so it can be matched with the access line. In the outage every session's refresh fails: the
/// warning comes once for all of them, with how many failed, not once per session.
#[tokio::test]
async fn a_refresh_warning_carries_the_request_id_and_comes_once_for_all_sessions() {
    let idp = Idp::start(IdpOptions {
        access_token_ttl: Some(4),
        ..Default::default()
    });
    let upstream = Upstream::start().await;
    let mut gate = BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "",
        |t| t.replace("level = \"warn\"", "level = \"info\""),
        |public| idp.register_client(APP_ID, APP_SECRET, public),
        &[],
    )
    .await;
    let browsers = [Browser::new(&idp), Browser::new(&idp), Browser::new(&idp)];
    for b in &browsers {
        b.sign_in(&gate, "/").await;
    }
    drop(idp); // Logto goes away: the next refreshes fail, and the sessions keep working meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut ids = Vec::new();
    for b in &browsers {
        let r = b.get(format!("{}/later", gate.url())).await;
        assert_eq!(r.status(), StatusCode::OK);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    let log = gate.stop_and_read_log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("token refresh failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "one line for the three sessions:\n{log}");
    assert!(
        warnings[0].contains(&ids[0]),
        "the warning names request {}: {}",
        ids[0],
        warnings[0]
    );
    assert!(warnings[0].contains("failed_refreshes=1"), "{}", warnings[0]);
}

/// `session.revocation_file`: `check` reads it without writing it and says how many revocations are in force; a
/// file the gate did not write stops `check` and a start with an error naming it, and is left as it was (replacing
/// it would forget every revocation in it).
#[tokio::test]
async fn a_revocation_file_the_gate_did_not_write_stops_check_and_start() {
    let idp = Idp::start(IdpOptions::default());
    idp.register_client(APP_ID, APP_SECRET, "http://127.0.0.1:4180");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("revoked.json");
    let port = free_port();
    let toml = gate_toml(
        &format!("http://127.0.0.1:{port}"),
        "http://127.0.0.1:8080",
        &idp.endpoint(),
        "",
        "",
    )
    .replacen(
        "[session]\n",
        &format!("[session]\nrevocation_file = \"{}\"\n", list.display()),
        1,
    );
    let path = write_config(&dir, &toml);
    let check = {
        let path = path.clone();
        move || run_to_end(&["check", "--config", &path], &[])
    };
    let (code, stdout, stderr) = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("revocation file: {} (0 revocations in force)", list.display())),
        "{stdout}"
    );
    assert!(!list.exists(), "check writes nothing");

    std::fs::write(&list, b"not json").unwrap();
    let (code, _, stderr) = tokio::task::spawn_blocking(check).await.unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "session.revocation_file {}: not a revocation list",
            list.display()
        )),
        "{stderr}"
    );
    let mut start = Command::new(gate_binary())
        .args(["--config", &path])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = start.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = start.kill();
            panic!("the gate started on a revocation file it did not write");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    start.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a revocation list the gate wrote"), "{stderr}");
    assert_eq!(std::fs::read(&list).unwrap(), b"not json");
}
