//! The dual path, differentially: the same request through every pairing of the gate's servers (its own HTTP/1.1
//! server; hyper's, for an HTTP/1.0 request; hyper's HTTP/2) with its upstream clients (its own, for a bodiless
//! `GET`; hyper's, for a `DELETE`), and every header feature checked alike on all six: what the app receives
//! (identity and forwarding fields set, spoofed copies gone, the gate's cookie gone, hop-by-hop fields gone, one request id) and what
//! the client receives (the app's fields in order, the app's `Set-Cookie` for the gate's cookie gone, hop-by-hop
//! fields and those `Connection` names gone, the gate's request id instead of the app's).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::front::read_answer;
use crate::support::*;

/// An app that records every request head it reads and answers each with the same fields.
async fn recording_app() -> (String, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                        let answer = "HTTP/1.1 200 OK\r\nX-Request-Id: upstream-id\r\nSet-Cookie: a=1\r\n\
                                      Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nX-Custom: v\r\n\
                                      Set-Cookie: logto_gate=planted; Path=/\r\nSet-Cookie: b=2\r\n\
                                      Content-Length: 2\r\n\r\nok";
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (url, heads, task)
}

/// The values of the fields named `name` (lower case) in `fields`.
fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Checks the request head the app received and the answer the client received, for one pairing.
fn check(what: &str, method: &str, app_head: &str, answer: &[(String, String)]) {
    let (line, rest) = app_head.split_once("\r\n").unwrap();
    assert!(line.starts_with(&format!("{method} /f ")), "{what}: {line}");
    let received: Vec<(String, String)> = rest
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    // What the app receives.
    let user = values(&received, "x-forwarded-user");
    assert!(user.len() == 1 && user[0] != "spoofed", "{what}: identity {user:?}");
    let cookie = values(&received, "cookie").join("; ");
    assert!(
        cookie.contains("app=1") && !cookie.contains("logto_gate"),
        "{what}: cookie {cookie:?}"
    );
    assert!(
        values(&received, "x-hop-req").is_empty(),
        "{what}: a field Connection names reached the app"
    );
    // The client's own forwarding fields are not believed (its peer is not a trusted proxy); the gate's stand.
    assert_eq!(
        values(&received, "x-forwarded-for"),
        ["127.0.0.1"],
        "{what}: {received:?}"
    );
    assert_eq!(values(&received, "x-forwarded-proto"), ["http"], "{what}");
    let sent_id = values(&received, "x-request-id");
    assert_eq!(sent_id.len(), 1, "{what}: {received:?}");
    // What the client receives.
    assert_eq!(values(answer, "set-cookie"), ["a=1", "b=2"], "{what}: {answer:?}");
    assert_eq!(values(answer, "x-custom"), ["v"], "{what}");
    assert!(
        values(answer, "x-hop").is_empty(),
        "{what}: a field Connection names passed"
    );
    assert_eq!(
        values(answer, "x-request-id"),
        sent_id,
        "{what}: the gate's request id, not the app's"
    );
    assert_eq!(values(answer, "content-length"), ["2"], "{what}");
}

#[tokio::test]
async fn every_server_and_client_pairing_treats_header_fields_alike() {
    let (upstream, heads, app) = recording_app().await;
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let gate = TestGate::start(&s.idp, &upstream, "", "").await;
    let last_head = || heads.lock().unwrap().last().cloned().expect("the app was asked");
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let h10 = reqwest::Client::builder().http1_only().build().unwrap();
    // GET: the gate's own client; DELETE (bodiless, but not GET or HEAD): hyper's.
    for method in ["GET", "DELETE"] {
        // HTTP/1.1: the gate's own server.
        let mut stream = TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
        let request = format!(
            "{method} /f HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}; app=1\r\nAccept: application/json\r\n\
             X-Forwarded-User: spoofed\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: X-Hop-Req\r\nX-Hop-Req: 1\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_answer(&mut stream, &mut Vec::new(), false).await;
        let answer: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        check(
            &format!("{method} over HTTP/1.1 (own server)"),
            method,
            &last_head(),
            &answer,
        );
        assert_eq!(body, b"ok");
        // HTTP/1.0 (handed to hyper's server) and HTTP/2.
        for (server, client, version) in [
            ("HTTP/1.0 (hyper's server)", &h10, reqwest::Version::HTTP_10),
            ("HTTP/2", &h2, reqwest::Version::HTTP_2),
        ] {
            let resp = client
                .request(method.parse().unwrap(), format!("{}/f", gate.url()))
                .version(version)
                .header("cookie", format!("logto_gate={cookie}; app=1"))
                .header("accept", "application/json")
                .header("x-forwarded-user", "spoofed")
                .header("x-forwarded-for", "6.6.6.6")
                .send()
                .await
                .unwrap();
            let answer: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            check(&format!("{method} over {server}"), method, &last_head(), &answer);
            assert_eq!(resp.bytes().await.unwrap(), "ok");
        }
    }
    assert_eq!(heads.lock().unwrap().len(), 6, "every pairing reached the app once");
    app.abort();
}
