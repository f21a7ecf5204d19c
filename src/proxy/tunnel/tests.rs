use std::task::Waker;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// A pattern that shows a lost, doubled or reordered byte.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads until the end of `stream`'s input, bounded.
async fn read_to_end(stream: &mut DuplexStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut all))
        .await
        .expect("the input ends")
        .expect("read");
    all
}

async fn read_exactly(stream: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .expect("the bytes arrive")
        .expect("read");
    got
}

#[tokio::test]
async fn bytes_go_both_ways_and_an_end_is_passed_on_as_a_half_close() {
    let (mut client, mut front) = duplex(1024);
    let (mut back, mut upstream) = duplex(1024);
    let tunnel = tokio::spawn(async move { copy_both_ways(&mut front, &mut back).await });

    client.write_all(b"hello").await.unwrap();
    assert_eq!(read_exactly(&mut upstream, 5).await, b"hello");
    upstream.write_all(b"world").await.unwrap();
    assert_eq!(read_exactly(&mut client, 5).await, b"world");

    // The client ends its side: the upstream sees the end, and can still answer.
    client.shutdown().await.unwrap();
    assert!(read_to_end(&mut upstream).await.is_empty());
    upstream.write_all(b"after the end").await.unwrap();
    assert_eq!(read_exactly(&mut client, 13).await, b"after the end");
    assert!(!tunnel.is_finished(), "one direction is still open");

    // Then the upstream ends too: the client sees the end and the tunnel is over.
    upstream.shutdown().await.unwrap();
    assert!(read_to_end(&mut client).await.is_empty());
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), tunnel)
        .await
        .expect("the tunnel ends once both sides have");
    ended.unwrap().unwrap();
}

#[tokio::test]
async fn a_side_that_reads_slowly_gets_every_byte_in_order() {
    // 64-byte pipes on both sides of the tunnel: nearly every write is partial or has to wait.
    let (mut client, mut front) = duplex(64);
    let (mut back, mut upstream) = duplex(64);
    let tunnel = tokio::spawn(async move { copy_both_ways(&mut front, &mut back).await });
    let sent = pattern(1 << 20);
    let expected = sent.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut received = Vec::new();
    let mut chunk = [0u8; 100];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), upstream.read(&mut chunk))
            .await
            .expect("bytes keep arriving")
            .unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(
        received == expected,
        "{} bytes arrived, not the same {} sent",
        received.len(),
        expected.len()
    );
    let mut client = writer.await.unwrap();
    upstream.shutdown().await.unwrap();
    assert!(read_to_end(&mut client).await.is_empty());
    tunnel.await.unwrap().unwrap();
}

#[tokio::test]
async fn bytes_the_writer_does_not_take_wait_on_the_heap_only_until_it_does() {
    let mut cx = Context::from_waker(Waker::noop());
    let (mut source, mut reader) = duplex(1024);
    let (mut writer, mut sink) = duplex(16);
    let mut flow = Flow::default();

    // Nothing to read: nothing held.
    assert!(flow
        .poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
        .is_pending());
    assert!(flow.waiting.is_none());

    // 100 bytes, of which the writer takes 16: the other 84 wait.
    let sent = pattern(100);
    source.write_all(&sent).await.unwrap();
    assert!(flow
        .poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
        .is_pending());
    let (bytes, taken) = flow.waiting.as_ref().expect("the rest waits");
    assert_eq!((bytes.len() - taken), 84);

    // While they wait, nothing more is read: a side that does not read holds the other back (its bytes stay in the
    // pipe), not the gate's memory.
    source.write_all(&pattern(500)).await.unwrap();
    for _ in 0..3 {
        assert!(flow
            .poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
            .is_pending());
    }
    let (bytes, taken) = flow.waiting.as_ref().expect("the rest still waits");
    assert_eq!((bytes.len(), *taken), (84, 0));
    let mut unread = [0u8; 1024];
    let n = reader.read(&mut unread).await.unwrap();
    assert_eq!(&unread[..n], &pattern(500)[..], "what came later was left unread");

    // The other side reads; each poll hands on what fits, and once all of it is written nothing is held.
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let mut chunk = [0u8; 16];
        let n = sink.read(&mut chunk).await.unwrap();
        received.extend_from_slice(&chunk[..n]);
        let _ = flow.poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer));
    }
    assert_eq!(received, sent);
    assert!(flow.waiting.is_none(), "a quiet flow holds no buffer");
}

/// A writer that keeps what it is given until flushed (as a TLS stream keeps records while its socket is full).
#[derive(Default)]
struct Buffering {
    kept: Vec<u8>,
    flushed: Vec<u8>,
}

impl AsyncWrite for Buffering {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        self.kept.extend_from_slice(bytes);
        Poll::Ready(Ok(bytes.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let kept = std::mem::take(&mut self.kept);
        self.flushed.extend_from_slice(&kept);
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[tokio::test]
async fn what_was_written_is_flushed_before_the_tunnel_waits() {
    let mut cx = Context::from_waker(Waker::noop());
    let (mut source, mut reader) = duplex(1024);
    let mut writer = Buffering::default();
    let mut flow = Flow::default();
    source.write_all(b"an answer the peer waits for").await.unwrap();
    assert!(flow
        .poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
        .is_pending());
    assert_eq!(writer.flushed, b"an answer the peer waits for");
    // Nothing new: no flush owed.
    assert!(flow
        .poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
        .is_pending());
    assert!(!flow.need_flush);
    // The end is passed on flushed too.
    source.write_all(b" and the last").await.unwrap();
    drop(source);
    assert!(flow
        .poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
        .is_ready());
    assert_eq!(writer.flushed, b"an answer the peer waits for and the last");
}

/// A writer that takes nothing.
struct Refusing;

impl AsyncWrite for Refusing {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A reader that fails.
struct Failing;

impl AsyncRead for Failing {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")))
    }
}

#[tokio::test]
async fn a_writer_that_takes_nothing_or_a_failing_reader_ends_the_tunnel_with_an_error() {
    let mut cx = Context::from_waker(Waker::noop());
    let (mut source, mut reader) = duplex(1024);
    source.write_all(b"x").await.unwrap();
    let mut flow = Flow::default();
    match flow.poll(&mut cx, Pin::new(&mut reader), Pin::new(&mut Refusing)) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::WriteZero),
        other => panic!("expected a write-zero error, got {other:?}"),
    }
    let mut flow = Flow::default();
    match flow.poll(&mut cx, Pin::new(&mut Failing), Pin::new(&mut Refusing)) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        other => panic!("expected the read error, got {other:?}"),
    }
}
