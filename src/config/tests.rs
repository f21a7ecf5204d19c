use super::*;

pub(super) const MINIMAL: &str = r#"
    [server]
    public_url = "https://app.example.com"
    [upstream]
    url = "http://127.0.0.1:8080"
    [logto]
    endpoint = "https://tenant.logto.app/"
    app_id = "app"
    app_secret = "s3cret"
    [session]
    secret = "0123456789abcdef0123456789abcdef"
"#;

pub(super) fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// [`MINIMAL`] with `line` added to `[session]`.
fn in_session(line: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(
        &MINIMAL.replace("[session]\n", &format!("[session]\n{line}\n")),
        no_env(),
    )
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:4180");
    assert_eq!(c.logto.issuer, "https://tenant.logto.app/oidc");
    // The default headers read email and roles, so those scopes are requested too.
    assert_eq!(
        c.logto.scopes,
        vec!["openid", "profile", "offline_access", "email", "roles"]
    );
    assert_eq!(c.logto.prompt.as_deref(), Some("consent"));
    assert_eq!(c.session.tunnel_check_interval, Duration::from_secs(15));
    assert_eq!(c.session.tunnel_grant_check_interval, Duration::from_secs(3600));
    assert_eq!(c.session.cookie_name, "logto_gate");
    assert_eq!(c.session.lifetime, Duration::from_secs(7 * 86400));
    assert!(c.session.secure_cookies);
    assert_eq!(
        c.logto.post_logout_redirect_uri,
        "https://app.example.com/_logto/signed-out"
    );
    assert_eq!(c.headers.len(), 4);
}

#[test]
fn messages_say_what_to_write() {
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let typo = err(&MINIMAL.replace("[session]\n", "[session]\nlifetme = \"1d\"\n"));
    assert!(
        typo.iter()
            .any(|l| l.contains("unknown key `lifetme` (did you mean `lifetime`?)")),
        "{typo:?}"
    );
    let number = err(&MINIMAL.replace("[session]\n", "[session]\nidle_timeout = 30\n"));
    assert!(
        number
            .iter()
            .any(|l| l.starts_with("session.idle_timeout: found") && l.contains("like \"30s\"")),
        "{number:?}"
    );
    let rule = err(&format!(
        "{MINIMAL}\n[[rules]]\nprefix = \"/a\"\n[[rules]]\nprefix = \"/b\"\nroles = 3\n"
    ));
    assert!(rule.iter().any(|l| l.starts_with("rules[1].roles:")), "{rule:?}");
    let scheme = err(&MINIMAL.replace("https://app.example.com", "app.example.com"));
    assert!(
        scheme
            .iter()
            .any(|l| l.starts_with("server.public_url:") && l.contains("write it like https://app.example.com")),
        "{scheme:?}"
    );
    let scopes = err(&MINIMAL.replace("[logto]\n", "[logto]\nscopes = [\"email roles\", \"a\\\\b\"]\n"));
    assert!(
        scopes.iter().any(|l| l
            .ends_with("`email roles` is not a valid scope token: one scope per string, like [\"email\", \"roles\"]")),
        "{scopes:?}"
    );
    assert!(scopes.iter().any(|l| l.contains("no quote or backslash")), "{scopes:?}");
    let upstream = err(&MINIMAL.replace("http://127.0.0.1:8080", "127.0.0.1:8080"));
    assert!(
        upstream
            .iter()
            .any(|l| l.starts_with("upstream.url:") && l.contains("write it like http://127.0.0.1:8080 (https://")),
        "{upstream:?}"
    );
}

#[test]
fn every_missing_key_is_named_on_its_own_line() {
    let err = Config::from_toml_str("", no_env()).unwrap_err();
    let text = err.to_string();
    for key in [
        "server.public_url: missing",
        "upstream.url: missing",
        "logto.endpoint: missing",
        "logto.app_id: missing",
        "logto.app_secret: missing",
        "session.secret: missing",
    ] {
        assert!(text.contains(key), "{key} not in {text}");
    }
}

#[test]
fn short_secret_and_bad_urls_are_reported_together() {
    let toml = MINIMAL
        .replace("0123456789abcdef0123456789abcdef", "short")
        .replace("http://127.0.0.1:8080", "ftp://x")
        .replace("https://app.example.com", "https://app.example.com/path");
    let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
    assert!(err.0.iter().any(|l| l.starts_with("session.secret: too short")));
    assert!(err.0.iter().any(|l| l.starts_with("upstream.url:")));
    assert!(err.0.iter().any(|l| l.starts_with("server.public_url:")));
}

#[test]
fn env_value_that_looks_like_a_number_stays_a_string() {
    let env = vec![
        ("LOGTO_GATE_LOGTO__APP_SECRET".to_owned(), "12345".to_owned()),
        ("LOGTO_GATE_LOGTO__APP_ID".to_owned(), "007".to_owned()),
        ("LOGTO_GATE_UPSTREAM__PRESERVE_HOST".to_owned(), "true".to_owned()),
        ("LOGTO_GATE_LOGTO__SCOPES".to_owned(), "email, roles".to_owned()),
    ];
    let c = Config::from_toml_str(MINIMAL, env).expect("valid");
    assert_eq!(c.logto.app_secret.expose(), "12345");
    assert_eq!(c.logto.app_id, "007");
    assert!(c.upstream.preserve_host);
    assert_eq!(
        c.logto.scopes,
        vec!["openid", "profile", "offline_access", "email", "roles"]
    );
}

/// A list from the environment may be written as JSON (what Helm's `toJson` gives), as `[a, b]` or as `a,b`; a
/// broken JSON list is refused with the variable named and the forms that work.
#[test]
fn env_lists_are_read_in_every_common_form() {
    for text in [
        r#"["email", "roles"]"#,
        "[email, roles]",
        "email,roles",
        "email roles",
        r#" [ "email","roles" ] "#,
    ] {
        let env = vec![("LOGTO_GATE_LOGTO__SCOPES".to_owned(), text.to_owned())];
        let c = Config::from_toml_str(MINIMAL, env).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            c.logto.scopes,
            vec!["openid", "profile", "offline_access", "email", "roles"],
            "{text}"
        );
    }
    let env = vec![("LOGTO_GATE_SERVER__TRUSTED_PROXIES".to_owned(), "[]".to_owned())];
    assert!(Config::from_toml_str(MINIMAL, env).is_ok());
    for broken in [r#"["email", 1]"#, r#"["email""#, "['email', 'roles']"] {
        let env = vec![("LOGTO_GATE_LOGTO__SCOPES".to_owned(), broken.to_owned())];
        let err = Config::from_toml_str(MINIMAL, env).expect_err(broken).to_string();
        assert!(err.contains("LOGTO_GATE_LOGTO__SCOPES"), "{err}");
        assert!(err.contains("a,b or [a, b]"), "{err}");
    }
}

#[test]
fn wrong_type_names_the_key() {
    let toml = MINIMAL.replace("app_id = \"app\"", "app_id = [1]");
    let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
    assert!(err.0[0].starts_with("logto.app_id:"), "{err}");
}

#[test]
fn unknown_key_is_refused() {
    let toml = format!("{MINIMAL}\n[extra]\nx = 1\n");
    let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
    assert!(err.to_string().contains("unknown key `extra`"), "{err}");
}

#[test]
fn scopes_needed_by_rules_and_headers_are_requested() {
    let toml = format!(
        "{MINIMAL}\n[headers]\n\"X-Team\" = \"custom_data.team\"\n\n[[rules]]\nprefix = \"/o\"\n\
         organizations = [\"org\"]\n\n[[rules]]\nprefix = \"/g\"\ngithub_logins = [\"x\"]\n"
    );
    let c = Config::from_toml_str(&toml, no_env()).expect("valid");
    for s in ["custom_data", "urn:logto:scope:organizations", "identities"] {
        assert!(
            c.logto.scopes.iter().any(|have| have == s),
            "{s} missing from {:?}",
            c.logto.scopes
        );
    }
    // Logto's enterprise SSO identities come with the `identities` scope.
    let toml = format!("{MINIMAL}\n[headers]\n\"X-SSO\" = \"sso_identities.0.issuer\"\n");
    let c = Config::from_toml_str(&toml, no_env()).expect("valid");
    assert!(
        c.logto.scopes.iter().any(|have| have == "identities"),
        "{:?}",
        c.logto.scopes
    );
}

#[test]
fn trusted_proxies_and_assertion_are_validated() {
    let toml = format!("{MINIMAL}\n[assertion]\nenabled = true\n",)
        .replace("[upstream]", "[upstream]\npass_access_token = true")
        .replace(
            "public_url = ",
            "trusted_proxies = [\"10.0.0.0/8\", \"bogus\"]\npublic_url = ",
        );
    let err = Config::from_toml_str(&toml, no_env()).unwrap_err();
    assert!(
        err.0.iter().any(|l| l.starts_with("server.trusted_proxies: `bogus`")),
        "{err}"
    );
    assert!(err.0.iter().any(|l| l == "assertion.audience: missing"), "{err}");
}

#[test]
fn trusted_identity_headers_name_other_proxies_fields_and_need_trusted_proxies() {
    let with = |server: &str| MINIMAL.replace("public_url = ", &format!("{server}\npublic_url = "));
    let kept = "trusted_identity_headers = [\"Cf-Access-Authenticated-User-Email\", \"X-Pomerium-Claim-Email\"]";
    let c = Config::from_toml_str(&with(&format!("trusted_proxies = [\"10.0.0.0/8\"]\n{kept}")), no_env()).unwrap();
    let names: Vec<&str> = c.server.trusted_identity_headers.iter().map(|h| h.as_str()).collect();
    assert_eq!(names, ["cf-access-authenticated-user-email", "x-pomerium-claim-email"]);
    for (server, want) in [
        (
            kept.to_owned(),
            "server.trusted_identity_headers: needs server.trusted_proxies",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\"]\ntrusted_identity_headers = [\"X-Request-Id\"]".to_owned(),
            "server.trusted_identity_headers: `X-Request-Id` is not an identity field of another auth proxy",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\"]\ntrusted_identity_headers = [\"bad name\"]".to_owned(),
            "server.trusted_identity_headers: `bad name` is not a valid HTTP header name",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\"]\ntrusted_identity_headers = [\"X-Forwarded-User\"]".to_owned(),
            "server.trusted_identity_headers: `x-forwarded-user` is the gate's own identity field",
        ),
    ] {
        let err = Config::from_toml_str(&with(&server), no_env()).unwrap_err();
        assert!(err.0.iter().any(|l| l.starts_with(want)), "{server}: {err}");
    }
}

#[test]
fn secret_debug_output_is_redacted() {
    let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cret"));
    assert!(!dbg.contains("0123456789abcdef"));
}

#[test]
fn a_cookie_name_prefix_must_be_one_the_cookies_can_keep() {
    let with = |public_url: &str, session: &str| {
        MINIMAL
            .replace("https://app.example.com", public_url)
            .replace("[session]\n", &format!("[session]\n{session}\n"))
    };
    for (toml, want) in [
        (
            with("http://app.example.com", "cookie_name = \"__Host-gate\""),
            "`__Host-gate` starts with __Host-, which browsers accept only on Secure cookies",
        ),
        (
            with("http://app.example.com", "cookie_name = \"__secure-gate\""),
            "`__secure-gate` starts with __Secure-, which browsers accept only on Secure cookies",
        ),
        (
            with(
                "https://app.example.com",
                "cookie_name = \"__Host-gate\"\ncookie_domain = \"example.com\"",
            ),
            "`__Host-gate` starts with __Host-, which browsers refuse with a Domain",
        ),
    ] {
        let err = Config::from_toml_str(&toml, no_env()).unwrap_err().to_string();
        assert!(err.contains(&format!("session.cookie_name: {want}")), "{err}");
    }
    for session in [
        "cookie_name = \"__Host-gate\"",
        "cookie_name = \"__Secure-gate\"\ncookie_domain = \"example.com\"",
    ] {
        let c = Config::from_toml_str(&with("https://app.example.com", session), no_env());
        assert!(c.is_ok(), "{session}: {:?}", c.err().map(|e| e.to_string()));
    }
}

#[test]
fn a_url_with_port_zero_is_refused() {
    for (from, to, key) in [
        ("http://127.0.0.1:8080", "http://127.0.0.1:0", "upstream.url"),
        (
            "https://app.example.com",
            "https://app.example.com:0",
            "server.public_url",
        ),
    ] {
        let err = Config::from_toml_str(&MINIMAL.replace(from, to), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{key}: `{to}` has port 0")), "{err}");
    }
}

#[test]
fn sign_out_clear_site_data_takes_the_specifications_directives_only() {
    let with = in_session;
    assert_eq!(with("").expect("valid").session.sign_out_clear_site_data, None);
    assert_eq!(
        with("sign_out_clear_site_data = []")
            .expect("valid")
            .session
            .sign_out_clear_site_data,
        None
    );
    let c = with("sign_out_clear_site_data = [\"cache\", \"storage\", \"executionContexts\"]").expect("valid");
    assert_eq!(
        c.session.sign_out_clear_site_data.as_ref().map(|v| v.to_str().unwrap()),
        Some("\"cache\", \"storage\", \"executionContexts\"")
    );
    // A directive browsers would not know (a wrong case, a quoted one, a misspelling) clears nothing: refused.
    for bad in ["Cache", "\\\"cache\\\"", "storge", "executioncontexts", ""] {
        let e = with(&format!("sign_out_clear_site_data = [\"cache\", \"{bad}\"]"))
            .expect_err(bad)
            .0;
        assert!(
            e.iter().any(|l| l.starts_with("session.sign_out_clear_site_data: `")
                && l.contains("is not a Clear-Site-Data directive; expected one of \"cache\", \"cookies\"")),
            "{bad}: {e:?}"
        );
    }
    let twice = with("sign_out_clear_site_data = [\"cache\", \"cache\"]")
        .expect_err("twice")
        .0;
    assert!(
        twice
            .iter()
            .any(|l| l == "session.sign_out_clear_site_data: `cache` is listed twice"),
        "{twice:?}"
    );
    // From the environment as one string, as every list.
    let env = vec![(
        "LOGTO_GATE_SESSION__SIGN_OUT_CLEAR_SITE_DATA".to_owned(),
        "cache,*".to_owned(),
    )];
    let c = Config::from_toml_str(MINIMAL, env).expect("valid");
    assert_eq!(
        c.session.sign_out_clear_site_data.as_ref().map(|v| v.to_str().unwrap()),
        Some("\"cache\", \"*\"")
    );
}

#[test]
fn keep_url_fragment_is_off_unless_set_to_true() {
    let with = in_session;
    assert!(!with("").expect("valid").session.keep_url_fragment);
    assert!(
        with("keep_url_fragment = true")
            .expect("valid")
            .session
            .keep_url_fragment
    );
    let e = with("keep_url_fragment = \"maybe\"")
        .expect_err("not a boolean")
        .to_string();
    assert!(e.contains("keep_url_fragment"), "{e}");
    let env = vec![("LOGTO_GATE_SESSION__KEEP_URL_FRAGMENT".to_owned(), "true".to_owned())];
    assert!(
        Config::from_toml_str(MINIMAL, env)
            .expect("valid")
            .session
            .keep_url_fragment
    );
}

#[test]
fn the_revocation_file_is_for_the_cookie_store_without_redis() {
    let with = in_session;
    let c = with("revocation_file = \"/var/lib/logto-gate/revoked.json\"").expect("valid");
    assert_eq!(
        c.session.revocation_file.as_deref(),
        Some(std::path::Path::new("/var/lib/logto-gate/revoked.json"))
    );
    assert_eq!(
        with("revocation_file = \"\"").expect("valid").session.revocation_file,
        None
    );
    let both = with("revocation_file = \"/r.json\"\nredis_url = \"redis://127.0.0.1:6379\"")
        .expect_err("invalid")
        .0;
    assert!(
        both.iter()
            .any(|l| l.starts_with("session.revocation_file: is for the cookie store without Redis")),
        "{both:?}"
    );
    let env = vec![(
        "LOGTO_GATE_SESSION__REVOCATION_FILE".to_owned(),
        "/run/revoked.json".to_owned(),
    )];
    let c = Config::from_toml_str(MINIMAL, env).expect("valid");
    assert_eq!(
        c.session.revocation_file.as_deref(),
        Some(std::path::Path::new("/run/revoked.json"))
    );
}

#[test]
fn a_cluster_needs_a_key_prefix_for_its_hash_tag() {
    let with = |prefix: &str| {
        MINIMAL.replace(
            "[session]\n",
            &format!(
                "[session]\nstore = \"redis\"\nredis_mode = \"cluster\"\nredis_urls = [\"redis://127.0.0.1:7000\"]\nredis_key_prefix = \"{prefix}\"\n"
            ),
        )
    };
    let c = Config::from_toml_str(&with("app:"), no_env()).expect("valid");
    assert_eq!(c.session.redis_key_prefix, "app:");
    let text = Config::from_toml_str(&with(""), no_env()).unwrap_err().to_string();
    assert!(
        text.contains("session.redis_key_prefix: must not be empty with redis_mode = \"cluster\""),
        "{text}"
    );
    // One server takes an empty prefix: every key is then the gate's own name.
    let standalone = MINIMAL.replace(
        "[session]\n",
        "[session]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nredis_key_prefix = \"\"\n",
    );
    assert_eq!(
        Config::from_toml_str(&standalone, no_env())
            .expect("valid")
            .session
            .redis_key_prefix,
        ""
    );
}

#[test]
fn an_upstream_on_a_unix_socket_is_named_by_its_absolute_path() {
    let at = |url: &str| MINIMAL.replace("http://127.0.0.1:8080", url);
    for written in [
        "unix:/run/app/app.sock",
        "unix:///run/app/app.sock",
        "UNIX:/run/app/app.sock",
    ] {
        let config = Config::from_toml_str(&at(written), no_env()).expect(written);
        assert_eq!(
            config.upstream.unix_socket.as_deref(),
            Some(std::path::Path::new("/run/app/app.sock")),
            "{written}"
        );
        // The app is asked for as `localhost`, with no base path.
        assert_eq!(config.upstream.url, "http://localhost/", "{written}");
        assert_eq!(config.upstream.base_path, "", "{written}");
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.routes[0].upstream.unix_socket, config.upstream.unix_socket);
    }
    assert_eq!(
        Config::from_toml_str(MINIMAL, no_env()).unwrap().upstream.unix_socket,
        None,
        "http:// is no socket"
    );
    let long = format!("unix:/{}", "s".repeat(107));
    for (url, says) in [
        (
            "unix:run/app.sock",
            "`unix:run/app.sock` must be an absolute path (unix:/run/app/app.sock)",
        ),
        (
            "unix://app.sock",
            "`unix://app.sock` names no socket file: write unix:/absolute/path/to/app.sock",
        ),
        ("unix:", "`unix:` must be an absolute path"),
        (
            "unix:/run/app/",
            "`unix:/run/app/` names a directory, not a socket file",
        ),
        ("unix:/run/app.sock?x=1", "without a query, fragment or NUL"),
        (
            long.as_str(),
            "is longer than the 107 bytes a Unix socket path may have",
        ),
    ] {
        let lines = Config::from_toml_str(&at(url), no_env()).expect_err(url).0;
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("upstream.url: ") && l.contains(says)),
            "{url}: {lines:?}"
        );
    }
    // 107 bytes fit.
    let fits = format!("unix:/{}", "s".repeat(106));
    assert!(Config::from_toml_str(&at(&fits), no_env()).is_ok());
    // An entry of [[upstreams]] too, and a CA file for it is refused as for any plain upstream.
    let entry = format!(
        "{MINIMAL}\n[[upstreams]]\nprefix = \"/grafana\"\nstrip_prefix = true\nurl = \"unix:/run/grafana/grafana.sock\"\n"
    );
    let config = Config::from_toml_str(&entry, no_env()).expect("entry on a socket");
    let grafana = config
        .routes
        .iter()
        .find(|r| r.prefix == "/grafana")
        .expect("the entry");
    assert_eq!(
        grafana.upstream.unix_socket.as_deref(),
        Some(std::path::Path::new("/run/grafana/grafana.sock"))
    );
    assert_eq!(config.upstream.unix_socket, None, "[upstream] stays on TCP");
    let lines = Config::from_toml_str(&format!("{entry}tls_ca_file = \"/ca.pem\"\n"), no_env())
        .expect_err("CA for a socket")
        .0;
    assert!(
        lines.iter().any(|l| {
            l.starts_with(
            "upstreams[0].tls_ca_file: is for an https:// upstream; upstreams[0].url is unix:/run/grafana/grafana.sock,"
        )
        }),
        "{lines:?}"
    );
    let bad = entry.replace("unix:/run/grafana/grafana.sock", "unix:grafana.sock");
    let lines = Config::from_toml_str(&bad, no_env()).expect_err("relative").0;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstreams[0].url: `unix:grafana.sock` must be an absolute path")),
        "{lines:?}"
    );
}

#[test]
fn a_ca_file_no_https_upstream_uses_is_refused() {
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let with_ca = MINIMAL.replace("[upstream]\n", "[upstream]\ntls_ca_file = \"/ca.pem\"\n");
    let lines = err(&with_ca);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstream.tls_ca_file: is for https:// upstreams")),
        "{lines:?}"
    );
    let entry =
        format!("{MINIMAL}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"http://a.internal\"\ntls_ca_file = \"/a.pem\"\n");
    let lines = err(&entry);
    assert!(
        lines.iter().any(|l| l.starts_with(
            "upstreams[0].tls_ca_file: is for an https:// upstream; upstreams[0].url is http://a.internal,"
        )),
        "{lines:?}"
    );
    // The shared CA is used by an https:// entry without one of its own: accepted (whether the file reads is
    // checked after validation).
    let inherited = format!("{with_ca}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"https://a.internal\"\n");
    let refused = |toml: &str| match Config::from_toml_str(toml, no_env()) {
        Ok(_) => false,
        Err(e) => e.0.iter().any(|l| l.contains("is for https:// upstream")),
    };
    assert!(!refused(&inherited), "the entry uses the shared CA");
    let own =
        format!("{with_ca}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"https://a.internal\"\ntls_ca_file = \"/a.pem\"\n");
    assert!(
        err(&own).iter().any(|l| l.starts_with("upstream.tls_ca_file:")),
        "no upstream uses the shared CA"
    );
}

#[test]
fn the_tunnel_grant_check_interval_is_read_and_bounded() {
    let with = |v: &str| {
        MINIMAL.replace(
            "[session]\n",
            &format!("[session]\ntunnel_grant_check_interval = \"{v}\"\n"),
        )
    };
    let c = Config::from_toml_str(&with("20m"), no_env()).expect("valid");
    assert_eq!(c.session.tunnel_grant_check_interval, Duration::from_secs(1200));
    let env = vec![(
        "LOGTO_GATE_SESSION__TUNNEL_GRANT_CHECK_INTERVAL".to_owned(),
        "2h".to_owned(),
    )];
    let c = Config::from_toml_str(MINIMAL, env).expect("valid");
    assert_eq!(c.session.tunnel_grant_check_interval, Duration::from_secs(7200));
    for (bad, says) in [
        ("500ms", "session.tunnel_grant_check_interval: must be at least 1s"),
        ("0s", "session.tunnel_grant_check_interval: must be longer than zero"),
        ("soon", "session.tunnel_grant_check_interval: `soon` is not a duration"),
    ] {
        let text = Config::from_toml_str(&with(bad), no_env()).unwrap_err().to_string();
        assert!(text.lines().any(|l| l.starts_with(says)), "{bad}: {text}");
    }
}

#[test]
fn a_client_certificate_comes_with_its_key_and_only_for_https_upstreams() {
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let https = MINIMAL.replace("http://127.0.0.1:8080", "https://app.internal");
    let lines = err(&https.replace("[upstream]\n", "[upstream]\ntls_client_cert_file = \"/c.pem\"\n"));
    assert!(
        lines.iter().any(|l| l
            == "upstream.tls_client_cert_file: needs upstream.tls_client_key_file, the private key of the certificate"),
        "{lines:?}"
    );
    let lines = err(&https.replace("[upstream]\n", "[upstream]\ntls_client_key_file = \"/k.pem\"\n"));
    assert!(
        lines
            .iter()
            .any(|l| l
                == "upstream.tls_client_key_file: needs upstream.tls_client_cert_file, the certificate it belongs to"),
        "{lines:?}"
    );
    // On a plain upstream no handshake would present it: refused, as a CA file is.
    let pair = "tls_client_cert_file = \"/c.pem\"\ntls_client_key_file = \"/k.pem\"\n";
    let lines = err(&MINIMAL.replace("[upstream]\n", &format!("[upstream]\n{pair}")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstream.tls_client_cert_file: is for https:// upstreams")),
        "{lines:?}"
    );
    let entry = format!("{MINIMAL}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"unix:/run/a.sock\"\n{pair}");
    let lines = err(&entry);
    assert!(
        lines.iter().any(|l| l.starts_with(
            "upstreams[0].tls_client_cert_file: is for an https:// upstream; upstreams[0].url is unix:/run/a.sock,"
        )),
        "{lines:?}"
    );
    // The shared pair is used by an https:// entry without one of its own: valid (the files are read afterwards,
    // and these do not exist).
    let inherited = format!(
        "{}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"https://a.internal\"\n",
        MINIMAL.replace("[upstream]\n", &format!("[upstream]\n{pair}"))
    );
    let lines = err(&inherited);
    assert!(
        lines.iter().all(|l| !l.contains("is for https://")) && lines.iter().any(|l| l.contains("cannot read")),
        "{lines:?}"
    );
}

#[test]
fn a_tls_server_name_is_a_name_or_address_of_an_https_upstream_and_never_shared() {
    let ok = |toml: &str| Config::from_toml_str(toml, no_env()).expect("valid");
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let https = MINIMAL.replace("http://127.0.0.1:8080", "https://10.0.0.5:8443");
    let named = |name: &str| https.replace("[upstream]\n", &format!("[upstream]\ntls_server_name = {name:?}\n"));
    for (written, want) in [
        ("app.internal", "app.internal"),
        (" App.Internal ", "App.Internal"),
        ("10.0.0.5", "10.0.0.5"),
        ("[fd00::5]", "fd00::5"),
        ("fd00::5", "fd00::5"),
    ] {
        let c = ok(&named(written));
        let name = c.upstream.tls_server_name.as_ref().expect(written).to_str();
        assert_eq!(name, want, "{written}");
        // [upstream]'s name goes with its URL: the default route has it.
        let default = c.routes.iter().find(|r| r.prefix == "/" && r.host.is_none()).unwrap();
        assert!(default.upstream.tls_server_name.is_some());
    }
    assert!(ok(&named("")).upstream.tls_server_name.is_none());
    for bad in [
        "https://app.internal",
        "app.internal:8443",
        "app internal",
        "app.internal/x",
        "-app.",
        "[fd00::5",
    ] {
        let lines = err(&named(bad));
        assert!(
            lines.iter().any(|l| l.starts_with(&format!(
                "upstream.tls_server_name: `{}` is not a DNS name or an IP address",
                bad.trim()
            ))),
            "{bad}: {lines:?}"
        );
    }
    // On a plain upstream it would never be sent.
    let lines = err(&MINIMAL.replace("[upstream]\n", "[upstream]\ntls_server_name = \"app.internal\"\n"));
    assert!(
        lines.iter().any(|l| l
            == "upstream.tls_server_name: is for an https:// upstream.url; upstream.url is http://127.0.0.1:8080, \
                which sends no TLS server name"),
        "{lines:?}"
    );
    let entry = |url: &str| {
        format!("{MINIMAL}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"{url}\"\ntls_server_name = \"a.internal\"\n")
    };
    let lines = err(&entry("http://10.0.0.6"));
    assert!(
        lines.iter().any(|l| l.starts_with(
            "upstreams[0].tls_server_name: is for an https:// upstream; upstreams[0].url is http://10.0.0.6,"
        )),
        "{lines:?}"
    );
    // An entry's name is its own; [upstream]'s is not inherited by an entry without one.
    let c = ok(&entry("https://10.0.0.6"));
    let a = c.routes.iter().find(|r| r.prefix == "/a").unwrap();
    assert_eq!(a.upstream.tls_server_name.as_ref().unwrap().to_str(), "a.internal");
    let both = format!(
        "{}\n[[upstreams]]\nprefix = \"/b\"\nurl = \"https://10.0.0.7\"\n",
        named("app.internal")
    );
    let c = ok(&both);
    let b = c.routes.iter().find(|r| r.prefix == "/b").unwrap();
    assert!(b.upstream.tls_server_name.is_none());
}

#[test]
fn the_http_redirect_listener_needs_an_address_and_an_https_public_url() {
    let with =
        |base: &str, line: &str| base.replace("[server]\n", &format!("[server]\nhttp_redirect_listen = {line:?}\n"));
    let c = Config::from_toml_str(&with(MINIMAL, "0.0.0.0:80"), no_env()).expect("valid");
    assert_eq!(
        c.server.http_redirect_listen.map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:80")
    );
    assert!(Config::from_toml_str(MINIMAL, no_env())
        .expect("valid")
        .server
        .http_redirect_listen
        .is_none());
    let err = Config::from_toml_str(&with(MINIMAL, ":80"), no_env()).expect_err("invalid");
    assert!(
        err.0
            .iter()
            .any(|l| l == "server.http_redirect_listen: `:80` is not an address like 0.0.0.0:80"),
        "{err}"
    );
    let plain = with(
        &MINIMAL.replace("https://app.example.com", "http://app.example.com"),
        "0.0.0.0:80",
    );
    let err = Config::from_toml_str(&plain, no_env()).expect_err("invalid");
    assert!(
        err.0.iter().any(|l| l.starts_with(
            "server.http_redirect_listen: redirects to https, but server.public_url is http://app.example.com:"
        )),
        "{err}"
    );
}

#[test]
fn request_headers_are_merged_per_entry_and_refused_where_the_gate_writes() {
    let ok = |toml: &str| Config::from_toml_str(toml, no_env()).expect("valid");
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let shared = |table: &str| MINIMAL.replace("[upstream]\n", &format!("[upstream]\nrequest_headers = {table}\n"));
    let c = ok(&format!(
        "{}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"http://10.0.0.6\"\n\
         request_headers = {{ \"X-Api-Key\" = \"a-key\", \"X-Debug\" = \"1\", \"Authorization\" = \"Basic YTpi\" }}\n",
        shared("{ \"X-Api-Key\" = \"shared\", \"X-Debug\" = \"\", \"X-Tenant\" = \"t1\" }")
    ));
    let shown = |fields: &[(http::HeaderName, Option<http::HeaderValue>)]| {
        let mut v: Vec<String> = fields
            .iter()
            .map(|(n, v)| format!("{n}={}", v.as_ref().map_or("(removed)", |v| v.to_str().unwrap())))
            .collect();
        v.sort();
        v.join(" ")
    };
    let default = c.routes.iter().find(|r| r.prefix == "/").unwrap();
    assert_eq!(
        shown(&default.upstream.request_headers),
        "x-api-key=shared x-debug=(removed) x-tenant=t1"
    );
    let a = c.routes.iter().find(|r| r.prefix == "/a").unwrap();
    assert_eq!(
        shown(&a.upstream.request_headers),
        "authorization=Basic YTpi x-api-key=a-key x-debug=1 x-tenant=t1"
    );
    // Credentials stay out of debug output.
    assert!(a
        .upstream
        .request_headers
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .all(|v| v.is_sensitive()));
    assert!(!format!("{:?}", a.upstream).contains("YTpi"));

    for (table, says) in [
        (
            "{ \"X Api\" = \"1\" }",
            "upstream.request_headers.X Api: not a valid HTTP header name",
        ),
        (
            "{ \"X-Api\" = \"a\\u0007b\" }",
            "upstream.request_headers.X-Api: is not a valid header value",
        ),
        (
            "{ \"Host\" = \"a\" }",
            "upstream.request_headers.Host: this header frames the request",
        ),
        (
            "{ \"X-Request-Id\" = \"a\" }",
            "upstream.request_headers.X-Request-Id: the gate sets or removes",
        ),
        (
            "{ \"Cookie\" = \"a=1\" }",
            "upstream.request_headers.Cookie: the gate sets or removes",
        ),
        (
            "{ \"X-Logto-Gate-Assertion\" = \"a\" }",
            "upstream.request_headers.X-Logto-Gate-Assertion: the gate",
        ),
        (
            "{ \"x-forwarded-email\" = \"a\" }",
            "upstream.request_headers.x-forwarded-email: the gate sends the user's",
        ),
        (
            "{ \"X-Api-Key\" = \"replace-with-the-key\" }",
            "upstream.request_headers.X-Api-Key: still the placeholder from logto-gate's examples",
        ),
    ] {
        let lines = err(&shared(table));
        assert!(lines.iter().any(|l| l.starts_with(says)), "{table}: {lines:?}");
    }
    // Authorization only where the gate sends none of its own; an entry is held to the same.
    let passing = MINIMAL.replace("[upstream]\n", "[upstream]\npass_access_token = true\n");
    let lines = err(&format!(
        "{passing}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"http://10.0.0.6\"\n\
         request_headers = {{ \"Authorization\" = \"Basic YTpi\" }}\n"
    ));
    assert!(
        lines.iter().any(|l| {
            l
            == "upstreams[0].request_headers.Authorization: upstream.pass_access_token sends the access token in this \
                header"
        }),
        "{lines:?}"
    );
    // A mapped identity field of the operator's own naming is refused too.
    let mapped = format!(
        "{}\n[headers]\n\"X-User-Id\" = \"sub\"\n",
        shared("{ \"X_User_Id\" = \"1\" }")
    );
    let lines = err(&mapped);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstream.request_headers.X_User_Id: the gate sends the user's identity")),
        "{lines:?}"
    );
}

#[test]
fn an_entry_may_choose_its_own_pass_access_token() {
    let ok = |toml: &str| Config::from_toml_str(toml, no_env()).expect("valid");
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let entry = |line: &str| format!("[[upstreams]]\nprefix = \"/a\"\nurl = \"http://10.0.0.6\"\n{line}\n");
    let c = ok(&format!("{MINIMAL}\n{}", entry("pass_access_token = true")));
    let pass = |c: &Config, prefix: &str| {
        c.routes
            .iter()
            .find(|r| r.prefix == prefix)
            .unwrap()
            .upstream
            .pass_access_token
    };
    assert!(pass(&c, "/a") && !pass(&c, "/") && !c.upstream.pass_access_token);
    assert!(c.passes_access_tokens(), "sessions keep the token for the entry's app");
    // Without consent in the prompt, the refresh token that renews it may not come: said for the entry's token too.
    let no_consent = format!("{MINIMAL}\n{}", entry("pass_access_token = true"))
        .replace("[logto]\n", "[logto]\nprompt = \"login\"\n");
    let caveats = ok(&no_consent).caveats();
    assert!(
        caveats.iter().any(|l| l.contains("upstream.pass_access_token")),
        "{caveats:?}"
    );
    let shared = MINIMAL.replace("[upstream]\n", "[upstream]\npass_access_token = true\n");
    let c = ok(&format!("{shared}\n{}", entry("pass_access_token = false")));
    assert!(!pass(&c, "/a") && pass(&c, "/"));
    let c = ok(&format!("{MINIMAL}\n{}", entry("")));
    assert!(!c.passes_access_tokens());

    // Where any app is sent the token, no claim and no shared request field may use Authorization; an entry's own
    // field may where its app is not sent the token.
    let lines = err(&format!(
        "{MINIMAL}\n{}\n[headers]\n\"Authorization\" = \"sub\"\n",
        entry("pass_access_token = true")
    ));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("headers.authorization: upstream.pass_access_token")),
        "{lines:?}"
    );
    let with_shared_field = MINIMAL.replace(
        "[upstream]\n",
        "[upstream]\nrequest_headers = { \"Authorization\" = \"Basic YTpi\" }\n",
    );
    let lines = err(&format!("{with_shared_field}\n{}", entry("pass_access_token = true")));
    assert!(
        lines.iter().any(|l| {
            l
            == "upstream.request_headers.Authorization: upstreams[0].pass_access_token sends the access token in this \
                header"
        }),
        "{lines:?}"
    );
    ok(&format!(
        "{shared}\n{}",
        entry("pass_access_token = false\nrequest_headers = { \"Authorization\" = \"Basic YTpi\" }")
    ));
    let lines = err(&format!(
        "{shared}\n{}",
        entry("request_headers = { \"Authorization\" = \"Basic YTpi\" }")
    ));
    assert!(
        lines.iter().any(|l| {
            l
            == "upstreams[0].request_headers.Authorization: upstream.pass_access_token sends the access token in this \
                header"
        }),
        "{lines:?}"
    );
    // The Protected App contract sends its own Authorization to every app.
    let protected = MINIMAL.replace("[upstream]\n", "[upstream]\nprotected_app = true\n");
    let lines = err(&format!("{protected}\n{}", entry("pass_access_token = true")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstreams[0].pass_access_token: upstream.protected_app sends")),
        "{lines:?}"
    );
}

#[test]
fn client_ips_on_a_rule_are_ranges() {
    let ok = |toml: &str| Config::from_toml_str(toml, no_env()).expect("valid");
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let rule =
        |ips: &str| format!("{MINIMAL}\n[[rules]]\nprefix = \"/status\"\nallow = \"public\"\nclient_ips = {ips}\n");
    let c = ok(&rule("[\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7/32\"]"));
    assert_eq!(c.policy.rules[0].client_ips.as_ref().map(Vec::len), Some(3));
    for (ips, says) in [
        ("[]", "rules[0].client_ips: is an empty list"),
        (
            "[\"10.1.2.3/8\"]",
            "rules[0].client_ips: `10.1.2.3/8` has bits set after its prefix",
        ),
        ("[\"office\"]", "rules[0].client_ips: "),
    ] {
        let lines = err(&rule(ips));
        assert!(lines.iter().any(|l| l.starts_with(says)), "{ips}: {lines:?}");
    }
    let lines = err(&format!("{MINIMAL}\n[access]\nclient_ips = [\"10.0.0.0/8\"]\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("access.client_ips: the default applies")),
        "{lines:?}"
    );
}

#[test]
fn an_h2c_upstream_is_an_http_address_spoken_to_over_http2() {
    let ok = |toml: &str| Config::from_toml_str(toml, no_env()).expect("valid");
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let at = |url: &str| MINIMAL.replace("http://127.0.0.1:8080", url);
    let c = ok(&at("H2C://127.0.0.1:50051/base"));
    assert!(c.upstream.http2);
    assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:50051/");
    assert_eq!(c.upstream.base_path, "/base");
    assert!(!ok(MINIMAL).upstream.http2);
    let lines = err(&at("h2c://"));
    assert!(lines.iter().any(|l| l.starts_with("upstream.url: ")), "{lines:?}");
    // TLS settings are for https:// apps; h2c is HTTP/2 without TLS.
    let lines = err(&at("h2c://10.0.0.5:50051").replace("[upstream]\n", "[upstream]\ntls_ca_file = \"/ca.pem\"\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstream.tls_ca_file: is for https://")),
        "{lines:?}"
    );
    let entry =
        format!("{MINIMAL}\n[[upstreams]]\nprefix = \"/grpc\"\nurl = \"h2c://10.0.0.5:50051\"\npreserve_host = true\n");
    let lines = err(&entry);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstreams[0].preserve_host: cannot go with an h2c:// upstream")),
        "{lines:?}"
    );
}

#[test]
fn pages_take_plain_text_a_safe_help_link_and_a_stylesheet_without_markup() {
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let pages = |body: &str| format!("{MINIMAL}\n[pages]\n{body}\n");
    let c = Config::from_toml_str(
        &pages("name = \"Acme sign-in\"\nhelp = \"Ask #it-help.\"\nhelp_url = \"mailto:it@example.com\""),
        no_env(),
    )
    .expect("valid");
    assert_eq!(c.pages.look.name.as_deref(), Some("Acme sign-in"));
    assert_eq!(c.pages.look.help_url.as_deref(), Some("mailto:it@example.com"));
    assert!(c.pages.look.stylesheet.is_empty());
    // A link that would run a script in the gate's origin, or a relative one, is refused naming the key.
    for url in ["javascript:alert(1)", "data:text/html,x", "/help", "https://"] {
        let lines = err(&pages(&format!("help = \"h\"\nhelp_url = \"{url}\"")));
        assert!(
            lines.iter().any(|l| l.starts_with("pages.help_url: `")),
            "{url}: {lines:?}"
        );
    }
    let lines = err(&pages("help_url = \"https://wiki.example.com/access\""));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pages.help_url: links the pages.help sentence")),
        "{lines:?}"
    );
    let lines = err(&pages("name = \"a\\nb\"\nhelp = \"x\""));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pages.name: contains the control character")),
        "{lines:?}"
    );
    let lines = err(&pages(&format!("help = \"{}\"", "a".repeat(501))));
    assert!(
        lines
            .iter()
            .any(|l| l == "pages.help: is 501 characters long; at most 500 fit"),
        "{lines:?}"
    );
    // The stylesheet is read once the configuration is valid: CSS is taken, markup and oversized files are not.
    let dir = tempfile::tempdir().expect("dir");
    let css = dir.path().join("pages.css");
    let with_file = pages(&format!("stylesheet_file = \"{}\"", css.display()));
    std::fs::write(&css, "body { color: #036 }\n").expect("write");
    let c = Config::from_toml_str(&with_file, no_env()).expect("valid");
    assert_eq!(c.pages.look.stylesheet, "body { color: #036 }\n");
    std::fs::write(&css, "h1{}</style><script>alert(1)</script>").expect("write");
    let lines = err(&with_file);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pages.stylesheet_file: ") && l.contains("has `<` at byte 4")),
        "{lines:?}"
    );
    std::fs::write(&css, "a{}".repeat(6000)).expect("write");
    let lines = err(&with_file);
    assert!(
        lines.iter().any(|l| l.contains("is 18000 bytes; at most 16384 fit")),
        "{lines:?}"
    );
    std::fs::remove_file(&css).expect("remove");
    let lines = err(&with_file);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pages.stylesheet_file: cannot read")),
        "{lines:?}"
    );
}

#[test]
fn the_gate_listens_on_an_address_or_a_socket_file() {
    let c = Config::from_toml_str(MINIMAL, no_env()).expect("valid");
    assert_eq!(c.server.listen, Listen::Tcp("0.0.0.0:4180".parse().unwrap()));
    let on = |listen: &str| MINIMAL.replace("[server]\n", &format!("[server]\n{listen}\n"));
    for written in [
        "listen = \"unix:/run/lg/gate.sock\"",
        "listen = \"unix:///run/lg/gate.sock\"",
    ] {
        let c = Config::from_toml_str(&on(written), no_env()).expect(written);
        assert_eq!(
            c.server.listen,
            Listen::Unix {
                path: "/run/lg/gate.sock".into(),
                mode: 0o660
            }
        );
        assert_eq!(c.server.listen.to_string(), "unix:/run/lg/gate.sock");
    }
    let c = Config::from_toml_str(
        &on("listen = \"unix:/run/lg/gate.sock\"\nlisten_mode = \"0666\""),
        no_env(),
    )
    .expect("mode");
    assert!(matches!(c.server.listen, Listen::Unix { mode: 0o666, .. }));
    // Its clients count as 127.0.0.1: a word at start and in `check` unless that is a trusted proxy.
    let caveats = c.caveats();
    assert!(
        caveats
            .iter()
            .any(|l| l.starts_with("server.trusted_proxies: the gate listens on unix:/run/lg/gate.sock")),
        "{caveats:?}"
    );
    let trusting = on("listen = \"unix:/run/lg/gate.sock\"\ntrusted_proxies = [\"127.0.0.1/32\"]");
    let c = Config::from_toml_str(&trusting, no_env()).expect("trusting");
    assert!(c.caveats().is_empty(), "{:?}", c.caveats());
    assert!(Config::from_toml_str(MINIMAL, no_env()).unwrap().caveats().is_empty());
}

#[test]
fn a_rule_for_delete_but_not_post_is_a_caveat_when_form_bodies_go_unread() {
    let unread = MINIMAL.replace("[upstream]\n", "[upstream]\nread_form_method = false\n");
    let with = |rules: &str| {
        let text = format!("{unread}\n{rules}");
        Config::from_toml_str(&text, no_env()).expect("valid").caveats()
    };
    let rules = "[[rules]]\nprefix = \"/a\"\nallow = \"public\"\n\
         [[rules]]\nprefix = \"/items\"\nmethods = [\"get\", \"delete\", \"put\"]\nroles = [\"admin\"]\n";
    // Read (the default), the body's `_method` is decided on: nothing to warn of.
    let read = Config::from_toml_str(&format!("{MINIMAL}\n{rules}"), no_env()).expect("valid");
    assert!(read.upstream.read_form_method && read.upstream.max_form_method_bytes == 1 << 20);
    assert!(read.caveats().is_empty(), "{:?}", read.caveats());
    let caveats = with(rules);
    assert_eq!(caveats.len(), 1, "{caveats:?}");
    assert!(
        caveats[0].starts_with("rules[1].methods: names DELETE but not POST."),
        "{caveats:?}"
    );
    assert!(caveats[0].contains("_method"), "{caveats:?}");
    for fine in [
        "[[rules]]\nprefix = \"/items\"\nmethods = [\"POST\", \"DELETE\"]\nroles = [\"admin\"]\n",
        "[[rules]]\nprefix = \"/items\"\nmethods = [\"DELETE\"]\nallow = \"public\"\n",
        "[[rules]]\nprefix = \"/items\"\nmethods = [\"GET\"]\nroles = [\"admin\"]\n",
        "[[rules]]\nprefix = \"/items\"\nroles = [\"admin\"]\n",
    ] {
        assert!(with(fine).is_empty(), "{fine}");
    }
}

#[test]
fn the_form_method_limit_is_bounded_and_needs_the_reading() {
    let with = |keys: &str| {
        Config::from_toml_str(
            &MINIMAL.replace("[upstream]\n", &format!("[upstream]\n{keys}")),
            no_env(),
        )
    };
    assert_eq!(
        with("max_form_method_bytes = 65536\n")
            .expect("valid")
            .upstream
            .max_form_method_bytes,
        65_536
    );
    for (keys, want) in [
        (
            "max_form_method_bytes = 100\n",
            "upstream.max_form_method_bytes: 100 is outside 4096..=67108864",
        ),
        (
            "max_form_method_bytes = 99999999999\n",
            "upstream.max_form_method_bytes: 99999999999 is outside 4096..=67108864",
        ),
        (
            "read_form_method = false\nmax_form_method_bytes = 65536\n",
            "upstream.max_form_method_bytes: has no effect with upstream.read_form_method = false",
        ),
    ] {
        let err = with(keys).expect_err("refused").to_string();
        assert!(err.contains(want), "{keys}: {err}");
    }
}

#[test]
fn an_entrys_request_field_from_a_file_goes_over_the_shared_inline_one() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("key");
    std::fs::write(&key, "from-file\r\n").expect("write");
    let toml = format!(
        "{}\n[[upstreams]]\nprefix = \"/a\"\nurl = \"http://127.0.0.1:9000\"\nrequest_headers_files = {{ \"X-Key\" = \"{}\" }}\n",
        MINIMAL.replace(
            "[upstream]\n",
            "[upstream]\nrequest_headers = { \"X-Key\" = \"inline\", \"X-Other\" = \"o\" }\n"
        ),
        key.display()
    );
    let c = Config::from_toml_str(&toml, no_env()).expect("valid");
    let fields = |u: &UpstreamConfig| {
        let mut v: Vec<String> = u
            .request_headers
            .iter()
            .map(|(n, v)| format!("{n}={}", v.as_ref().map_or("", |v| v.to_str().unwrap_or("?"))))
            .collect();
        v.sort();
        v
    };
    let entry = c.routes.iter().find(|r| r.prefix == "/a").expect("entry");
    assert_eq!(fields(&entry.upstream), ["x-key=from-file", "x-other=o"]);
    assert!(entry
        .upstream
        .request_headers
        .iter()
        .all(|(_, v)| v.as_ref().is_some_and(HeaderValue::is_sensitive)));
    assert_eq!(fields(&c.upstream), ["x-key=inline", "x-other=o"]);
    // The files stay listed, for the gate to read again when they change.
    assert!(c.upstream.request_header_files.is_empty());
    assert_eq!(entry.upstream.request_header_files.len(), 1);
}

#[test]
fn a_rules_max_age_is_a_minute_or_more_and_only_where_a_sign_in_is_required() {
    let err = |toml: &str| Config::from_toml_str(toml, no_env()).expect_err("invalid").0;
    let rule = |body: &str| format!("{MINIMAL}\n[[rules]]\nprefix = \"/admin\"\n{body}\n");
    let c = Config::from_toml_str(&rule("max_age = \"15m\""), no_env()).expect("valid");
    let decision = c.policy.decide("GET", &[], None, None, "/admin");
    assert_eq!(decision.max_age(), Some(900));
    assert_eq!(c.policy.decide("GET", &[], None, None, "/other").max_age(), None);
    let lines = err(&rule("max_age = \"30s\""));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rules[0].max_age: `30s` is shorter than a minute")),
        "{lines:?}"
    );
    let lines = err(&rule("max_age = \"soon\""));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rules[0].max_age: `soon` is not a duration")),
        "{lines:?}"
    );
    let lines = err(&rule("allow = \"public\"\nmax_age = \"15m\""));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rules[0].allow: a public or denied route cannot also list conditions")),
        "{lines:?}"
    );
    // `[access]` may have one, for every path no rule names.
    let access = MINIMAL.replace("[session]", "[access]\nmax_age = \"1h\"\n[session]");
    let c = Config::from_toml_str(
        &format!("{access}\n[[rules]]\nprefix = \"/admin\"\nmax_age = \"5m\"\n"),
        no_env(),
    )
    .expect("valid");
    assert_eq!(c.policy.decide("GET", &[], None, None, "/x").max_age(), Some(3600));
    assert_eq!(c.policy.decide("GET", &[], None, None, "/admin").max_age(), Some(300));
}
