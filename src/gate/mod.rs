//! The request pipeline, top to bottom in one place:
//!
//! 1. **classify**: a gate endpoint under `/_logto/`, or a request for the app.
//! 2. **authenticate**: read the session cookie; no network call, ever, on this path.
//! 3. **challenge** (signed out): a browser navigation is sent to Logto and comes back to the URL it asked for;
//!    anything else gets 401 with `WWW-Authenticate: Bearer`.
//! 4. **rewrite**: strip spoofed identity headers and the gate's cookies, set `X-Forwarded-*`, inject identity.
//! 5. **forward**: stream to the upstream and back, upgrades included.
//! 6. **respond**: errors become a page for browsers or JSON for API clients, with a status chosen by their source.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use serde_json::{Map, Value};

use crate::assertion::AssertionSigner;
use crate::body::{self, Body};
use crate::config::Config;
use crate::error::{ClientError, GateError, IdpError};
use crate::http1::framing::{Ambiguity, AmbiguousFraming};
use crate::http1::hop;
use crate::identity::{self, ClaimPath, ManagedHeaders};
use crate::metrics::{Metrics, RefreshResult};
use crate::oidc::RefreshError;
use crate::oidc::{Oidc, TokenError};
use crate::pages::{self, Page};
use crate::policy::{self, Decision};
use crate::proxy::trusted::is_trusted;
use crate::proxy::{forwarded, Added, Forwarder};
use crate::return_path::ReturnPath;
use crate::routes::{classify, paths, Route};
use crate::session::attempt::SignInAttempt;
use crate::session::refresh::{self, Refresher};
use crate::session::store::SaveError;
use crate::session::{self, Current, Session, Sessions};

/// The request id header, set on the request to the upstream and on the response.
pub(crate) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

mod endpoints;
mod renewal;

use renewal::Renewed;

/// Claims kept in every session besides those the header mapping and the rules read (for `/_logto/userinfo`).
/// `scope` too: `/_logto/userinfo` shows the scopes the session holds (the sign-in's and its API resource's).
const ALWAYS_KEPT_CLAIMS: [&str; 7] = ["sub", "name", "username", "email", "email_verified", "roles", "scope"];

/// Claims Logto releases only from userinfo (`/oidc/me`), never in the ID token.
const USERINFO_ONLY_CLAIMS: [&str; 3] = ["identities", "custom_data", "organization_data"];

/// Headers the gate owns on the way upstream besides the identity mapping; a client's copies are removed (in any
/// spelling, `_` for `-`): the assertion, the forward-auth answer's identity fields, and `X-Original-URL` /
/// `X-Rewrite-URL`, on which IIS's URL Rewrite and old Symfony route instead of the request target (so the app would
/// serve another path than the rules saw).
const GATE_OWNED_HEADERS: [&str; 11] = [
    crate::assertion::HEADER,
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
    "x-original-url",
    "x-rewrite-url",
    MACHINE_HEADER,
    PROTECTED_APP_ID_TOKEN,
    PROTECTED_APP_HOST,
];

/// Logto Protected App's headers (`upstream.protected_app`): the signed-in user's ID token as Logto signed it, and
/// the host the browser asked for.
const PROTECTED_APP_ID_TOKEN: &str = "logto-id-token";
const PROTECTED_APP_HOST: &str = "logto-host";

/// Set on requests of a Logto machine-to-machine app (its id), never on a person's: how the app tells them apart.
const MACHINE_HEADER: &str = "x-forwarded-machine";

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

/// Who a request is from, once authenticated.
enum Principal {
    /// A browser session.
    Session(Current),
    /// A verified Logto access token (`Authorization: Bearer`).
    Bearer(Map<String, Value>),
}

impl Principal {
    fn claims(&self) -> &Map<String, Value> {
        match self {
            Principal::Session(c) => &c.session.claims,
            Principal::Bearer(c) => c,
        }
    }

    /// The Logto machine-to-machine app this principal is, if it is one: a client-credentials access token, whose
    /// `sub` is the app's own id (`client_id`); a person's token has the person's id there.
    fn machine(&self) -> Option<&str> {
        let Principal::Bearer(claims) = self else {
            return None;
        };
        let sub = claims.get("sub").and_then(Value::as_str)?;
        (claims.get("client_id").and_then(Value::as_str) == Some(sub)).then_some(sub)
    }

    /// How the 403 page names the person.
    fn display_name(&self) -> String {
        if let Some(app) = self.machine() {
            return format!("the machine-to-machine app {app}");
        }
        let c = self.claims();
        let get = |k: &str| c.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        match (get("username"), get("email")) {
            (Some(u), Some(e)) => format!("{u} ({e})"),
            (Some(u), None) => u.to_owned(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => get("sub").unwrap_or("an unknown user").to_owned(),
        }
    }
}

/// A CORS preflight (Fetch standard §4.8): `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_preflight(req: &Request<Body>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// True for a browser navigation: GET or HEAD that accepts HTML. Only those are redirected to sign in.
fn is_browser_navigation(req: &Request<Body>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(crate::values::text)
            .any(|v| v.contains("text/html"))
}

/// The gate: configuration, Logto, cookies and the upstream client, shared by every connection.
pub struct Gate {
    /// `Authorization` for the app in Logto Protected App mode (`upstream.protected_app`).
    protected_basic: Option<HeaderValue>,
    config: Config,
    oidc: Arc<Oidc>,
    sessions: Sessions,
    refresher: Refresher,
    /// The upstreams' forwarders, one per `config.routes` entry.
    forwarders: Vec<Forwarder>,
    managed: ManagedHeaders,
    kept_claims: Vec<ClaimPath>,
    needs_userinfo: bool,
    assertion: Option<AssertionSigner>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    request_prefix: u32,
    /// One request counter per connection worker (a counter two cores take turns incrementing moves its cache line
    /// between them on every request); ids stay unique as the worker's index is part of them.
    request_counters: Box<[WorkerCounter]>,
    /// `X-Forwarded-Host` for the upstream: the public URL's host, as a value built once.
    forwarded_host: HeaderValue,
    /// True when no identity header shares its name with another header the gate sets on a request for the app
    /// (`X-Request-Id`, `Authorization`, the assertion; `Host`, `Cookie` and `X-Forwarded-For`/`-Proto`/`-Host`
    /// cannot be mapped at all, and the client's own copies of identity headers are always removed). They can then be
    /// written into the upstream request as one pre-rendered block instead of each going into the header map.
    identity_inline: bool,
}

impl Gate {
    pub fn new(config: Config) -> Result<Arc<Self>, String> {
        let oidc = Arc::new(Oidc::new(
            config.logto.clone(),
            config.server.public_url.callback_url(),
        )?);
        let sessions = Sessions::new(&config.session, config.server.workers)?;
        let metrics = Arc::new(Metrics::new(config.server.workers));
        // One forwarder (and connection pools) per upstream route, in the order of `config.routes`.
        let forwarders = config
            .routes
            .iter()
            .map(|r| {
                Forwarder::new(
                    &r.upstream,
                    Arc::clone(&metrics),
                    config.server.workers,
                    config.server.idle_timeout,
                    // The gate sets its own request id on every answer (`Gate::handle`).
                    &[REQUEST_ID],
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut owned: Vec<&str> = GATE_OWNED_HEADERS.to_vec();
        if !config.upstream.pass_method_override {
            owned.extend(policy::METHOD_OVERRIDE_HEADERS);
        }
        let managed = ManagedHeaders::new(&config.headers, &owned);
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
        let needs_userinfo = kept_claims.iter().any(|c| USERINFO_ONLY_CLAIMS.contains(&c.root()));
        let assertion = match &config.assertion {
            Some(a) => Some(AssertionSigner::new(a, config.server.public_url.origin())?),
            None => None,
        };
        let forwarded_host = HeaderValue::from_str(config.server.public_url.host())
            .map_err(|_| "server.public_url: the host is not a valid header value".to_owned())?;
        let config_workers = config.server.workers.max(1);
        let identity_inline = !config.headers.iter().any(|(name, _)| {
            *name == REQUEST_ID || *name == header::AUTHORIZATION || name.as_str() == crate::assertion::HEADER
        });
        // Logto Protected App: `Authorization: Basic base64(appId:appSecret)` on every request, so the app can refuse
        // anything that did not come through the gate.
        let protected_basic = if config.upstream.protected_app {
            use base64::Engine;
            let pair = format!("{}:{}", config.logto.app_id, config.logto.app_secret.expose());
            let mut v = HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
            .map_err(|_| "upstream.protected_app: the app credentials make no header value".to_owned())?;
            v.set_sensitive(true);
            Some(v)
        } else {
            None
        };
        Ok(Arc::new(Gate {
            protected_basic,
            identity_inline,
            forwarded_host,
            config,
            oidc,
            sessions,
            refresher: Refresher::default(),
            forwarders,
            managed,
            kept_claims,
            needs_userinfo,
            assertion,
            metrics,
            draining: AtomicBool::new(false),
            request_prefix: {
                let mut b = [0u8; 4];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                    .map_err(|_| "no randomness for request ids".to_owned())?;
                u32::from_be_bytes(b)
            },
            request_counters: (0..config_workers).map(|_| WorkerCounter::default()).collect(),
        }))
    }

    pub fn oidc(&self) -> &Arc<Oidc> {
        &self.oidc
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// From now on `/_logto/readyz` answers 503: the process is shutting down.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Resolves once no upgraded connection (WebSocket) is being relayed.
    pub async fn wait_for_upgrades(&self) {
        self.metrics.no_active_upgrades().await;
    }

    /// `X-Request-Id`: the client's (or the proxy's in front) when it is a sane token, else a new one: a random
    /// per-process prefix and a counter, so making one costs no system call.
    fn request_id(&self, headers: &http::HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c)) {
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
            // Only the access log reads the clock for the request's duration.
            let access_log = tracing::enabled!(target: "logto_gate::access", tracing::Level::INFO);
            let started = access_log.then(std::time::Instant::now);
            let route = classify(req.uri().path());
            let html = accepts_html(&req);
            let method = req.method().clone();
            // Phase 0 reads the framing headers as they came, before hop-by-hop removal drops `Transfer-Encoding`.
            let framing = framing_problem(&req);
            // The client's hop-by-hop headers go next, before the gate adds any of its own: a header the client names
            // in `Connection` is dropped from what the client sent, never from what the gate sets (RFC 9110 §7.6.1).
            // Only protocols `upstream.upgrade_protocols` allows are switched to (never h2c); any other offer is
            // served as the plain request it also is, its `Upgrade` removed with the other hop-by-hop fields.
            let upgrading = req.version() == Version::HTTP_11
                && hop::is_allowed_upgrade(req.headers(), &this.config.upstream.upgrade_protocols);
            hop::remove_hop_by_hop(req.headers_mut(), upgrading);
            // One id per request, in the access log, sent upstream and returned to the client.
            let request_id = this.request_id(req.headers());
            req.headers_mut().insert(REQUEST_ID, request_id.clone());
            // Only the path is logged: queries carry codes and states, and headers cookies and tokens. Kept as the
            // URI (a reference-count increment) for the access line and for the line of a failed request.
            let uri = req.uri().clone();
            // Set-Cookie headers decided on the way (a refreshed or resealed session) go on whatever the answer is.
            let mut cookies = Vec::new();
            let result = match framing {
                // Phase 0: ambiguous message framing is how requests are smuggled past a proxy; refuse it outright.
                Some(problem) => Err(ClientError::BadRequest(problem.to_owned()).into()),
                // The app's requests skip the dispatch below: one future less nested in every request's.
                None if route == Route::App => this.app(req, peer, upgrading, &mut cookies).await,
                None => this.route(route, req, peer, html, upgrading, &mut cookies).await,
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
            if framing.is_some() {
                // The unread body's extent is in doubt, so nothing after it on this connection can be trusted either.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            for c in cookies {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp.headers_mut().insert(REQUEST_ID, request_id.clone());
            let status = resp.status().as_u16();
            this.metrics.request(route.class(), status);
            if !access_log {
                return resp;
            }
            // Who it was (oauth2-proxy logs it too): the signed-in subject, when the pipeline knew one.
            let user = resp.extensions().get::<AccessUser>().map_or("", |u| u.0.as_str());
            tracing::info!(
                target: "logto_gate::access",
                request_id = request_id.to_str().unwrap_or(""),
                peer = %peer.ip(),
                %method,
                path = %log_path(uri.path()),
                status,
                route = ?route.class(),
                user,
                // Microseconds, as milliseconds with three decimals (0.993, not 0.9925780000000001).
                duration_ms = started.map_or(0.0, |s| s.elapsed().as_micros() as f64 / 1000.0),
                "request"
            );
            resp
        }
    }

    /// Phases 1-5 by route.
    async fn route(
        &self,
        route: Route,
        req: Request<Body>,
        peer: SocketAddr,
        html: bool,
        upgrading: bool,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Response<Body>, GateError> {
        // The signed-in paths (the app, forward-auth) run inline; the rest is rare and boxed, so their larger state
        // (token requests, key fetches) does not make every request's future bigger.
        match route {
            // `handle` calls `app` itself; boxed here so this dispatch stays small in every request's future.
            Route::App => Box::pin(self.app(req, peer, upgrading, cookies)).await,
            Route::SignIn => Box::pin(self.sign_in(&req, peer)).await,
            Route::Callback => Ok(Box::pin(self.callback(&req, html)).await),
            Route::SignOut => Box::pin(self.sign_out(&req)).await,
            Route::UserInfo => Box::pin(self.userinfo(&req, cookies)).await,
            Route::Healthz => Ok(pages::json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            )),
            Route::Readyz => Ok(Box::pin(self.readyz()).await),
            Route::ForwardAuth => self.forward_auth(&req, peer, cookies).await,
            Route::Jwks => self.jwks(),
            Route::BackchannelLogout => Box::pin(self.backchannel_logout(req)).await,
            Route::SignedOut => Ok(Page::new(
                StatusCode::OK,
                "signed_out",
                "You are signed out",
                "You have been signed out of this application and of Logto.",
            )
            .with_link(paths::SIGN_IN, "Sign in again")
            .render(html)),
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
        let mut resp = page.render(html);
        if let GateError::Client(ClientError::InvalidToken(_)) = e {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"logto-gate\", error=\"invalid_token\""),
            );
        }
        resp
    }

    /// Phases 1b-5 for the app's requests (an `async move` block, as [`Gate::handle`] explains). `upgrading`: an
    /// HTTP/1.1 protocol upgrade request (decided in `handle`, before hop-by-hop removal, which keeps its
    /// `Connection` and `Upgrade` only then).
    #[allow(clippy::manual_async_fn)] // deliberately, see Gate::handle
    fn app<'a>(
        &'a self,
        mut req: Request<Body>,
        peer: SocketAddr,
        upgrading: bool,
        cookies: &'a mut Vec<HeaderValue>,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GateError>> + Send + 'a {
        async move {
            // 1b. normalise the path: rules see exactly what the upstream will see.
            let trusted = is_trusted(&self.config.server.trusted_proxies, peer.ip());
            let (decision, new_path, route) = {
                let path = policy::path::normalise(req.uri().path(), self.config.server.allow_encoded_slashes)
                    .map_err(|e| ClientError::BadRequest(e.to_string()))?;
                let host = request_host(&req, trusted);
                let rule_path = policy::path::rule_path(&path, self.config.policy.case_insensitive)
                    .map_err(|e| ClientError::BadRequest(e.to_string()))?;
                let decision = self.decide(&req, host, &rule_path)?;
                // Which upstream: one for the request's host before one for every host, then the longest prefix (on
                // the path the rules saw).
                let route = self.route_for(host, &rule_path).ok_or(ClientError::NotFound)?;
                let strip = self.config.routes[route].strip_prefix.then(|| {
                    self.config.routes[route]
                        .prefix
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .count()
                });
                // Only a path that changed needs the request target rebuilt.
                let new_path = match (path, strip) {
                    (path, Some(segments)) => Some(strip_segments(&path, segments)),
                    (std::borrow::Cow::Borrowed(_), None) => None,
                    (std::borrow::Cow::Owned(p), None) => Some(p),
                };
                (decision, new_path, route)
            };
            // 2. authenticate and authorize
            let principal = match decision {
                Decision::Deny => return Err(ClientError::RouteDenied.into()),
                Decision::Public => None,
                Decision::Require(..) => {
                    let Some(principal) = self.authenticate(req.headers(), cookies).await? else {
                        // 3. challenge
                        return Box::pin(self.challenge(&req)).await;
                    };
                    for requirements in decision.requirements() {
                        authorize(&principal, requirements)?;
                    }
                    Some(principal)
                }
            };
            // 4. rewrite
            let browser_host = match &self.protected_basic {
                Some(_) => request_host(&req, trusted).and_then(|h| HeaderValue::from_str(h).ok()),
                None => None,
            };
            // X-Forwarded-Host: the public host, or the other allowed host the request came to.
            let other_host = if self.config.server.allowed_redirect_hosts.is_empty() {
                None
            } else {
                request_host(&req, trusted)
                    .filter(|h| self.is_other_allowed_host(h))
                    .and_then(|h| HeaderValue::from_str(h).ok())
            };
            let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
            let (mut parts, request_body) = req.into_parts();
            if let Some(path) = &new_path {
                parts.uri = with_path(&parts.uri, path)?;
            }
            identity::strip_spoofed_identity(&mut parts.headers, &self.managed);
            hop::remove_underscore_variants(&mut parts.headers);
            self.sessions.codec().strip_gate_cookies(&mut parts.headers);
            let public = &self.config.server.public_url;
            let forwarded = forwarded::set_forwarded(
                &mut parts.headers,
                peer.ip(),
                trusted,
                public.scheme(),
                other_host.as_ref().unwrap_or(&self.forwarded_host),
            );
            // The identity headers go in first (as every other header the gate sets, they replace any of the same
            // name), or, when none of the others can share a name with them, straight into the upstream request head
            // as one block (see `identity_inline`).
            let identity = principal.as_ref().map(|p| self.identity_headers(p));
            let identity = identity.as_deref();
            if let (Some(identity), false) = (identity, self.identity_inline) {
                identity.insert_into(&mut parts.headers);
            }
            if let Some(principal) = &principal {
                self.add_credentials(&mut parts.headers, principal)?;
            }
            if let Some(basic) = &self.protected_basic {
                self.add_protected_app(&mut parts.headers, basic, browser_host, principal.as_ref());
            }
            // 5. forward
            let mut resp = self.forwarders[route]
                .forward(
                    parts,
                    request_body,
                    client_upgrade,
                    Added {
                        forwarded,
                        identity: identity.filter(|_| self.identity_inline),
                    },
                )
                .await?;
            // 6. respond
            self.drop_gate_cookies_set_upstream(&mut resp);
            if let Some(principal) = &principal {
                if tracing::enabled!(target: "logto_gate::access", tracing::Level::INFO) {
                    let sub = principal.claims().get("sub").and_then(Value::as_str).unwrap_or("");
                    resp.extensions_mut().insert(AccessUser(sub.to_owned()));
                }
            }
            Ok(resp)
        }
    }

    /// Removes the upstream's `Set-Cookie` fields for cookies the gate owns (the session cookie, its chunks, the
    /// sign-in attempt cookies), with a warning: only the gate sets or clears those; on both client paths.
    fn drop_gate_cookies_set_upstream(&self, resp: &mut Response<Body>) {
        let codec = self.sessions.codec();
        let owned = |value: &[u8]| match codec.gate_cookie_set_by(value) {
            Some(name) => {
                tracing::warn!(
                    cookie = name,
                    "dropped the upstream's Set-Cookie for a cookie the gate owns"
                );
                true
            }
            None => false,
        };
        crate::http1::fields::retain_response_fields(resp, |name, value| name != header::SET_COOKIE || !owned(value));
    }

    /// Phase 1c: what the rules say of a request whose path is `normalised`. They decide on the path a servlet
    /// container would serve ([`policy::path::rule_path`]) and, when the method-override fields are kept
    /// (`upstream.pass_method_override`), on every method the request may be taken as; otherwise those fields are
    /// removed before forwarding and only the request's own method counts.
    fn decide<'p>(
        &'p self,
        req: &Request<Body>,
        host: Option<&str>,
        rule_path: &str,
    ) -> Result<Decision<'p>, GateError> {
        let policy = &self.config.policy;
        let overrides = if self.config.upstream.pass_method_override {
            policy::method_overrides(req.headers()).map_err(ClientError::BadRequest)?
        } else {
            Vec::new()
        };
        let decision = policy.decide(req.method().as_str(), &overrides, host, rule_path);
        if matches!(decision, Decision::Require(..)) && self.config.server.skip_auth_preflight && is_preflight(req) {
            // A CORS preflight carries no credentials (Fetch standard, CORS-preflight request): it passes as a
            // public request would, without identity; denied routes stay denied.
            return Ok(Decision::Public);
        }
        Ok(decision)
    }

    /// The identity headers for `principal`: a session's, rendered once and kept with it; a bearer token's, now.
    fn identity_headers<'p>(&self, principal: &'p Principal) -> std::borrow::Cow<'p, identity::IdentityHeaders> {
        match principal {
            Principal::Session(c) => std::borrow::Cow::Borrowed(
                c.session
                    .rendered
                    .get_or_render(&self.config.headers, &c.session.claims),
            ),
            Principal::Bearer(claims) => {
                std::borrow::Cow::Owned(identity::IdentityHeaders::render(&self.config.headers, claims))
            }
        }
    }

    /// Identity headers, the access token when asked for, and the signed assertion, all into `headers`.
    fn add_identity(&self, headers: &mut http::HeaderMap, principal: &Principal) -> Result<(), GateError> {
        self.identity_headers(principal).insert_into(headers);
        self.add_credentials(headers, principal)
    }

    /// Logto Protected App's contract (`upstream.protected_app`): the app's Basic credentials on every request, the
    /// host the browser asked for, and a signed-in user's ID token as Logto signed it, only while it is valid (the
    /// session refreshes it before it expires; an expired one is never sent). Client-sent copies were removed.
    fn add_protected_app(
        &self,
        headers: &mut http::HeaderMap,
        basic: &HeaderValue,
        browser_host: Option<HeaderValue>,
        principal: Option<&Principal>,
    ) {
        headers.insert(header::AUTHORIZATION, basic.clone());
        let host = browser_host.unwrap_or_else(|| self.forwarded_host.clone());
        headers.insert(http::HeaderName::from_static(PROTECTED_APP_HOST), host);
        if let Some(Principal::Session(c)) = principal {
            if let Some(token) = c.session.live_id_token(session::now()) {
                if let Ok(v) = HeaderValue::from_str(token) {
                    headers.insert(http::HeaderName::from_static(PROTECTED_APP_ID_TOKEN), v);
                }
            }
        }
    }

    /// The access token when asked for, the machine header for a machine-to-machine app, and the signed assertion.
    fn add_credentials(&self, headers: &mut http::HeaderMap, principal: &Principal) -> Result<(), GateError> {
        if let Some(app) = principal.machine() {
            let value = HeaderValue::from_str(app)
                .map_err(|_| ClientError::InvalidToken("the token's client_id is not a valid header value".into()))?;
            headers.insert(http::HeaderName::from_static(MACHINE_HEADER), value);
        }
        if let (true, Principal::Session(c)) = (self.config.upstream.pass_access_token, principal) {
            if let Some(token) = c.session.at.as_deref() {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| GateError::Internal("the access token is not a valid header value".into()))?;
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        if let Some(signer) = &self.assertion {
            let jwt = signer
                .sign(principal.claims(), session::now())
                .map_err(GateError::Internal)?;
            let value = HeaderValue::from_str(&jwt).map_err(|e| GateError::Internal(e.to_string()))?;
            headers.insert(http::HeaderName::from_static(crate::assertion::HEADER), value);
        }
        Ok(())
    }

    /// Phase 2: a verified bearer token (when `logto.resources` is set and the request carries one), else the
    /// session. A bearer token that does not verify is an error, never a fall-back to the cookie. A session near
    /// token expiry is refreshed (phase 2c); `cookies` receives what must be set on the response.
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Option<Principal>, GateError> {
        if !self.config.logto.resources.is_empty() {
            if let Some(token) = bearer_token(headers) {
                // Boxed: signature verification dwarfs the allocation, and the session path stays small.
                return match Box::pin(self.oidc.verify_access_token(token, session::now())).await {
                    Ok(claims) => Ok(Some(Principal::Bearer(claims))),
                    Err(TokenError::Invalid(e)) => Err(ClientError::InvalidToken(e.to_string()).into()),
                    Err(TokenError::Gate(g)) => Err(g),
                };
            }
        }
        let now = session::now();
        let Some(current) = self.sessions.load(headers, now).await? else {
            return Ok(None);
        };
        if !current.rewrite && !current.session.needs_refresh(now) {
            // The usual case: nothing to renew or write back.
            return Ok(Some(Principal::Session(current)));
        }
        // Renewal is rare and talks to Logto and Redis: its log lines carry the request id, to match the access line.
        let span = tracing::info_span!(
            "renewal",
            request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
        );
        tracing::Instrument::instrument(Box::pin(self.renew_and_save(current, now, headers, cookies)), span).await
    }

    /// Phase 2c: refreshes tokens near expiry and writes back a session that changed (boxed by the caller: rare,
    /// and its state is large).
    async fn renew_and_save(
        &self,
        current: Current,
        now: u64,
        headers: &http::HeaderMap,
        cookies: &mut Vec<HeaderValue>,
    ) -> Result<Option<Principal>, GateError> {
        match self.renew(current, now).await {
            Renewed::Ended => {
                cookies.extend(self.sessions.codec().clear_session_cookies(headers));
                Ok(None)
            }
            Renewed::Kept(current) => Ok(Some(Principal::Session(current))),
            Renewed::Changed(current) => {
                match self
                    .sessions
                    .save(Some(&current), Session::clone(&current.session), now)
                    .await
                {
                    Ok(set) => cookies.extend(set),
                    Err(SaveError::Store(e)) => return Err(e.into()),
                    Err(SaveError::Internal(e)) => return Err(GateError::Internal(e)),
                }
                Ok(Some(Principal::Session(current)))
            }
        }
    }

    /// Phase 3: no session. A browser navigation is sent to sign in and back; any other request gets 401, as an
    /// HTML page with a way back for a browser (a form posted after the session ended returns to the page it was
    /// posted from), as JSON for an API client.
    async fn challenge(&self, req: &Request<Body>) -> Result<Response<Body>, GateError> {
        let wanted = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        if is_browser_navigation(req) {
            // On another allowed host (one sign-in across subdomains) the sign-in comes back to that host.
            let other = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !self.config.server.allowed_redirect_hosts.is_empty() && self.is_other_allowed_host(h));
            let back = match other {
                Some(host) => {
                    self.return_target(&format!("{}://{host}{wanted}", self.config.server.public_url.scheme()))
                }
                None => ReturnPath::parse_or_root(wanted),
            };
            return self.start_sign_in(back).await;
        }
        if accepts_html(req) {
            let back = req
                .headers()
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .map_or_else(ReturnPath::root, |r| {
                    ReturnPath::parse_same_origin_or_root(r, self.config.server.public_url.origin())
                });
            let mut page = Page::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Your session has ended",
                "Sign in again to continue. What you sent was not passed on; you may need to send it again.",
            )
            .with_link(self.sign_in_url(&back), "Sign in again")
            .render(true);
            page.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"logto-gate\""),
            );
            return Ok(page);
        }
        Ok(self.unauthorized(&ReturnPath::parse_or_root(wanted)))
    }

    /// The upstream route for a request to `host` and `rule_path`: the most specific that serves it (see
    /// [`crate::config::UpstreamRoute::specificity`]); `None` when none does.
    fn route_for(&self, host: Option<&str>, rule_path: &str) -> Option<usize> {
        let routes = &self.config.routes;
        if let [only] = routes.as_slice() {
            // The usual single upstream: no comparison to make.
            return only.specificity(host, rule_path).map(|_| 0);
        }
        routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.specificity(host, rule_path).map(|s| (s, std::cmp::Reverse(i))))
            .max()
            .map(|(_, std::cmp::Reverse(i))| i)
    }

    /// Whether `host` (as a request's `Host` names it) is one of `server.allowed_redirect_hosts`: another host this
    /// gate serves under the shared cookie domain, which sign-ins may return to.
    fn is_other_allowed_host(&self, host: &str) -> bool {
        let name = policy::normalise_host(host);
        self.config
            .server
            .allowed_redirect_hosts
            .iter()
            .any(|allowed| match allowed.strip_prefix('.') {
                Some(domain) => name.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.')),
                None => policy::normalise_host(allowed) == name,
            })
    }

    /// A return target from a request or parameter: a same-origin path, or a URL on an allowed other host.
    fn return_target(&self, candidate: &str) -> ReturnPath {
        ReturnPath::parse_for_hosts(candidate, self.config.server.public_url.origin(), |h| {
            self.is_other_allowed_host(h)
        })
    }

    /// `/_logto/sign-in?redirect=<path>`: where "Sign in again" goes, back to `back` afterwards.
    fn sign_in_url(&self, back: &ReturnPath) -> String {
        let redirect: String = url::form_urlencoded::byte_serialize(back.as_str().as_bytes()).collect();
        self.config
            .server
            .public_url
            .join(&format!("{}?redirect={redirect}", paths::SIGN_IN))
    }

    /// 401 for a request without a session that is not a browser navigation: never a redirect. `sign_in_url`
    /// brings the browser back to `wanted` after signing in.
    fn unauthorized(&self, wanted: &ReturnPath) -> Response<Body> {
        let sign_in = self.sign_in_url(wanted);
        let mut resp = pages::json_response(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({
                "error": "unauthorized",
                "message": "Sign-in required: no valid session.",
                "sign_in_url": sign_in,
            }),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"logto-gate\""),
        );
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

/// The signed-in subject of a request, put on its response for the access line (only while that is logged).
#[derive(Clone)]
struct AccessUser(String);

/// A path as logged: at most 256 characters.
fn log_path(path: &str) -> &str {
    match path.char_indices().nth(256) {
        Some((end, _)) => &path[..end],
        None => path,
    }
}

/// RFC 9112 §6.1, §6.3: a request with both `Transfer-Encoding` and `Content-Length`, or with more than one
/// `Content-Length`, has ambiguous framing. The gate refuses it rather than pick a reading the upstream might not share.
fn framing_problem<B>(req: &Request<B>) -> Option<&'static str> {
    // What only the raw head showed (hyper normalises it away); see `crate::http1::framing`.
    if let Some(AmbiguousFraming(ambiguity)) = req.extensions().get::<AmbiguousFraming>() {
        return Some(ambiguity.message());
    }
    // What the headers still show (HTTP/2, or anything hyper passes on as it came).
    let headers = req.headers();
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Some(Ambiguity::RepeatedContentLength.message());
    }
    if lengths == 1 && headers.contains_key(header::TRANSFER_ENCODING) {
        return Some(Ambiguity::LengthAndTransferEncoding.message());
    }
    None
}

/// Phase 2b: does the principal meet the route's requirements?
fn authorize(principal: &Principal, requirements: &policy::Requirements) -> Result<(), GateError> {
    if let Some(app) = principal.machine() {
        if !requirements.m2m_apps.iter().any(|a| a == app) {
            return Err(ClientError::Forbidden {
                who: principal.display_name(),
                required: "a rule that admits it (m2m_apps)".into(),
            }
            .into());
        }
    }
    requirements
        .check(&policy::Subject {
            claims: principal.claims(),
        })
        .map_err(|required| {
            ClientError::Forbidden {
                who: principal.display_name(),
                required,
            }
            .into()
        })
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive, RFC 6750 §2.1).
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The host the client asked for: `X-Forwarded-Host` from a trusted proxy, else `Host` (or the HTTP/2 authority).
fn request_host<B>(req: &Request<B>, trusted: bool) -> Option<&str> {
    let h = |name: &http::HeaderName| req.headers().get(name).and_then(crate::values::text);
    trusted
        .then(|| h(&X_FORWARDED_HOST))
        .flatten()
        .or_else(|| h(&header::HOST))
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// `path` without its first `segments` segments (`strip_prefix`): `/grafana/d/1` less one is `/d/1`, and a path
/// that was only the prefix becomes `/`. Path parameters stay with their segment, as in the path the rules saw.
fn strip_segments(path: &str, segments: usize) -> String {
    let mut rest = path;
    for _ in 0..segments {
        let after = rest.trim_start_matches('/');
        rest = after.find('/').map_or("", |i| &after[i..]);
    }
    if rest.is_empty() {
        "/".to_owned()
    } else {
        rest.to_owned()
    }
}

/// The request URI with its path replaced by the normalised one, query kept.
fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, GateError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|e| ClientError::BadRequest(format!("the request target is not valid: {e}")))?,
    );
    http::Uri::from_parts(parts)
        .map_err(|e| ClientError::BadRequest(format!("the request target is not valid: {e}")).into())
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
mod tests {
    use super::*;

    #[test]
    fn duplicated_query_parameters_are_refused() {
        assert!(single_valued_query(Some("state=a&state=b")).is_err());
        let ok = single_valued_query(Some("code=x&state=y")).unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[tokio::test]
    async fn readiness_fails_as_soon_as_draining_starts() {
        let toml = r#"
            [server]
            public_url = "https://app.example.com"
            [upstream]
            url = "http://127.0.0.1:9"
            [logto]
            endpoint = "http://127.0.0.1:9"
            app_id = "a"
            app_secret = "s"
            [session]
            secret = "0123456789abcdef0123456789abcdef"
        "#;
        let gate = Gate::new(Config::from_toml_str(toml, Vec::new()).unwrap()).unwrap();
        gate.begin_draining();
        assert_eq!(gate.readiness().await, Err("shutting down".to_owned()));
    }

    #[test]
    fn random_state_has_the_length_attempt_cookies_expect() {
        let state = CsrfToken::new_random_len(32).secret().clone();
        assert!(crate::session::attempt::is_well_formed_state(&state), "{state}");
    }
}
