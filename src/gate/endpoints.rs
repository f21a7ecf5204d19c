//! The gate's own endpoints under `/_logto/`: sign-in, callback, sign-out, userinfo, the assertion key set,
//! back-channel logout and readiness (forward-auth: `forward_auth.rs`). Proxied requests go through the pipeline in
//! `gate/mod.rs`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use openidconnect::{PkceCodeChallenge, PkceCodeVerifier};
use serde_json::{Map, Value};

use crate::body::paced::{BodyStalled, ClientGone};
use crate::body::{self, Body};
use crate::error::{ClientError, GateError, IdpError};
use crate::identity;
use crate::oidc::extras::SignInOptions;
use crate::oidc::RefreshError;
use crate::oidc::TokenError;
use crate::pages::{self, Page};
use crate::policy;
use crate::proxy::trusted::is_trusted;
use crate::return_path::ReturnPath;
use crate::routes::paths;
use crate::session::store::SaveError;
use crate::session::{self, Current, Session};

use super::asked;
use super::authn::Principal;
use super::{request_host, single_valued_query, Decided, Gate};

/// How long the way from Logto's sign-in to its ID token may take (the redirect back and the code exchange), which a
/// sign-in asked for with `max_age` is allowed on top.
const SIGN_IN_TRIP: u64 = 60;

impl Gate {
    /// `/_logto/jwks.json`: the public key set that verifies `X-Logto-Gate-Assertion`.
    pub(super) fn jwks(&self) -> Result<Response<Body>, GateError> {
        let signer = self.assertion.as_ref().ok_or(ClientError::NotFound)?;
        let mut resp = Response::new(body::full(signer.jwks()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        Ok(resp)
    }

    /// `/_logto/sign-in?redirect=/path`: starts an attempt; the return path falls back to `/` unless it is a
    /// same-origin path. `first_screen`, `direct_sign_in` and `login_hint` choose Logto's page for this sign-in
    /// (a "Create account" link: `first_screen=register`), in place of `[logto]`'s; a bad one is a 400 naming it.
    pub(super) async fn sign_in(&self, req: &Request<Body>, peer: SocketAddr) -> Result<Response<Body>, GateError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ClientError::MethodNotAllowed { allow: "GET, HEAD" }.into());
        }
        let params = single_valued_query(req.uri().query())?;
        let options = SignInOptions::from_query(&params).map_err(ClientError::BadRequest)?;
        let origin = self.config.server.public_url.origin();
        let return_to = match params.iter().find(|(k, _)| k == "redirect") {
            Some((_, v)) => self.return_target(v),
            // nginx's error_page hands the original URI over in a header, as its auth_request subrequest does.
            None if is_trusted(&self.config.server.trusted_proxies, peer.ip()) => asked::read(req.headers())?
                .target
                .map_or_else(ReturnPath::root, |v| ReturnPath::parse_same_origin_or_root(v, origin)),
            None => ReturnPath::root(),
        };
        let max_age = options.max_age.or_else(|| self.max_age_of(req, peer, &return_to));
        self.start_sign_in(return_to, &SignInOptions { max_age, ..options })
            .await
    }

    /// The `max_age` of the route a sign-in returns to (a GET of `back` by this request's client), so that a sign-in
    /// link that names none (a proxy's after a forward-auth 401, a bookmark) still asks Logto for a sign-in recent
    /// enough for it, and the person does not come back only to be sent to sign in again.
    fn max_age_of(&self, req: &Request<Body>, peer: SocketAddr, back: &ReturnPath) -> Option<u64> {
        if !self.rules_ask_max_age {
            return None;
        }
        let trusted = is_trusted(&self.config.server.trusted_proxies, peer.ip());
        let absolute = back
            .is_absolute()
            .then(|| url::Url::parse(back.as_str()).ok())
            .flatten();
        let (host, path) = match &absolute {
            Some(url) => (url.host_str(), url.path()),
            None => (request_host(req, trusted).ok().flatten(), back.as_str()),
        };
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let policy = &self.config.policy;
        let normalised = policy::path::normalise(path, self.config.server.allow_encoded_slashes).ok()?;
        let rule_path = policy::path::rule_path(&normalised, policy.case_insensitive).ok()?;
        let client = self.client_address(req.headers(), peer, trusted);
        policy.decide("GET", &[], host, client, &rule_path).max_age()
    }

    /// Creates a sign-in attempt (state, nonce, PKCE verifier in its own encrypted cookie) and redirects to Logto,
    /// whose page `options` may choose.
    pub(super) async fn start_sign_in(
        &self,
        return_to: ReturnPath,
        options: &SignInOptions,
    ) -> Result<Response<Body>, GateError> {
        let loaded = self.oidc.ensure_loaded().await?;
        let codec = self.sessions.codec();
        let mut attempt = codec
            .new_attempt(return_to.as_str().to_owned(), session::now())
            .ok_or_else(|| GateError::Internal("no random bytes for a sign-in attempt".into()))?;
        attempt.max_age = options.max_age;
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(attempt.pkce_verifier.clone()));
        let cookie = codec.attempt_cookie(&attempt).map_err(GateError::Internal)?;
        self.metrics.sign_in_started();
        let url = self
            .oidc
            .authorization_url(&loaded, &attempt.state, &attempt.nonce, challenge.as_str(), options);
        // The body matters only where a proxy shows this answer's body instead of following it (Traefik's errors
        // middleware): a link and a meta refresh that start the sign-in in the browser itself.
        let mut resp = pages::redirect_with_page(StatusCode::FOUND, &url, &self.sign_in_url(&return_to));
        resp.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(resp)
    }

    /// `/_logto/callback`: finishes an attempt. The attempt cookie is cleared whatever the outcome.
    pub(super) async fn callback(&self, req: &Request<Body>, html: bool) -> Response<Body> {
        let params = single_valued_query(req.uri().query());
        let state = params
            .as_ref()
            .ok()
            .and_then(|p| p.iter().find(|(k, _)| k == "state").map(|(_, v)| v.clone()));
        let result = match params {
            Ok(params) if req.method() == Method::GET => {
                // The sign-in's log lines (Logto's answers, organization tokens) carry the request id.
                let span = tracing::info_span!(
                    "sign_in",
                    request_id = req.headers().get(super::REQUEST_ID).and_then(|v| v.to_str().ok())
                );
                tracing::Instrument::instrument(self.finish_sign_in(req, &params), span).await
            }
            Ok(_) => Err(ClientError::MethodNotAllowed { allow: "GET" }.into()),
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(r) => {
                self.metrics.sign_in_completed();
                r
            }
            // A callback whose attempt is gone (finished already, expired, started in another browser) from a
            // browser that is signed in: a Back into a finished sign-in, or a second tab finishing after the first.
            // It goes to the app rather than to an error page; its code is not used.
            Err(GateError::Client(ClientError::AttemptNotFound)) if self.signed_in(req).await => {
                pages::redirect(StatusCode::FOUND, &self.config.server.public_url.join("/"))
            }
            Err(e) => {
                self.metrics.sign_in_failed();
                let request_id = req
                    .headers()
                    .get(super::REQUEST_ID)
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static(""));
                let failed = super::Failed {
                    method: req.method(),
                    request_id: &request_id,
                    path: req.uri().path(),
                    back: None,
                };
                self.fail(e, html, &failed)
            }
        };
        if let Some(clear) = state
            .as_deref()
            .and_then(|s| self.sessions.codec().clear_attempt_cookie(s))
        {
            resp.headers_mut().append(header::SET_COOKIE, clear);
        }
        resp
    }

    /// Whether the request carries a session that stands (an unreadable store counts as no).
    async fn signed_in(&self, req: &Request<Body>) -> bool {
        matches!(self.sessions.load(req.headers(), session::now()).await, Ok(Some(_)))
    }

    pub(super) async fn finish_sign_in(
        &self,
        req: &Request<Body>,
        params: &[(String, String)],
    ) -> Result<Response<Body>, GateError> {
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let now = session::now();
        let state = get("state").ok_or(ClientError::AttemptNotFound)?;
        // Without a matching attempt nothing from the query is trusted or shown (not even an error text).
        let attempt = self
            .sessions
            .codec()
            .read_attempt(req.headers(), state, now)
            .ok_or(ClientError::AttemptNotFound)?;
        if let Some(error) = get("error") {
            // RFC 8707 §2: `invalid_target` refuses the resource indicators the authorization request named, which
            // are the configuration's (Logto's organizations resource always exists): no sign-in again mends it.
            if error == "invalid_target" && !self.config.logto.resources.is_empty() {
                return Err(IdpError::Misconfigured(format!(
                    "Logto refused the sign-in's API resources (invalid_target): each of logto.resources ({}) must \
                     be the identifier of an API resource in the tenant (Logto Console, API resources)",
                    self.config.logto.resources.join(", ")
                ))
                .into());
            }
            return Err(ClientError::SignInDenied {
                error: error.chars().take(64).collect(),
                description: get("error_description").unwrap_or("").chars().take(300).collect(),
            }
            .into());
        }
        let loaded = self.oidc.ensure_loaded().await?;
        // RFC 9207 §2.4: the issuer on the response must be ours; when the provider says it sends one, require it.
        match get("iss") {
            Some(iss) if iss != self.config.logto.issuer => {
                return Err(ClientError::IssuerMismatch(iss.chars().take(200).collect()).into())
            }
            None if loaded.metadata.authorization_response_iss_parameter_supported => {
                return Err(ClientError::IssuerMismatch(String::new()).into())
            }
            _ => {}
        }
        let code = get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ClientError::BadRequest("the callback has no authorization code".into()))?;

        let tokens = self.oidc.exchange_code(&loaded, code, &attempt.pkce_verifier).await?;
        let id_token = tokens
            .id_token
            .as_deref()
            .ok_or_else(|| IdpError::BadResponse("the token response has no id_token".into()))?;
        let mut claims = self
            .oidc
            .verify_id_token(&loaded, id_token, &attempt.nonce, now)
            .await?;
        // OIDC Core §3.1.2.1: a sign-in asked for with `max_age` says when it happened, and Logto asks the person
        // again when theirs is older. One that does not would send the person straight back to sign in, forever.
        if let Some(max_age) = attempt.max_age {
            let at = session::signed_in_at(&claims, now);
            // Logto signs the person in, then issues the token once the code comes back: allow for that trip
            // (`max_age=0` asks for a sign-in right now, which is some seconds old by then).
            if at.is_none_or(|at| now.saturating_sub(at) > max_age.saturating_add(SIGN_IN_TRIP)) {
                let said = at.map_or_else(
                    || "did not say when (no auth_time)".to_owned(),
                    |at| format!("signed in {} ago", super::authn::for_people(now.saturating_sub(at))),
                );
                return Err(IdpError::Misconfigured(format!(
                    "asked for a sign-in at most {} old (max_age), Logto's ID token {said}",
                    super::authn::for_people(max_age)
                ))
                .into());
            }
        }
        if self.needs_userinfo(&claims) {
            let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("").to_owned();
            let extra = self.oidc.userinfo(&loaded, &tokens.access_token, &sub).await?;
            for (k, v) in extra {
                claims.entry(k).or_insert(v);
            }
        }
        let id_token_exp = claims.get("exp").and_then(Value::as_u64);
        let mut session = self.new_session(claims, &tokens, now);
        if let (true, Some(id_token), Some(exp)) = (
            self.config.upstream.protected_app,
            tokens.id_token.as_deref(),
            id_token_exp,
        ) {
            session.keep_id_token(id_token, exp, now);
        }
        match self.apply_resource_tokens(&mut session, now).await {
            Ok(()) => {}
            Err(RefreshError::Denied(why)) => return Err(IdpError::Misconfigured(why).into()),
            Err(RefreshError::Revoked(why) | RefreshError::Unavailable(why)) => {
                return Err(IdpError::BadResponse(why).into())
            }
        }
        match self.apply_organization_token(&mut session, now).await {
            Ok(()) => {}
            Err(RefreshError::Denied(why)) => {
                tracing::info!(sub = session.sub(), reason = %why, "no organization token at sign-in");
                let who = session
                    .claims
                    .get("username")
                    .and_then(Value::as_str)
                    .unwrap_or(session.sub())
                    .to_owned();
                let org = self.config.logto.organization_id.clone().unwrap_or_default();
                return Err(ClientError::Forbidden {
                    who,
                    required: format!("membership of the organization {org}"),
                }
                .into());
            }
            Err(RefreshError::Revoked(why)) => return Err(IdpError::BadResponse(why).into()),
            Err(RefreshError::Unavailable(why)) => return Err(IdpError::Unreachable(why).into()),
        }
        tracing::info!(sub = session.sub(), "signed in");
        // The session the browser had before (the same person or another; every copy of its cookie that stands)
        // ends with this sign-in, so a copy of its cookie is refused from now on. Its refresh token is left alone:
        // Logto continues the grant within its own session, and revoking the old token (RFC 7009) would revoke the
        // grant the new session uses.
        let replaced = match self.sessions.load_every(req.headers(), now).await {
            Ok(replaced) => replaced,
            Err(e) => {
                tracing::warn!(error = %e, "the session this sign-in replaces could not be read to end it");
                Vec::new()
            }
        };
        // The request may carry an older session (or its chunks): those cookies are replaced or cleared.
        let previous = self
            .sessions
            .codec()
            .read_session_cookie(req.headers())
            .map(|c| Current {
                session: std::sync::Arc::new(session.clone()),
                id: None,
                names_sent: c.names_sent.into(),
                rewrite: true,
                stale_copy: c.stale_copy,
            });
        let cookies = match self.sessions.save(previous.as_ref(), session, now).await {
            Ok(c) => c,
            Err(SaveError::Store(e)) => return Err(e.into()),
            Err(SaveError::Internal(e)) => return Err(GateError::Internal(e)),
            // A new session has no stored copy to have lost.
            Err(SaveError::Gone) => return Err(GateError::Internal("a new session was gone when written".into())),
        };
        for replaced in replaced {
            if let Err(e) = self.sessions.end(&replaced, now).await {
                tracing::warn!(error = %e, "the session this sign-in replaces could not be ended");
            }
        }
        // The attempt is sealed by the gate, but its target is checked again: only ever our origin or an allowed host.
        let back = self.return_target(&attempt.return_to);
        let mut resp = pages::redirect(StatusCode::FOUND, &self.return_url(&back));
        for c in cookies {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        Ok(resp)
    }

    pub(super) fn new_session(
        &self,
        mut claims: Map<String, Value>,
        tokens: &crate::oidc::TokenSet,
        now: u64,
    ) -> Session {
        let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        // The scopes granted (RFC 6749 §5.1: absent means as requested), for `scopes` rules.
        let scope = tokens
            .scope
            .clone()
            .unwrap_or_else(|| self.config.logto.scopes.join(" "));
        claims.insert("scope".to_owned(), Value::String(scope));
        Session {
            claims: identity::prune(&claims, &self.kept_claims),
            iat: now,
            exp: now + self.sessions.codec().lifetime_secs(),
            rt: tokens.refresh_token.clone(),
            at: self.config.passes_access_tokens().then(|| tokens.access_token.clone()),
            at_exp: tokens.expires_in.map(|s| now + s),
            auth: session::signed_in_at(&claims, now),
            sid,
            seen: now,
            refresh_at: tokens.expires_in.map(|s| Session::refresh_time(now, s)),
            serial: self.sessions.new_serial(),
            idt: None,
            idt_exp: None,
            apis: Default::default(),
            rendered: Default::default(),
        }
    }

    /// `/_logto/sign-out`: clears the session and ends Logto's session too. A request another site made the browser
    /// send (Fetch Metadata: `Sec-Fetch-Site: cross-site`) signs nobody out: a link or form on any web page could
    /// otherwise end the person's session (logout CSRF, as the session cookie is `SameSite=Lax`, sent on top-level
    /// navigations from other sites). It gets a page whose button confirms the sign-out from this origin.
    /// `?redirect=/path` (or a URL on an allowed host) is where the browser lands afterwards in place of the
    /// signed-out page ([`Gate::sign_out_return`]).
    pub(super) async fn sign_out(&self, req: &Request<Body>) -> Result<Response<Body>, GateError> {
        let status = match *req.method() {
            Method::GET | Method::HEAD => StatusCode::FOUND,
            Method::POST => StatusCode::SEE_OTHER,
            _ => {
                return Err(ClientError::MethodNotAllowed {
                    allow: "GET, HEAD, POST",
                }
                .into())
            }
        };
        // Nothing a browser fetches on its own, before anyone clicks, signs out: a link prefetched or prerendered
        // (on hover, from the address bar) would otherwise end the session server-side, and a HEAD (a link checker)
        // is a safe method (RFC 9110 §9.2.1). A prefetch is refused (a speculative load that is not a success is
        // dropped, so the click comes here itself); a HEAD gets the head of the GET's answer without its effects.
        if super::is_speculative(req.headers()) {
            return Ok(super::not_speculatively(
                req,
                &self.config.pages.look,
                "Not signed out",
                "A prefetch or prerender does not sign out; following the link does.",
            ));
        }
        let back = self.sign_out_return(req.uri().query());
        let end_session = self
            .oidc
            .end_session_url(back.as_ref().map(|(_, sealed)| sealed.as_str()));
        if req.method() == Method::HEAD {
            return Ok(pages::redirect(status, &end_session));
        }
        let cross_site = req
            .headers()
            .get_all("sec-fetch-site")
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site {
            return Ok(self.confirm_sign_out(super::accepts_html(req), back.as_ref().map(|(to, _)| to)));
        }
        let now = session::now();
        // Every copy the browser holds that stands (usually one): a copy left alive would sign the person in again.
        let signed_out = match self.sessions.load_every(req.headers(), now).await {
            Ok(every) => every,
            Err(e) => {
                tracing::warn!(error = %e, "the session could not be read at sign-out; its cookies are cleared");
                Vec::new()
            }
        };
        for c in signed_out {
            tracing::info!(sub = c.session.sub(), "signed out");
            // A copy of the cookie (malware, a shared computer, a proxy log) must die with this sign-out: the
            // session goes on the revocation list, shared through Redis when configured, per replica otherwise.
            if let Err(e) = self.sessions.revoke_signed_out(&c.session, now).await {
                tracing::warn!(error = %e, "the signed-out session could not be put on the revocation list");
            }
            // And its refresh token at Logto, which keeps offline_access grants through end-session. In the
            // background: a slow or failing Logto never holds up the sign-out.
            if let Some(rt) = c.session.rt.clone() {
                let oidc = std::sync::Arc::clone(&self.oidc);
                tokio::spawn(async move {
                    match oidc.revoke_refresh_token(&rt).await {
                        Ok(()) => tracing::debug!("refresh token revoked at Logto"),
                        Err(e) => tracing::warn!(error = %e, "the refresh token could not be revoked at sign-out"),
                    }
                });
            }
        }
        let mut resp = pages::redirect(status, &end_session);
        for c in self.sessions.destroy(req.headers()).await {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        // The app's data in the browser goes with the person; not on the confirmation, which other sites can cause.
        if let Some(clear) = &self.config.session.sign_out_clear_site_data {
            resp.headers_mut().insert("clear-site-data", clear.clone());
        }
        Ok(resp)
    }

    /// Where `/_logto/sign-out?redirect=...` asks to land after Logto's end-session, and that target sealed for the
    /// end-session `state` ([`crate::session::CookieCodec::seal_sign_out_return`]), which Logto hands back to
    /// `/_logto/signed-out`. `None` without `redirect`, for a target the sign-in return rules refuse (same origin
    /// or `server.allowed_redirect_hosts` only), for a parameter given twice, and when
    /// `logto.post_logout_redirect_uri` sends everyone elsewhere than the signed-out page (which alone reads the
    /// state): the sign-out itself goes ahead in every case, so a bad link never leaves anyone signed in.
    fn sign_out_return(&self, query: Option<&str>) -> Option<(ReturnPath, String)> {
        let params = match single_valued_query(query) {
            Ok(params) => params,
            Err(e) => {
                tracing::info!(error = %e, "a sign-out's redirect is not followed");
                return None;
            }
        };
        let (_, candidate) = params.iter().find(|(k, _)| k == "redirect")?;
        let Some(to) = self.accepted_return_target(candidate) else {
            tracing::info!("a sign-out's redirect is not followed: not a path on this origin or an allowed host");
            return None;
        };
        let signed_out_page = self.config.server.public_url.join(paths::SIGNED_OUT);
        if self.config.logto.post_logout_redirect_uri != signed_out_page {
            tracing::info!("a sign-out's redirect is not followed: logto.post_logout_redirect_uri is set");
            return None;
        }
        let sealed = self
            .sessions
            .codec()
            .seal_sign_out_return(to.as_str(), session::now())?;
        Some((to, sealed))
    }

    /// `/_logto/signed-out`: where Logto sends the browser after its end-session. With the `state` of a sign-out
    /// that named a `redirect`, a redirect there; else (no state, or one this gate did not seal in the last ten
    /// minutes) the "You are signed out" page.
    pub(super) fn signed_out(&self, req: &Request<Body>, html: bool) -> Response<Body> {
        let state = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v);
        let back = state
            .and_then(|state| self.sessions.codec().open_sign_out_return(&state, session::now()))
            // Checked again: `server.allowed_redirect_hosts` may have changed since it was sealed.
            .and_then(|to| self.accepted_return_target(&to));
        match back {
            Some(back) if req.method() == Method::GET || req.method() == Method::HEAD => {
                pages::redirect(StatusCode::FOUND, &self.return_url(&back))
            }
            _ => Page::new(
                StatusCode::OK,
                "signed_out",
                "You are signed out",
                "You have been signed out of this application and of Logto.",
            )
            .with_link(paths::SIGN_IN, "Sign in again")
            .render(html, &self.config.pages.look),
        }
    }

    /// The answer to a cross-site sign-out: for a browser a page with a button that POSTs the sign-out from this
    /// origin (its answer then redirects to Logto's end-session endpoint, which the page's CSP allows), else 403.
    /// The button's sign-out keeps the request's accepted `redirect`.
    fn confirm_sign_out(&self, html: bool, back: Option<&ReturnPath>) -> Response<Body> {
        if !html {
            return Page::new(
                StatusCode::FORBIDDEN,
                "cross_site_sign_out",
                "Sign out?",
                "Another site asked to sign you out; POST /_logto/sign-out from this site to sign out.",
            )
            .render(false, &self.config.pages.look);
        }
        let action = back.map_or_else(
            || paths::SIGN_OUT.to_owned(),
            |back| back.as_redirect_of(paths::SIGN_OUT),
        );
        let end_session = self.oidc.end_session_url(None);
        let then_to = url::Url::parse(&end_session)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        Page::new(
            StatusCode::OK,
            "confirm_sign_out",
            "Sign out?",
            "Another site sent you here to sign you out. Sign out only if you meant to.",
        )
        .with_form(&action, "Sign out", &then_to)
        .render(true, &self.config.pages.look)
    }

    /// `/_logto/userinfo`: the signed-in identity as JSON, 401 without a session.
    pub(super) async fn userinfo(
        &self,
        req: &Request<Body>,
        decided: &mut Decided,
    ) -> Result<Response<Body>, GateError> {
        match self.authenticate(req.headers(), decided).await? {
            Some(Principal::Session(c)) => Ok(pages::json_response(StatusCode::OK, &c.session.identity_json())),
            Some(Principal::Bearer(claims)) => Ok(pages::json_response(StatusCode::OK, &Value::Object(claims))),
            None => {
                let mut resp = Page::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Not signed in",
                    "No valid session.",
                )
                .render(false, &self.config.pages.look);
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"logto-gate\""),
                );
                Ok(resp)
            }
        }
    }

    /// `/_logto/backchannel-logout`: Logto's back-channel logout (OpenID Connect Back-Channel Logout 1.0 §2.5):
    /// a POSTed `logout_token` ends the matching sessions. Answers 200, or 400 with an OAuth error body.
    pub(super) async fn backchannel_logout(&self, req: Request<Body>) -> Result<Response<Body>, GateError> {
        if req.method() != Method::POST {
            return Err(ClientError::MethodNotAllowed { allow: "POST" }.into());
        }
        let refuse = |why: &str| {
            tracing::info!(reason = why, "back-channel logout refused");
            pages::json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request", "error_description": why}),
            )
        };
        let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if BodyStalled::is_in(&*e) => return Err(ClientError::BodyStalled.into()),
            Err(e) if ClientGone::is_in(&*e) => return Err(ClientError::WentAway.into()),
            Err(_) => return Ok(refuse("the request body is unreadable or larger than 64 KiB")),
        };
        let params = match single_valued_query(std::str::from_utf8(&body).ok()) {
            Ok(p) => p,
            Err(_) => return Ok(refuse("a parameter is given more than once")),
        };
        let Some((_, token)) = params.iter().find(|(k, _)| k == "logout_token") else {
            return Ok(refuse("logout_token is missing"));
        };
        let now = session::now();
        let claims = match self.oidc.verify_logout_token(token, now).await {
            Ok(c) => c,
            Err(TokenError::Invalid(e)) => return Ok(refuse(&e.to_string())),
            Err(TokenError::Gate(g)) => return Err(g),
        };
        let get = |k: &str| claims.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let jti = get("jti").unwrap_or_default();
        let keep_jti_for = Duration::from_secs(crate::oidc::LOGOUT_TOKEN_MAX_AGE + 2 * self.config.logto.clock_leeway);
        if !self.sessions.first_use_of_jti(jti, keep_jti_for, now).await? {
            return Ok(refuse("this logout token was already used (jti replay)"));
        }
        let logout_at = claims.get("iat").and_then(Value::as_u64).unwrap_or(now);
        let ended = self.sessions.revoke(get("sid"), get("sub"), logout_at, now).await?;
        tracing::info!(
            sid = get("sid"),
            sub = get("sub"),
            sessions = ended,
            "back-channel logout"
        );
        let mut resp = Response::new(body::empty());
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// `/_logto/readyz`: ready once Logto's discovery document and keys are loaded and, when configured, Redis
    /// answers.
    pub(super) async fn readyz(&self) -> Response<Body> {
        match self.readiness().await {
            Ok(issuer) => pages::json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ready", "issuer": issuer}),
            ),
            Err(reason) => pages::json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "not_ready", "reason": reason}),
            ),
        }
    }

    /// Ready (the issuer) or why not: draining, Logto not loaded yet, Redis unreachable.
    pub async fn readiness(&self) -> Result<String, String> {
        if self.draining.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let loaded = self
            .oidc
            .loaded()
            .ok_or("Logto discovery document and keys not loaded yet")?;
        self.sessions.ready().await.map_err(|e| e.to_string())?;
        Ok(loaded.metadata.issuer.clone())
    }
}
