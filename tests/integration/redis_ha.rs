//! Redis Sentinel and Redis Cluster for the session store (`session.redis_mode`), against Debian's redis-server on
//! loopback: sessions are found from every replica, multi-key commands work across a 3-master cluster (every key
//! under one hash tag), and a Sentinel failover during traffic costs at most some 503s, after which the same
//! sessions work again by themselves.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::redis::{cluster, RedisNode};
use crate::support::*;

#[tokio::test]
async fn a_redis_cluster_holds_sessions_for_every_replica() {
    if !have_redis() {
        return;
    }
    let nodes = cluster().await;
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let urls: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
    let session = format!(
        "store = \"redis\"\nredis_mode = \"cluster\"\nredis_urls = [{}]\nredis_key_prefix = \"t:\"",
        urls.join(", ")
    );
    let (one, two) = BinaryGate::two_replicas(&idp, &upstream, &session, "").await;
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;
    let cookie = b.gate_cookies(&one.url());
    let id = b.cookie(&one.url(), "logto_gate").unwrap();
    assert!(id.len() < 200, "the cookie holds only an id: {id}");
    assert_eq!(
        status_with_cookie(&format!("{}/on-two", two.url()), &cookie).await,
        StatusCode::OK
    );
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    // Every key of the gate is on one node: one hash tag, so multi-key commands never span slots.
    let holding: Vec<usize> = nodes
        .iter()
        .map(|n| {
            n.cli(&["--no-raw", "keys", "{t:}*"])
                .lines()
                .filter(|l| l.contains("{t:}"))
                .count()
        })
        .collect();
    assert_eq!(holding.iter().filter(|c| **c > 0).count(), 1, "{holding:?}");
    // Sign-out (several keys deleted at once) on one replica ends the session on the other.
    let out = b.get(format!("{}/_logto/sign-out", one.url())).await;
    assert_eq!(out.status(), StatusCode::FOUND);
    assert_eq!(
        status_with_cookie(&format!("{}/after", two.url()), &cookie).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_sentinel_failover_during_traffic_costs_at_most_some_503s() {
    if !have_redis() {
        return;
    }
    let mut master = RedisNode::start(&["--repl-diskless-sync-delay".into(), "0".into()]).await;
    let replica = RedisNode::replica_of(&master).await;
    let sentinel = RedisNode::sentinel("gate-master", master.port).await;
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let session = format!(
        "store = \"redis\"\nredis_mode = \"sentinel\"\nredis_urls = [\"{}\"]\nredis_sentinel_master = \"gate-master\"\nredis_key_prefix = \"t:\"",
        sentinel.url()
    );
    let (one, two) = BinaryGate::two_replicas(&idp, &upstream, &session, "").await;
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;
    let cookie = b.gate_cookies(&one.url());
    assert_eq!(
        status_with_cookie(&format!("{}/x", two.url()), &cookie).await,
        StatusCode::OK
    );
    // The session is on the replica too before the master goes away.
    let keys = |node: &RedisNode| node.cli(&["DBSIZE"]).trim().to_owned();
    eventually("the session's keys on the replica", || {
        keys(&replica) == keys(&master) && keys(&master) != "0"
    })
    .await;

    master.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut statuses = Vec::new();
    loop {
        let s1 = status_with_cookie(&format!("{}/during", one.url()), &cookie).await;
        let s2 = status_with_cookie(&format!("{}/during", two.url()), &cookie).await;
        statuses.extend([s1, s2]);
        for s in [s1, s2] {
            assert!(
                s == StatusCode::OK || s == StatusCode::SERVICE_UNAVAILABLE,
                "only 200 or 503 during the failover: {statuses:?}"
            );
        }
        let promoted = replica.cli(&["role"]).starts_with("master");
        if promoted && s1 == StatusCode::OK && s2 == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery after the failover: {statuses:?}, replica role {}",
            replica.cli(&["role"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same session, from the promoted replica, on both gates.
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    let _ = sentinel.port;
}

/// Each mode's keys, refused when missing or mixed up, naming the key.
#[test]
fn redis_modes_are_validated() {
    let base = gate_toml(
        "https://a.example.com",
        "http://127.0.0.1:1",
        "https://t.logto.app",
        "",
        "",
    );
    for (session, line) in [
        (
            "store = \"redis\"\nredis_mode = \"cluster\"",
            "session.redis_urls: missing",
        ),
        (
            "store = \"redis\"\nredis_mode = \"sentinel\"\nredis_urls = [\"redis://127.0.0.1:26379\"]",
            "session.redis_sentinel_master: missing",
        ),
        ("store = \"redis\"\nredis_mode = \"ring\"", "session.redis_mode:"),
        (
            "store = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\nredis_urls = [\"redis://127.0.0.1:2\"]",
            "session.redis_urls: is for",
        ),
        (
            "store = \"redis\"\nredis_mode = \"cluster\"\nredis_urls = [\"http://127.0.0.1:2\"]",
            "session.redis_urls:",
        ),
    ] {
        let toml = base.replacen("[session]\n", &format!("[session]\n{session}\n"), 1);
        let err = logto_gate::Config::from_toml_str(&toml, Vec::new()).expect_err(line);
        assert!(err.0.iter().any(|l| l.starts_with(line)), "{line}: {err}");
    }
}
