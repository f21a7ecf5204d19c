//! The server's limits over real sockets: oversized heads and cookies get 431, slow and idle clients are cut off.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn oversized_cookies_are_refused_with_431() {
    let s = Stack::start().await;
    let huge = format!("logto_gate={}", "A".repeat(70_000));
    let resp = plain()
        .get(format!("{}/x", s.gate.url()))
        .header("cookie", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn oversized_headers_slow_clients_and_idle_connections_are_cut_off() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", |t| {
        in_server("header_read_timeout = \"1s\"\nidle_timeout = \"1s\"\nmax_header_bytes = 16384")(t)
    })
    .await;
    // Oversized headers: 431, nothing reaches the upstream.
    let big = "x".repeat(20_000);
    let resp = reqwest::Client::new()
        .get(format!("{}/api", gate.url()))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(upstream.count(), 0);

    // A client that connects and sends nothing is disconnected.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the silent connection was not cut off");
    assert!(buf.is_empty());

    // A client that never finishes its headers is disconnected (slowloris).
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the half-sent request was not cut off");

    // An idle keep-alive connection is closed.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    idle.write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
}

#[tokio::test]
async fn a_head_trickled_in_byte_by_byte_is_cut_off_at_the_header_read_timeout() {
    // Bytes keep moving, so the idle timeout never fires: only the header read timeout ends this (slowloris that
    // keeps the connection busy). Then a keep-alive connection waiting for its next head is closed by it too.
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", |t| {
        in_server("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"")(t)
    })
    .await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = std::time::Instant::now();
    let trickle = async {
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        loop {
            // The pace of the attack, not a synchronisation: one byte every 100 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"a").await.is_err() {
                return; // closed by the gate
            }
        }
    };
    let mut answer = Vec::new();
    tokio::select! {
        _ = trickle => {}
        read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)) => {
            assert!(read.is_ok(), "the trickled head was not cut off");
        }
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "cut off too early: {took:?}");
    assert!(took < Duration::from_secs(5), "cut off late: {took:?}");
    assert_eq!(upstream.count(), 0);

    let mut waiting = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    waiting
        .write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    waiting.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), waiting.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the keep-alive connection outlived the header read timeout"
    );
    assert!(answered.elapsed() < Duration::from_secs(5), "{:?}", answered.elapsed());
}
