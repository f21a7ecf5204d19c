//! Phases 1b-5 for the app's requests: choose the upstream, decide by the rules, authenticate, rewrite the request
//! (spoofed identity removed, identity and forwarding fields added) and forward it; the upstream's answer loses
//! the `Set-Cookie` fields for the gate's own cookies.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Request, Response};

use crate::body::Body;
use crate::error::{ClientError, GateError};
use crate::http1::hop;
use crate::identity;
use crate::policy::{self, Decision};
use crate::proxy::trusted::is_trusted;
use crate::proxy::{forwarded, Added, ClientUpgrade, OwnAddress};
use crate::session;

use super::authn::{Principal, ACTOR_HEADER, MACHINE_HEADER};
use super::form_method::Admitted;
use super::{is_preflight, request_host, Decided, Gate};

/// Logto Protected App's headers (`upstream.protected_app`): the signed-in user's ID token as Logto signed it, and
/// the host the browser asked for.
pub(super) const PROTECTED_APP_ID_TOKEN: &str = "logto-id-token";

pub(super) const PROTECTED_APP_HOST: &str = "logto-host";

impl Gate {
    /// Phases 1b-5 for the app's requests (an `async move` block, as [`Gate::handle`] explains). `upgrading`: an
    /// HTTP/1.1 protocol upgrade request (decided in `handle`, before hop-by-hop removal, which keeps its
    /// `Connection` and `Upgrade` only then). `req` is lent, not given: it is rewritten in place and forwarded from
    /// where `handle` holds it (hyper's client path takes it out, leaving an empty request behind).
    #[allow(clippy::manual_async_fn)] // deliberately, see Gate::handle
    pub(super) fn app<'a>(
        &'a self,
        req: &'a mut Request<Body>,
        peer: SocketAddr,
        upgrading: bool,
        decided: &'a mut Decided,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GateError>> + Send + 'a {
        async move {
            // 1b. normalise the path: rules see exactly what the upstream will see.
            let trusted = is_trusted(&self.config.server.trusted_proxies, peer.ip());
            let (mut decision, form_may_decide, new_path, route, preflight) = {
                let path = policy::path::normalise(req.uri().path(), self.config.server.allow_encoded_slashes)
                    .map_err(|e| ClientError::BadRequest(e.to_string()))?;
                let host = request_host(req, trusted)?;
                let rule_path = policy::path::rule_path(&path, self.config.policy.case_insensitive)
                    .map_err(|e| ClientError::BadRequest(e.to_string()))?;
                let client = self.client_address(req.headers(), peer, trusted);
                let decision = self.decide(req, host, client, &rule_path, &[])?;
                let preflight = self.preflight_let_through(req, &decision);
                let decision = if preflight { Decision::Public } else { decision };
                // Which upstream: one for the request's host before one for every host, then the longest prefix (on
                // the path the rules saw).
                let route = self.route_for(host, &rule_path).ok_or(ClientError::NotFound)?;
                decided.upstream = Some(route);
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
                (decision, self.form_may_decide(req), new_path, route, preflight)
            };
            // 2. authenticate and authorize
            let mut principal = match decision {
                Decision::Deny => return Err(ClientError::RouteDenied.into()),
                Decision::Public => None,
                Decision::Require(..) => {
                    let Some(principal) = self.authenticate(req.headers(), decided).await? else {
                        // 3. challenge
                        return Box::pin(self.challenge(req, trusted, self.max_age(&decision), false)).await;
                    };
                    // A sign-in older than a rule's `max_age`: signing in again can mend it (RFC 9470 step-up).
                    if let Some(max_age) = self.authorize_all(&principal, &decision)? {
                        return Box::pin(self.challenge(req, trusted, Some(max_age), true)).await;
                    }
                    Some(principal)
                }
            };
            // 2b. a form's `_method`, where it could name a method this client would be refused
            if form_may_decide && self.refused_some_override(req, peer, trusted, principal.as_ref())? {
                match Box::pin(self.decide_by_form(req, peer, trusted, principal, decision, decided)).await? {
                    Admitted::Let(admitted, by_form) => (principal, decision) = (admitted, by_form),
                    Admitted::Answer(answer) => return Ok(answer),
                }
            }
            // 4. rewrite
            let browser_host = if self.config.upstream.protected_app {
                request_host(req, trusted)?.and_then(|h| HeaderValue::from_str(h).ok())
            } else {
                None
            };
            // X-Forwarded-Host: the public host, or the other allowed host the request came to.
            let other_host = if self.config.server.allowed_redirect_hosts.is_empty() {
                None
            } else {
                request_host(req, trusted)?
                    .filter(|h| self.is_other_allowed_host(h))
                    .and_then(|h| HeaderValue::from_str(h).ok())
            };
            let client_upgrade = upgrading.then(|| ClientUpgrade {
                on: hyper::upgrade::on(&mut *req),
                until_signed_out: principal
                    .as_ref()
                    .and_then(|p| self.tunnel_end(p, decision.requirements().cloned().collect())),
            });
            if let Some(path) = &new_path {
                *req.uri_mut() = with_path(req.uri(), path)?;
            }
            let headers = req.headers_mut();
            let managed = match &self.managed_from_trusted {
                Some(kept) if trusted => kept,
                _ => &self.managed,
            };
            identity::strip_spoofed_identity(headers, managed);
            hop::remove_underscore_variants(headers);
            self.sessions.codec().strip_gate_cookies(headers);
            let public = &self.config.server.public_url;
            let forwarded = forwarded::set_forwarded(
                headers,
                peer.ip(),
                trusted,
                public.scheme(),
                other_host.as_ref().unwrap_or(&self.forwarded_host),
            );
            if self.config.routes[route].strip_prefix {
                forwarded_prefix(headers, &self.config.routes[route].sent_prefix, trusted);
            }
            // The identity headers go in first (as every other header the gate sets, they replace any of the same
            // name), or, when none of the others can share a name with them, straight into the upstream request head
            // as one block (see `identity_inline`).
            let identity = principal.as_ref().map(|p| self.identity_headers(p));
            let identity = identity.as_deref();
            if let (Some(identity), false) = (identity, self.identity_inline) {
                identity.insert_into(headers);
            }
            if let Some(principal) = &principal {
                let pass_access_token = self.config.routes[route].upstream.pass_access_token;
                self.add_credentials(headers, principal, &decision, pass_access_token)?;
            }
            if self.config.upstream.protected_app {
                self.add_protected_app(headers, browser_host, principal.as_ref());
            }
            let fields = &self.config.routes[route].upstream.request_headers;
            if !fields.is_empty() {
                set_request_fields(headers, fields);
                self.field_files.apply(route, headers);
            }
            // 5. forward
            let mut resp = self.forwarders[route]
                .forward(
                    req,
                    client_upgrade,
                    Added {
                        forwarded,
                        identity: identity.filter(|_| self.identity_inline),
                    },
                )
                .await?;
            // 6. respond
            self.edit_upstream_answer(&mut resp, self.forwarders[route].own_address(), principal.is_some());
            Ok(if preflight {
                bodiless_preflight_answer(resp)
            } else {
                resp
            })
        }
    }

    /// The upstream's answer as the browser may see it, on both client paths, in one pass over its fields:
    /// `Set-Cookie` fields for cookies the gate owns (the session cookie, its chunks, the sign-in attempt cookies)
    /// removed, with a warning, since only the gate sets or clears those; `Location` and `Refresh` naming the
    /// upstream's own address made paths on the gate ([`OwnAddress`]); and, for a request let through on an
    /// identity (`identified`), `Cache-Control` made `private` and the fields caches read instead of it removed
    /// ([`crate::proxy::caching`]), so that no shared cache in front hands it to someone who never signed in.
    pub(super) fn edit_upstream_answer(&self, resp: &mut Response<Body>, own: &OwnAddress, identified: bool) {
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
        // Rare (redirects, pages that refresh): nothing to allocate or drop for the other answers.
        let mut rewritten: Option<Vec<(http::HeaderName, HeaderValue)>> = None;
        // A switch of protocols is no answer a cache keeps (RFC 9111 §3).
        let mut private = (identified && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS)
            .then(crate::proxy::caching::Private::default);
        crate::body::retain_response_fields(resp, |name, value| {
            if name == header::SET_COOKIE {
                return !owned(value);
            }
            if private.as_mut().is_some_and(|p| !p.keeps(name, value)) {
                return false;
            }
            let new = if name == header::LOCATION {
                own.location(value)
            } else if name == header::REFRESH {
                own.refresh(value)
            } else {
                return true;
            };
            match new {
                Some(new) => {
                    rewritten.get_or_insert_with(Vec::new).push((name.clone(), new));
                    false
                }
                None => true,
            }
        });
        if let Some(rewritten) = rewritten {
            for (name, value) in rewritten {
                resp.headers_mut().append(name, value);
            }
        }
        if let Some(private) = private {
            private.finish(resp);
        }
    }

    /// Phase 1c: what the rules say of a request whose path is `normalised`. They decide on the path a servlet
    /// container would serve ([`policy::path::rule_path`]) and on every method the request may be taken as
    /// ([`Gate::overrides`]).
    pub(super) fn decide<'p>(
        &'p self,
        req: &Request<Body>,
        host: Option<&str>,
        client: Option<std::net::IpAddr>,
        rule_path: &str,
        from_body: &[String],
    ) -> Result<Decision<'p>, GateError> {
        let overrides = self.overrides(req, from_body)?;
        Ok(self
            .config
            .policy
            .decide(req.method().as_str(), &overrides, host, client, rule_path))
    }

    /// The methods besides its own that `req` may be taken as: a `POST`'s `_method` query parameter's, the
    /// method-override fields' when they are kept (`upstream.pass_method_override`; otherwise they are removed before
    /// forwarding), and `from_body`, those its body names once read ([`Gate::decide_by_form`]).
    pub(super) fn overrides(&self, req: &Request<Body>, from_body: &[String]) -> Result<Vec<String>, GateError> {
        let mut overrides = if self.config.upstream.pass_method_override {
            policy::method_overrides(req.headers()).map_err(ClientError::BadRequest)?
        } else {
            Vec::new()
        };
        policy::query_method_overrides(req.method().as_str(), req.uri().query(), &mut overrides)
            .map_err(ClientError::BadRequest)?;
        for method in from_body {
            if !overrides.contains(method) {
                overrides.push(method.clone());
            }
        }
        Ok(overrides)
    }

    /// Whether `req` is a CORS preflight to let through without a session where `decision` asks for one
    /// (`server.skip_auth_preflight`): a preflight carries no credentials (Fetch standard, CORS-preflight request),
    /// so it passes as a public request would, without identity, and gets [`bodiless_preflight_answer`]. Denied
    /// routes stay denied.
    fn preflight_let_through(&self, req: &Request<Body>, decision: &Decision<'_>) -> bool {
        matches!(decision, Decision::Require(..)) && self.config.server.skip_auth_preflight && is_preflight(req)
    }

    /// The identity headers for `principal`: a session's, rendered once and kept with it; a bearer token's, now.
    pub(super) fn identity_headers<'p>(
        &self,
        principal: &'p Principal,
    ) -> std::borrow::Cow<'p, identity::IdentityHeaders> {
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

    /// Identity headers, the access token when asked for (for the API `decision` names, see
    /// [`Gate::access_token_for`]), and the signed assertion, all into `headers`.
    pub(super) fn add_identity(
        &self,
        headers: &mut http::HeaderMap,
        principal: &Principal,
        decision: &Decision<'_>,
    ) -> Result<(), GateError> {
        self.identity_headers(principal).insert_into(headers);
        self.add_credentials(headers, principal, decision, self.config.upstream.pass_access_token)
    }

    /// The session's access token that `upstream.pass_access_token` sends: with `logto.resources`, the one for `api`
    /// (the first API the request's rule names), else for the first of `logto.resources`; without, the token of the
    /// sign-in or the organization. A session from before per-API tokens holds the first API's in `at`.
    pub(super) fn access_token_for<'s>(&self, session: &'s session::Session, api: Option<&str>) -> Option<&'s str> {
        let Some(first) = self.config.logto.resources.first() else {
            return session.at.as_deref();
        };
        let api = api.unwrap_or(first);
        match session.apis.get(api) {
            Some(grant) => grant.at.as_deref(),
            None if session.apis.is_empty() && api == first.as_str() => session.at.as_deref(),
            None => None,
        }
    }

    /// Logto Protected App's contract (`upstream.protected_app`): the app's Basic credentials on every request, the
    /// host the browser asked for, and a signed-in user's ID token as Logto signed it, only while it is valid (the
    /// session refreshes it before it expires; an expired one is never sent). Client-sent copies were removed.
    pub(super) fn add_protected_app(
        &self,
        headers: &mut http::HeaderMap,
        browser_host: Option<HeaderValue>,
        principal: Option<&Principal>,
    ) {
        headers.insert(header::AUTHORIZATION, self.oidc.credentials().protected_app_basic());
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

    /// The access token when `pass_access_token` (the serving app's setting; for the API `decision` names), the
    /// machine header for a machine-to-machine app, the actor header for a token someone acts with for its subject,
    /// and the signed assertion.
    pub(super) fn add_credentials(
        &self,
        headers: &mut http::HeaderMap,
        principal: &Principal,
        decision: &Decision<'_>,
        pass_access_token: bool,
    ) -> Result<(), GateError> {
        if let Some(app) = principal.machine() {
            let value = HeaderValue::from_str(app)
                .map_err(|_| ClientError::InvalidToken("the token's client_id is not a valid header value".into()))?;
            headers.insert(http::HeaderName::from_static(MACHINE_HEADER), value);
        }
        if let Some(actor) = principal.actor() {
            let value = HeaderValue::from_str(actor)
                .map_err(|_| ClientError::InvalidToken("the token's act.sub is not a valid header value".into()))?;
            headers.insert(http::HeaderName::from_static(ACTOR_HEADER), value);
        }
        if let (true, Principal::Session(c)) = (pass_access_token, principal) {
            // Authorization is the gate's field here: the app takes it for Logto's word. Where the session holds no
            // token for the request's API, the app gets none, never one the client wrote (a bearer token would have
            // been verified and made the request a token's; another scheme would not).
            headers.remove(header::AUTHORIZATION);
            if let Some(token) = self.access_token_for(&c.session, decision.api()) {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| GateError::Internal("the access token is not a valid header value".into()))?;
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        if let Some(signer) = &self.assertion {
            let now = session::now();
            let jwt = signer
                .sign(principal.claims(), principal.actor(), principal.signed_in_at(now), now)
                .map_err(GateError::Internal)?;
            let value = HeaderValue::from_str(&jwt).map_err(|e| GateError::Internal(e.to_string()))?;
            headers.insert(http::HeaderName::from_static(crate::assertion::HEADER), value);
        }
        Ok(())
    }

    /// The upstream route for a request to `host` and `rule_path`: the most specific that serves it (see
    /// [`crate::config::UpstreamRoute::specificity`]); `None` when none does.
    pub(super) fn route_for(&self, host: Option<&str>, rule_path: &str) -> Option<usize> {
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
    pub(super) fn is_other_allowed_host(&self, host: &str) -> bool {
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
}

/// The operator's `request_headers`: each field set (replacing the client's) or removed. A client's field spelled
/// with `_` for `-` (`X_Api_Key`) goes too, since PHP, WSGI and CGI apps read it as the same variable.
fn set_request_fields(headers: &mut http::HeaderMap, fields: &[(http::HeaderName, Option<HeaderValue>)]) {
    let variants: Vec<http::HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .filter(|n| {
            let normalised = identity::normalise_name(n.as_str());
            fields
                .iter()
                .any(|(f, _)| identity::same_normalised(f.as_str(), &normalised))
        })
        .cloned()
        .collect();
    for name in variants {
        headers.remove(&name);
    }
    for (name, value) in fields {
        match value {
            Some(value) => {
                headers.insert(name.clone(), value.clone());
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

/// The app's answer to a CORS preflight let through without a session ([`Gate::preflight_let_through`]): its status
/// and fields (the `Access-Control-*` ones the browser reads), never its body. A handler that answers every method
/// as it answers `GET` (Go's `http.HandleFunc`, say, unless it checks) would otherwise hand its page to anyone who
/// sends `Origin` and `Access-Control-Request-Method`; a browser reads no preflight's body.
fn bodiless_preflight_answer(resp: Response<Body>) -> Response<Body> {
    let (mut parts, _unread) = crate::body::into_response_map(resp).into_parts();
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Response::from_parts(parts, crate::body::empty())
}

/// `X-Forwarded-Prefix` for a route that strips its prefix: the app builds its links under a path it no longer sees
/// (Spring's `ForwardedHeaderFilter`, ASP.NET's `UsePathBase`, Symfony), as behind Traefik's `StripPrefix`. A trusted
/// proxy's own prefix (one path) comes first; a client's was removed with the other forwarding fields.
pub(super) fn forwarded_prefix(headers: &mut http::HeaderMap, prefix: &str, trusted: bool) {
    const NAME: &str = "x-forwarded-prefix";
    let theirs = trusted
        .then(|| headers.get(NAME))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with('/') && !v.contains(',') && !v.contains("//"))
        .map(|v| v.trim_end_matches('/'))
        .unwrap_or("");
    if let Ok(value) = HeaderValue::from_str(&format!("{theirs}{prefix}")) {
        headers.insert(http::HeaderName::from_static(NAME), value);
    }
}

/// `path` without its first `segments` segments (`strip_prefix`): `/grafana/d/1` less one is `/d/1`, and a path
/// that was only the prefix becomes `/`. Segments are counted as in the path the rules saw
/// ([`policy::path::rule_path`]): a segment of parameters alone (`/;x/grafana/d`) is none, and goes with the
/// prefix. Path parameters stay with their segment.
pub(super) fn strip_segments(path: &str, segments: usize) -> String {
    let mut rest = path;
    let mut stripped = 0;
    while stripped < segments && !rest.is_empty() {
        let after = rest.trim_start_matches('/');
        let end = after.find('/').unwrap_or(after.len());
        if !after[..end].starts_with(';') {
            stripped += 1;
        }
        rest = &after[end..];
    }
    if rest.is_empty() {
        "/".to_owned()
    } else {
        rest.to_owned()
    }
}

/// The request URI with its path replaced by the normalised one, query kept.
pub(super) fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, GateError> {
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
