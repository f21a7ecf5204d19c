//! Errors typed by where they come from. The source decides the status code, once, here:
//! the client (4xx), the upstream app (502/504), the identity provider (502/503), or the gate itself (500).

use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;

use crate::pages::Page;
use crate::routes::paths;

/// The status logged for a request whose client went away before its answer (nginx's "client closed request", not
/// an HTTP status code: it is never sent).
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("client: {0}")]
    Client(#[from] ClientError),
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("identity provider: {0}")]
    Idp(#[from] IdpError),
    #[error("session store: {0}")]
    Store(#[from] crate::session::redis_store::StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

/// The request or the person's browser did something the gate refuses.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("no matching sign-in attempt (expired, already used, or forged state)")]
    AttemptNotFound,
    #[error("the authorization response names issuer {0:?}, not ours (RFC 9207)")]
    IssuerMismatch(String),
    #[error("Logto refused the sign-in: {error}")]
    SignInDenied { error: String, description: String },
    #[error("the authorization code was refused: {0}")]
    CodeRejected(String),
    #[error("the ID token was refused: {0}")]
    IdTokenRejected(String),
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    #[error("{who} lacks {required}")]
    Forbidden { who: String, required: String },
    #[error("the route is closed by policy")]
    RouteDenied,
    #[error("not found")]
    NotFound,
    /// The request's method is not one the page takes (RFC 9110 §15.5.6): `allow` lists those it does, for the
    /// `Allow` field; empty for a TRACE, which the gate passes to no app.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// The client stopped sending its request body for `server.idle_timeout` (RFC 9110 §15.5.9: 408). Logged and
    /// counted; nothing is sent ([`crate::body::paced`]), as nginx does on `client_body_timeout`.
    #[error("the client stopped sending the request body")]
    BodyStalled,
    /// The client went away in the middle of its request body (its connection closed or failed, its HTTP/2 stream
    /// reset): logged and counted as 499 ([`CLIENT_CLOSED_REQUEST`]); nothing is sent ([`crate::body::paced`]).
    #[error("the client went away in the middle of the request body")]
    WentAway,
    /// A form `POST` whose body the gate reads for its `_method` ([`crate::policy::form`]) is larger than
    /// `upstream.max_form_method_bytes` (RFC 9110 §15.5.14: 413).
    #[error(
        "the form is larger than upstream.max_form_method_bytes ({limit} bytes), the most the gate reads for a \
         _method field where the rules tell methods apart"
    )]
    FormTooLarge { limit: usize },
    /// The gate holds as many forms read for `_method` as it may at once (`gate::form_method::budget`): 503, for the
    /// client to try again shortly.
    #[error("the gate holds as many forms read for _method as it may at once; try again shortly")]
    FormsBusy,
    /// One client (a signed-in person, or an address) holds as many forms read for `_method` as one may at once
    /// (`gate::form_method::FORMS_PER_HOLDER`): RFC 6585 §4, 429.
    #[error("this client holds as many forms read for _method as one client may at once; try again shortly")]
    TooManyForms,
    /// A form `POST` whose body the gate reads for its `_method` did not arrive whole `within` the time its size
    /// allows (`gate::form_method::form_deadline`; RFC 9110 §15.5.9: 408), so that a client trickling it cannot hold
    /// its share of the forms' budget for ever.
    #[error("the form read for its _method did not arrive within {within:?}")]
    FormTooSlow { within: std::time::Duration },
    /// A form `POST` whose body the gate reads for its `_method` is in a content coding or a charset it does not
    /// read (`policy::form::Refusal`; RFC 9110 §15.5.16: 415, with `Accept-Encoding: identity` for a coding, RFC 7694
    /// §3). `coding`: refused for its `Content-Encoding`, else for its charset; `reason`: what the log says.
    #[error("{reason}")]
    FormUnsupported { coding: bool, reason: String },
    /// Forward-auth asked about a `POST` whose body may hold a `_method` naming a method the rules refuse this client
    /// (`gate::form_method`), and the asking proxy, which passes the body on to the app, sends the gate none to read
    /// it from: 403, as that method would get.
    #[error(
        "this POST's body may name another method in a _method field (Rails, Laravel, Symfony and Express read one), \
         which the rules refuse this client, and forward-auth is sent no body to read it from; \
         set upstream.read_form_method = false if the app reads none"
    )]
    FormMethodUnseen,
    /// A request body in a transfer coding the gate does not decode (RFC 9112 §6.1: 501); the value as sent.
    #[error("the request's Transfer-Encoding is {0:?}; only chunked alone is implemented")]
    UnsupportedCoding(String),
}

/// The upstream app could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// It answered with a response the gate will not pass on (ambiguous framing, a malformed head).
    #[error("invalid response: {0}")]
    BadResponse(String),
}

impl From<crate::http1::client::UpstreamError> for UpstreamError {
    fn from(e: crate::http1::client::UpstreamError) -> Self {
        match e {
            crate::http1::client::UpstreamError::Unreachable(text) => UpstreamError::Unreachable(text),
            crate::http1::client::UpstreamError::BadResponse(text) => UpstreamError::BadResponse(text),
        }
    }
}

/// Logto (the identity provider) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("discovery document and signing keys not loaded yet")]
    NotReady,
    #[error("the app's credentials were refused (invalid_client): check logto.app_id and logto.app_secret")]
    InvalidClient,
    /// Logto's answer for an app secret past the expiry set in the console.
    #[error(
        "the app secret has expired in Logto (invalid_request: client secret has expired): put a current secret in \
         logto.app_secret or logto.app_secret_file"
    )]
    SecretExpired,
    #[error("unexpected answer: {0}")]
    BadResponse(String),
    /// Logto's configuration keeps sign-in from working; the text says what and how to fix it.
    #[error("Logto's configuration prevents sign-in: {0}")]
    Misconfigured(String),
}

impl GateError {
    pub fn status(&self) -> StatusCode {
        match self {
            GateError::Client(c) => match c {
                ClientError::BadRequest(_)
                | ClientError::AttemptNotFound
                | ClientError::IssuerMismatch(_)
                | ClientError::CodeRejected(_) => StatusCode::BAD_REQUEST,
                ClientError::SignInDenied { .. } => StatusCode::FORBIDDEN,
                ClientError::IdTokenRejected(_) | ClientError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
                ClientError::Forbidden { .. } | ClientError::RouteDenied | ClientError::FormMethodUnseen => {
                    StatusCode::FORBIDDEN
                }
                ClientError::NotFound => StatusCode::NOT_FOUND,
                ClientError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
                ClientError::UnsupportedCoding(_) => StatusCode::NOT_IMPLEMENTED,
                ClientError::FormTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ClientError::FormUnsupported { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ClientError::FormsBusy => StatusCode::SERVICE_UNAVAILABLE,
                ClientError::TooManyForms => StatusCode::TOO_MANY_REQUESTS,
                ClientError::FormTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
                ClientError::BodyStalled => StatusCode::REQUEST_TIMEOUT,
                ClientError::WentAway => StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST),
            },
            GateError::Upstream(UpstreamError::Unreachable(_) | UpstreamError::BadResponse(_)) => {
                StatusCode::BAD_GATEWAY
            }
            GateError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            GateError::Idp(IdpError::Unreachable(_) | IdpError::NotReady) => StatusCode::SERVICE_UNAVAILABLE,
            GateError::Idp(
                IdpError::InvalidClient
                | IdpError::SecretExpired
                | IdpError::BadResponse(_)
                | IdpError::Misconfigured(_),
            ) => StatusCode::BAD_GATEWAY,
            GateError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            GateError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The field the answer carries besides the page, where the status calls for one: `WWW-Authenticate` for a
    /// bearer token refused (RFC 6750 §3), `Allow` for a 405 (RFC 9110 §15.5.6), `Accept-Encoding` for a body
    /// refused for its content coding (RFC 7694 §3).
    pub fn answer_field(&self) -> Option<(HeaderName, HeaderValue)> {
        match self {
            GateError::Client(ClientError::InvalidToken(_)) => Some((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"logto-gate\", error=\"invalid_token\""),
            )),
            GateError::Client(ClientError::MethodNotAllowed { allow }) if !allow.is_empty() => {
                Some((header::ALLOW, HeaderValue::from_static(allow)))
            }
            GateError::Client(ClientError::FormUnsupported { coding: true, .. }) => {
                Some((header::ACCEPT_ENCODING, HeaderValue::from_static("identity")))
            }
            _ => None,
        }
    }

    /// Where the error came from, for logs and metrics.
    pub fn source_name(&self) -> &'static str {
        match self {
            GateError::Client(_) => "client",
            GateError::Upstream(_) => "upstream",
            GateError::Idp(_) => "idp",
            GateError::Store(_) => "store",
            GateError::Internal(_) => "internal",
        }
    }

    /// The page shown for this error. It says what happened in words a person understands and never echoes
    /// secrets; details beyond that go to the log.
    pub fn page(&self) -> Page {
        let status = self.status();
        let retry = |p: Page| p.with_link(paths::SIGN_IN, "Sign in again");
        match self {
            GateError::Client(c) => match c {
                ClientError::BadRequest(m) => Page::new(status, "bad_request", "Bad request", m.clone()),
                ClientError::AttemptNotFound => retry(Page::new(
                    status,
                    "sign_in_expired",
                    "Sign-in expired",
                    "This sign-in link has expired, was already used, or was not started in this browser.",
                )),
                ClientError::IssuerMismatch(_) => retry(Page::new(
                    status,
                    "issuer_mismatch",
                    "Sign-in refused",
                    "The sign-in answer did not come from the configured Logto tenant.",
                )),
                ClientError::SignInDenied { error, description } => {
                    let detail = if description.is_empty() {
                        error.clone()
                    } else {
                        format!("{error}: {description}")
                    };
                    retry(Page::new(
                        status,
                        "sign_in_denied",
                        "Sign-in was not completed",
                        format!("Logto answered: {detail}"),
                    ))
                }
                ClientError::CodeRejected(_) => retry(Page::new(
                    status,
                    "invalid_grant",
                    "Sign-in expired",
                    "The sign-in code was already used or has expired.",
                )),
                ClientError::IdTokenRejected(_) => retry(Page::new(
                    status,
                    "invalid_id_token",
                    "Sign-in refused",
                    "The identity token from Logto could not be verified.",
                )),
                ClientError::InvalidToken(_) => Page::new(
                    status,
                    "invalid_token",
                    "Invalid access token",
                    "The bearer token is not a valid, unexpired Logto access token for this API.",
                ),
                ClientError::Forbidden { who, required } => Page::new(
                    status,
                    "forbidden",
                    "Access denied",
                    format!("You are signed in as {who}, but this page requires {required}."),
                )
                .with_link(paths::SIGN_OUT, "Sign out and use another account"),
                ClientError::RouteDenied => Page::new(
                    status,
                    "forbidden",
                    "Access denied",
                    "This page is not available through the gate.",
                ),
                ClientError::NotFound => Page::new(status, "not_found", "Not found", "The gate has no such page."),
                ClientError::MethodNotAllowed { allow: "" } => Page::new(
                    status,
                    "method_not_allowed",
                    "Method not allowed",
                    "The gate passes no TRACE request on: the app's echo would show what the gate adds.",
                ),
                ClientError::MethodNotAllowed { allow } => Page::new(
                    status,
                    "method_not_allowed",
                    "Method not allowed",
                    format!("This gate page takes only {allow}."),
                ),
                ClientError::UnsupportedCoding(_) => Page::new(
                    status,
                    "unsupported_transfer_coding",
                    "Transfer coding not supported",
                    "The gate accepts request bodies sent with a length or chunked, and in no other transfer coding.",
                ),
                ClientError::FormTooLarge { limit } => Page::new(
                    status,
                    "form_too_large",
                    "Form too large",
                    format!(
                        "This form is larger than the {limit} bytes the gate reads to check which action it asks for."
                    ),
                ),
                // The coding or charset as sent goes to the log only.
                ClientError::FormUnsupported { coding: true, .. } => Page::new(
                    status,
                    "form_encoded",
                    "Form not readable",
                    "This form was sent compressed. The gate reads forms only as sent uncompressed to check which \
                     action they ask for.",
                ),
                ClientError::FormUnsupported { .. } => Page::new(
                    status,
                    "form_charset",
                    "Form not readable",
                    "This form was sent in a character set the gate does not read to check which action it asks \
                     for. Send it in UTF-8.",
                ),
                ClientError::FormMethodUnseen => Page::new(
                    status,
                    "forbidden",
                    "Access denied",
                    "This form may ask the app for an action you are not allowed, and the gate cannot read it here \
                     to tell.",
                ),
                ClientError::FormsBusy => Page::new(
                    status,
                    "busy",
                    "Busy",
                    "Too many forms are being sent through the gate at once. Try again in a moment.",
                ),
                ClientError::TooManyForms => Page::new(
                    status,
                    "too_many_forms",
                    "Too many forms",
                    "You are sending more forms through the gate at once than it takes from one person. Wait for them \
                     to finish, then try again.",
                ),
                ClientError::FormTooSlow { within } => Page::new(
                    status,
                    "request_timeout",
                    "Request timed out",
                    format!(
                        "This form did not arrive within the {} seconds the gate waits for it to check which action \
                         it asks for.",
                        within.as_secs()
                    ),
                ),
                ClientError::BodyStalled => Page::new(
                    status,
                    "request_timeout",
                    "Request timed out",
                    "The request body stopped arriving before its end.",
                ),
                ClientError::WentAway => Page::new(
                    status,
                    "client_closed_request",
                    "Request ended early",
                    "The connection ended before the request body did.",
                ),
            },
            GateError::Upstream(UpstreamError::Unreachable(_)) => Page::new(
                status,
                "upstream_unreachable",
                "The application is unreachable",
                "The gate could not reach the application behind it. Try again in a moment.",
            ),
            GateError::Upstream(UpstreamError::BadResponse(_)) => Page::new(
                status,
                "upstream_bad_response",
                "The application's answer could not be passed on",
                "The application behind the gate sent a response the gate does not forward. Try again in a moment.",
            ),
            GateError::Upstream(UpstreamError::Timeout(_)) => Page::new(
                status,
                "upstream_timeout",
                "The application did not answer in time",
                "The application behind the gate took too long to answer. Try again in a moment.",
            ),
            GateError::Idp(IdpError::Unreachable(_) | IdpError::NotReady) => retry(Page::new(
                status,
                "idp_unreachable",
                "Logto is unreachable",
                "Signing in is not possible right now because Logto cannot be reached. Try again in a moment.",
            )),
            GateError::Idp(IdpError::Misconfigured(why)) => Page::new(
                status,
                "idp_misconfigured",
                "Sign-in is not set up correctly",
                format!("Logto's configuration keeps this gate from signing you in: {why}."),
            ),
            GateError::Idp(_) => Page::new(
                status,
                "idp_error",
                "Sign-in failed",
                "Logto gave an answer the gate cannot use. The operator will find details in the gate's log.",
            ),
            GateError::Store(_) => Page::new(
                status,
                "session_store_unavailable",
                "Sessions are unavailable",
                "The gate cannot reach its session store right now. Try again in a moment.",
            ),
            GateError::Internal(_) => Page::new(
                status,
                "internal_error",
                "Internal error",
                "Something went wrong inside the gate. The operator will find details in the log.",
            ),
        }
    }
}

/// An error with its causes, for logs ("client error (Connect): tcp connect error: Connection refused").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_decided_by_source() {
        let cases: Vec<(GateError, u16)> = vec![
            (ClientError::AttemptNotFound.into(), 400),
            (ClientError::IdTokenRejected("x".into()).into(), 401),
            (ClientError::UnsupportedCoding("gzip, chunked".into()).into(), 501),
            (ClientError::BodyStalled.into(), 408),
            (ClientError::FormTooLarge { limit: 4096 }.into(), 413),
            (ClientError::FormsBusy.into(), 503),
            (
                ClientError::FormUnsupported {
                    coding: true,
                    reason: "gzip".into(),
                }
                .into(),
                415,
            ),
            (
                ClientError::FormUnsupported {
                    coding: false,
                    reason: "utf-7".into(),
                }
                .into(),
                415,
            ),
            (ClientError::TooManyForms.into(), 429),
            (
                ClientError::FormTooSlow {
                    within: std::time::Duration::from_secs(62),
                }
                .into(),
                408,
            ),
            (ClientError::WentAway.into(), 499),
            (UpstreamError::Unreachable("x".into()).into(), 502),
            (UpstreamError::BadResponse("x".into()).into(), 502),
            (UpstreamError::Timeout(std::time::Duration::from_secs(1)).into(), 504),
            (IdpError::Unreachable("x".into()).into(), 503),
            (IdpError::InvalidClient.into(), 502),
            (IdpError::SecretExpired.into(), 502),
            (GateError::Internal("x".into()), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.page().status.as_u16(), status);
        }
    }
}
