//! The small listeners beside the gate's own (`server.metrics_listen`, `server.http_redirect_listen`): HTTP/1.1
//! servers whose every answer is made at once from the request, with the bounds a listener any peer may reach
//! needs, so that nobody who can connect to one can exhaust the process that serves the gate:
//! - at most [`SideLimits::max_connections`] connections at a time; more are closed on arrival, never queued;
//! - a request head must arrive within `server.header_read_timeout` (which also bounds the wait for the next one
//!   on a kept-alive connection); one still unfinished once `server.max_header_bytes` of it have been read is
//!   refused (hyper's 431; it may have read up to a few times that much by then), a malformed one too (400);
//! - an accept that fails (out of descriptors) is retried after [`ACCEPT_RETRY`], not in a busy loop.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::Body;

/// How long to wait before accepting again after an accept failed (out of descriptors: connections must close).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The bounds of a side listener's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SideLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_connections: usize,
    /// Serve more than one request per connection (a metrics scraper's), or close after the first answer.
    pub(crate) keep_alive: bool,
}

/// Serves `listener` until the task is dropped, answering each request with `answer`.
pub(crate) async fn serve<F>(listener: TcpListener, limits: SideLimits, answer: Arc<F>)
where
    F: Fn(&Request<hyper::body::Incoming>) -> Response<Body> + Send + Sync + 'static,
{
    let room = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed on a side listener");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // Over the limit: closed at once (dropped), never queued.
        let Ok(permit) = Arc::clone(&room).try_acquire_owned() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let answer = Arc::clone(&answer);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = answer(&req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(limits.keep_alive);
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            drop(permit);
        });
    }
}
