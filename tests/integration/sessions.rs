//! Sessions that last and scale: refresh (once, however many requests), revoked grants, the Redis store shared by
//! two gates, Redis going away and coming back, back-channel logout, secret rotation, chunked cookies, timeouts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::redis::Redis;
use crate::support::*;

/// Short access tokens so a refresh falls due within seconds. After a refresh the next one is due TTL/2 later, so a
/// burst must finish within that time for "exactly one refresh" to hold even on a loaded machine.
const TTL: u64 = 6;

fn short_tokens() -> IdpOptions {
    IdpOptions {
        access_token_ttl: Some(TTL),
        ..Default::default()
    }
}

/// Waits until the wall clock has passed `secs` whole seconds after `since` (token lifetimes are in seconds).
async fn wait_past(since: u64, secs: u64) {
    let target = since + secs + 1;
    let left = target.saturating_sub(now());
    let ms = left * 1000 + 50;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Sends `n` requests at once with exactly `cookie`, returns their statuses.
async fn burst(url: &str, cookie: &str, n: usize) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        let req = client
            .get(format!("{url}/burst/{i}"))
            .header("cookie", cookie.to_owned());
        tasks.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn refresh_grants(idp: &Idp) -> u64 {
    idp.stats()["grants"]["refresh_token"].as_u64().unwrap_or(0)
}

/// A stack started with `options` and `edit`, alice signed in and her session now past its refresh point: the
/// stack and her cookie.
async fn due_for_refresh(options: IdpOptions, edit: impl FnOnce(String) -> String) -> (Stack, String) {
    let s = Stack::edited(options, "", "", edit).await;
    let b = s.browser();
    let signed_in = now();
    b.sign_in(&s.gate, "/").await;
    let cookie = b.gate_cookies(&s.gate.url());
    wait_past(signed_in, TTL).await;
    (s, cookie)
}

/// Logto saw no refresh token twice, and the grant stands.
fn assert_no_token_sent_twice(idp: &Idp) {
    assert_eq!(
        idp.stats()["grants"]["refresh_token_error"],
        Value::Null,
        "a refresh token sent twice"
    );
    assert_eq!(idp.live_grants(), 1, "the grant is gone");
}

/// With a refresh token past 70 % of its life, which Logto rotates on every use and whose reuse it treats as theft.
#[tokio::test]
async fn concurrent_requests_near_expiry_trigger_exactly_one_refresh() {
    let aged = IdpOptions {
        refresh_tokens_aged: true,
        ..short_tokens()
    };
    let (s, before) = due_for_refresh(aged, |t| t).await;

    let statuses = burst(&s.gate.url(), &before, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(refresh_grants(&s.idp), 1, "one refresh for 20 concurrent requests");
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_alice0001"));

    // Another tab still sending the pre-refresh cookie is served from the refreshed session: no second refresh,
    // so the consumed refresh token never reaches Logto again.
    let again = burst(&s.gate.url(), &before, 5).await;
    assert!(again.iter().all(|s| *s == 200), "{again:?}");
    assert_eq!(refresh_grants(&s.idp), 1);
    assert_eq!(
        s.idp.stats()["grants"]["refresh_token_error"],
        Value::Null,
        "no refused refresh at Logto"
    );
}

/// Before a refresh token is past 70 % of its life Logto gives the same one back with new tokens: the refreshed
/// session is renewed again at its own refresh point, with that same token, and not handed the previous refresh's
/// result (the same token no longer tells one refresh from the next).
#[tokio::test]
async fn a_refresh_token_logto_gives_back_renews_the_session_at_every_refresh_point() {
    let s = Stack::edited(short_tokens(), "", "", |t| t).await;
    let b = s.browser();
    let signed_in = now();
    b.sign_in(&s.gate, "/").await;
    let signed_in_cookie = b.gate_cookies(&s.gate.url());
    wait_past(signed_in, TTL).await;
    let first = now();
    assert_eq!(b.get(format!("{}/first", s.gate.url())).await.status(), StatusCode::OK);
    assert_eq!(refresh_grants(&s.idp), 1);
    let refreshed_cookie = b.gate_cookies(&s.gate.url());
    assert_ne!(
        refreshed_cookie, signed_in_cookie,
        "the refreshed session is written back"
    );
    wait_past(first, TTL).await;
    assert_eq!(b.get(format!("{}/second", s.gate.url())).await.status(), StatusCode::OK);
    assert_eq!(
        refresh_grants(&s.idp),
        2,
        "the refreshed session is refreshed again at its own refresh point"
    );
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(s.idp.stats()["grants"]["refresh_token_error"], Value::Null);
}

/// A Logto admin may take `roles` (and `organizations`, `organization_roles`) out of the ID token in the tenant's ID
/// token settings; userinfo still has them. The gate then reads them there, at sign-in and at every refresh, so the
/// groups header and role rules keep working.
#[tokio::test]
async fn roles_left_out_of_the_id_token_are_read_from_userinfo() {
    let tenant = IdpOptions {
        id_token_extended_claims: Some(vec![]),
        ..short_tokens()
    };
    let rules = "[[rules]]\nprefix = \"/admin\"\nroles = [\"admin\"]\n";
    let s = Stack::edited(tenant, "", rules, |t| t).await;
    let alice = s.browser();
    let signed_in = now();
    alice.sign_in(&s.gate, "/").await;
    assert_eq!(s.upstream.last().header("x-forwarded-groups"), Some("admin,editor"));
    assert_eq!(
        alice.get(format!("{}/admin/x", s.gate.url())).await.status(),
        StatusCode::OK
    );
    assert_eq!(s.idp.stats()["userinfo"], 1);

    wait_past(signed_in, TTL).await;
    assert_eq!(
        alice.get(format!("{}/admin/y", s.gate.url())).await.status(),
        StatusCode::OK
    );
    assert_eq!(refresh_grants(&s.idp), 1);
    assert_eq!(s.upstream.last().header("x-forwarded-groups"), Some("admin,editor"));
    assert_eq!(s.idp.stats()["userinfo"], 2, "userinfo asked again at the refresh");

    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/").await;
    assert_eq!(
        bob.get(format!("{}/admin/x", s.gate.url())).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_revoked_grant_ends_the_session_cleanly() {
    let s = Stack::edited(short_tokens(), "", "", |t| t).await;
    let b = s.browser();
    let signed_in = now();
    b.sign_in(&s.gate, "/").await;
    let cookie = b.gate_cookies(&s.gate.url());
    assert!(s.idp.revoke_grants() >= 1);
    wait_past(signed_in, TTL).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = client
        .get(format!("{}/api", s.gate.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let cleared = api
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("logto_gate=;"));
    assert!(cleared, "the dead session's cookie is cleared");
    let nav = client
        .get(format!("{}/page", s.gate.url()))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), StatusCode::FOUND, "a browser is sent to sign in again");
    assert!(nav.headers()["location"].to_str().unwrap().starts_with(&s.idp.issuer()));
}

/// Two gate processes (two replicas) sharing one Redis; the first is registered at the IdP with a back-channel URI.
async fn redis_pair(idp: &Idp, upstream: &Upstream, redis: &Redis) -> (BinaryGate, BinaryGate) {
    let store = format!(
        "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"t:\"\n",
        redis.url()
    );
    let edit = move |t: String| t.replacen("[session]\n", &store, 1);
    let one = BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "",
        edit.clone(),
        |public| {
            let backchannel = format!("{public}/_logto/backchannel-logout");
            idp.register_client_with_backchannel(APP_ID, APP_SECRET, public, Some(&backchannel))
        },
        &[],
    )
    .await;
    // The second replica shares the first one's app registration (one public URL per app in practice).
    let two = BinaryGate::start(&idp.endpoint(), &upstream.url(), "", edit, |_| {}, &[]).await;
    (one, two)
}

/// Posts a back-channel logout token naming only alice's subject, signed with the IdP's key and dated `iat`, to the
/// gate at `gate`; the gate's answer.
async fn alice_logged_out(idp: &Idp, gate: &str, iat: u64, jti: &str) -> StatusCode {
    let token = idp.sign(
        json!({"iss": idp.issuer(), "aud": APP_ID, "iat": iat, "jti": jti, "sub": "u_alice0001",
               "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        json!({"typ": "logout+jwt"}),
    );
    plain()
        .post(format!("{gate}/_logto/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
}

/// [`status_with_cookie`] in a task of its own, to act while the gate is still answering.
fn status_in_background(url: String, cookie: &str) -> tokio::task::JoinHandle<StatusCode> {
    let cookie = cookie.to_owned();
    tokio::spawn(async move { status_with_cookie(&url, &cookie).await })
}

/// Two replicas sharing sessions in Redis with short access tokens, alice signed in on the first: the IdP, the
/// upstream, both replicas, her cookie and when she signed in.
async fn pair_signed_in(redis: &Redis) -> (Idp, Upstream, BinaryGate, BinaryGate, String, u64) {
    pair_signed_in_with(redis, short_tokens()).await
}

/// [`pair_signed_in`] with an IdP started with `options`.
async fn pair_signed_in_with(
    redis: &Redis,
    options: IdpOptions,
) -> (Idp, Upstream, BinaryGate, BinaryGate, String, u64) {
    let idp = Idp::start(options);
    let upstream = Upstream::start().await;
    let (one, two) = redis_pair(&idp, &upstream, redis).await;
    let b = Browser::new(&idp);
    let signed_in = now();
    b.sign_in(&one, "/").await;
    let cookie = b.gate_cookies(&one.url());
    (idp, upstream, one, two, cookie, signed_in)
}

/// [`pair_signed_in`] with refresh tokens Logto rotates at every use when `aged`, once her session is past its
/// refresh point.
async fn pair_due_for_refresh(redis: &Redis, aged: bool) -> (Idp, Upstream, BinaryGate, BinaryGate, String) {
    let options = IdpOptions {
        refresh_tokens_aged: aged,
        ..short_tokens()
    };
    let (idp, upstream, one, two, cookie, signed_in) = pair_signed_in_with(redis, options).await;
    wait_past(signed_in, TTL).await;
    (idp, upstream, one, two, cookie)
}

/// With sessions in Redis, a back-channel logout while a refresh of the same session is at Logto ends it for good:
/// Logto keeps the grant through end-session, so the refresh succeeds, and it must not write the session back
/// (the cookie would work again); its own request is answered as signed out.
#[tokio::test]
async fn a_refresh_finishing_after_a_logout_does_not_bring_the_session_back() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let store = format!("[session]\nstore = \"redis\"\nredis_url = \"{}\"\n", redis.url());
    let (s, cookie) = due_for_refresh(short_tokens(), |t| t.replacen("[session]\n", &store, 1)).await;

    // A request whose refresh is held at Logto.
    s.idp.hold_refreshes(true);
    let url = format!("{}/api", s.gate.url());
    let refreshing = status_in_background(url.clone(), &cookie);
    eventually("the refresh reaching Logto", || s.idp.stats()["held_refreshes"] == 1).await;
    // Meanwhile the user signs out of Logto elsewhere, and Logto tells the gate.
    let logout = alice_logged_out(&s.idp, &s.gate.url(), now(), "during-refresh").await;
    assert_eq!(logout, StatusCode::OK);
    s.idp.hold_refreshes(false);
    assert_eq!(
        refreshing.await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "the refreshing request is signed out"
    );
    assert_eq!(
        status_with_cookie(&url, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "the session stays ended"
    );
    assert_eq!(refresh_grants(&s.idp), 1, "the refresh itself went through at Logto");
}

/// A refresh goes on when the request that started it goes away (a tab closed, a fetch aborted): Logto may have
/// rotated the refresh token by then, and sending the old one again would make it revoke the grant as stolen. The
/// browser's next request, with the cookie it still has, gets the refreshed session.
#[tokio::test]
async fn a_refresh_goes_on_when_its_request_goes_away() {
    let metrics_port = free_port();
    let line: &'static str = Box::leak(format!("metrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let aged = IdpOptions {
        refresh_tokens_aged: true,
        ..short_tokens()
    };
    let (s, cookie) = due_for_refresh(aged, in_server(line)).await;

    s.idp.hold_refreshes(true);
    let url = format!("{}/api", s.gate.url());
    let gone = status_in_background(url.clone(), &cookie);
    eventually("the refresh reaching Logto", || s.idp.stats()["held_refreshes"] == 1).await;
    gone.abort();
    metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"app\",status=\"499\"} 1\n",
    )
    .await;
    s.idp.hold_refreshes(false);
    eventually("Logto's answer to the refresh", || refresh_grants(&s.idp) == 1).await;

    assert_eq!(
        status_with_cookie(&url, &cookie).await,
        StatusCode::OK,
        "the next request"
    );
    assert_eq!(refresh_grants(&s.idp), 1, "the refresh token went to Logto once");
    assert_no_token_sent_twice(&s.idp);
}

/// The answer carrying a refreshed session can be lost after the refresh (a tab closed, a connection cut): the browser
/// keeps the old cookie, whose refresh token Logto rotated away. Its next request, even a minute later, gets the
/// refreshed session; the spent token never goes to Logto again, which would revoke the grant. (A minute is how long
/// the gate answered such a cookie before; this test waits it out.)
#[tokio::test]
async fn a_refreshed_answer_lost_on_the_way_costs_no_sign_in() {
    let aged = IdpOptions {
        refresh_tokens_aged: true,
        ..short_tokens()
    };
    let (s, cookie) = due_for_refresh(aged, |t| t).await;
    let url = format!("{}/api", s.gate.url());
    // Answered with the refreshed session, which the browser never stores.
    assert_eq!(status_with_cookie(&url, &cookie).await, StatusCode::OK);
    assert_eq!(refresh_grants(&s.idp), 1);

    tokio::time::sleep(Duration::from_secs(61)).await;
    let next = plain().get(&url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(next.status(), StatusCode::OK, "the old cookie a minute later");
    assert_no_token_sent_twice(&s.idp);
    let refreshed = next
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok()?.split(';').next().map(str::to_owned))
        .find(|c| c.starts_with("logto_gate="))
        .expect("the refreshed session, written again");
    // The session that answer carries goes on refreshing with the rotated token.
    assert_eq!(status_with_cookie(&url, &refreshed).await, StatusCode::OK);
    assert_eq!(refresh_grants(&s.idp), 2);
    assert_no_token_sent_twice(&s.idp);
}

/// A request whose session's refresh Logto does not answer waits for it a bounded time (5 s), then is served with
/// the session as it is, rather than for as long as Logto takes (each of its calls may take 10 s). The refresh goes
/// on, and the next request gets its result.
#[tokio::test]
async fn a_request_waits_for_a_slow_refresh_only_so_long() {
    let (s, cookie) = due_for_refresh(short_tokens(), |t| t).await;

    s.idp.hold_refreshes(true);
    let url = format!("{}/api", s.gate.url());
    let started = std::time::Instant::now();
    let waited = tokio::time::timeout(Duration::from_secs(30), status_with_cookie(&url, &cookie))
        .await
        .expect("an answer while Logto holds the refresh");
    assert_eq!(waited, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "served after {:?}, not within the bound",
        started.elapsed()
    );
    assert_eq!(s.idp.stats()["held_refreshes"], 1, "the refresh is still at Logto");
    s.idp.hold_refreshes(false);
    eventually("Logto's answer to the refresh", || refresh_grants(&s.idp) == 1).await;

    let next = plain().get(&url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    assert!(
        next.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap_or("").starts_with("logto_gate=")),
        "the refreshed session is written: {:?}",
        next.headers()
    );
    assert_eq!(refresh_grants(&s.idp), 1, "its result was used, not a second refresh");
}

/// A replica that stops (a rolling restart) finishes the refreshes it started before it exits, even one whose request
/// was answered without it: Logto may have rotated the refresh token, and only that refresh can store the new one
/// in Redis; the other replicas would otherwise send the old one, which Logto takes for theft.
#[tokio::test]
async fn a_stopping_replica_finishes_its_refreshes_first() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let (idp, _upstream, mut one, mut two, cookie) = pair_due_for_refresh(&redis, true).await;

    idp.hold_refreshes(true);
    let at_one = format!("{}/api", one.url());
    assert_eq!(
        status_with_cookie(&at_one, &cookie).await,
        StatusCode::OK,
        "served without it"
    );
    assert_eq!(idp.stats()["held_refreshes"], 1);
    one.sigterm();
    eventually("replica one's listener closing", || {
        std::net::TcpStream::connect(("127.0.0.1", one.port)).is_err()
    })
    .await;
    assert!(
        one.process.child.try_wait().unwrap().is_none(),
        "replica one exited with its refresh at Logto"
    );
    idp.hold_refreshes(false);
    assert_eq!(wait_exit(&mut one.process).await.code(), Some(0));

    let at_two = format!("{}/api", two.url());
    assert_eq!(status_with_cookie(&at_two, &cookie).await, StatusCode::OK);
    // The refreshed session was stored with the rotated token (with these 6 s tokens it may be due again by now;
    // refreshing it then is no reuse).
    assert_no_token_sent_twice(&idp);
    let log = two.stop_and_read_log();
    assert!(
        !log.contains("did not finish in time"),
        "replica two waited for a lock:\n{log}"
    );
}

/// Requests on both replicas with `cookie`, whose session is due for a refresh: replica one takes the refresh lock
/// and its refresh is held at Logto; replica two finds the lock taken (its SET NX is the only write then) and waits
/// for one's result. Their answers, once the refresh is released.
async fn refresh_held_at_one_while_two_waits(
    idp: &Idp,
    redis: &Redis,
    one: &BinaryGate,
    two: &BinaryGate,
    cookie: &str,
) -> (tokio::task::JoinHandle<StatusCode>, tokio::task::JoinHandle<StatusCode>) {
    idp.hold_refreshes(true);
    let at_one = status_in_background(format!("{}/api", one.url()), cookie);
    eventually("the refresh reaching Logto", || idp.stats()["held_refreshes"] == 1).await;
    let sets = redis.set_calls();
    let at_two = status_in_background(format!("{}/api", two.url()), cookie);
    eventually("replica two asking for the refresh lock", || redis.set_calls() > sets).await;
    (at_one, at_two)
}

/// Two replicas, sessions in Redis: while one refreshes a session at Logto, the other waits for its result. A
/// back-channel logout meanwhile ends the session for the waiting request too (401 at once, not the session it
/// had loaded once its wait runs out).
#[tokio::test]
async fn a_replica_waiting_for_a_refresh_sees_the_session_end() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let (idp, _upstream, one, two, cookie) = pair_due_for_refresh(&redis, false).await;

    let (at_one, at_two) = refresh_held_at_one_while_two_waits(&idp, &redis, &one, &two, &cookie).await;
    let logout = alice_logged_out(&idp, &one.url(), now(), "while-waiting").await;
    assert_eq!(logout, StatusCode::OK);
    assert_eq!(
        at_two.await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "the waiting replica's request"
    );
    idp.hold_refreshes(false);
    assert_eq!(
        at_one.await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "the refreshing replica's request"
    );
}

/// A replica that finds another replica refreshing the same session waits for the result and serves it as soon as
/// it is stored, whether Logto rotated the refresh token (one past 70 % of its life) or gave the same one back
/// (before): the stored session is told from the one it set out to refresh by more than its refresh token.
async fn a_replica_waiting_for_anothers_refresh_serves_its_result(aged: bool) {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let (idp, _upstream, mut one, mut two, cookie) = pair_due_for_refresh(&redis, aged).await;

    let (at_one, at_two) = refresh_held_at_one_while_two_waits(&idp, &redis, &one, &two, &cookie).await;
    idp.hold_refreshes(false);
    assert_eq!(at_one.await.unwrap(), StatusCode::OK);
    assert_eq!(at_two.await.unwrap(), StatusCode::OK);
    assert_eq!(refresh_grants(&idp), 1, "one refresh across both replicas");
    let log = two.stop_and_read_log();
    assert!(
        !log.contains("did not finish in time"),
        "replica two waited out its bound instead of taking the stored result:\n{log}"
    );
    one.stop_and_read_log();
}

#[tokio::test]
async fn a_replica_waiting_for_a_refresh_that_kept_the_refresh_token_serves_its_result() {
    a_replica_waiting_for_anothers_refresh_serves_its_result(false).await;
}

#[tokio::test]
async fn a_replica_waiting_for_a_refresh_that_rotated_the_refresh_token_serves_its_result() {
    a_replica_waiting_for_anothers_refresh_serves_its_result(true).await;
}

#[tokio::test]
async fn two_gates_share_sessions_through_redis_and_refresh_once_between_them() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let (idp, upstream, one, two, cookie, signed_in) = pair_signed_in(&redis).await;
    // The cookie holds only an opaque id (cookies do not depend on the port, so the browser sends it to both).
    assert!(
        cookie.len() < 200,
        "the cookie carries an id, not the session: {cookie}"
    );
    assert_eq!(
        status_with_cookie(&format!("{}/on-two", two.url()), &cookie).await,
        StatusCode::OK
    );
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));

    wait_past(signed_in, TTL).await;
    let (u1, u2) = (one.url(), two.url());
    let (a, b2) = tokio::join!(burst(&u1, &cookie, 10), burst(&u2, &cookie, 10));
    assert!(a.iter().chain(b2.iter()).all(|s| *s == 200), "{a:?} {b2:?}");
    assert_eq!(refresh_grants(&idp), 1, "one refresh across both replicas");
}

#[tokio::test]
async fn redis_down_means_503_and_the_gate_recovers_when_it_returns() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start().await;
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let (one, _two) = redis_pair(&idp, &upstream, &redis).await;
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;

    redis.stop().await;
    let down = b
        .client
        .get(format!("{}/while-down", one.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.text().await.unwrap().contains("Sessions are unavailable"));
    assert_eq!(
        reqwest::get(format!("{}/_logto/readyz", one.url()))
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        reqwest::get(format!("{}/_logto/healthz", one.url()))
            .await
            .unwrap()
            .status(),
        200
    );

    redis.start_again().await;
    wait_for_status(&format!("{}/_logto/readyz", one.url()), 200).await;
    let back = b.client.get(format!("{}/after", one.url())).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::OK, "the same session works again");
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
}

/// A replica that had no traffic while Redis was down answers its very first request after Redis is back (no
/// readiness probe in between to warm its connection up): its broken connection is replaced and the command sent
/// again, not failed with 503. The same holds for the replica that saw the outage.
#[tokio::test]
async fn an_idle_replica_answers_its_first_request_after_a_redis_outage() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start().await;
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let (one, two) = redis_pair(&idp, &upstream, &redis).await;
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;
    // Both replicas have a Redis connection now.
    let warm = b.client.get(format!("{}/warm", two.url())).send().await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK);

    redis.stop().await;
    let down = b.client.get(format!("{}/while-down", one.url())).send().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    redis.start_again().await;

    for (gate, name) in [(&two, "idle replica"), (&one, "replica that saw the outage")] {
        let first = b.client.get(format!("{}/first", gate.url())).send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK, "{name}");
        assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    }
}

#[tokio::test]
async fn back_channel_logout_through_one_gate_revokes_on_both() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start().await;
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let (one, two) = redis_pair(&idp, &upstream, &redis).await;
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;
    assert_eq!(
        b.client.get(format!("{}/x", two.url())).send().await.unwrap().status(),
        200
    );

    // The user signs out of Logto elsewhere (another app of the tenant): Logto tells the gate over the back channel.
    let end = format!("{}/session/end", idp.issuer());
    b.follow_submitting_forms(&end).await;
    assert_eq!(idp.stats()["backchannel"]["success"], 1, "{}", idp.stats());
    for gate in [&one, &two] {
        let r = b.get(format!("{}/after-logout", gate.url())).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "revoked on {}", gate.url());
    }
}

#[tokio::test]
async fn back_channel_logout_in_cookie_mode_uses_a_revocation_list_and_refuses_replays() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start_unready(
        &idp.endpoint(),
        &upstream.url(),
        "",
        "",
        |t| t,
        |public| {
            idp.register_client_with_backchannel(
                APP_ID,
                APP_SECRET,
                public,
                Some(&format!("{public}/_logto/backchannel-logout")),
            )
        },
    )
    .await;
    gate.wait_ready().await;
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/").await;
    let me: Value = b.get_json(format!("{}/_logto/userinfo", gate.url())).await;
    assert_eq!(me["sub"], "u_alice0001");
    b.follow_submitting_forms(&format!("{}/session/end", idp.issuer()))
        .await;
    assert_eq!(idp.stats()["backchannel"]["success"], 1);
    let r = b.get(format!("{}/after-logout", gate.url())).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A logout token signed by Logto's key, posted twice: the second is a replay.
    let token = idp.sign(
        json!({"iss": idp.issuer(), "aud": APP_ID, "iat": now(), "jti": "jti-replayed", "sub": "u_bob000002",
               "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        json!({"typ": "logout+jwt"}),
    );
    let post = |t: String| {
        let url = format!("{}/_logto/backchannel-logout", gate.url());
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[("logout_token", t)])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post(token.clone()).await.status(), StatusCode::OK);
    let replay = post(token).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let v: Value = replay.json().await.unwrap();
    assert!(v["error_description"].as_str().unwrap().contains("replay"), "{v}");
    // Valid claims signed by Logto's key but typed as an access token (RFC 8725 §3.11): not a logout token.
    let typed_access = idp.sign(
        json!({"iss": idp.issuer(), "aud": APP_ID, "iat": now(), "jti": "jti-typed-access", "sub": "u_bob000002",
               "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        json!({"typ": "at+jwt"}),
    );
    let refused = post(typed_access).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let v: Value = refused.json().await.unwrap();
    assert!(v["error_description"].as_str().unwrap().contains("at+jwt"), "{v}");
    // Forged or malformed tokens are refused.
    let forged = idp.sign(
        json!({"iss": "https://evil.example/oidc", "aud": APP_ID, "iat": now(), "jti": "x", "sub": "u"}),
        json!({}),
    );
    assert_eq!(post(forged).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(post("garbage".into()).await.status(), StatusCode::BAD_REQUEST);
    let get = reqwest::get(format!("{}/_logto/backchannel-logout", gate.url()))
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers()["allow"], "POST");
}

/// `session.revocation_file`: without Redis the revocation list outlives a restart. A gate process started on the
/// same file after a sign-out and a back-channel logout still refuses a copy of either session's cookie (with the
/// list only in memory it accepted both) and the logout token's replay, and admits a sign-in after the logout.
#[tokio::test]
async fn the_revocation_file_keeps_sign_outs_and_logouts_across_a_restart() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let section = format!(
        "[session]\nrevocation_file = \"{}\"\n",
        dir.path().join("revoked.json").display()
    );
    let (endpoint, upstream_url) = (idp.endpoint(), upstream.url());
    let start = || {
        let section = section.clone();
        BinaryGate::start(
            &endpoint,
            &upstream_url,
            "",
            move |t: String| t.replacen("[session]\n", &section, 1),
            |public| idp.register_client(APP_ID, APP_SECRET, public),
            &[],
        )
    };
    let first = start().await;
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    bob.sign_in(&first, "/").await;
    let signed_out = bob.gate_cookies(&first.url());
    assert_eq!(
        bob.get(format!("{}/_logto/sign-out", first.url())).await.status(),
        StatusCode::FOUND
    );
    let alice = Browser::new(&idp);
    alice.sign_in(&first, "/").await;
    let logged_out = alice.gate_cookies(&first.url());
    let logout_at = now();
    assert_eq!(
        alice_logged_out(&idp, &first.url(), logout_at, "jti-kept").await,
        StatusCode::OK
    );
    for cookie in [&signed_out, &logged_out] {
        assert_eq!(
            status_with_cookie(&format!("{}/x", first.url()), cookie).await,
            StatusCode::UNAUTHORIZED
        );
    }
    drop(first);

    let restarted = start().await;
    let url = format!("{}/x", restarted.url());
    assert_eq!(
        status_with_cookie(&url, &signed_out).await,
        StatusCode::UNAUTHORIZED,
        "signed out"
    );
    assert_eq!(
        status_with_cookie(&url, &logged_out).await,
        StatusCode::UNAUTHORIZED,
        "logged out"
    );
    assert_eq!(
        alice_logged_out(&idp, &restarted.url(), logout_at, "jti-kept").await,
        StatusCode::BAD_REQUEST,
        "a replayed logout token"
    );
    wait_past(logout_at, 0).await;
    alice.sign_in(&restarted, "/again").await;
    let fresh = alice.gate_cookies(&restarted.url());
    assert_eq!(status_with_cookie(&url, &fresh).await, StatusCode::OK);
}

/// A back-channel logout naming only the subject ends that user's sessions issued up to the token's `iat`, and no
/// others: a session signed in after it stays. That cut-off only moves later: an earlier logout token delivered
/// after a later one (a retry, two sign-outs racing) must not bring back the sessions the later one ended. With the
/// revocation list in memory and in Redis, and with sessions in Redis.
#[tokio::test]
async fn a_subject_logout_ends_the_sessions_signed_in_before_it_and_no_others() {
    let redis = if have_redis() { Some(Redis::start().await) } else { None };
    let mut stores = vec![String::new()];
    if let Some(r) = &redis {
        stores.push(format!("[session]\nredis_url = \"{}\"\n", r.url()));
        stores.push(format!("[session]\nstore = \"redis\"\nredis_url = \"{}\"\n", r.url()));
    }
    // One Redis for the two Redis variants: their logout tokens need their own `jti`s.
    for (n, store) in stores.iter().enumerate() {
        let edit = |t: String| match store.as_str() {
            "" => t,
            section => t.replacen("[session]\n", section, 1),
        };
        let s = Stack::edited(IdpOptions::default(), "", "", edit).await;
        let (_, cookie) = s.signed_in().await;
        let url = format!("{}/private", s.gate.url());
        let cookie = format!("logto_gate={cookie}");
        let status = || status_with_cookie(&url, &cookie);
        assert_eq!(status().await, StatusCode::OK, "{store}");
        let logout = |iat: u64, jti: &'static str| {
            let (idp, gate) = (&s.idp, s.gate.url());
            async move { alice_logged_out(idp, &gate, iat, &format!("{n}-{jti}")).await }
        };
        // A logout from two minutes before the sign-in (still young enough to be accepted) leaves it alone.
        assert_eq!(logout(now() - 120, "before").await, StatusCode::OK);
        assert_eq!(
            status().await,
            StatusCode::OK,
            "a session signed in after the logout: {store}"
        );
        // A logout now ends it.
        assert_eq!(logout(now(), "later").await, StatusCode::OK);
        assert_eq!(status().await, StatusCode::UNAUTHORIZED, "{store}");
        // An earlier one arriving after it does not undo it.
        assert_eq!(logout(now() - 100, "earlier").await, StatusCode::OK);
        assert_eq!(
            status().await,
            StatusCode::UNAUTHORIZED,
            "undone by an earlier logout: {store}"
        );
    }
}

/// `session.secrets` after a rotation: the new secret seals, the old one still opens.
const ROTATED: &str =
    r#"["the-new-session-secret-after-rotation-0123456789", "an-example-session-secret-of-at-least-32-bytes"]"#;

/// A gate on `idp` and `upstream` whose session secrets are `list` (a TOML array), ready.
async fn gate_with_secrets(idp: &Idp, upstream: &Upstream, list: &'static str) -> TestGate {
    let gate = TestGate::start_unready(
        &idp.endpoint(),
        &upstream.url(),
        "",
        "",
        move |t: String| t.replace(&format!("secret = \"{SESSION_SECRET}\""), &format!("secrets = {list}")),
        |_| {},
    )
    .await;
    gate.wait_ready().await;
    gate
}

/// The gate's session cookie set on an app's answer (here resealed after a secret rotation) never goes out in an
/// answer a shared cache may keep: the app's `public` becomes `private`, or a CDN in front would hand the session to
/// everyone it serves that answer to. (Any answer to a signed-in request is `private`, cookie or not: see
/// `bypass::a_shared_cache_in_front_never_hands_a_signed_in_answer_to_anyone`.)
#[tokio::test]
async fn an_answer_carrying_the_session_cookie_is_private() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start(&idp, &upstream.url(), "", "").await;
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/").await;
    let cookie = b.gate_cookies(&gate.url());
    let get = |url: String| plain().get(url).header("cookie", &cookie).send();
    let unchanged = get(format!("{}/cacheable", gate.url())).await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::OK);
    assert!(unchanged.headers().get("set-cookie").is_none());
    assert_eq!(unchanged.headers()["cache-control"], "private, max-age=600");
    let rotated = gate_with_secrets(&idp, &upstream, ROTATED).await;
    let resealed = get(format!("{}/cacheable", rotated.url())).await.unwrap();
    assert_eq!(resealed.status(), StatusCode::OK);
    assert!(
        resealed
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("logto_gate=")),
        "the session is resealed on the app's answer"
    );
    let cache_control: Vec<_> = resealed.headers().get_all("cache-control").iter().collect();
    assert_eq!(cache_control, ["private, max-age=600"]);
}

#[tokio::test]
async fn rotating_the_session_secret_signs_nobody_out() {
    const OLD: &str = SESSION_SECRET;
    const NEW: &str = "the-new-session-secret-after-rotation-0123456789";
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let old_gate = TestGate::start(&idp, &upstream.url(), "", "").await;
    let b = Browser::new(&idp);
    b.sign_in(&old_gate, "/").await;
    let old_cookie = b.gate_cookies(&old_gate.url());

    let rotated = gate_with_secrets(&idp, &upstream, ROTATED).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/rotated", rotated.url()))
        .header("cookie", &old_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a cookie sealed with the old secret still opens"
    );
    let resealed = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|v| v.starts_with("logto_gate="))
        .expect("the cookie is resealed with the new secret");

    let only_new = gate_with_secrets(
        &idp,
        &upstream,
        r#"["the-new-session-secret-after-rotation-0123456789"]"#,
    )
    .await;
    let ok = client
        .get(format!("{}/new", only_new.url()))
        .header("cookie", &resealed)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let old = client
        .get(format!("{}/new", only_new.url()))
        .header("cookie", &old_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "once the old secret is removed its cookies no longer open"
    );
    let _ = (OLD, NEW);
}

/// `session.secret_files` from a Kubernetes secret volume, read again when it changes: a rotation (the new secret
/// first, the old one second) reseals the sessions the old secret sealed without signing anyone out, and once the
/// old secret is taken away what it sealed no longer opens, even a session the gate had opened before (kept opened
/// for speed). Replacing the key that seals outright signs its sessions out, with a warning saying how to rotate
/// instead. No restart, and no secret logged.
#[tokio::test]
async fn session_secret_files_rotate_without_a_restart() {
    const NEW: &str = "the-new-session-secret-after-rotation-0123456789";
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let mut volume = SecretVolume::new(&[("current", SESSION_SECRET), ("previous", SESSION_SECRET)]);
    let files = format!(
        "secret_files = [{}, {}]",
        volume.toml_path("current"),
        volume.toml_path("previous")
    );
    let mut gate = logging_json(&idp, &upstream, "info", |t| {
        let t = t.replace(&format!("secret = \"{SESSION_SECRET}\""), &files);
        assert!(t.contains("secret_files"), "{t}");
        t
    })
    .await;
    let url = gate.url();
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/").await;
    let old_cookie = b.gate_cookies(&url);
    let client = plain();
    let get = |cookie: String| {
        let request = client.get(format!("{url}/page")).header("cookie", cookie);
        async move {
            let r = request.send().await.unwrap();
            let session = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
                .find(|v| v.starts_with("logto_gate="));
            (r.status(), session)
        }
    };
    // Opened once, and kept opened.
    assert_eq!(get(old_cookie.clone()).await, (StatusCode::OK, None));
    assert_eq!(get(old_cookie.clone()).await, (StatusCode::OK, None));

    // Rotation: within 10 s (checked every 2 s, read once it stood still) the old secret's session is resealed.
    volume.update(&[("current", NEW), ("previous", SESSION_SECRET)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let resealed = loop {
        let (status, session) = get(old_cookie.clone()).await;
        assert_eq!(status, StatusCode::OK, "the old secret still opens");
        if let Some(session) = session {
            break session;
        }
        assert!(tokio::time::Instant::now() < deadline, "not resealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(get(resealed.clone()).await, (StatusCode::OK, None));

    // The old secret taken away: its session no longer opens, though the gate had it opened.
    volume.update(&[("current", NEW), ("previous", NEW)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = get(old_cookie.clone()).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(tokio::time::Instant::now() < deadline, "the old secret still opens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(resealed.clone()).await, (StatusCode::OK, None));

    // A careless rotation, the key that sealed replaced outright: its sessions are signed out, with a warning.
    const CARELESS: &str = "a-secret-replacing-every-other-at-once-0123456789";
    volume.update(&[("current", CARELESS), ("previous", CARELESS)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(resealed.clone()).await.0 == StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "the replaced key still opens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let log = stopped_log(&mut gate).await;
    // The first two steps kept the key that sealed: no warning for them.
    assert_reloads_and_no_secret(&log, "session secrets reloaded", 2, &[SESSION_SECRET, NEW, CARELESS]);
    let warnings: Vec<&Value> = log.1.iter().filter(|l| l["level"] == "WARN").collect();
    assert_eq!(warnings.len(), 1, "{:#?}", log.0);
    let said = warnings[0]["message"].as_str().unwrap_or("");
    assert!(
        said.starts_with("session secrets reloaded without the key that sealed sessions until now"),
        "{said}"
    );
}

#[tokio::test]
async fn large_sessions_are_chunked_and_stale_chunks_cleared() {
    let idp = Idp::start(IdpOptions::default());
    let bio: String = "lorem ipsum dolor sit amet ".repeat(300).trim_end().to_owned();
    idp.add_account(
        "carol",
        json!({"sub": "u_carol03", "username": "carol", "email": "carol@example.com", "email_verified": true,
        "roles": [], "custom_data": {"bio": bio}}),
    );
    let upstream = Upstream::start().await;
    let gate = TestGate::start(
        &idp,
        &upstream.url(),
        r#"scopes = ["email", "custom_data"]"#,
        "[headers]\n\"X-User\" = \"sub\"\n\"X-Bio\" = \"custom_data.bio\"\n",
    )
    .await;
    let b = Browser::new(&idp);
    b.login_as("carol");
    b.sign_in(&gate, "/").await;
    let cookies = b.gate_cookies(&gate.url());
    assert!(
        cookies.contains("logto_gate.0=") && cookies.contains("logto_gate.1="),
        "{cookies}"
    );
    assert!(
        !cookies.contains("logto_gate="),
        "no single cookie next to the chunks: {cookies}"
    );
    assert_eq!(upstream.last().header("x-bio").map(str::len), Some(bio.len()));

    // A browser that still holds those chunks signs in as a user with a small session: one cookie replaces them
    // and every chunk is cleared.
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    let url: reqwest::Url = gate.url().parse().unwrap();
    for c in cookies.split("; ") {
        bob.jar.add_cookie_str(&format!("{c}; Path=/"), &url);
    }
    let (hops, resp) = bob.navigate(&format!("{}/_logto/sign-in?redirect=/", gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    let after = bob.gate_cookies(&gate.url());
    assert!(
        after.starts_with("logto_gate=") && !after.contains("logto_gate.0"),
        "{after}"
    );
    assert_eq!(upstream.last().header("x-user"), Some("u_bob000002"));
}

#[tokio::test]
async fn idle_timeout_and_absolute_lifetime_both_hold() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let idle = TestGate::start_edited(&idp, &upstream.url(), "", "", |t| {
        t.replacen("[session]\n", "[session]\nidle_timeout = \"2s\"\n", 1)
    })
    .await;
    let short = TestGate::start_edited(&idp, &upstream.url(), "", "", |t| {
        t.replacen("[session]\n", "[session]\nlifetime = \"2s\"\n", 1)
    })
    .await;
    let (bi, bs) = (Browser::new(&idp), Browser::new(&idp));
    let start = now();
    bi.sign_in(&idle, "/").await;
    bs.sign_in(&short, "/").await;
    wait_past(start, 2).await;
    let api = |b: &Browser, g: &TestGate| b.client.get(format!("{}/api", g.url())).send();
    assert_eq!(
        api(&bi, &idle).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "idle too long"
    );
    assert_eq!(
        api(&bs, &short).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "past the absolute lifetime"
    );
}

/// Logto's organization token comes from its refresh grant, which spends the refresh token as any refresh does: past
/// 70 % of its life each request rotates it, and the old one presented again revokes the grant. The gate keeps the
/// token each answer gives (the sign-in's code exchange, then per renewal a refresh and an organization token), so
/// none goes to Logto twice and the session renews on.
#[tokio::test]
async fn organization_tokens_with_rotating_refresh_tokens_spend_each_token_once() {
    let idp = Idp::start(IdpOptions {
        refresh_tokens_aged: true,
        ..short_tokens()
    });
    let upstream = Upstream::start().await;
    let rules = "[[rules]]\nprefix = \"/members\"\nscopes = [\"read:members\"]\n";
    let gate = TestGate::start(&idp, &upstream.url(), "organization_id = \"org_acme\"", rules).await;
    let alice = Browser::new(&idp);
    let mut since = now();
    alice.sign_in(&gate, "/members/list").await;
    for renewal in 1..=2 {
        wait_past(since, TTL).await;
        since = now();
        let r = alice.get(format!("{}/members/again", gate.url())).await;
        assert_eq!(r.status(), StatusCode::OK, "renewal {renewal}");
        assert_eq!(refresh_grants(&idp), renewal);
    }
    let grants = &idp.stats()["grants"];
    assert_eq!(grants["organization_token"], 3, "{grants}");
    assert_eq!(grants["organization_token_rotations"], 3, "each rotated: {grants}");
    assert_no_token_sent_twice(&idp);
}

#[tokio::test]
async fn organization_tokens_admit_members_and_carry_their_permissions_through_refresh() {
    let idp = Idp::start(short_tokens());
    let upstream = Upstream::start().await;
    let rules = "[[rules]]\nprefix = \"/members\"\nscopes = [\"read:members\"]\n";
    let gate = TestGate::start(&idp, &upstream.url(), "organization_id = \"org_acme\"", rules).await;
    let alice = Browser::new(&idp);
    let signed_in = now();
    alice.sign_in(&gate, "/members/list").await;
    assert!(idp.last_authorization_request()["scope"]
        .as_str()
        .unwrap()
        .contains("urn:logto:scope:organizations"));
    assert_eq!(idp.stats()["grants"]["organization_token"], 1);
    let me: Value = alice.get_json(format!("{}/_logto/userinfo", gate.url())).await;
    assert_eq!(me["organization_id"], "org_acme");
    assert!(
        me["scope"].as_str().unwrap().split(' ').any(|s| s == "read:members"),
        "{me}"
    );

    // Bob is not a member of org_acme: Logto gives him no organization token, the gate refuses him.
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    let (hops, resp) = bob.navigate(&format!("{}/", gate.url())).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{hops:#?}");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("membership of the organization org_acme"));

    // After the access token expires the session is refreshed and the organization token renewed with it.
    wait_past(signed_in, TTL).await;
    let r = alice.get(format!("{}/members/again", gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(refresh_grants(&idp), 1);
    assert_eq!(idp.stats()["grants"]["organization_token"], 2);
}
