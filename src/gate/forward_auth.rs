//! `/_logto/auth`: forward-auth for a proxy that asks the gate about each request before it passes it on (nginx
//! `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`, ingress-nginx's external auth, Envoy ext_authz). The
//! request asked about is read in `asked.rs`; the answer carries the identity, the credentials and the renewed
//! session's cookies for the proxy to pass on.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::{ClientError, GateError};
use crate::identity;
use crate::policy::{self, Decision};
use crate::proxy::trusted::is_trusted;
use crate::return_path::ReturnPath;
use crate::routes::paths;
use crate::session;

use super::asked;
use super::authn::{authorize, Principal};
use super::{request_host, Decided, Gate};

/// The bare access token in a forward-auth answer with `upstream.pass_access_token`, under oauth2-proxy's name.
const ACCESS_TOKEN_FIELD: &str = "x-auth-request-access-token";

/// The fields of a forward-auth answer that repeat its `Set-Cookie` fields one by one, for a proxy that can pass on
/// only one field of a name (nginx's `auth_request_set`). A session's save sets at most eight cookies and clears the
/// other names the request sent (the single cookie and eight chunks at most, unless a client sends more); the ones
/// set come first.
const FORWARDED_SET_COOKIE: [&str; 9] = [
    "x-logto-gate-set-cookie-1",
    "x-logto-gate-set-cookie-2",
    "x-logto-gate-set-cookie-3",
    "x-logto-gate-set-cookie-4",
    "x-logto-gate-set-cookie-5",
    "x-logto-gate-set-cookie-6",
    "x-logto-gate-set-cookie-7",
    "x-logto-gate-set-cookie-8",
    "x-logto-gate-set-cookie-9",
];

impl Gate {
    /// `/_logto/auth`: forward-auth for nginx `auth_request`, Traefik ForwardAuth and Envoy ext_authz (HTTP).
    /// 202 with identity headers when allowed, 401 without a session, 403 when denied. The original method, URI and
    /// host come from the fields [`asked`] reads only when the peer is a trusted proxy (else, or where it names
    /// none, the request's own).
    /// Envoy calls `/_logto/auth/<original path>` with the original method and expects 200 when allowed; from a
    /// trusted peer that form is honoured too. A `POST` is answered as the method a `_method` in its body could name
    /// where that is refused ([`Gate::unseen_form_method`]): the gate is sent no body to read.
    pub(super) async fn forward_auth(
        &self,
        req: &Request<Body>,
        peer: SocketAddr,
        decided: &mut Decided,
    ) -> Result<Response<Body>, GateError> {
        let trusted = is_trusted(&self.config.server.trusted_proxies, peer.ip());
        // Envoy form: /_logto/auth/<original path>, with the original method and query.
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let envoy_path = target.strip_prefix(paths::AUTH).filter(|rest| rest.starts_with('/'));
        // ingress-nginx names the host in X-Original-URL (its Host is the gate's own name). A trusted peer that
        // names no request is answered about its own, as anyone else is.
        let (method, uri, asked_host) = match (trusted, envoy_path) {
            (true, Some(rest)) => (req.method().as_str(), rest, None),
            (true, None) => {
                let asked = asked::read(req.headers())?;
                let method = asked.method.unwrap_or(req.method().as_str());
                (method, asked.target.unwrap_or(target), asked.host)
            }
            (false, _) => (req.method().as_str(), target, None),
        };
        let raw_path = uri.split(['?', '#']).next().unwrap_or("/");
        let path = policy::path::normalise(raw_path, self.config.server.allow_encoded_slashes)
            .map_err(|e| ClientError::BadRequest(e.to_string()))?;
        let host = asked_host.or(request_host(req, trusted)?);
        let policy = &self.config.policy;
        let rule_path = policy::path::rule_path(&path, policy.case_insensitive)
            .map_err(|e| ClientError::BadRequest(e.to_string()))?;
        // The proxy asking passes the original request on to the app with whatever method-override fields it
        // carries (the gate cannot remove them there), so the rules always decide on those methods too.
        let mut overrides = policy::method_overrides(req.headers()).map_err(ClientError::BadRequest)?;
        let query = uri.split('#').next().and_then(|u| u.split_once('?')).map(|(_, q)| q);
        policy::query_method_overrides(method, query, &mut overrides).map_err(ClientError::BadRequest)?;
        // The original request's client, as the asking proxy (trusted) reports it in `X-Forwarded-For`.
        let client = self.client_address(req.headers(), peer, trusted);
        let decision = policy.decide(method, &overrides, host, client, &rule_path);
        let mut principal = match decision {
            Decision::Deny => return Err(ClientError::RouteDenied.into()),
            Decision::Public => None,
            Decision::Require(..) => {
                let max_age = self.max_age(&decision);
                let Some(principal) = self.authenticate(req.headers(), decided).await? else {
                    return Ok(self.unauthorized(&ReturnPath::parse_or_root(uri), max_age, false));
                };
                let organization = self.config.logto.organization_id.as_deref();
                for requirements in decision.requirements() {
                    authorize(&principal, requirements, organization)?;
                }
                // The asking proxy sends the browser to /_logto/sign-in?redirect=<uri>, which asks Logto for the
                // route's `max_age` itself ([`Gate::max_age_of`]).
                if let Some(max_age) = max_age.filter(|m| !principal.signed_in_within(*m, session::now())) {
                    return Ok(self.unauthorized(&ReturnPath::parse_or_root(uri), Some(max_age), true));
                }
                Some(principal)
            }
        };
        // The body of a `POST` may name another method in a `_method`, which the app takes (Rails, Laravel...) and
        // the gate cannot read here: where that would be refused, so is the `POST`. Someone signed in on a public
        // `POST` is asked about as who they are.
        let inputs = (host, client, &*rule_path);
        let unseen = |principal: Option<&Principal>| {
            self.unseen_form_method(method, req.headers(), &overrides, &decision, inputs, principal)
        };
        if unseen(principal.as_ref())?.is_some() && principal.is_none() {
            principal = self.authenticate(req.headers(), decided).await?;
        }
        if let Some(refused) = unseen(principal.as_ref())? {
            // As that method would be answered: a sign-in, a more recent one, or 403.
            let max_age = self.max_age(&refused);
            let return_path = ReturnPath::parse_or_root(uri);
            return match &principal {
                None if matches!(refused, Decision::Require(..)) => Ok(self.unauthorized(&return_path, max_age, false)),
                Some(p) if matches!(self.authorize_all(p, &refused), Ok(Some(_))) => {
                    Ok(self.unauthorized(&return_path, max_age, true))
                }
                _ => Err(ClientError::FormMethodUnseen.into()),
            };
        }
        let mut resp = Response::new(body::empty());
        // nginx and Traefik take any 2xx; Envoy's HTTP ext_authz allows only 200.
        *resp.status_mut() = if envoy_path.is_some() && trusted {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        if let Some(principal) = &principal {
            let headers = resp.headers_mut();
            self.add_identity(headers, principal, &decision)?;
            let claims = principal.claims();
            for (name, claim) in [
                ("x-auth-request-user", "sub"),
                ("x-auth-request-email", "email"),
                ("x-auth-request-preferred-username", "username"),
                ("x-auth-request-groups", "roles"),
            ] {
                if let Some(v) = identity::passed_claim(claims, claim).and_then(identity::header_value) {
                    headers.insert(http::HeaderName::from_static(name), v);
                }
            }
        }
        self.answer_credentials(resp.headers_mut(), req.headers(), principal.as_ref());
        // The renewed session's cookies, each also in a field of its own: nginx's `$upstream_http_set_cookie` holds
        // only the first `Set-Cookie` of the answer, and a session of several cookies needs them all.
        for (name, cookie) in FORWARDED_SET_COOKIE.iter().zip(&decided.cookies) {
            resp.headers_mut()
                .insert(http::HeaderName::from_static(name), cookie.clone());
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// `Authorization` in a forward-auth answer: the field the app is to get, which the asking proxy puts on the
    /// request it passes on in place of the client's (an answer without one removes it; the shipped nginx and
    /// Traefik examples do so). It is what the gate sends when it proxies itself: with `upstream.pass_access_token`,
    /// a session's access token for the rule's API or none ([`Gate::add_credentials`] has put it in), never the
    /// client's own; otherwise the client's field as it came, a bearer token the gate verified or credentials it
    /// does not read. With `upstream.protected_app` none: that contract's credentials are the app's own, never put
    /// in an answer anyone may ask for. With `pass_access_token`, the verified token also goes alone into
    /// `X-Auth-Request-Access-Token` (oauth2-proxy's name for it), for a session and an API client alike.
    pub(super) fn answer_credentials(
        &self,
        answer: &mut http::HeaderMap,
        request: &http::HeaderMap,
        principal: Option<&Principal>,
    ) {
        let upstream = &self.config.upstream;
        let gate_sets = upstream.pass_access_token && matches!(principal, Some(Principal::Session(_)));
        if !(upstream.protected_app || gate_sets) {
            if let Some(theirs) = request.get(header::AUTHORIZATION) {
                answer.insert(header::AUTHORIZATION, theirs.clone());
            }
        }
        if upstream.pass_access_token && principal.is_some() {
            // The session's token, or the API client's own, verified: the answer's `Authorization` now.
            if let Ok(Some(token)) = super::authn::bearer_token(answer).map(|t| t.and_then(|t| t.parse().ok())) {
                answer.insert(http::HeaderName::from_static(ACCESS_TOKEN_FIELD), token);
            }
        }
    }
}
