use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn hop_by_hop_and_connection_listed_headers_are_removed() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret-hop"),
        ("keep-alive", "timeout=5"),
        ("x-secret-hop", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("proxy-authorization", "Basic x"),
        ("upgrade", "websocket"),
        ("accept", "*/*"),
    ]);
    remove_hop_by_hop(&mut h, false);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h.contains_key("accept"));
}

#[test]
fn only_allowed_upgrades_are_upgrades_and_only_to_what_was_asked() {
    let allowed = vec!["websocket".to_owned()];
    let ws = map(&[("connection", "Upgrade"), ("upgrade", "WebSocket")]);
    assert!(is_allowed_upgrade(&ws, &allowed));
    for refused in ["h2c", "websocket, h2c", "h2c, websocket", "tls/1.0", ""] {
        let h = map(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", refused)]);
        assert!(!is_allowed_upgrade(&h, &allowed), "{refused:?}");
    }
    assert!(upgrade_matches(&ws, &map(&[("upgrade", "websocket")])));
    assert!(!upgrade_matches(&ws, &map(&[("upgrade", "h2c")])));
    assert!(!upgrade_matches(&ws, &map(&[])));
    let mut h = map(&[
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ]);
    remove_hop_by_hop(&mut h, false);
    assert!(h.is_empty(), "{h:?}");
}

#[test]
fn underscore_variants_of_framing_and_forwarding_fields_are_removed() {
    let mut h = map(&[
        ("transfer_encoding", "chunked"),
        ("Content_Length", "5"),
        ("x_forwarded_for", "6.6.6.6"),
        ("keep_alive", "1"),
        ("content-length", "3"),
        ("x_app_header", "kept"),
        ("x-forwarded-for", "kept here: set_forwarded decides"),
    ]);
    remove_underscore_variants(&mut h);
    let mut left: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-length", "x-forwarded-for", "x_app_header"]);
}

#[test]
fn an_upgrade_keeps_upgrade_and_connection() {
    let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("keep-alive", "1")]);
    assert!(is_upgrade_request(&h));
    remove_hop_by_hop(&mut h, true);
    assert_eq!(h.get("upgrade").unwrap(), "websocket");
    assert_eq!(h.get("connection").unwrap(), "upgrade");
    assert!(!h.contains_key("keep-alive"));
}

#[test]
fn the_index_matches_the_list() {
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        assert_eq!(hop_index(name.as_str()), Some(i), "{name}");
    }
    assert_eq!(hop_index("accept"), None);
    assert_eq!(hop_index("connectio"), None);
}

#[test]
fn connection_tokens_in_any_case_are_removed() {
    let mut h = map(&[
        ("connection", "Close, X-Secret-Hop, KEEP-ALIVE"),
        ("keep-alive", "timeout=5"),
        ("x-secret-hop", "1"),
        ("close", "named by the close option, so removed too"),
        ("accept", "*/*"),
    ]);
    remove_hop_by_hop(&mut h, false);
    assert_eq!(h.keys().map(|n| n.as_str()).collect::<Vec<_>>(), ["accept"]);
    // Keep-alive named but absent: nothing else goes.
    let mut h = map(&[("connection", "keep-alive"), ("accept", "*/*")]);
    remove_hop_by_hop(&mut h, false);
    assert_eq!(h.keys().map(|n| n.as_str()).collect::<Vec<_>>(), ["accept"]);
    // Several Connection fields: every one counts.
    let mut h = map(&[
        ("connection", "a"),
        ("connection", "b"),
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
    ]);
    remove_hop_by_hop(&mut h, false);
    assert_eq!(h.keys().map(|n| n.as_str()).collect::<Vec<_>>(), ["c"]);
}

#[test]
fn each_hop_by_hop_header_alone_is_removed() {
    for name in &HOP_BY_HOP {
        let mut h = map(&[(name.as_str(), "x"), ("accept", "*/*")]);
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key(name), "{name} survived");
        assert_eq!(h.len(), 1);
    }
    let mut plain = map(&[("accept", "*/*"), ("x-keep", "1")]);
    remove_hop_by_hop(&mut plain, false);
    assert_eq!(plain.len(), 2);
}
