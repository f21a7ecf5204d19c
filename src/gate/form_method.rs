//! Phase 2b for the app's requests: the `_method` of a form `POST` ([`policy::form`]). Where the rules decide some
//! method more strictly than the `POST` and the client would be refused it, the body is read (at most
//! `upstream.max_form_method_bytes`, else 413), the request decided again on every method it names, and the read
//! body forwarded as it came. Any other request's body streams through unread.

use std::net::SocketAddr;

use http::{header, Request, Response};
use http_body_util::BodyExt;

use crate::body::paced::{BodyStalled, ClientGone};
use crate::body::Body;
use crate::error::{ClientError, GateError};
use crate::policy::{self, Decision};
use crate::session;

use super::authn::{authorize, Principal};
use super::{request_host, Decided, Gate};

/// What phase 2b leaves for the rest of the request: the identity it goes on with and its decision, or the answer.
pub(super) enum Admitted<'p> {
    Let(Option<Principal>, Decision<'p>),
    Answer(Response<Body>),
}

impl Gate {
    /// Every requirement of `decision` checked for `principal` (403 on the first unmet), then its `max_age`: `Some`
    /// when the sign-in is older, for a step-up challenge (RFC 9470).
    pub(super) fn authorize_all(
        &self,
        principal: &Principal,
        decision: &Decision<'_>,
    ) -> Result<Option<u64>, GateError> {
        let organization = self.config.logto.organization_id.as_deref();
        for requirements in decision.requirements() {
            authorize(principal, requirements, organization)?;
        }
        Ok(self
            .max_age(decision)
            .filter(|m| !principal.signed_in_within(*m, session::now())))
    }

    /// Whether `principal` (`None`: no one signed in) would be let through as `decision` says, without a challenge.
    pub(super) fn meets(&self, principal: Option<&Principal>, decision: &Decision<'_>) -> bool {
        match decision {
            Decision::Deny => false,
            Decision::Public => true,
            Decision::Require(..) => principal.is_some_and(|p| matches!(self.authorize_all(p, decision), Ok(None))),
        }
    }

    /// Whether `principal` (`None`: no one signed in) would be refused one of the stricter decisions a `_method` in
    /// `req`'s body could bring ([`Gate::decide`]): only then is the body read.
    pub(super) fn refused_some_override(
        &self,
        req: &Request<Body>,
        peer: SocketAddr,
        trusted: bool,
        principal: Option<&Principal>,
    ) -> Result<bool, GateError> {
        let (_, stricter) = self.decide_again(req, peer, trusted, None)?;
        Ok(stricter.iter().any(|d| !self.meets(principal, d)))
    }

    /// Reads `req`'s body for its `_method` and decides the request again with the methods it names, admitting
    /// `principal` (authenticated here if the `POST` was public and a named method is not) as the new decision asks;
    /// `decision` (the `POST`'s) stands when it names none. The body goes back into `req`, byte for byte. A body no
    /// framework reads a `_method` from (by its `Content-Type`) is not read.
    pub(super) async fn decide_by_form<'p>(
        &'p self,
        req: &mut Request<Body>,
        peer: SocketAddr,
        trusted: bool,
        principal: Option<Principal>,
        decision: Decision<'p>,
        decided: &mut Decided,
    ) -> Result<Admitted<'p>, GateError> {
        let readings = policy::form::BodyReadings::of(req.headers()).map_err(ClientError::BadRequest)?;
        let Some(readings) = readings else {
            return Ok(Admitted::Let(principal, decision));
        };
        let limit = self.config.upstream.max_form_method_bytes;
        let too_large = || ClientError::FormTooLarge { limit };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large().into());
        }
        let body = std::mem::replace(req.body_mut(), Body::Empty);
        let bytes = match http_body_util::Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if BodyStalled::is_in(&*e) => return Err(ClientError::BodyStalled.into()),
            Err(e) if ClientGone::is_in(&*e) => return Err(ClientError::WentAway.into()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large().into()),
            Err(e) => return Err(ClientError::BadRequest(format!("the request body could not be read: {e}")).into()),
        };
        let mut named = Vec::new();
        readings
            .method_overrides(&bytes, &mut named)
            .map_err(ClientError::BadRequest)?;
        *req.body_mut() = crate::body::full(bytes);
        if named.is_empty() {
            return Ok(Admitted::Let(principal, decision));
        }
        let (decision, _) = self.decide_again(req, peer, trusted, Some(&named))?;
        let principal = match (&decision, principal) {
            (Decision::Deny, _) => return Err(ClientError::RouteDenied.into()),
            (Decision::Public, principal) => principal,
            (Decision::Require(..), Some(principal)) => Some(principal),
            (Decision::Require(..), None) => match self.authenticate(req.headers(), decided).await? {
                Some(principal) => Some(principal),
                None => {
                    let max_age = self.max_age(&decision);
                    return Ok(Admitted::Answer(self.challenge(req, trusted, max_age, false).await?));
                }
            },
        };
        if let Some(principal) = &principal {
            if let Some(max_age) = self.authorize_all(principal, &decision)? {
                return Ok(Admitted::Answer(
                    self.challenge(req, trusted, Some(max_age), true).await?,
                ));
            }
        }
        Ok(Admitted::Let(principal, decision))
    }

    /// [`Gate::decide`] of `req` (with the methods its body names, once read), its rule path and host found again
    /// as phase 1b found them (the path is unchanged until phase 4).
    fn decide_again(
        &self,
        req: &Request<Body>,
        peer: SocketAddr,
        trusted: bool,
        from_body: Option<&[String]>,
    ) -> Result<(Decision<'_>, Vec<Decision<'_>>), GateError> {
        let bad = |e: policy::path::PathError| ClientError::BadRequest(e.to_string());
        let path = policy::path::normalise(req.uri().path(), self.config.server.allow_encoded_slashes).map_err(bad)?;
        let rule_path = policy::path::rule_path(&path, self.config.policy.case_insensitive).map_err(bad)?;
        let host = request_host(req, trusted)?;
        let client = self.client_address(req.headers(), peer, trusted);
        self.decide(req, host, client, &rule_path, from_body)
    }
}
