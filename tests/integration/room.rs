//! `server.max_connections` and running out of descriptors: clients holding idle connections cannot keep new ones
//! out, because idle connections make room (as nginx reuses its keep-alive connections); connections whose request
//! waits for its answer are never closed for room.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

const HEALTHZ: &[u8] = b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// A connection to `port` that has sent `request`.
async fn sent(port: u16, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream
}

/// The status code of the next answer on `stream`, `None` when the gate closed it instead.
async fn next_status(stream: &mut TcpStream) -> Option<u16> {
    let head = read_answer(stream, &mut Vec::new()).await?;
    head.split(' ').nth(1).and_then(|code| code.parse().ok())
}

/// A gate on `upstream` whose `/slow` is public, with `line` in `[server]`.
async fn gate_with(idp: &Idp, upstream: &Upstream, line: &'static str) -> TestGate {
    let public = "[[rules]]\nprefix = \"/slow\"\nallow = \"public\"\n";
    TestGate::start_edited(idp, &upstream.url(), "", public, in_server(line)).await
}

#[tokio::test]
async fn at_max_connections_an_idle_connection_makes_room_and_a_waiting_request_stays() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = gate_with(&idp, &upstream, "max_connections = 2").await;
    let mut slow = sent(gate.port, b"GET /slow?ms=2000 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    eventually("the slow request at the app", || {
        upstream.seen().iter().any(|s| s.path.starts_with("/slow"))
    })
    .await;
    let mut idle = sent(gate.port, HEALTHZ).await;
    assert_eq!(next_status(&mut idle).await, Some(200));

    // Both places are taken: the idle connection is closed for the new client, the waiting request is not.
    let mut new = sent(gate.port, HEALTHZ).await;
    assert_eq!(next_status(&mut new).await, Some(200), "the new client is served");
    assert_eq!(next_status(&mut idle).await, None, "the idle connection was closed");
    assert_eq!(
        next_status(&mut slow).await,
        Some(200),
        "the waiting request is answered"
    );
}

#[tokio::test]
async fn at_max_connections_a_new_client_waits_until_a_connection_is_idle() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = gate_with(&idp, &upstream, "max_connections = 1").await;
    let mut busy = sent(gate.port, b"GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    eventually("the slow request at the app", || {
        upstream.seen().iter().any(|s| s.path.starts_with("/slow"))
    })
    .await;
    let mut new = sent(gate.port, HEALTHZ).await;
    assert_eq!(next_status(&mut new).await, Some(200), "served once there is room");
    // The busy connection's answer was out before the new client was served: it is there to read at once.
    let mut pending = [0u8; 1];
    assert!(
        busy.try_read(&mut pending).is_ok(),
        "the new client was served before the only place was free"
    );
    let mut rest = pending.to_vec();
    let head = read_answer(&mut busy, &mut rest).await.expect("the slow answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_answer(&mut busy, &mut rest).await, None, "then closed for room");
}

#[tokio::test]
async fn an_idle_http2_connection_makes_room_too() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = gate_with(&idp, &upstream, "max_connections = 1").await;
    let (mut sender, conn) = h2_connection(gate.port).await;
    healthz_over_h2(&mut sender, gate.port, 1).await;
    let mut new = sent(gate.port, HEALTHZ).await;
    assert_eq!(next_status(&mut new).await, Some(200));
    // Ended gracefully: GOAWAY, the client's answer to the PING, the end of the connection.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

#[tokio::test]
async fn a_websocket_tunnel_takes_a_place_and_is_not_closed_for_room() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let public = "[[rules]]\nprefix = \"/ws\"\nallow = \"public\"\n";
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", public, in_server("max_connections = 2")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", gate.port))
        .await
        .unwrap();
    let mut idle = sent(gate.port, HEALTHZ).await;
    assert_eq!(next_status(&mut idle).await, Some(200));
    // The tunnel and the idle connection fill both places: the idle one makes room.
    let mut new = sent(gate.port, HEALTHZ).await;
    assert_eq!(next_status(&mut new).await, Some(200));
    assert_eq!(next_status(&mut idle).await, None, "the idle connection was closed");
    ws.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
    let echo = echo.unwrap().unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "still here");
}

/// The lines of `log` that contain `text`.
fn lines_with<'a>(log: &'a str, text: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(text)).collect()
}

/// The gate's own log lines, without the access log.
const LOG_LEVEL: &str = "level = \"warn,logto_gate=info,logto_gate::access=warn\"";

/// A gate process allowed 160 open files, with two workers, `lines` in `[server]` and its own log lines at info.
async fn gate_of_160_files(idp: &Idp, upstream: &Upstream, lines: String) -> BinaryGate {
    let edit = move |t: String| {
        t.replacen("[server]\n", &format!("[server]\nworkers = 2\n{lines}"), 1)
            .replace("level = \"warn\"", LOG_LEVEL)
    };
    let register = |public: &str| idp.register_client(APP_ID, APP_SECRET, public);
    BinaryGate::start_limited(Some(160), &idp.endpoint(), &upstream.url(), "", edit, register, &[]).await
}

/// `clients` connections to `port` that have each sent a request and are kept (not read), then one more client:
/// its answer's status, and the kept connections.
async fn flood_then_one_more(port: u16, clients: usize) -> (Option<u16>, Vec<TcpStream>) {
    let mut flood = Vec::new();
    for _ in 0..clients {
        flood.push(sent(port, HEALTHZ).await);
    }
    let mut last = sent(port, HEALTHZ).await;
    (next_status(&mut last).await, flood)
}

#[tokio::test]
async fn the_default_max_connections_follows_the_open_file_limit() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let metrics_port = free_port();
    let metrics = format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n");
    let mut gate = gate_of_160_files(&idp, &upstream, metrics).await;
    // (160 - 128) / 2 places; 40 clients that each send a request and keep their connection.
    let started = std::time::Instant::now();
    let (status, _flood) = flood_then_one_more(gate.port, 40).await;
    assert_eq!(status, Some(200));
    let text = metrics_text(metrics_port).await;
    assert!(text.contains("\nlogto_gate_max_connections 16\n"), "{text}");
    let closed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("logto_gate_connections_closed_for_room_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // 41 served in 16 places: 25 freed, one of them perhaps by the readiness check's connection closing.
    assert!(closed >= 24, "{closed} idle connections closed for room\n{text}");
    let log = gate.stop_and_read_log();
    let listening = lines_with(&log, "logto-gate listening");
    assert!(
        !listening.is_empty() && listening.iter().all(|l| l.contains("max_connections=16")),
        "{log}"
    );
    let reached = lines_with(&log, "server.max_connections reached");
    assert!(
        !reached.is_empty() && reached.len() <= at_most_per_worker(started),
        "{log}"
    );
}

/// How many times two workers may log one warning since `started`: once each per 10 s.
fn at_most_per_worker(started: std::time::Instant) -> usize {
    2 * (1 + started.elapsed().as_secs() as usize / 10)
}

#[tokio::test]
async fn a_gate_out_of_descriptors_closes_idle_connections_for_new_clients() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    // The maximum is far above what 160 descriptors allow, so accepting fails for want of them; an idle
    // connection would stay for a minute.
    let lines = "max_connections = 1000\nheader_read_timeout = \"60s\"\nidle_timeout = \"120s\"\n";
    let mut gate = gate_of_160_files(&idp, &upstream, lines.to_owned()).await;
    let started = std::time::Instant::now();
    let (status, flood) = flood_then_one_more(gate.port, 200).await;
    assert_eq!(status, Some(200));
    let log = gate.stop_and_read_log();
    assert!(
        !lines_with(&log, "more than the open-file limit allows").is_empty(),
        "the setting beyond the limit is warned about\n{log}"
    );
    let failed = lines_with(&log, "accept failed");
    assert!(
        !failed.is_empty(),
        "accepting never failed: the test did not run out of descriptors\n{log}"
    );
    // At most once per worker and 10 s, however often it failed.
    assert!(
        failed.len() <= at_most_per_worker(started),
        "{} lines\n{log}",
        failed.len()
    );
    drop(flood);
}
