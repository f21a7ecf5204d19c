//! A small upstream app for tests and the demo. It records what reached it and answers:
//! - any path: the request it received (method, path, headers) as JSON, or as an HTML page for browsers;
//! - `/download?bytes=N`: N bytes streamed in 64 KiB chunks;
//! - `POST /upload`: counts the streamed request body and answers `{"bytes": N, "sum": S}`;
//! - `/slow?ms=N`: answers after N milliseconds;
//! - `/ws`: a WebSocket echo;
//! - `/set-cookie`: sets an app cookie;
//! - `/set-gate-cookies`: sets the gate's own cookie names (a buggy or hostile app) next to an app cookie.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// What reached the upstream.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }
}

pub struct Upstream {
    /// Where it listens (for an app on a Unix socket: 0.0.0.0:0, see `socket`).
    pub addr: SocketAddr,
    /// The socket file of an app on a Unix socket.
    pub socket: Option<std::path::PathBuf>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Self::serve(listener)
    }

    pub fn serve(listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().expect("upstream addr");
        Self::accepting(listener, addr, None)
    }

    /// The app listening on the Unix socket file `path` (which must not exist yet).
    pub fn on_socket(path: &std::path::Path) -> Upstream {
        let listener = tokio::net::UnixListener::bind(path).expect("bind the upstream's socket");
        let anywhere = SocketAddr::from(([0, 0, 0, 0], 0));
        Self::accepting(listener, anywhere, Some(path.to_owned()))
    }

    /// Serves every connection `listener` accepts.
    fn accepting(listener: impl Listener, addr: SocketAddr, socket: Option<std::path::PathBuf>) -> Upstream {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(stream) = std::future::poll_fn(|cx| listener.poll_next(cx)).await {
                    serve_connection(stream, seen2.clone());
                }
            }
        });
        Upstream {
            addr,
            socket,
            seen,
            task,
        }
    }

    /// Its `upstream.url`.
    pub fn url(&self) -> String {
        match &self.socket {
            Some(path) => format!("unix:{}", path.display()),
            None => format!("http://{}", self.addr),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP or Unix listener.
trait Listener: Send + Sync + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn poll_next(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<Self::Stream>>;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;
    fn poll_next(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<Self::Stream>> {
        self.poll_accept(cx).map_ok(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    fn poll_next(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<Self::Stream>> {
        self.poll_accept(cx).map_ok(|(stream, _)| stream)
    }
}

/// Serves one connection (HTTP/1.1 with upgrades, or HTTP/2) in a task of its own.
fn serve_connection<S>(stream: S, seen: Arc<Mutex<Vec<Seen>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = service_fn(move |req| {
            let seen = seen.clone();
            async move { Ok::<_, Infallible>(handle(req, seen).await) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .await;
    });
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The query parameter `name`, percent-decoded (empty when absent).
fn query_text(req: &Request<Incoming>, name: &str) -> String {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn query_number(req: &Request<Incoming>, name: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(mut req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Body> {
    let record = Seen {
        method: req.method().to_string(),
        path: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    };
    if let Ok(mut s) = seen.lock() {
        s.push(record.clone());
    }
    if req.method() == hyper::Method::TRACE {
        // As Apache httpd does by default (`TraceEnable on`): the request's head, echoed as `message/http`.
        let mut echo = format!("TRACE {} HTTP/1.1\r\n", record.path);
        for (name, value) in &record.headers {
            echo.push_str(&format!("{name}: {value}\r\n"));
        }
        return Response::builder()
            .header("content-type", "message/http")
            .body(full(echo))
            .unwrap_or_else(|_| Response::new(full("")));
    }
    if req.uri().path().ends_with("/embeds") {
        // A page that holds another page of the app in a frame, as dashboards and legacy framesets do.
        let page = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Embeds</title></head><body>\
                    <h1 id=\"holder\">A page with a frame</h1>\
                    <iframe id=\"embedded\" src=\"/dashboard?in=frame\" width=\"800\" height=\"400\"></iframe>\
                    </body></html>";
        return Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(full(page))
            .unwrap_or_else(|_| Response::new(full("")));
    }
    if req.uri().path().ends_with("/self-redirect") {
        // A legacy app building absolute URLs from `Host`: a redirect to `http://<Host><to>`, in `Location` and in
        // `Refresh`.
        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
        let to = query_text(&req, "to");
        let url = format!("http://{host}{to}");
        // As bytes: an app may write a path holding UTF-8 as it is.
        let field = |text: &str| text.as_bytes().to_vec();
        return Response::builder()
            .status(302)
            .header("location", field(&url))
            .header("refresh", field(&format!("0; url={url}")))
            .body(full(""))
            .unwrap_or_else(|_| Response::new(full("")));
    }
    match req.uri().path() {
        "/download" => {
            let total = query_number(&req, "bytes") as usize;
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut left = total;
            let stream = futures_util::stream::iter(std::iter::from_fn(move || {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len());
                left -= n;
                Some(Ok::<_, std::io::Error>(Frame::data(chunk.slice(..n))))
            }));
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap_or_else(|_| Response::new(full("")))
        }
        "/upload" => {
            let mut body = req.into_body();
            let (mut bytes, mut sum) = (0u64, 0u64);
            // Trailer fields, if any came after the body.
            let mut trailers = serde_json::Map::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            bytes += d.len() as u64;
                            sum = d.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
                        }
                        for (name, value) in f.trailers_ref().into_iter().flatten() {
                            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                            trailers.insert(name.to_string(), value.into());
                        }
                    }
                    Err(_) => break,
                }
            }
            json_response(json!({"bytes": bytes, "sum": sum, "trailers": trailers}))
        }
        "/reset-mid-body" => {
            // Headers and part of the body, then the connection is cut (an upstream crashing mid-response).
            let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "upstream died",
                )),
            ];
            Response::builder()
                .header("content-length", "1048576")
                .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))))
                .unwrap_or_else(|_| Response::new(full("")))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_number(&req, "ms"))).await;
            json_response(json!({"slow": true}))
        }
        // An answer the app lets shared caches keep (static assets, say).
        "/cacheable" => Response::builder()
            .header("cache-control", "public, max-age=600, s-maxage=3600")
            .body(full("the same for everyone"))
            .unwrap_or_else(|_| Response::new(full(""))),
        // The same, with the fields a CDN or nginx in front reads before `Cache-Control` (RFC 9213's targeted
        // fields, Surrogate-Control, nginx's X-Accel-Expires).
        "/cdn-cacheable" => Response::builder()
            .header("cache-control", "public, max-age=600")
            .header("x-accel-expires", "600")
            .header("surrogate-control", "max-age=600")
            .header("cdn-cache-control", "max-age=600")
            .header("cloudflare-cdn-cache-control", "max-age=600")
            .body(full("the same for everyone"))
            .unwrap_or_else(|_| Response::new(full(""))),
        // An app that names its framework and server and sets a weak HSTS of its own.
        "/branded" => Response::builder()
            .header("x-powered-by", "Express")
            .header("server", "app/1.0")
            .header("strict-transport-security", "max-age=60")
            .header("x-frame-options", "DENY")
            .header("x-app-version", "7")
            .body(full("branded"))
            .unwrap_or_else(|_| Response::new(full(""))),
        "/set-cookie" => Response::builder()
            .header("set-cookie", "app_session=abc; Path=/")
            .body(full("ok"))
            .unwrap_or_else(|_| Response::new(full(""))),
        "/set-gate-cookies" => Response::builder()
            .header("set-cookie", "logto_gate=overwritten; Path=/")
            .header("set-cookie", "app_session=abc; Path=/")
            .header("set-cookie", " logto_gate.1 =x; Path=/")
            .header(
                "set-cookie",
                "logto_gate_signin_AAAAAAAAAAAAAAAA=x; Path=/_logto/callback",
            )
            .header("set-cookie", "logto_gate=; Max-Age=0; Path=/")
            .body(full("ok"))
            .unwrap_or_else(|_| Response::new(full(""))),
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                return Response::new(full("not a websocket"));
            };
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                break;
                            }
                        } else if msg.is_close() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(full(""))
                .unwrap_or_else(|_| Response::new(full("")))
        }
        _ => {
            let wants_html = record.header("accept").is_some_and(|a| a.contains("text/html"));
            if wants_html {
                html_page(&record)
            } else {
                let mut headers = Map::new();
                for (k, v) in &record.headers {
                    headers.insert(k.clone(), Value::String(v.clone()));
                }
                json_response(json!({"method": record.method, "path": record.path, "headers": headers}))
            }
        }
    }
}

fn json_response(v: Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The demo app's page: who the gate says you are, and every header that reached the app.
fn html_page(seen: &Seen) -> Response<Body> {
    let user = seen
        .header("x-forwarded-preferred-username")
        .or(seen.header("x-forwarded-user"))
        .unwrap_or("(nobody)");
    let rows: String = seen
        .headers
        .iter()
        .map(|(k, v)| {
            let mark = if k.starts_with("x-forwarded-") {
                " class=\"id\""
            } else {
                ""
            };
            format!("<tr{mark}><td>{}</td><td>{}</td></tr>", escape(k), escape(v))
        })
        .collect();
    let page = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Sample app behind logto-gate</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto}}td{{padding:.2em .6em;border-bottom:1px solid #eee;font-family:monospace}}td:first-child{{white-space:nowrap}}tr.id td{{background:#eef7ee}}</style></head>\
         <body><h1 id=\"greeting\">Hello, {}!</h1><p>This sample app has no authentication code. \
         logto-gate signed you in with Logto and sent these headers with your request to <code>{}</code>:</p>\
         <table>{rows}</table><p><a id=\"sign-out\" href=\"/_logto/sign-out\">Sign out</a> · \
         <a href=\"/_logto/userinfo\">/_logto/userinfo</a></p></body></html>",
        escape(user),
        escape(&seen.path)
    );
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(full(page))
        .unwrap_or_else(|_| Response::new(full("")))
}
