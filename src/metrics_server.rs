//! The metrics listener: `GET /metrics` in Prometheus text format, nothing else; bounded like every side listener
//! ([`crate::side_listener`]), since it often listens where every pod of a cluster can reach it.

use http::{header, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::metrics::Metrics;

/// The most connections the metrics listener serves at a time: a few scrapers, each keeping one open.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// The answer to `req`: the metrics at `/metrics`, 404 elsewhere.
pub(crate) fn answer(metrics: &Metrics, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    if req.uri().path() == "/metrics" {
        let mut r = Response::new(body::full(metrics.render()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    } else {
        let mut r = Response::new(body::full("not found: metrics are at /metrics\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    }
}
