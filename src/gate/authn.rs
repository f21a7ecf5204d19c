//! Phases 2-3: who a request is from (a session cookie, or a Logto access token), whether the rules let them in,
//! and the challenge for a request from nobody: a browser navigation goes to sign-in, anything else gets 401.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use serde_json::{Map, Value};

use crate::body::Body;
use crate::error::{ClientError, GateError};
use crate::oidc::extras::SignInOptions;
use crate::oidc::TokenError;
use crate::pages::{self, Page};
use crate::policy;
use crate::proxy::SignedOut;
use crate::return_path::ReturnPath;
use crate::routes::paths;
use crate::session::store::SaveError;
use crate::session::{self, Current, Session};

use super::renewal::Renewed;
use super::{accepts_html, is_browser_navigation, is_frame_navigation, request_host, Decided, Gate, REQUEST_ID};

/// Set on requests of a Logto machine-to-machine app (its id), never on a person's: how the app tells them apart.
pub(super) const MACHINE_HEADER: &str = "x-forwarded-machine";

/// Set on requests made with an access token someone else acts with for its subject (the `sub` of its RFC 8693
/// `act` claim: Logto's user impersonation): the app learns that the user it is told of is not the one at the
/// keyboard, and who is.
pub(super) const ACTOR_HEADER: &str = "x-forwarded-actor";

/// Who a request is from, once authenticated.
pub(super) enum Principal {
    /// A browser session.
    Session(Current),
    /// A verified Logto access token (`Authorization: Bearer`).
    Bearer(Map<String, Value>),
}

impl Principal {
    /// Whether the person signed in at Logto at most `max_age` seconds before `now` (a rule's `max_age`): a
    /// session by the time it recorded at sign-in ([`crate::session::Session::auth`]), a bearer token by its
    /// `auth_time` (RFC 9470 §4). A token without one (a machine's, or Logto's usual access tokens) never is.
    pub(super) fn signed_in_within(&self, max_age: u64, now: u64) -> bool {
        self.signed_in_at(now)
            .is_some_and(|at| now.saturating_sub(at) <= max_age)
    }

    /// When the person signed in at Logto, seconds since the epoch, if that is known (see
    /// [`Principal::signed_in_within`]).
    pub(super) fn signed_in_at(&self, now: u64) -> Option<u64> {
        match self {
            Principal::Session(c) => c.session.auth,
            // Only a time in seconds up to now is one (a time in milliseconds would be far in the future).
            Principal::Bearer(claims) => claims
                .get("auth_time")
                .and_then(Value::as_u64)
                .filter(|at| *at <= now.saturating_add(60)),
        }
    }

    pub(super) fn claims(&self) -> &Map<String, Value> {
        match self {
            Principal::Session(c) => &c.session.claims,
            Principal::Bearer(c) => c,
        }
    }

    /// The Logto machine-to-machine app this principal is, if it is one: a client-credentials access token, whose
    /// `sub` is the app's own id (`client_id`); a person's token has the person's id there.
    pub(super) fn machine(&self) -> Option<&str> {
        let Principal::Bearer(claims) = self else {
            return None;
        };
        let sub = claims.get("sub").and_then(Value::as_str)?;
        (claims.get("client_id").and_then(Value::as_str) == Some(sub)).then_some(sub)
    }

    /// The organization a bearer token was issued for (Logto's `organization_id` claim, checked when the token was
    /// verified); a session's are in its claims.
    pub(super) fn organization(&self) -> Option<&str> {
        let Principal::Bearer(claims) = self else {
            return None;
        };
        claims.get("organization_id").and_then(Value::as_str)
    }

    /// Who acts for the subject of a bearer token (its `act` claim, checked when the token was verified); a
    /// session's subject is always the one who signed in.
    pub(super) fn actor(&self) -> Option<&str> {
        let Principal::Bearer(claims) = self else {
            return None;
        };
        crate::oidc::jwt::actor(claims).ok().flatten()
    }

    /// How the 403 page names the person.
    pub(super) fn display_name(&self) -> String {
        if let Some(app) = self.machine() {
            return format!("the machine-to-machine app {app}");
        }
        let c = self.claims();
        let get = |k: &str| c.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let person = match (get("username"), get("email")) {
            (Some(u), Some(e)) => format!("{u} ({e})"),
            (Some(u), None) => u.to_owned(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => get("sub").unwrap_or("an unknown user").to_owned(),
        };
        match self.actor() {
            Some(actor) => format!("{person}, acted for by {actor}"),
            None => person,
        }
    }
}

impl Gate {
    /// When a WebSocket tunnel `principal` opens must close ([`crate::proxy::ClientUpgrade::until_signed_out`]): a
    /// session's once it no longer stands (signed out, logged out by Logto, past its lifetime, its grant gone at
    /// Logto, or with Redis its refreshed claims no longer meeting `admitted`, the requirements of the rules that let
    /// it through: [`super::watch::until_ended`]), checked every `session.tunnel_check_interval`; a bearer token's
    /// once it expires (its `exp` and `logto.clock_leeway`, the same instant from which it would no longer be
    /// accepted). A bearer token cannot be revoked, and its claims cannot change, so its expiry is all there is to
    /// wait for.
    pub(super) fn tunnel_end(
        &self,
        principal: &Principal,
        admitted: Vec<std::sync::Arc<policy::Requirements>>,
    ) -> Option<SignedOut> {
        match principal {
            Principal::Session(current) => Some(Box::pin(super::watch::until_ended(
                self.me.clone(),
                current.clone(),
                admitted,
            ))),
            Principal::Bearer(claims) => {
                let ends = crate::oidc::jwt::expires_at(claims)?.saturating_add(self.config.logto.clock_leeway);
                let left = ends.saturating_sub(session::now());
                Some(Box::pin(tokio::time::sleep(std::time::Duration::from_secs(left))))
            }
        }
    }

    /// Phase 2: a verified bearer token (when `logto.resources` is set and the request carries one), else the
    /// session. A bearer token that does not verify is an error, never a fall-back to the cookie. A session near
    /// token expiry is refreshed (phase 2c); `decided` receives what must be set on the response, and who the request
    /// is from ([`Decided::signed_in`]).
    pub(super) async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        decided: &mut Decided,
    ) -> Result<Option<Principal>, GateError> {
        let bearer = if self.config.logto.resources.is_empty() {
            None
        } else {
            bearer_token(headers)?
        };
        let principal = match bearer {
            // Boxed: signature verification dwarfs the allocation, and the session path stays small.
            Some(token) => match Box::pin(self.oidc.verify_access_token(token, session::now())).await {
                Ok(claims) => Principal::Bearer(claims),
                Err(TokenError::Invalid(e)) => return Err(ClientError::InvalidToken(e.to_string()).into()),
                Err(TokenError::Gate(g)) => return Err(g),
            },
            None => {
                let now = session::now();
                let Some(current) = self.sessions.load(headers, now).await? else {
                    return Ok(None);
                };
                if !current.rewrite && !current.session.needs_refresh(now) {
                    // The usual case: nothing to renew or write back.
                    Principal::Session(current)
                } else {
                    // Renewal is rare and talks to Logto and Redis: its log lines carry the request id, to match the
                    // access line.
                    let span = tracing::info_span!(
                        "renewal",
                        request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
                    );
                    let renewal = Box::pin(self.renew_and_save(current, now, headers, &mut decided.cookies));
                    match tracing::Instrument::instrument(renewal, span).await? {
                        Some(principal) => principal,
                        None => return Ok(None),
                    }
                }
            }
        };
        decided.signed_in(&principal);
        if let Some(organization) = &self.config.logto.organization_id {
            admit_to_organization(&principal, organization)?;
        }
        Ok(Some(principal))
    }

    /// Phase 2c: refreshes tokens near expiry and writes back a session that changed (boxed by the caller: rare,
    /// and its state is large).
    pub(super) async fn renew_and_save(
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
                    Err(SaveError::Gone) => {
                        cookies.extend(self.sessions.codec().clear_session_cookies(headers));
                        return Ok(None);
                    }
                    Err(SaveError::Store(e)) => return Err(e.into()),
                    Err(SaveError::Internal(e)) => return Err(GateError::Internal(e)),
                }
                Ok(Some(Principal::Session(current)))
            }
        }
    }

    /// Phase 3: no session. A browser navigation is sent to sign in and back, except a frame's; any other request
    /// gets 401, as an HTML page with a way back for a browser (a form posted after the session ended returns to the
    /// page it was posted from; a frame signs in in the whole window and returns to the page holding it), as JSON
    /// for an API client.
    ///
    /// `again` is set when the request has a session (or token) whose sign-in at Logto is older than a rule's
    /// `max_age` ([`Principal::signed_in_within`]): RFC 9470's step-up, the sign-in asking Logto for `max_age`, the
    /// 401 saying `insufficient_user_authentication`. `max_age` is the route's, asked of Logto in either case.
    pub(super) async fn challenge(
        &self,
        req: &Request<Body>,
        trusted: bool,
        max_age: Option<u64>,
        again: bool,
    ) -> Result<Response<Body>, GateError> {
        let wanted = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        if is_browser_navigation(req) {
            // A link prefetched or prerendered once the session has ended would start a sign-in per hover, each
            // leaving an attempt cookie; the click starts the one that is used.
            if super::is_speculative(req.headers()) {
                return Ok(super::not_speculatively(
                    req,
                    &self.config.pages.look,
                    "Sign-in required",
                    "A prefetch or prerender does not start a sign-in; following the link does.",
                ));
            }
            // No sign-in inside a frame: Logto's sign-in pages may be framed by Logto's own origins only (CSP
            // `frame-ancestors`), GitHub's by none, so the frame would show the browser's refusal. The frame gets
            // the page below instead, and signs in in the whole window, back to the page that holds the frame.
            if is_frame_navigation(req) {
                return Ok(self.session_ended(req, true, max_age, again));
            }
            // On another allowed host (one sign-in across subdomains) the sign-in comes back to that host: the one
            // the rules saw, a trusted proxy's `X-Forwarded-Host` before `Host`.
            let other = request_host(req, trusted)?
                .filter(|h| !self.config.server.allowed_redirect_hosts.is_empty() && self.is_other_allowed_host(h));
            let back = match other {
                Some(host) => {
                    self.return_target(&format!("{}://{host}{wanted}", self.config.server.public_url.scheme()))
                }
                None => ReturnPath::parse_or_root(wanted),
            };
            // A HEAD navigation is a link checker's, a monitor's or `curl -I`'s, never a browser's: it is sent to
            // the sign-in link, which starts a sign-in when followed with GET, instead of starting one itself (an
            // attempt cookie, and a sign-in counted as started, per check).
            if req.method() == http::Method::HEAD {
                return Ok(pages::redirect(StatusCode::FOUND, &self.sign_in_link(&back, max_age)));
            }
            // The address's fragment never reaches the gate: a page's script brings it to the sign-in (the sign-in
            // endpoint then starts it, as below). Only for this origin's pages: another host's return keeps none.
            if self.config.session.keep_url_fragment && !back.is_absolute() {
                return Ok(self.sign_in_carrying_fragment(&back, max_age, again));
            }
            let options = SignInOptions {
                max_age,
                ..SignInOptions::default()
            };
            return self.start_sign_in(back, &options).await;
        }
        if accepts_html(req) {
            return Ok(self.session_ended(req, false, max_age, again));
        }
        Ok(self.unauthorized(&ReturnPath::parse_or_root(wanted), max_age, again))
    }

    /// 401 as an HTML page whose "Sign in again" comes back to the page the request came from (its same-origin
    /// `Referer`, else `/`): for a script's request that accepts HTML, and `in_frame`, for a frame's navigation
    /// (that page then holds the frame; the link opens in the whole window).
    fn session_ended(&self, req: &Request<Body>, in_frame: bool, max_age: Option<u64>, again: bool) -> Response<Body> {
        let back = req
            .headers()
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .map_or_else(ReturnPath::root, |r| {
                ReturnPath::parse_same_origin_or_root(r, self.config.server.public_url.origin())
            });
        let message = if in_frame {
            "Sign in again to see this part of the page."
        } else {
            "Sign in again to continue. What you sent was not passed on; you may need to send it again."
        };
        let (code, title, message) = match (again, max_age) {
            (true, Some(max_age)) => (
                INSUFFICIENT,
                "Sign in again",
                format!(
                    "This needs a sign-in within the last {}. {message}",
                    for_people(max_age)
                ),
            ),
            _ => ("unauthorized", "Your session has ended", message.to_owned()),
        };
        let mut page = Page::new(StatusCode::UNAUTHORIZED, code, title, message)
            .with_link(self.sign_in_link(&back, max_age), "Sign in again");
        if in_frame {
            page = page.in_frame();
        }
        let mut page = page.render(true, &self.config.pages.look);
        page.headers_mut()
            .insert(header::WWW_AUTHENTICATE, bearer_challenge(max_age, again));
        page
    }

    /// A return target from a request or parameter: a same-origin path, or a URL on an allowed other host.
    pub(super) fn return_target(&self, candidate: &str) -> ReturnPath {
        self.accepted_return_target(candidate).unwrap_or_else(ReturnPath::root)
    }

    /// [`Gate::return_target`] without the fallback to `/`: `None` for a candidate it would not keep.
    pub(super) fn accepted_return_target(&self, candidate: &str) -> Option<ReturnPath> {
        ReturnPath::accept_for_hosts(candidate, self.config.server.public_url.origin(), |h| {
            self.is_other_allowed_host(h)
        })
    }

    /// The URL a browser is sent to for `back`: on the public URL for a path, as it is on an allowed other host.
    pub(super) fn return_url(&self, back: &ReturnPath) -> String {
        if back.is_absolute() {
            back.as_str().to_owned()
        } else {
            self.config.server.public_url.join(back.as_str())
        }
    }

    /// `/_logto/sign-in?redirect=<path>`: where "Sign in again" goes, back to `back` afterwards.
    pub(super) fn sign_in_url(&self, back: &ReturnPath) -> String {
        self.config.server.public_url.join(&back.as_redirect_of(paths::SIGN_IN))
    }

    /// [`Gate::sign_in_url`], asking Logto for a sign-in at most `max_age` seconds old.
    pub(super) fn sign_in_link(&self, back: &ReturnPath, max_age: Option<u64>) -> String {
        let mut link = self.sign_in_url(back);
        if let Some(max_age) = max_age {
            link.push_str(&format!("&max_age={max_age}"));
        }
        link
    }

    /// `session.keep_url_fragment`'s answer to a browser's navigation that needs a sign-in: 401 with a page that goes
    /// on at once to `/_logto/sign-in`, back to `back` with the address's fragment ([`Page::carrying_fragment`]).
    /// `redirect` comes last in the link, for the fragment to be appended to it. No attempt is started here: the
    /// sign-in endpoint starts one. `again`: the session is older than `max_age` (the challenge says so).
    fn sign_in_carrying_fragment(&self, back: &ReturnPath, max_age: Option<u64>, again: bool) -> Response<Body> {
        let redirect = back.as_redirect_of("");
        let link = match max_age {
            Some(max_age) => format!("{}?max_age={max_age}&{}", paths::SIGN_IN, &redirect[1..]),
            None => format!("{}{redirect}", paths::SIGN_IN),
        };
        let mut resp = Page::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Signing in",
            "Taking you to the sign-in page.",
        )
        .with_link(self.config.server.public_url.join(&link), "Continue to sign in")
        .carrying_fragment()
        .render(true, &self.config.pages.look);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, bearer_challenge(max_age, again));
        resp
    }

    /// 401 for a request without a session (or, `again`, with one signed in longer ago than `max_age`) that is not a
    /// browser navigation: never a redirect. `sign_in_url` brings the browser back to `wanted` after signing in.
    pub(super) fn unauthorized(&self, wanted: &ReturnPath, max_age: Option<u64>, again: bool) -> Response<Body> {
        let sign_in = self.sign_in_link(wanted, max_age);
        let body = match (again, max_age) {
            (true, Some(max_age)) => serde_json::json!({
                "error": INSUFFICIENT,
                "message": format!("Sign in again: this needs a sign-in within the last {}.", for_people(max_age)),
                "max_age": max_age,
                "sign_in_url": sign_in,
            }),
            _ => serde_json::json!({
                "error": "unauthorized",
                "message": "Sign-in required: no valid session.",
                "sign_in_url": sign_in,
            }),
        };
        let mut resp = pages::json_response(StatusCode::UNAUTHORIZED, &body);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, bearer_challenge(max_age, again));
        resp
    }
}

/// RFC 9470's error code for a sign-in (or token) older than the resource allows.
const INSUFFICIENT: &str = "insufficient_user_authentication";

/// `WWW-Authenticate` for a 401: the realm, and for a sign-in too old (`again`) RFC 9470 §3's error and `max_age`.
fn bearer_challenge(max_age: Option<u64>, again: bool) -> HeaderValue {
    match (again, max_age) {
        (true, Some(max_age)) => HeaderValue::from_str(&format!(
            "Bearer realm=\"logto-gate\", error=\"{INSUFFICIENT}\", error_description=\"A more recent sign-in is \
             required\", max_age={max_age}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"logto-gate\"")),
        _ => HeaderValue::from_static("Bearer realm=\"logto-gate\""),
    }
}

/// A number of seconds as a person says it: "15 minutes", "2 hours", "90 seconds", "about 3 hours" (for 3 hours
/// and 20 seconds).
pub(super) fn for_people(secs: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    const UNITS: [(u64, &str); 3] = [(86_400, "day"), (3600, "hour"), (60, "minute")];
    if let Some((size, unit)) = UNITS.iter().find(|(size, _)| secs >= *size && secs % size == 0) {
        return plural(secs / size, unit);
    }
    match UNITS.iter().find(|(size, _)| secs >= 2 * size) {
        Some((size, unit)) => format!("about {}", plural(secs / size, unit)),
        None => plural(secs, "second"),
    }
}

/// Phase 2b: does the principal meet the route's requirements? `organization` is `logto.organization_id`: a bearer
/// token issued for it carries that organization's permissions as the gate's own (as a session's organization
/// token adds them), one issued for another organization does not ([`policy::Subject::scope_organization`]).
pub(super) fn authorize(
    principal: &Principal,
    requirements: &policy::Requirements,
    organization: Option<&str>,
) -> Result<(), GateError> {
    if let Some(app) = principal.machine() {
        if !requirements.m2m_apps.iter().any(|a| a == app) {
            return Err(ClientError::Forbidden {
                who: principal.display_name(),
                required: "a rule that admits it (m2m_apps)".into(),
            }
            .into());
        }
    }
    if let (false, Principal::Bearer(claims)) = (requirements.resources.is_empty(), principal) {
        let audiences = crate::oidc::jwt::audiences(claims);
        if !requirements.resources.iter().any(|r| audiences.contains(&r.as_str())) {
            return Err(ClientError::Forbidden {
                who: principal.display_name(),
                required: format!(
                    "an access token issued for the API {}",
                    requirements.resources.join(" or ")
                ),
            }
            .into());
        }
    }
    let subject = match principal {
        Principal::Session(c) => c.session.subject(requirements),
        Principal::Bearer(claims) => {
            let issued_for = principal.organization();
            policy::Subject {
                member_of: issued_for,
                scope_organization: issued_for.filter(|o| Some(*o) != organization),
                ..policy::Subject::of(claims)
            }
        }
    };
    requirements.check(&subject).map_err(|required| {
        ClientError::Forbidden {
            who: principal.display_name(),
            required,
        }
        .into()
    })
}

/// With `logto.organization_id` (`organization`), only its members pass, API clients too: a person's bearer token
/// must have been issued for it (Logto's `organization_id` claim, which Logto puts only in tokens of members), and
/// no token issued for another organization passes. A machine-to-machine app is admitted by the rules that list it
/// (`m2m_apps`), as without the setting.
pub(super) fn admit_to_organization(principal: &Principal, organization: &str) -> Result<(), GateError> {
    let Principal::Bearer(_) = principal else {
        // A session holds an organization token for it, or it would not exist.
        return Ok(());
    };
    match principal.organization() {
        Some(issued_for) if issued_for == organization => Ok(()),
        None if principal.machine().is_some() => Ok(()),
        issued_for => Err(ClientError::Forbidden {
            who: principal.display_name(),
            required: match issued_for {
                Some(other) => {
                    format!("an access token issued for the organization {organization} (this one is for {other})")
                }
                None => format!(
                    "an access token issued for the organization {organization} (with organization_id; this one \
                     is for no organization)"
                ),
            },
        }
        .into()),
    }
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive, RFC 6750 §2.1); `None` for another
/// scheme or none, or `Bearer` without a token.
///
/// Every field an app might read as a bearer token is one here, so that none reaches it unverified. RFC 6750 puts a
/// space between scheme and token, but lenient parsers split on any whitespace (a tab, Unicode's no-break space), so
/// the scheme is the leading run of token characters (RFC 9110 §5.6.2) whatever follows it; a token that is not
/// ASCII text (which no JWT is) is refused as invalid rather than passed on as some other scheme.
pub(super) fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, ClientError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let scheme_end = bytes.iter().position(|b| !is_tchar(b)).unwrap_or(bytes.len());
    if !bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    match bytes[scheme_end..].trim_ascii() {
        [] => Ok(None),
        token => match std::str::from_utf8(token) {
            Ok(token) if token.is_ascii() => Ok(Some(token)),
            _ => Err(ClientError::InvalidToken(
                "the bearer token is not ASCII text".to_owned(),
            )),
        },
    }
}
