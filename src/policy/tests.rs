use super::*;
use serde_json::json;

fn claims(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn rule(path: PathMatch, access: Access) -> Rule {
    Rule {
        path,
        methods: None,
        host: None,
        client_ips: None,
        access,
    }
}

/// A rule for `method` requests under `prefix`.
fn method_rule(prefix: &str, method: &str, access: Access) -> Rule {
    let mut r = rule(PathMatch::Prefix(prefix.into()), access);
    r.methods = Some(vec![method.into()]);
    r
}

/// Requires the admin role.
fn admins() -> Requirements {
    Requirements {
        roles: vec!["admin".into()],
        ..Default::default()
    }
}

/// `rules`, then everything public.
fn public_but(rules: Vec<Rule>) -> Policy {
    Policy {
        rules,
        default: Access::Public,
        case_insensitive: false,
    }
}

#[test]
fn prefix_matches_whole_segments_only() {
    let r = rule(PathMatch::Prefix("/admin".into()), Access::Deny);
    assert!(r.matches("GET", None, None, "/admin"));
    assert!(r.matches("GET", None, None, "/admin/users"));
    assert!(!r.matches("GET", None, None, "/administrator"));
    let slash = rule(PathMatch::Prefix("/static/".into()), Access::Public);
    assert!(slash.matches("GET", None, None, "/static/app.js"));
    assert!(!slash.matches("GET", None, None, "/static"));
}

#[test]
fn methods_are_case_insensitive_and_hosts_normalised() {
    let mut r = rule(PathMatch::Prefix("/".into()), Access::Public);
    r.methods = Some(vec!["GET".into()]);
    r.host = Some("docs.example.com".into());
    assert!(r.matches("get", Some("DOCS.example.com.:443"), None, "/x"));
    assert!(!r.matches("POST", Some("docs.example.com"), None, "/x"));
    assert!(!r.matches("GET", Some("evil.example.com"), None, "/x"));
    assert!(!r.matches("GET", None, None, "/x"));
}

#[test]
fn first_match_wins_then_default() {
    let p = Policy {
        rules: vec![
            rule(PathMatch::Prefix("/public".into()), Access::Public),
            rule(PathMatch::Regex(Regex::new("^(?:/admin)").unwrap()), Access::Deny),
        ],
        default: Access::Require(Arc::default()),
        case_insensitive: false,
    };
    assert!(matches!(p.route("GET", None, None, "/public/x"), Access::Public));
    assert!(matches!(p.route("GET", None, None, "/admin/x"), Access::Deny));
    assert!(matches!(p.route("GET", None, None, "/other"), Access::Require(_)));
}

#[test]
fn a_method_override_is_decided_as_strictly_as_the_method_it_names() {
    let p = public_but(vec![
        method_rule("/items", "DELETE", Access::Require(Arc::new(admins()))),
        method_rule("/items", "PURGE", Access::Deny),
    ]);
    assert!(matches!(p.decide("GET", &[], None, None, "/items/1"), Decision::Public));
    let d = p.decide("GET", &["DELETE".into()], None, None, "/items/1");
    assert_eq!(
        d.requirements().map(|r| r.roles.clone()).collect::<Vec<_>>(),
        vec![vec!["admin".to_owned()]]
    );
    assert!(matches!(
        p.decide("POST", &["PURGE".into()], None, None, "/items/1"),
        Decision::Deny
    ));
    let mut h = http::HeaderMap::new();
    h.insert("x-http-method-override", "delete".parse().unwrap());
    h.insert("X_Method_Override", "PUT".parse().unwrap());
    assert_eq!(
        method_overrides(&h).unwrap(),
        vec!["DELETE".to_owned(), "PUT".to_owned()]
    );
    h.insert("x-http-method", "DEL ETE".parse().unwrap());
    assert!(method_overrides(&h).unwrap_err().starts_with("x-http-method:"));
}

/// Only what a body's `_method` could make stricter counts: the rules' methods, and the default for those no rule
/// names; nothing at all where no rule tells methods apart.
#[test]
fn the_stricter_decisions_a_forms_method_could_bring() {
    let stricter = |p: &Policy, path: &str| {
        let d = p.decide("POST", &[], None, None, path);
        p.stricter_overrides(&d, &[], None, None, path)
            .iter()
            .map(|d| match d {
                Decision::Deny => "deny".to_owned(),
                Decision::Public => "public".to_owned(),
                Decision::Require(..) => format!("require {}", d.requirements().count()),
            })
            .collect::<Vec<_>>()
    };
    let admin = Arc::new(admins());
    let p = public_but(vec![
        method_rule("/items", "DELETE", Access::Require(admin.clone())),
        method_rule("/items", "PURGE", Access::Deny),
        method_rule("/items", "GET", Access::Public),
    ]);
    assert_eq!(stricter(&p, "/items/1"), ["require 1", "deny"]);
    assert!(stricter(&p, "/other").is_empty());
    // POST public by its rule, the default (for every method no rule names) asks for a session.
    let mut open = Policy {
        rules: vec![method_rule("/open", "POST", Access::Public)],
        default: Access::Require(Arc::default()),
        case_insensitive: false,
    };
    assert_eq!(stricter(&open, "/open/x"), ["require 1"]);
    open.rules[0].methods = None;
    assert!(stricter(&open, "/open/x").is_empty(), "no rule tells methods apart");
    // The POST needs what DELETE does already: nothing to read.
    let same = public_but(vec![
        method_rule("/items", "POST", Access::Require(admin.clone())),
        method_rule("/items", "DELETE", Access::Require(admin.clone())),
    ]);
    let d = same.decide("POST", &[], None, None, "/items");
    let delete = same.decide("POST", &["DELETE".into()], None, None, "/items");
    assert!(d.covers(&delete) && delete.covers(&d));
    assert!(stricter(&same, "/items").is_empty());
    assert!(Decision::Deny.covers(&d) && !d.covers(&Decision::Deny) && !Decision::Public.covers(&d));
}

#[test]
fn a_posts_method_parameter_is_an_override_in_every_spelling_php_rack_and_qs_read() {
    let read = |method: &str, query: &str| {
        let mut out = vec!["PATCH".to_owned()];
        query_method_overrides(method, Some(query), &mut out).map(|()| out)
    };
    for query in [
        "_method=delete",
        "a=1&_method=DELETE&b",
        "%5Fmethod=DELETE",
        "_%6Dethod=DELETE",
        "%5F%6D%65%74%68%6F%64=DELETE",
        "%20%20_method=DELETE",
        ".method=DELETE",
        "[method=DELETE",
        "+_method=DELETE",
        "_method=%20DELETE%20",
        // PHP's names are C strings; Rack (and Express's `qs`) drop brackets around a name.
        "_method%00x=DELETE",
        "[_method]=DELETE",
        "]]_method=DELETE",
        "_method]=DELETE",
        // `qs` drops what follows a name's last group unless a `[` starts another; method-override takes an
        // array's first element.
        "[_method]x=DELETE",
        "[_method]%20=DELETE",
        "_method[]=DELETE",
        "_method[0]=DELETE",
        "_method[7]x=DELETE",
        "[_method][]x=DELETE",
        "_method[]_method=DELETE",
        "_method[][]=DELETE",
        "_method[]x[0]=DELETE",
        "[_method]]=DELETE",
    ] {
        assert_eq!(
            read("POST", query),
            Ok(vec!["PATCH".to_owned(), "DELETE".to_owned()]),
            "{query}"
        );
    }
    assert_eq!(
        read("POST", "_method=PUT&_method=put&_method=PATCH"),
        Ok(vec!["PATCH".to_owned(), "PUT".to_owned()])
    );
    for (method, query) in [
        ("GET", "_method=DELETE"),
        ("PUT", "_method=DELETE"),
        ("POST", "method=DELETE"),
        ("POST", "%20method=DELETE"),
        ("POST", "x_method=DELETE"),
        ("POST", "_methods=DELETE"),
        ("POST", "_Method=DELETE"),
        ("POST", "q=_method"),
        ("POST", "_method[x]=DELETE"),
        ("POST", "_method[][x]=DELETE"),
        ("POST", "_method[0=DELETE"),
        ("POST", "_method[0][x]=DELETE"),
        ("POST", "_method[[0]]=DELETE"),
        ("POST", "[_method][x]=DELETE"),
        ("POST", "[_method]x[y]=DELETE"),
        ("POST", "[_method]x[=DELETE"),
        ("POST", "[[_method]]x=DELETE"),
        ("POST", "x%00_method=DELETE"),
    ] {
        assert_eq!(read(method, query), Ok(vec!["PATCH".to_owned()]), "{method} {query}");
    }
    for query in ["_method=", "_method=DEL%20ETE", "_method=DELETE;", "_method=%C3%A9"] {
        assert!(read("POST", query).unwrap_err().contains("_method"), "{query}");
    }
}

#[test]
fn requirements_check_every_kind() {
    let alice = claims(json!({
        "roles": ["admin", "editor"], "scope": "openid read:reports", "organizations": ["org_acme"],
        "organization_roles": ["org_acme:member"], "email": "Alice@Example.com", "email_verified": true,
        "identities": {"github": {"details": {"rawData": {"userInfo": {"login": "Alice-GH"}}}}}
    }));
    let who = Subject::of(&alice);
    let ok = |r: Requirements| r.check(&who).is_ok();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert!(ok(Requirements {
        roles: s(&["viewer", "admin"]),
        ..Default::default()
    }));
    assert!(!ok(Requirements {
        roles: s(&["viewer"]),
        ..Default::default()
    }));
    assert!(ok(Requirements {
        all_roles: s(&["admin", "editor"]),
        ..Default::default()
    }));
    assert!(!ok(Requirements {
        all_roles: s(&["admin", "billing"]),
        ..Default::default()
    }));
    assert!(ok(Requirements {
        scopes: s(&["read:reports"]),
        ..Default::default()
    }));
    assert!(!ok(Requirements {
        scopes: s(&["read:reports", "write:reports"]),
        ..Default::default()
    }));
    assert!(ok(Requirements {
        organizations: s(&["org_acme"]),
        ..Default::default()
    }));
    assert!(!ok(Requirements {
        organization_roles: s(&["org_acme:admin"]),
        ..Default::default()
    }));
    assert!(ok(Requirements {
        emails: s(&["alice@example.com"]),
        ..Default::default()
    }));
    assert!(ok(Requirements {
        email_domains: s(&["example.com"]),
        ..Default::default()
    }));
    assert!(
        !ok(Requirements {
            email_domains: s(&["ample.com"]),
            ..Default::default()
        }),
        "no suffix tricks"
    );
    assert!(ok(Requirements {
        github_logins: s(&["alice-gh"]),
        ..Default::default()
    }));
    assert!(!ok(Requirements {
        github_logins: s(&["bob"]),
        ..Default::default()
    }));
    // Every kind listed must hold.
    assert!(!ok(Requirements {
        roles: s(&["admin"]),
        github_logins: s(&["bob"]),
        ..Default::default()
    }));
}

#[test]
fn unverified_emails_never_count() {
    let bob = claims(json!({"email": "bob@example.com", "email_verified": false}));
    let r = Requirements {
        email_domains: vec!["example.com".into()],
        ..Default::default()
    };
    assert!(r.check(&Subject::of(&bob)).is_err());
    let no_flag = claims(json!({"email": "bob@example.com"}));
    assert!(r.check(&Subject::of(&no_flag)).is_err());
}

#[test]
fn hosts_are_normalised() {
    assert_eq!(normalise_host("Example.COM.:8443"), "example.com");
    assert_eq!(normalise_host("[::1]:80"), "::1");
    assert_eq!(normalise_host("example.com"), "example.com");
}

#[test]
fn only_plain_hosts_are_hosts() {
    for host in [
        "a",
        "app.example.com",
        "App.Example.COM.",
        "under_score.internal:8080",
        "127.0.0.1",
        "127.0.0.1:4180",
        "a:",
        "[::1]",
        "[::1]:8080",
        "[2001:db8::ffff:192.0.2.1]:443",
    ] {
        assert!(is_host(host.as_bytes()), "{host}");
    }
    for not_host in [
        "",
        ":80",
        "x,admin.example.com",
        "admin.example.com;x",
        "a b",
        "user@a",
        "%61dmin.example.com",
        "a:8x",
        "a:123456",
        "a:1:2",
        "[]",
        "[::1",
        "[::1]x",
        "[fe80::1%25eth0]",
        "[v1.x]",
        "a/b",
        "caf\u{e9}.example",
    ] {
        assert!(!is_host(not_host.as_bytes()), "{not_host}");
    }
}

#[test]
fn a_path_is_decided_as_strictly_as_its_slash_twin() {
    let p = Policy {
        rules: vec![
            rule(PathMatch::Prefix("/admin/".into()), Access::Deny),
            rule(PathMatch::Regex(Regex::new("^(?:/reports$)").unwrap()), Access::Deny),
            rule(PathMatch::Prefix("/docs/".into()), Access::Public),
            rule(
                PathMatch::Regex(Regex::new("^(?:/api/items$)").unwrap()),
                Access::Public,
            ),
        ],
        default: Access::Require(Arc::default()),
        case_insensitive: false,
    };
    for denied in ["/admin", "/admin/", "/admin/x", "/reports", "/reports/"] {
        assert!(
            matches!(p.decide("GET", &[], None, None, denied), Decision::Deny),
            "{denied}"
        );
    }
    // A twin can only make a decision stricter: `/docs` is not made public by `/docs/`.
    assert!(matches!(p.decide("GET", &[], None, None, "/docs/x"), Decision::Public));
    assert!(matches!(
        p.decide("GET", &[], None, None, "/docs"),
        Decision::Require(..)
    ));
    assert!(matches!(
        p.decide("GET", &[], None, None, "/administrator"),
        Decision::Require(..)
    ));
    assert!(matches!(p.decide("GET", &[], None, None, "/"), Decision::Require(..)));
    // The twin's default does not count: an anchored public rule stays public.
    assert!(matches!(
        p.decide("GET", &[], None, None, "/api/items"),
        Decision::Public
    ));
    assert!(matches!(
        p.decide("GET", &[], None, None, "/api/items/"),
        Decision::Require(..)
    ));
    assert_eq!(p.slash_twin("/a").as_deref(), Some("/a/"));
    assert_eq!(p.slash_twin("/a/").as_deref(), Some("/a"));
    assert_eq!(p.slash_twin("/"), None);
    // Prefixes without a trailing slash match a path and its twin alike: no twin is made.
    let plain = Policy {
        rules: vec![rule(PathMatch::Prefix("/admin".into()), Access::Deny)],
        ..Policy::default()
    };
    assert_eq!(plain.slash_twin("/admin"), None);
}

#[test]
fn a_head_request_is_decided_as_a_get_too() {
    let p = public_but(vec![
        method_rule("/export", "GET", Access::Require(Arc::new(admins()))),
        method_rule("/secret", "GET", Access::Deny),
    ]);
    assert!(matches!(p.decide("HEAD", &[], None, None, "/secret"), Decision::Deny));
    assert!(matches!(p.decide("head", &[], None, None, "/secret"), Decision::Deny));
    let d = p.decide("HEAD", &[], None, None, "/export");
    assert_eq!(
        d.requirements().map(|r| r.roles.clone()).collect::<Vec<_>>(),
        vec![vec!["admin".to_owned()]]
    );
    assert!(matches!(p.decide("HEAD", &[], None, None, "/other"), Decision::Public));
    assert!(matches!(p.decide("POST", &[], None, None, "/secret"), Decision::Public));
}

/// A token Logto issued for an organization proves membership of it, and its scopes are that organization's:
/// they never pass for the API's own scopes.
#[test]
fn an_organizations_token_is_a_member_but_its_scopes_are_not_the_apis() {
    let token = claims(json!({"sub": "u1", "scope": "write:reports", "organization_id": "org_other"}));
    let scopes = Requirements {
        scopes: vec!["write:reports".into()],
        ..Default::default()
    };
    let member = Requirements {
        organizations: vec!["org_acme".into(), "org_other".into()],
        ..Default::default()
    };
    assert!(scopes.check(&Subject::of(&token)).is_ok(), "read as the API's scopes");
    let issued_for_other = Subject {
        claims: &token,
        member_of: Some("org_other"),
        scope_organization: Some("org_other"),
        api_scopes: None,
    };
    let err = scopes.check(&issued_for_other).unwrap_err();
    assert!(err.contains("org_other"), "{err}");
    assert!(member.check(&issued_for_other).is_ok());
    assert!(
        member.check(&Subject::of(&token)).is_err(),
        "no organizations claim, no token for one"
    );
    let issued_for_the_gates_own = Subject {
        scope_organization: None,
        ..issued_for_other
    };
    assert!(scopes.check(&issued_for_the_gates_own).is_ok());
}

/// A session's permissions for the APIs a rule names replace its `scope` claim for that rule: the same permission
/// name granted by another API (or only listed in the sign-in's scopes) does not count.
#[test]
fn a_rule_naming_apis_reads_the_scopes_those_apis_granted() {
    let session = claims(json!({"sub": "u1", "scope": "openid write:reports"}));
    let writers = Requirements {
        scopes: vec!["write:reports".into()],
        resources: vec!["https://billing.example.com".into()],
        ..Default::default()
    };
    assert!(
        writers.check(&Subject::of(&session)).is_ok(),
        "a bearer token's scope claim"
    );
    let granted_elsewhere = Subject {
        api_scopes: Some(vec!["read:invoices"]),
        ..Subject::of(&session)
    };
    assert_eq!(
        writers.check(&granted_elsewhere).unwrap_err(),
        "the scopes write:reports granted for the API https://billing.example.com"
    );
    let granted_here = Subject {
        api_scopes: Some(vec!["read:invoices", "write:reports"]),
        ..Subject::of(&session)
    };
    assert!(writers.check(&granted_here).is_ok());
    let nothing = Subject {
        api_scopes: Some(Vec::new()),
        ..Subject::of(&session)
    };
    assert!(writers.check(&nothing).is_err());
}

#[test]
fn the_client_address_is_read_from_the_right_of_a_trusted_chain() {
    use crate::proxy::trusted::Cidr;
    let trusted = [Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("fd00::/8").unwrap()];
    let peer: std::net::IpAddr = "10.0.0.2".parse().unwrap();
    let with = |values: &[&str]| {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    };
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    // An untrusted peer is the client, whatever it writes.
    assert_eq!(
        client_address(&with(&["192.0.2.9"]), "198.51.100.7".parse().unwrap(), false, &trusted),
        ip("198.51.100.7")
    );
    for (chain, want) in [
        (vec!["198.51.100.7"], ip("198.51.100.7")),
        // A client's own entries stand on the left: the right-most address no trusted proxy holds is the client.
        (vec!["10.9.9.9, 198.51.100.7, 10.0.0.5"], ip("198.51.100.7")),
        (vec!["10.9.9.9", "198.51.100.7", "10.0.0.5"], ip("198.51.100.7")),
        (vec!["[2001:db8::1]:4711, fd00::1"], ip("2001:db8::1")),
        (vec!["198.51.100.7:4711"], ip("198.51.100.7")),
        // Every hop trusted: the first.
        (vec!["10.1.1.1, 10.0.0.5"], ip("10.1.1.1")),
        // Garbage where the client should be: unknown, never the next address along.
        (vec!["10.9.9.9, unknown, 10.0.0.5"], None),
        (vec!["198.51.100.7, not-an-ip"], None),
        (vec!["[2001:db8::1"], None),
        (vec!["198.51.100.7:port"], None),
        // A trusted proxy that says nothing: unknown.
        (vec![], None),
    ] {
        assert_eq!(client_address(&with(&chain), peer, true, &trusted), want, "{chain:?}");
    }
}

#[test]
fn a_rule_with_client_ips_matches_only_those_clients() {
    use crate::proxy::trusted::Cidr;
    let mut office = rule(PathMatch::Prefix("/".into()), Access::Public);
    office.client_ips = Some(vec![Cidr::parse("192.0.2.0/24").unwrap()]);
    let p = Policy {
        rules: vec![office],
        default: Access::Require(Arc::new(admins())),
        case_insensitive: false,
    };
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    assert!(matches!(
        p.decide("GET", &[], None, ip("192.0.2.77"), "/x"),
        Decision::Public
    ));
    assert!(matches!(
        p.decide("GET", &[], None, ip("198.51.100.7"), "/x"),
        Decision::Require(..)
    ));
    assert!(matches!(p.decide("GET", &[], None, None, "/x"), Decision::Require(..)));
}
