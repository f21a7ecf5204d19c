//! Verifying what Logto signed: ID tokens (at sign-in and after a refresh), access tokens sent as `Bearer`, and
//! back-channel logout tokens, against the tenant's keys (fetched again, rate-limited, for an unknown `kid`).

use std::sync::Arc;
use std::time::Instant;

use openidconnect::core::CoreJsonWebKeySet;
use serde_json::{Map, Value};

use super::jwt::{self, IdTokenExpectations, JwtError, TokenKind, UnverifiedJwt};
use super::{Loaded, Oidc, TokenSource, JWKS_REFETCH_COOLDOWN};
use crate::error::{ClientError, GateError, IdpError};

/// How old a back-channel logout token may be; its `jti` is remembered this long to refuse replays.
pub const LOGOUT_TOKEN_MAX_AGE: u64 = 300;

/// Why a token was not accepted: the token itself, or the gate could not check it (Logto unreachable).
#[derive(Debug)]
pub enum TokenError {
    Invalid(JwtError),
    Gate(GateError),
}

impl From<JwtError> for TokenError {
    fn from(e: JwtError) -> Self {
        TokenError::Invalid(e)
    }
}

pub(super) fn reject(e: JwtError) -> GateError {
    ClientError::IdTokenRejected(e.to_string()).into()
}

impl Oidc {
    /// Verifies the ID token of a refresh response: as at sign-in but without a nonce, and for the same subject
    /// (OIDC Core §12.2).
    pub async fn verify_refreshed_id_token(
        &self,
        id_token: &str,
        sub: &str,
        now: u64,
    ) -> Result<Map<String, Value>, TokenError> {
        let loaded = self.ensure_loaded().await.map_err(TokenError::Gate)?;
        let claims = self
            .verify_signature(&loaded, id_token, TokenKind::Id, TokenSource::TokenEndpoint)
            .await?;
        let want = IdTokenExpectations {
            issuer: &self.config.issuer,
            client_id: &self.config.app_id,
            nonce: None,
            now,
            leeway: self.config.clock_leeway,
        };
        jwt::check_id_token_claims(&claims, &want)?;
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(TokenError::Invalid(JwtError::Claim(
                "the refreshed ID token is for another subject".into(),
            )));
        }
        Ok(claims)
    }

    /// Verifies a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6): signature, issuer,
    /// audience, age, `jti`, the logout event, `sub` or `sid`, and no `nonce`. Replay is checked by the caller.
    pub async fn verify_logout_token(&self, token: &str, now: u64) -> Result<Map<String, Value>, TokenError> {
        let loaded = self.ensure_loaded().await.map_err(TokenError::Gate)?;
        let claims = self
            .verify_signature(
                &loaded,
                token,
                TokenKind::Logout,
                TokenSource::Untrusted("a back-channel logout token"),
            )
            .await?;
        jwt::check_logout_token_claims(
            &claims,
            &self.config.issuer,
            &self.config.app_id,
            now,
            LOGOUT_TOKEN_MAX_AGE,
            self.config.clock_leeway,
        )?;
        Ok(claims)
    }

    /// Verifies an ID token (OIDC Core §3.1.3.7) and returns its claims. An unknown `kid` re-fetches the key set
    /// once (Logto rotated its keys), at most once per [`JWKS_REFETCH_COOLDOWN`].
    pub async fn verify_id_token(
        &self,
        loaded: &Loaded,
        id_token: &str,
        nonce: &str,
        now: u64,
    ) -> Result<Map<String, Value>, GateError> {
        let claims = self
            .verify_signature(loaded, id_token, TokenKind::Id, TokenSource::TokenEndpoint)
            .await
            .map_err(|e| match e {
                TokenError::Invalid(e) => reject(e),
                TokenError::Gate(g) => g,
            })?;
        let want = IdTokenExpectations {
            issuer: &self.config.issuer,
            client_id: &self.config.app_id,
            nonce: Some(nonce),
            now,
            leeway: self.config.clock_leeway,
        };
        jwt::check_id_token_claims(&claims, &want).map_err(reject)?;
        Ok(claims)
    }

    /// Checks that a token is typed as `kind` and its signature against Logto's key set, re-fetching that once for
    /// an unknown `kid`. A token of the wrong kind is refused before any key is looked at.
    pub(super) async fn verify_signature(
        &self,
        loaded: &Loaded,
        token: &str,
        kind: TokenKind,
        source: TokenSource,
    ) -> Result<Map<String, Value>, TokenError> {
        let jwt = UnverifiedJwt::parse(token)?;
        jwt.check_kind(kind)?;
        match jwt.verify(&loaded.jwks) {
            Err(JwtError::UnknownKey(kid)) => {
                let jwks = self
                    .refetch_jwks_for_unknown_kid(&kid, source)
                    .await
                    .map_err(|e| match e {
                        GateError::Client(_) => TokenError::Invalid(JwtError::UnknownKey(kid.clone())),
                        other => TokenError::Gate(other),
                    })?;
                Ok(jwt.verify(&jwks)?)
            }
            other => Ok(other?),
        }
    }

    /// Verifies a Logto access token presented as `Authorization: Bearer` (RFC 9068 profile): signature with an
    /// allowed algorithm, `iss`, `exp`/`iat`/`nbf` with leeway, an `aud` naming one of `logto.resources`, a `sub`,
    /// an `act` that names its actor if there is one ([`jwt::actor`]), no `cnf` (a sender-constrained token needs a
    /// proof of possession the gate does not take), and an `organization_id` (a token Logto issued for an
    /// organization) that is a non-empty string if there is one. Access tokens are only JWTs when issued for a
    /// resource, so an opaque token or an ID token never passes.
    pub async fn verify_access_token(&self, token: &str, now: u64) -> Result<Map<String, Value>, TokenError> {
        let loaded = self.ensure_loaded().await.map_err(TokenError::Gate)?;
        let claims = self
            .verify_signature(
                &loaded,
                token,
                TokenKind::Access,
                TokenSource::Untrusted("a bearer token"),
            )
            .await?;
        jwt::check_common_with(&claims, &self.config.issuer, now, self.config.clock_leeway)?;
        let audiences = jwt::audiences(&claims);
        if !self.config.resources.iter().any(|r| audiences.contains(&r.as_str())) {
            return Err(TokenError::Invalid(JwtError::Claim(
                "aud is not one of logto.resources".into(),
            )));
        }
        if !matches!(claims.get("sub"), Some(Value::String(s)) if !s.is_empty()) {
            return Err(TokenError::Invalid(JwtError::Claim("sub is missing".into())));
        }
        jwt::actor(&claims).map_err(TokenError::Invalid)?;
        if claims.contains_key("cnf") {
            // RFC 9449 §7.2, RFC 8705 §3: a token bound to a key (DPoP) or a client certificate is worth nothing
            // without proof of possession, which a bearer token never brings: accepting it as one would let whoever
            // copied it use it.
            return Err(TokenError::Invalid(JwtError::Claim(
                "the token is bound to a key or certificate (cnf), and presented without proof of possession".into(),
            )));
        }
        if claims
            .get("organization_id")
            .is_some_and(|o| o.as_str().is_none_or(str::is_empty))
        {
            return Err(TokenError::Invalid(JwtError::Claim(
                "organization_id is not an organization id".into(),
            )));
        }
        Ok(claims)
    }

    /// The key set with `kid` in it, fetched again if need be. One fetch is in flight at a time and everyone
    /// waiting shares its result. A token from the token endpoint may always cause a fetch (Logto rotated its keys;
    /// only a fetch that finished while it waited answers for it); a token from anyone spends the untrusted budget
    /// ([`JWKS_REFETCH_COOLDOWN`]), which never holds back the token endpoint's.
    pub(super) async fn refetch_jwks_for_unknown_kid(
        &self,
        kid: &str,
        source: TokenSource,
    ) -> Result<Arc<CoreJsonWebKeySet>, GateError> {
        let asked = Instant::now();
        if let TokenSource::Untrusted(kind) = source {
            let mut last = self
                .untrusted_refetch
                .lock()
                .map_err(|_| GateError::Internal("the key-set budget lock is poisoned".into()))?;
            if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_COOLDOWN) {
                tracing::info!(
                    kid,
                    token = kind,
                    "unknown signing key; no re-fetch (the budget for such tokens is spent)"
                );
                return Err(reject(JwtError::UnknownKey(kid.to_owned())));
            }
            *last = Some(asked);
        }
        let mut fetched = self.refetch.lock().await;
        let current = self.loaded().ok_or(IdpError::NotReady)?;
        // Another request may have re-fetched while this one waited for the lock.
        let known = current
            .jwks
            .keys()
            .iter()
            .any(|k| openidconnect::JsonWebKey::key_id(k).is_some_and(|id| id.as_str() == kid));
        if known {
            return Ok(current.jwks.clone());
        }
        if fetched.is_some_and(|t| t > asked) {
            // A fetch that began after this token came in did not find the key: Logto does not have it.
            return Err(reject(JwtError::UnknownKey(kid.to_owned())));
        }
        tracing::info!(
            kid,
            token = source.name(),
            "signed with an unknown key; re-fetching Logto's key set"
        );
        let jwks = Arc::new(self.fetch_jwks(&current.metadata.jwks_uri).await?);
        *fetched = Some(Instant::now());
        self.store(Arc::new(Loaded {
            metadata: current.metadata.clone(),
            jwks: jwks.clone(),
        }));
        Ok(jwks)
    }
}
