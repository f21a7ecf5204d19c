//! The request pipeline, run for every request by [`Gate::handle`] (here):
//!
//! 1. **classify** ([`crate::routes`]): a gate endpoint under `/_logto/` (answered in `endpoints.rs`, forward-auth
//!    in `forward_auth.rs`), or a
//!    request for the app, whose upstream and rule are chosen in `app.rs`.
//! 2. **authenticate** (`authn.rs`): read the session cookie (no network call, ever, on this path) or verify a
//!    Logto access token; a session near expiry is renewed once (`renewal.rs`).
//! 3. **challenge** (`authn.rs`, signed out): a browser navigation is sent to Logto and comes back to the URL it
//!    asked for (a frame's signs in in the whole window); anything else gets 401 with `WWW-Authenticate: Bearer`.
//!    **authorize**: the rule's roles, scopes and organization.
//! 4. **rewrite** (`app.rs`): strip spoofed identity headers and the gate's cookies, set `X-Forwarded-*`, inject
//!    identity.
//! 5. **forward** ([`crate::proxy`], over [`crate::http1`] or hyper): stream to the upstream and back, upgrades
//!    included.
//! 6. **respond** (here): the request id and session cookies on every answer; errors become a page for browsers
//!    or JSON for API clients, with a status chosen by their source ([`crate::error`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use crate::assertion::AssertionSigner;
use crate::body::Body;
use crate::config::Config;
use crate::error::{ClientError, GateError};
use crate::http1::framing::{Ambiguity, AmbiguousFraming};
use crate::http1::hop;
use crate::identity::{ClaimPath, ManagedHeaders};
use crate::logging::OutageWarnings;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::pages::{self, Page};
use crate::policy;
use crate::proxy::trusted::is_trusted;
use crate::proxy::Forwarder;
use crate::return_path::ReturnPath;
use crate::routes::{classify, paths, Route};
use crate::session::refresh::Refresher;
use crate::session::Sessions;
use access::{log_path, AccessLine};

/// The request id header, set on the request to the upstream and on the response.
pub(crate) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

mod access;
mod app;
mod asked;
mod authn;
mod endpoints;
mod field_files;
mod form_method;
mod forward_auth;
mod renewal;
mod response_headers;
mod unreadable;
mod watch;

use authn::Principal;

/// Claims kept in every session besides those the header mapping and the rules read (for `/_logto/userinfo`).
/// `scope` too: `/_logto/userinfo` shows the scopes the session holds (the sign-in's and its API resource's).
const ALWAYS_KEPT_CLAIMS: [&str; 7] = ["sub", "name", "username", "email", "email_verified", "roles", "scope"];

/// Logto's extended claims: its userinfo endpoint (`/oidc/me`) releases them for every scope granted, its ID tokens
/// only those the tenant's ID token settings enable (by default `roles`, `organizations` and `organization_roles`;
/// an admin may take those out or add the others). The gate asks userinfo when an ID token lacks one it reads.
const EXTENDED_CLAIMS: [&str; 7] = [
    "roles",
    "organizations",
    "organization_roles",
    "organization_data",
    "custom_data",
    "identities",
    "sso_identities",
];

/// One worker's handle on the shared [`Gate`]. Each request's future holds a reference to the gate, and counting
/// that reference on the gate's own `Arc` would have every worker write the same cache line (next to the gate's
/// configuration, read by all) twice per request; a worker's handle is counted by that worker alone.
pub struct WorkerGate(Arc<Gate>);

impl WorkerGate {
    pub fn new(gate: &Arc<Gate>) -> Arc<Self> {
        Arc::new(WorkerGate(Arc::clone(gate)))
    }
}

/// A request counter alone on its cache line.
#[derive(Default)]
#[repr(align(128))]
struct WorkerCounter(std::sync::atomic::AtomicU64);

/// A CORS preflight (Fetch standard §4.8): `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_preflight(req: &Request<Body>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// True for a browser navigation: a GET or HEAD the browser marks `Sec-Fetch-Mode: navigate` (Fetch Metadata, sent
/// by every current browser) or, from a client that sends no such field, one that accepts HTML. Only those are
/// redirected to sign in. A script's request that accepts HTML (htmx, Turbo) is not one: a redirect to Logto would
/// fail its cross-origin fetch, and each would leave a sign-in attempt cookie behind (an app polling every few
/// seconds could fill the browser's cookie jar for the site); it gets the 401 page with a link instead.
fn is_browser_navigation(req: &Request<Body>) -> bool {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return false;
    }
    match req.headers().get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => accepts_html(req),
    }
}

/// Whether a request is a browser's speculative load rather than someone's navigation: `Sec-Purpose: prefetch` (with
/// `;prerender` for a prerender; speculation rules, Firefox's `<link rel=prefetch>`), and the older names for it,
/// `Purpose: prefetch` (Chrome's `<link rel=prefetch>`), `X-Purpose: preview` (Safari) and `X-Moz: prefetch`.
pub(super) fn is_speculative(headers: &http::HeaderMap) -> bool {
    let says = |name: &str, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split([',', ';']).any(|part| part.trim().eq_ignore_ascii_case(token)))
        })
    };
    says("sec-purpose", "prefetch")
        || says("purpose", "prefetch")
        || says("x-purpose", "preview")
        || says("x-moz", "prefetch")
}

/// The answer to a speculative load ([`is_speculative`]) of a page whose answer would do something (sign out, start
/// a sign-in): 503, which makes the browser drop the speculative load (a prefetch or prerender that is not a success
/// is not used), so the person's own click comes here itself.
pub(super) fn not_speculatively(
    req: &Request<Body>,
    look: &crate::pages::Look,
    title: &str,
    message: &str,
) -> Response<Body> {
    let mut resp =
        Page::new(StatusCode::SERVICE_UNAVAILABLE, "speculative_load", title, message).render(accepts_html(req), look);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    resp
}

/// True for the navigation of a frame (Fetch Metadata: `Sec-Fetch-Dest` other than `document`: `iframe`, `frame`,
/// `embed`, `object`), false for the whole window's and when the browser sends no `Sec-Fetch-Dest`.
fn is_frame_navigation(req: &Request<Body>) -> bool {
    req.headers()
        .get("sec-fetch-dest")
        .is_some_and(|dest| !dest.as_bytes().eq_ignore_ascii_case(b"document"))
}

/// The gate: configuration, Logto, cookies and the upstream client, shared by every connection.
pub struct Gate {
    /// The gate itself, for the watch of each WebSocket tunnel a session opened ([`watch::until_ended`]): it outlives
    /// the request that opened the tunnel, and refreshes the session as a request would.
    me: std::sync::Weak<Gate>,
    /// The warnings an outage repeats for every session or tunnel, throttled for all of them together (boxed: in
    /// an outage each of them takes their lock, away from the lines the workers read the configuration from).
    warnings: Box<OutageWarnings>,
    config: Config,
    oidc: Arc<Oidc>,
    /// In an allocation of its own: with revocations in memory every request takes its lock, whose cache line
    /// must not be one the workers read the configuration from.
    sessions: Arc<Sessions>,
    refresher: Refresher,
    /// The upstreams' forwarders, one per `config.routes` entry.
    forwarders: Vec<Forwarder>,
    /// The request fields whose values come from files, kept current.
    field_files: field_files::FieldFiles,
    /// The identity fields removed from requests; from a trusted proxy's, `managed_from_trusted` when
    /// `server.trusted_identity_headers` keeps some.
    managed: ManagedHeaders,
    managed_from_trusted: Option<ManagedHeaders>,
    /// The bytes of forms read for `_method` that may be held at once ([`form_method::FormBudget`]).
    form_budget: Arc<form_method::FormBudget>,
    kept_claims: Vec<ClaimPath>,
    /// The extended claims the gate reads (see [`EXTENDED_CLAIMS`]): an ID token without one of them makes it ask
    /// userinfo.
    userinfo_claims: Vec<&'static str>,
    assertion: Option<AssertionSigner>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    request_prefix: u32,
    /// One request counter per connection worker (a counter two cores take turns incrementing moves its cache line
    /// between them on every request); ids stay unique as the worker's index is part of them.
    request_counters: Box<[WorkerCounter]>,
    /// `X-Forwarded-Host` for the upstream: the public URL's host, as a value built once.
    forwarded_host: HeaderValue,
    /// True when no identity header shares its name with another header the gate may set on a request for the app:
    /// only `Authorization` can (mapped where the gate does not send its own there); every other header the gate
    /// sets cannot be mapped at all ([`crate::identity::reserved_header`]), and the client's own copies of identity
    /// headers are always removed. They can then be written into the upstream request as one pre-rendered block
    /// instead of each going into the header map.
    identity_inline: bool,
    /// Whether a rule names `client_ips`: only then is a request's client address worked out (for a trusted proxy's
    /// request, from its `X-Forwarded-For`).
    rules_read_client_ip: bool,
    /// Whether a rule (or `[access]`) names `max_age`: only then is a request's route asked for one.
    rules_ask_max_age: bool,
}

impl Gate {
    /// The strictest `max_age` of the rules that `decision` applies, when any rule names one.
    fn max_age(&self, decision: &policy::Decision<'_>) -> Option<u64> {
        if !self.rules_ask_max_age {
            return None;
        }
        decision.max_age()
    }

    /// The address `client_ips` rules judge a request by ([`policy::client_address`]), when a rule reads it.
    fn client_address(&self, headers: &http::HeaderMap, peer: SocketAddr, trusted: bool) -> Option<std::net::IpAddr> {
        if !self.rules_read_client_ip {
            return None;
        }
        policy::client_address(headers, peer.ip(), trusted, &self.config.server.trusted_proxies)
    }

    /// Whether an ID token with `claims` lacks an extended claim the gate reads, which Logto's userinfo then has.
    fn needs_userinfo(&self, claims: &serde_json::Map<String, serde_json::Value>) -> bool {
        self.userinfo_claims.iter().any(|claim| !claims.contains_key(*claim))
    }

    pub fn new(config: Config) -> Result<Arc<Self>, String> {
        let oidc = Arc::new(Oidc::new(
            config.logto.clone(),
            config.server.public_url.callback_url(),
        )?);
        let sessions = Arc::new(Sessions::new(&config.session, config.server.workers)?);
        let apps = config.routes.iter().map(|r| r.label.clone()).collect();
        let metrics = Arc::new(Metrics::new(config.server.workers, apps));
        // One forwarder (and connection pools) per upstream route, in the order of `config.routes`.
        let forwarders = config
            .routes
            .iter()
            .enumerate()
            .map(|(app, r)| {
                Forwarder::new(
                    r,
                    app,
                    Arc::clone(&metrics),
                    config.server.workers,
                    config.server.idle_timeout,
                    // The gate sets its own request id on every answer (`Gate::handle`).
                    &[REQUEST_ID],
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut owned: Vec<&str> = crate::identity::GATE_OWNED_HEADERS.to_vec();
        if !config.upstream.pass_method_override {
            owned.extend(policy::METHOD_OVERRIDE_HEADERS);
        }
        let managed = ManagedHeaders::new(&config.headers, &owned, &[]);
        let kept = &config.server.trusted_identity_headers;
        let managed_from_trusted = (!kept.is_empty()).then(|| ManagedHeaders::new(&config.headers, &owned, kept));
        let form_budget = form_method::FormBudget::new(&config.upstream, Arc::clone(&metrics));
        let mut kept_claims: Vec<ClaimPath> = ALWAYS_KEPT_CLAIMS
            .iter()
            .filter_map(|c| ClaimPath::parse(c).ok())
            .collect();
        kept_claims.extend(config.headers.iter().map(|(_, path)| path.clone()));
        kept_claims.extend(config.policy.claim_paths());
        if config.logto.organization_id.is_some() {
            kept_claims.extend(
                ["scope", "organization_id"]
                    .iter()
                    .filter_map(|c| ClaimPath::parse(c).ok()),
            );
        }
        if config.assertion.is_some() {
            kept_claims.extend(ClaimPath::parse("organizations").ok());
        }
        // Extended claims the gate reads whose scope it asks for (without the scope, userinfo has them neither).
        let userinfo_claims: Vec<&'static str> = EXTENDED_CLAIMS
            .into_iter()
            .filter(|claim| kept_claims.iter().any(|k| k.root() == *claim))
            .filter(|claim| {
                crate::config::scope_for_claim(claim).is_some_and(|s| config.logto.scopes.iter().any(|have| have == s))
            })
            .collect();
        let assertion = match &config.assertion {
            Some(a) => Some(AssertionSigner::new(a, config.server.public_url.origin())?),
            None => None,
        };
        let forwarded_host = HeaderValue::from_str(config.server.public_url.host())
            .map_err(|_| "server.public_url: the host is not a valid header value".to_owned())?;
        let config_workers = config.server.workers.max(1);
        let identity_inline = !config.headers.iter().any(|(name, _)| *name == header::AUTHORIZATION);
        let request_prefix = {
            let mut b = [0u8; 4];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                .map_err(|_| "no randomness for request ids".to_owned())?;
            u32::from_be_bytes(b)
        };
        let rules_ask_max_age = {
            let accesses = config.policy.rules.iter().map(|r| &r.access);
            let mut all = accesses.chain([&config.policy.default]);
            all.any(|a| matches!(a, policy::Access::Require(r) if r.max_age.is_some()))
        };
        Ok(Arc::new_cyclic(|me| Gate {
            me: me.clone(),
            warnings: Box::default(),
            identity_inline,
            rules_read_client_ip: config.policy.rules.iter().any(|r| r.client_ips.is_some()),
            rules_ask_max_age,
            forwarded_host,
            field_files: field_files::FieldFiles::new(&config),
            config,
            oidc,
            sessions,
            refresher: Refresher::default(),
            forwarders,
            managed,
            managed_from_trusted,
            form_budget,
            kept_claims,
            userinfo_claims,
            assertion,
            metrics,
            draining: AtomicBool::new(false),
            request_prefix,
            request_counters: (0..config_workers).map(|_| WorkerCounter::default()).collect(),
        }))
    }

    pub fn oidc(&self) -> &Arc<Oidc> {
        &self.oidc
    }

    /// Starts re-reading the files that may change while the gate runs (in the runtime this is called from):
    /// `request_headers_files`, `logto.app_secret_file`, the session's secret files. (The TLS certificate pairs are
    /// watched by whoever holds them.)
    pub(crate) fn watch_files(&self) {
        self.field_files.watch();
        self.oidc.credentials().watch();
        self.sessions.watch_secret_files(&self.config.session.secret_files);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// From now on `/_logto/readyz` answers 503: the process is shutting down.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Resolves once nothing outlives its connection or request: no upgraded connection (WebSocket) is relayed and
    /// no token refresh is running ([`Refresher::idle`]).
    pub async fn wait_for_background_work(&self) {
        self.metrics.no_active_upgrades().await;
        self.refresher.idle().await;
    }

    /// `X-Request-Id`: the one a proxy in `server.trusted_proxies` sent when it is a sane token, else a new one: a
    /// random per-process prefix and a counter, so making one costs no system call. Anyone else's is replaced, as
    /// their `X-Forwarded-For` is: an id a client chose could name another user's request in the app's logs and the
    /// gate's.
    fn request_id(&self, headers: &http::HeaderMap, peer: SocketAddr) -> HeaderValue {
        if let Some(v) = headers.get(REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty()
                && b.len() <= 128
                && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
                && is_trusted(&self.config.server.trusted_proxies, peer.ip())
            {
                return v.clone();
            }
        }
        let worker = crate::worker::index() % self.request_counters.len();
        let count = self.request_counters[worker].0.fetch_add(1, Ordering::Relaxed);
        // The worker in the top byte, its count below: unique for 2^56 requests per worker.
        let n = ((worker as u64) << 56) | (count & ((1 << 56) - 1));
        // 24 hex digits, written on the stack, then cut from the per-thread buffer (crate::values): making it and
        // cloning it for the response allocate nothing.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 24];
        let digits = (u128::from(self.request_prefix) << 64) | u128::from(n);
        for (i, d) in id.iter_mut().enumerate() {
            *d = HEX[((digits >> (4 * (23 - i))) & 0xf) as usize];
        }
        crate::values::header_value(&id).unwrap_or_else(|| HeaderValue::from_static("unknown"))
    }

    /// Handles one request from `peer`. Never fails: every error becomes a response.
    ///
    /// This and [`Gate::app`] return `async move` blocks rather than being `async fn`s: an `async fn` keeps a moved
    /// copy of each argument next to the original for its whole life (the request twice, at every level), and hyper
    /// moves the whole future into place for each request.
    #[allow(clippy::manual_async_fn)] // deliberately, see above
    pub fn handle(
        gate: Arc<WorkerGate>,
        mut req: Request<Body>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        async move {
            let this: &Gate = &gate.0;
            let route = classify(req.uri().path());
            // Only the access log reads the clock for the request's duration.
            let access_log = access::wanted(route);
            let started = access_log.then(std::time::Instant::now);
            let html = accepts_html(&req);
            let method = req.method().clone();
            // Phase 0 reads the framing headers as they came, before hop-by-hop removal drops `Transfer-Encoding`.
            let framing = framing_problem(&req);
            let refused_framing = framing.is_some();
            // The client's hop-by-hop headers go next, before the gate adds any of its own: a header the client names
            // in `Connection` is dropped from what the client sent, never from what the gate sets (RFC 9110 §7.6.1).
            // Only protocols `upstream.upgrade_protocols` allows are switched to (never h2c); any other offer is
            // served as the plain request it also is, its `Upgrade` removed with the other hop-by-hop fields.
            let upgrading = req.version() == Version::HTTP_11
                && hop::is_allowed_upgrade(req.headers(), &this.config.upstream.upgrade_protocols);
            hop::remove_hop_by_hop(req.headers_mut(), upgrading);
            // One id per request, in the access log, sent upstream and returned to the client.
            let request_id = this.request_id(req.headers(), peer);
            req.headers_mut().insert(REQUEST_ID, request_id.clone());
            // Only the path is logged: queries carry codes and states, and headers cookies and tokens. Kept as the
            // URI (a reference-count increment) for the access line and for the line of a failed request.
            let uri = req.uri().clone();
            // Until the answer is decided: a request dropped before that still gets its line (499), with its user
            // when the pipeline knew one.
            let mut line = AccessLine {
                gate: this,
                route,
                method: method.as_str(),
                request_id: &request_id,
                path: uri.path(),
                peer,
                started,
                decided: Decided::new(access_log),
                pending: true,
                trace_id: access_log.then(|| access::TraceId::of(req.headers())).flatten(),
            };
            let decided = &mut line.decided;
            let result = match framing
                .or_else(|| refused_method(&req))
                .or_else(|| ambiguous_fields(&req))
            {
                // Phase 0: ambiguous message framing is how requests are smuggled past a proxy, and two hosts or two
                // sets of credentials how the gate and the app come to see different requests, and a TRACE how the
                // app would echo what the gate adds; refuse them outright.
                Some(problem) => Err(problem.into()),
                // The app's requests skip the dispatch below: one future less nested in every request's.
                None if route == Route::App => this.app(&mut req, peer, upgrading, decided).await,
                // The rest (the gate's endpoints, forward-auth) is boxed: its larger state stays out of the app's.
                None => Box::pin(this.route(route, req, peer, html, upgrading, decided)).await,
            };
            let mut resp = match result {
                Ok(resp) => resp,
                Err(e) => {
                    let failed = Failed {
                        method: &method,
                        request_id: &request_id,
                        path: uri.path(),
                        back: retry_target(route, &uri, this.config.server.public_url.origin()),
                    };
                    this.fail(e, html, &failed)
                }
            };
            if refused_framing {
                // The unread body's extent is in doubt (or its coding unknown), so nothing after it on this connection
                // can be trusted either.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let cookies = std::mem::take(&mut line.decided.cookies);
            if !cookies.is_empty() {
                crate::proxy::caching::keep_from_shared_caches(&mut resp);
            }
            for c in cookies {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            // The serving entry's fields when one was chosen (an app's answer, or the gate's own page for a request
            // to it), else `[response_headers]`.
            let fields = match line.decided.upstream {
                Some(entry) => &this.config.routes[entry].response_headers,
                None => &this.config.response_headers,
            };
            if !fields.is_empty() && route != Route::ForwardAuth {
                response_headers::apply(&mut resp, fields);
            }
            resp.headers_mut().insert(REQUEST_ID, request_id.clone());
            line.write(resp.status().as_u16());
            resp
        }
    }

    /// Phases 1-5 by route.
    async fn route(
        &self,
        route: Route,
        mut req: Request<Body>,
        peer: SocketAddr,
        html: bool,
        upgrading: bool,
        decided: &mut Decided,
    ) -> Result<Response<Body>, GateError> {
        // `handle` boxes this dispatch (the app's requests skip it). Forward-auth runs inline; the rest is rare and
        // boxed again, so their larger state (token requests, key fetches) does not make forward-auth's bigger.
        match route {
            // `handle` calls `app` itself; boxed here so that this dispatch stays small.
            Route::App => Box::pin(self.app(&mut req, peer, upgrading, decided)).await,
            Route::SignIn => Box::pin(self.sign_in(&req, peer)).await,
            Route::Callback => Ok(Box::pin(self.callback(&req, html)).await),
            Route::SignOut => Box::pin(self.sign_out(&req)).await,
            Route::UserInfo => Box::pin(self.userinfo(&req, decided)).await,
            Route::Healthz => Ok(pages::json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            )),
            Route::Readyz => Ok(Box::pin(self.readyz()).await),
            Route::ForwardAuth => self.forward_auth(&req, peer, decided).await,
            Route::Jwks => self.jwks(),
            Route::BackchannelLogout => Box::pin(self.backchannel_logout(req)).await,
            Route::SignedOut => Ok(self.signed_out(&req, html)),
            Route::UnknownGatePath => Err(ClientError::NotFound.into()),
        }
    }

    /// Phase 6 for errors: log by source (with the request id and path, to match the access line), answer with
    /// a page.
    fn fail(&self, e: GateError, html: bool, failed: &Failed<'_>) -> Response<Body> {
        let (method, request_id, path) = (
            failed.method,
            failed.request_id.to_str().unwrap_or(""),
            log_path(failed.path),
        );
        match &e {
            GateError::Client(_) => {
                tracing::info!(source = e.source_name(), error = %e, %method, request_id, %path, "request refused")
            }
            GateError::Upstream(_) | GateError::Idp(_) | GateError::Store(_) => {
                tracing::warn!(source = e.source_name(), error = %e, %method, request_id, %path, "request failed")
            }
            GateError::Internal(_) => {
                tracing::error!(source = e.source_name(), error = %e, %method, request_id, %path, "request failed")
            }
        }
        let mut page = e.page();
        // "Sign in again" comes back to the page the person wanted, when the request shows which.
        if let (Some((href, _)), Some(back)) = (page.link.as_mut(), failed.back.as_ref()) {
            if href == paths::SIGN_IN {
                *href = self.sign_in_url(back);
            }
        }
        let mut resp = page.with_request_id(request_id).render(html, &self.config.pages.look);
        if let Some((name, value)) = e.answer_field() {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// What the line and page of a failed request need to know about it.
struct Failed<'a> {
    method: &'a Method,
    request_id: &'a HeaderValue,
    path: &'a str,
    /// Where "Sign in again" should come back to, when the request shows it.
    back: Option<ReturnPath>,
}

/// The page a person wanted, for a failed request's "Sign in again": the app's page itself, or the `redirect` of a
/// sign-in that failed (Logto unreachable, say).
fn retry_target(route: Route, uri: &http::Uri, origin: &str) -> Option<ReturnPath> {
    match route {
        Route::App => Some(ReturnPath::parse_or_root(
            uri.path_and_query().map_or("/", |pq| pq.as_str()),
        )),
        Route::SignIn => url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "redirect")
            .map(|(_, v)| ReturnPath::parse_same_origin_or_root(&v, origin)),
        _ => None,
    }
}

/// What a request's pipeline decides on the way besides its answer; [`Gate::handle`] applies it whatever the answer
/// is, and logs the user also when there is none.
struct Decided {
    /// `Set-Cookie` fields for the answer: a refreshed or resealed session, or cookies cleared.
    cookies: Vec<HeaderValue>,
    /// The subject the request was authenticated as, once known (as oauth2-proxy logs it): on the access line
    /// whatever the answer, a refusal by the rules (403), a failed upstream exchange (502, 504) or none (499).
    user: Option<String>,
    /// Who acted for `user`, when a token says someone did (RFC 8693 `act`): on the access line too.
    actor: Option<String>,
    /// Whether the access line is written, so that `user` is worth keeping.
    logged: bool,
    /// The `config.routes` entry that serves the request, once chosen: its answer gets that entry's
    /// `response_headers`.
    upstream: Option<usize>,
}

impl Decided {
    fn new(logged: bool) -> Self {
        Decided {
            cookies: Vec::new(),
            user: None,
            actor: None,
            logged,
            upstream: None,
        }
    }

    /// The request is from `principal` (its `sub` claim: a Logto user id, or a machine-to-machine app's id), and
    /// from whoever acts for it ([`Principal::actor`]).
    fn signed_in(&mut self, principal: &Principal) {
        if self.logged {
            self.user = Some(
                principal
                    .claims()
                    .get("sub")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            );
            self.actor = principal.actor().map(str::to_owned);
        }
    }
}

/// RFC 9112 §6.1, §6.3: a request with both `Transfer-Encoding` and `Content-Length`, or with more than one
/// `Content-Length`, has ambiguous framing (400). The gate refuses it rather than pick a reading the upstream might
/// not share. A `Transfer-Encoding` other than one field saying `chunked` alone is a coding the gate does not decode
/// (501, RFC 9112 §6.1, as nginx answers): hyper's server takes any list ending in `chunked`, and forwarding its
/// decoded chunks as the whole body would pass on, say, gzip-coded bytes as plain ones.
fn framing_problem<B>(req: &Request<B>) -> Option<ClientError> {
    let ambiguous = |ambiguity: Ambiguity| Some(ClientError::BadRequest(ambiguity.message().to_owned()));
    // What only the raw head showed (hyper normalises it away); see `crate::http1::framing`.
    if let Some(AmbiguousFraming(ambiguity)) = req.extensions().get::<AmbiguousFraming>() {
        return ambiguous(*ambiguity);
    }
    // What the headers still show (HTTP/2, or anything hyper passes on as it came).
    let headers = req.headers();
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return ambiguous(Ambiguity::RepeatedContentLength);
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if lengths == 1 {
        return ambiguous(Ambiguity::LengthAndTransferEncoding);
    }
    if codings.next().is_some() || !first.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
        let sent = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        return Some(ClientError::UnsupportedCoding(
            sent.collect::<Vec<_>>().join(", ").chars().take(100).collect(),
        ));
    }
    None
}

/// TRACE is refused (405), as nginx does: an app that echoes it (Apache httpd's `TraceEnable` is on by default)
/// would hand the client every field the gate adds, among them `upstream.protected_app`'s Basic credentials (the
/// Logto app secret) and the session's access token (RFC 9110 §9.3.8: a TRACE must not carry sensitive fields).
fn refused_method<B>(req: &Request<B>) -> Option<ClientError> {
    (req.method() == Method::TRACE).then_some(ClientError::MethodNotAllowed { allow: "" })
}

/// The host the client asked for: `X-Forwarded-Host` from a trusted proxy, else `Host` (or the HTTP/2 authority),
/// which phase 0 has checked. A trusted proxy's `X-Forwarded-Host` is held to the same rules ([`policy::is_host`],
/// one field): a list or a repeated field would have the rules decide on one host and the app read another.
pub(super) fn request_host<B>(req: &Request<B>, trusted: bool) -> Result<Option<&str>, ClientError> {
    let h = |name: &http::HeaderName| req.headers().get(name).and_then(crate::values::text);
    if trusted {
        let mut fields = req.headers().get_all(&X_FORWARDED_HOST).iter();
        if let Some(first) = fields.next() {
            if fields.next().is_some() || !policy::is_host(first.as_bytes()) {
                return Err(ClientError::BadRequest(
                    "X-Forwarded-Host from the trusted proxy is not one host name or address with an optional port"
                        .to_owned(),
                ));
            }
            return Ok(first.to_str().ok());
        }
    }
    Ok(h(&header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str())))
}

/// Fields that give a request two meanings, refused with 400 (as nginx does):
/// - more than one `Authorization`: its value is one set of credentials (RFC 9110 §11.6.2), not a list, so a sender
///   must not repeat it (§5.3); the gate would verify one and the app might read another (the last, or all of them
///   joined with commas);
/// - `Host` missing from an HTTP/1.1 request, repeated, or not a plain `host[:port]` ([`policy::is_host`]; RFC 9112
///   §3.2: a server MUST answer 400), or naming another authority than the request target does (absolute form,
///   HTTP/2's `:authority`): RFC 9112 §3.2.2 has the target win and RFC 9113 §8.3.1 calls the difference malformed;
///   the gate refuses it rather than pick one, so its host rules and the app never see two hosts. An empty `Host`
///   is allowed (§3.2); a target's authority standing alone is held to the same syntax as `Host`.
fn ambiguous_fields<B>(req: &Request<B>) -> Option<ClientError> {
    let bad = |why: &str| Some(ClientError::BadRequest(why.to_owned()));
    let headers = req.headers();
    if headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return bad("Authorization is given more than once; a request carries one set of credentials");
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        if req.version() == Version::HTTP_11 {
            return bad("an HTTP/1.1 request must carry Host (RFC 9112 §3.2)");
        }
        // HTTP/2's `:authority` (or an HTTP/1.0 absolute target) alone names the host: held to the same syntax.
        return match req.uri().authority() {
            Some(target) if !policy::is_host(target.as_str().as_bytes()) => {
                bad("the request target's authority is not a host name or address with an optional port")
            }
            _ => None,
        };
    };
    if hosts.next().is_some() {
        return bad("Host is given more than once");
    }
    // An empty `Host` is allowed (RFC 9112 §3.2: a target without authority); the host is then unknown.
    if !host.is_empty() && !policy::is_host(host.as_bytes()) {
        return bad("Host is not a host name or address with an optional port");
    }
    match req.uri().authority() {
        Some(target) if !same_authority(target.as_str().as_bytes(), host.as_bytes(), req.uri().scheme_str()) => {
            bad("Host names another host than the request target")
        }
        _ => None,
    }
}

/// Whether a request target's authority and a `Host` value name the same host and port: the names compared in any
/// letter case, a missing (or empty) port read as the scheme's default (`http://a:80/` and `Host: a` agree). A
/// target with user information never agrees (RFC 9110 §4.2.4 has a recipient treat it as an error).
fn same_authority(target: &[u8], host: &[u8], scheme: Option<&str>) -> bool {
    if target.eq_ignore_ascii_case(host) {
        return true;
    }
    let default = if scheme.is_some_and(|s| s.eq_ignore_ascii_case("https")) {
        443
    } else {
        80
    };
    let split = |authority: &[u8]| -> Option<(Vec<u8>, u16)> {
        let end = match authority.first() {
            Some(b'[') => authority.iter().position(|b| *b == b']')? + 1,
            _ => authority.iter().position(|b| *b == b':').unwrap_or(authority.len()),
        };
        let (name, rest) = authority.split_at(end);
        let port = match rest {
            [] | [b':'] => default,
            [b':', digits @ ..] => std::str::from_utf8(digits).ok()?.parse().ok()?,
            _ => return None,
        };
        Some((name.to_ascii_lowercase(), port))
    };
    !target.contains(&b'@') && policy::is_host(target) && split(target).is_some_and(|t| split(host) == Some(t))
}

fn accepts_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(crate::values::text)
        .any(|v| v.contains("text/html"))
}

/// Decodes a query string; a parameter given twice is refused (RFC 6749 §3.1: "Request and response parameters
/// MUST NOT be included more than once"), so two `state` or `code` values can never be played against each other.
fn single_valued_query(query: Option<&str>) -> Result<Vec<(String, String)>, GateError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(ClientError::BadRequest(format!(
                "the parameter `{}` is given more than once",
                k.chars().take(32).collect::<String>()
            ))
            .into());
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
