//! Phase 2b for the app's requests: the `_method` of a form `POST` ([`policy::form`]). Where the rules decide some
//! method more strictly than the `POST` and the client would be refused it, the body is read (at most
//! `upstream.max_form_method_bytes`, else 413; within [`form_deadline`], else 408), the request decided again on
//! every method it names, and the read body forwarded as it came. Any other request's body streams through unread.
//! The bytes held for such bodies at once are bounded for the whole gate and for each client ([`FormBudget`]), so
//! that clients sending forms cannot fill its memory, nor one client take all of it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::paced::{BodyStalled, ClientGone};
use crate::body::Body;
use crate::error::{ClientError, GateError};
use crate::metrics::Metrics;
use crate::policy::{self, Decision};
use crate::session;

use super::authn::{authorize, Principal};
use super::{request_host, Decided, Gate};

/// How many largest forms ([`crate::config::UpstreamConfig::max_form_method_bytes`]) the gate holds at once.
pub(super) const FORMS_AT_ONCE: usize = 16;

/// How many largest forms one [`Holder`] may have held at once: a quarter of the [`FormBudget`], so that one client
/// cannot fill it alone.
pub(super) const FORMS_PER_HOLDER: usize = 4;

/// The bytes held for forms read for `_method`, shared by every request: [`FORMS_AT_ONCE`] largest forms' worth, of
/// which one [`Holder`] may hold [`FORMS_PER_HOLDER`]. A form's bytes take their [`Share`] as they arrive, and keep
/// it until its body has been forwarded (or dropped).
pub(super) struct FormBudget {
    bytes: Arc<Semaphore>,
    per_holder: usize,
    held: Mutex<HashMap<Holder, usize>>,
    /// Where the bytes held are counted for operators (`logto_gate_form_method_bytes_held`).
    metrics: Arc<Metrics>,
}

impl FormBudget {
    pub(super) fn new(upstream: &crate::config::UpstreamConfig, metrics: Arc<Metrics>) -> Arc<FormBudget> {
        let bytes = FORMS_AT_ONCE * upstream.max_form_method_bytes;
        metrics.set_form_bytes_budget(bytes);
        Arc::new(FormBudget {
            bytes: Arc::new(Semaphore::new(bytes)),
            per_holder: FORMS_PER_HOLDER * upstream.max_form_method_bytes,
            held: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// An empty share for `holder`, to grow as a form's bytes arrive.
    fn share(self: &Arc<Self>, holder: Holder) -> Share {
        Share {
            budget: Arc::clone(self),
            holder,
            bytes: 0,
            permit: None,
        }
    }
}

/// Whom a form's bytes are held for: a signed-in person (by `sub`, wherever they send from), or, with no one signed
/// in, the client's address (as `client_ips` rules read it; an IPv6 address by its /64, which one host or home
/// network usually holds whole).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Holder {
    Person(String),
    Address(IpAddr),
}

impl Holder {
    fn of(principal: Option<&Principal>, address: IpAddr) -> Holder {
        if let Some(sub) = principal.and_then(|p| p.claims().get("sub")?.as_str().map(str::to_owned)) {
            return Holder::Person(sub);
        }
        Holder::Address(match address.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
            v4 => v4,
        })
    }
}

/// A form's part of the [`FormBudget`]: grown as its bytes arrive, given back when dropped.
pub(super) struct Share {
    budget: Arc<FormBudget>,
    holder: Holder,
    bytes: usize,
    permit: Option<OwnedSemaphorePermit>,
}

impl Share {
    /// Takes `n` more bytes: refused (nothing taken) when its holder holds its part already (429), or the whole
    /// budget is taken (503).
    fn take(&mut self, n: usize) -> Result<(), ClientError> {
        let mut held = self.budget.held.lock().unwrap_or_else(PoisonError::into_inner);
        let holds = held.get(&self.holder).copied().unwrap_or(0);
        if holds + n > self.budget.per_holder {
            return Err(ClientError::TooManyForms);
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|n| Arc::clone(&self.budget.bytes).try_acquire_many_owned(n).ok())
            .ok_or(ClientError::FormsBusy)?;
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        held.insert(self.holder.clone(), holds + n);
        self.bytes += n;
        self.budget.metrics.form_bytes_taken(n);
        Ok(())
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.budget.metrics.form_bytes_given_back(self.bytes);
        let mut held = self.budget.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(holds) = held.get_mut(&self.holder) {
            *holds = holds.saturating_sub(self.bytes);
            if *holds == 0 {
                held.remove(&self.holder);
            }
        }
    }
}

/// The slowest average rate, in bytes per second, at which a form read for `_method` may arrive beyond
/// `server.header_read_timeout` ([`form_deadline`]).
pub(super) const FORM_MIN_RATE: usize = 32 * 1024;

/// How long a form read for `_method` may take to arrive whole: `server.header_read_timeout` (a form is read before
/// the rules can decide, as a head is), and a second more for each [`FORM_MIN_RATE`] bytes of
/// `upstream.max_form_method_bytes` (62 s with the defaults). Its [`Share`] of the budget is held meanwhile; without
/// a bound, a client sending a byte now and then (each within `server.idle_timeout`) kept it for ever, and sixteen
/// such clients left no room for anyone's form.
pub(super) fn form_deadline(config: &crate::config::Config) -> std::time::Duration {
    let size = config.upstream.max_form_method_bytes as f64 / FORM_MIN_RATE as f64;
    config.server.header_read_timeout + std::time::Duration::from_secs_f64(size)
}

/// The ways frameworks read a `_method` from a body with these request fields ([`policy::form::BodyReadings::of`]),
/// its refusals as the client's errors: 400 for an ambiguous type, 415 for a coding or charset the gate does not read.
fn body_readings(headers: &http::HeaderMap) -> Result<Option<policy::form::BodyReadings>, ClientError> {
    policy::form::BodyReadings::of(headers).map_err(|refusal| match refusal {
        policy::form::Refusal::Ambiguous(text) => ClientError::BadRequest(text),
        unsupported => ClientError::FormUnsupported {
            coding: matches!(unsupported, policy::form::Refusal::Coding(_)),
            reason: unsupported.to_string(),
        },
    })
}

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

    /// Whether `req`'s body could name a method the rules decide otherwise: a `POST`, with
    /// `upstream.read_form_method`, under rules of which one names methods. Cheap, for every request; only then is
    /// [`Gate::refused_some_override`] asked.
    pub(super) fn form_may_decide(&self, req: &Request<Body>) -> bool {
        req.method() == http::Method::POST
            && self.config.upstream.read_form_method
            && self.config.policy.rules.iter().any(|r| r.methods.is_some())
    }

    /// Whether `principal` (`None`: no one signed in) would be refused one of the stricter decisions a `_method` in
    /// `req`'s body could bring ([`policy::Policy::stricter_overrides`]): only then is the body read.
    pub(super) fn refused_some_override(
        &self,
        req: &Request<Body>,
        peer: SocketAddr,
        trusted: bool,
        principal: Option<&Principal>,
    ) -> Result<bool, GateError> {
        let overrides = self.overrides(req, &[])?;
        let policy = &self.config.policy;
        self.with_rule_inputs(req, peer, trusted, |host, client, rule_path| {
            let decision = policy.decide("POST", &overrides, host, client, rule_path);
            let stricter = policy.stricter_overrides(&decision, &overrides, host, client, rule_path);
            Ok(stricter.iter().any(|d| !self.meets(principal, d)))
        })
    }

    /// Forward-auth's part of phase 2b: the proxy asking passes a `POST`'s body on to the app and sends the gate
    /// none, so a `_method` in it cannot be read. Where the rules decide a method the body could name more strictly
    /// than the `POST` ([`policy::Policy::stricter_overrides`]) and `principal` (`None`: no one signed in) would be
    /// refused it, and `headers` give the body a type some framework reads a `_method` from
    /// ([`policy::form::BodyReadings`]), the first such decision, for the `POST` to be answered as it would be;
    /// `None` when nothing a body could name changes the answer, or `upstream.read_form_method = false` says the app
    /// reads none.
    pub(super) fn unseen_form_method<'p>(
        &'p self,
        method: &str,
        headers: &http::HeaderMap,
        overrides: &[String],
        decision: &Decision<'p>,
        (host, client, rule_path): (Option<&str>, Option<IpAddr>, &str),
        principal: Option<&Principal>,
    ) -> Result<Option<Decision<'p>>, GateError> {
        let policy = &self.config.policy;
        if !method.eq_ignore_ascii_case("POST")
            || !self.config.upstream.read_form_method
            || !policy.rules.iter().any(|r| r.methods.is_some())
        {
            return Ok(None);
        }
        let Some(refused) = policy
            .stricter_overrides(decision, overrides, host, client, rule_path)
            .into_iter()
            .find(|d| !self.meets(principal, d))
        else {
            return Ok(None);
        };
        let readings = body_readings(headers)?;
        Ok(readings.map(|_| refused))
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
        let readings = body_readings(req.headers())?;
        let Some(readings) = readings else {
            return Ok(Admitted::Let(principal, decision));
        };
        let limit = self.config.upstream.max_form_method_bytes;
        // Told by its length before a byte is read, where it has one.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ClientError::FormTooLarge { limit }.into());
        }
        let address = policy::client_address(req.headers(), peer.ip(), trusted, &self.config.server.trusted_proxies);
        let share = self
            .form_budget
            .share(Holder::of(principal.as_ref(), address.unwrap_or(peer.ip())));
        let (bytes, share) = self.read_within_budget(req, limit, share).await?;
        let mut named = Vec::new();
        readings
            .method_overrides(&bytes, &mut named)
            .map_err(ClientError::BadRequest)?;
        *req.body_mut() = holding(bytes, share);
        if named.is_empty() {
            return Ok(Admitted::Let(principal, decision));
        }
        let decision = self.with_rule_inputs(req, peer, trusted, |host, client, rule_path| {
            self.decide(req, host, client, rule_path, &named)
        })?;
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

    /// `req`'s body, read whole (at most `limit` bytes, else 413; within [`form_deadline`], else 408), and its
    /// `share` of the [`FormBudget`], grown as its bytes arrive (429 when its holder's part runs out, 503 when the
    /// whole budget does), so that a client that sends slowly holds only what it sent, and not for longer than its
    /// deadline.
    async fn read_within_budget(
        &self,
        req: &mut Request<Body>,
        limit: usize,
        mut share: Share,
    ) -> Result<(Bytes, Share), GateError> {
        let mut body = std::mem::replace(req.body_mut(), Body::Empty);
        let mut bytes = BytesMut::new();
        let within = form_deadline(&self.config);
        let deadline = tokio::time::Instant::now() + within;
        while let Some(frame) = crate::deadlines::timeout_at(deadline, || body.frame())
            .await
            .map_err(|_| ClientError::FormTooSlow { within })?
        {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) if BodyStalled::is_in(&*e) => return Err(ClientError::BodyStalled.into()),
                Err(e) if ClientGone::is_in(&*e) => return Err(ClientError::WentAway.into()),
                Err(e) => {
                    return Err(ClientError::BadRequest(format!("the request body could not be read: {e}")).into())
                }
            };
            // Trailer fields are never passed on (`crate::proxy`): only the data counts.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > limit {
                return Err(ClientError::FormTooLarge { limit }.into());
            }
            share.take(data.len())?;
            bytes.extend_from_slice(&data);
        }
        Ok((bytes.freeze(), share))
    }

    /// `f` of what the rules read of `req` (its host, client address and rule path), found again as phase 1b found
    /// them (the path is unchanged until phase 4).
    fn with_rule_inputs<T>(
        &self,
        req: &Request<Body>,
        peer: SocketAddr,
        trusted: bool,
        f: impl FnOnce(Option<&str>, Option<std::net::IpAddr>, &str) -> Result<T, GateError>,
    ) -> Result<T, GateError> {
        let bad = |e: policy::path::PathError| ClientError::BadRequest(e.to_string());
        let path = policy::path::normalise(req.uri().path(), self.config.server.allow_encoded_slashes).map_err(bad)?;
        let rule_path = policy::path::rule_path(&path, self.config.policy.case_insensitive).map_err(bad)?;
        let host = request_host(req, trusted)?;
        f(host, self.client_address(req.headers(), peer, trusted), &rule_path)
    }
}

/// `bytes` as a request body that keeps `share` (its part of the [`FormBudget`]) until it is dropped.
fn holding(bytes: Bytes, share: Share) -> Body {
    let body = Full::new(bytes)
        .map_err(|never| match never {})
        .map_frame(move |frame| {
            let _kept = &share;
            frame
        });
    Body::Boxed(body.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(a: &str) -> Holder {
        Holder::of(None, a.parse().unwrap())
    }

    #[test]
    fn an_address_holds_as_one_host_does() {
        assert_eq!(address("2001:db8::1"), address("2001:db8::ffff:1"));
        assert_ne!(address("2001:db8::1"), address("2001:db8:0:1::1"));
        assert_eq!(address("::ffff:10.0.0.1"), address("10.0.0.1"));
        assert_ne!(address("10.0.0.1"), address("10.0.0.2"));
    }

    #[test]
    fn a_share_is_taken_within_its_holders_part_and_given_back_when_dropped() {
        let metrics = Arc::new(Metrics::default());
        let budget = Arc::new(FormBudget {
            bytes: Arc::new(Semaphore::new(100)),
            per_holder: 40,
            held: Mutex::new(HashMap::new()),
            metrics: Arc::clone(&metrics),
        });
        let mut first = budget.share(address("10.0.0.1"));
        first.take(30).unwrap();
        let mut second = budget.share(address("10.0.0.1"));
        assert!(matches!(second.take(11), Err(ClientError::TooManyForms)));
        second.take(10).unwrap();
        let mut other = budget.share(address("10.0.0.2"));
        other.take(40).unwrap();
        let mut third = budget.share(address("10.0.0.3"));
        assert!(matches!(third.take(21), Err(ClientError::FormsBusy)));
        drop(first);
        third.take(21).unwrap();
        drop((second, other, third));
        assert!(budget.held.lock().unwrap().is_empty());
        assert_eq!(budget.bytes.available_permits(), 100);
        assert!(metrics.render().contains("logto_gate_form_method_bytes_held 0\n"));
    }
}
