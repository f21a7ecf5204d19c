//! JWT (RFC 7519) signature and claim checks for tokens Logto signs: ID tokens now, access and logout tokens later.
//!
//! Signatures are checked with the provider's JWKS through `openidconnect`'s key types. The algorithm is pinned to
//! an allow-list taken from the header only after the list says yes: `none` and every HMAC algorithm are refused
//! whatever the header claims (RFC 8725 §3.1-3.2), so a token "signed" with the client secret or not at all never
//! passes. Keys are never taken from the token itself (`jwk`, `jku`, `x5u` are ignored) and tokens with `crit`
//! extensions are refused (RFC 7515 §4.1.11). The `typ` header must fit the kind of token expected ([`TokenKind`],
//! RFC 8725 §3.11), so an access token is never taken for an ID or logout token, nor the other way round. Claims
//! are read as plain JSON, so Logto's `null` claims and millisecond timestamps (`updated_at`, `created_at`) parse
//! and are never interpreted.

use base64::Engine;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Signature algorithms accepted: Logto's default ES384 (EC P-384 keys), RS256 after a rotation to RSA, and the
/// other two asymmetric algorithms a Logto-compatible provider may use.
pub const ALLOWED_ALGS: [&str; 4] = ["ES384", "RS256", "ES256", "PS256"];

/// Clock leeway for `exp`, `iat` and `nbf` unless `logto.clock_leeway` says otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The largest token accepted (Logto's ID tokens are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("no key with kid {0:?} in the key set")]
    UnknownKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("claim check failed: {0}")]
    Claim(String),
    #[error("wrong token type: {0}")]
    Type(String),
}

/// The kind of token a verifier expects, checked against the `typ` header (explicit typing, RFC 8725 §3.11) so
/// that no token Logto signs for one purpose passes for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An ID token: untyped or `JWT` (OpenID Connect Core defines no type for it; Logto sends none).
    Id,
    /// A JWT access token: `typ` MUST be `at+jwt` (RFC 9068 §4; Logto's resource, organization and
    /// machine-to-machine tokens all are).
    Access,
    /// A back-channel logout token: `logout+jwt` as Logto sends it, or untyped (Back-Channel Logout 1.0 §2.4 only
    /// recommends the type).
    Logout,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Id => "an ID token",
            TokenKind::Access => "an access token",
            TokenKind::Logout => "a logout token",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
    #[serde(default)]
    typ: Option<Value>,
}

/// A token split into its parts; nothing in it is trusted yet.
#[derive(Debug)]
pub struct UnverifiedJwt<'a> {
    alg: CoreJwsSigningAlgorithm,
    kid: Option<String>,
    typ: Option<String>,
    signing_input: &'a str,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed("a part is not base64url"))
}

fn pinned_alg(alg: &str) -> Result<CoreJwsSigningAlgorithm, JwtError> {
    match alg {
        "ES384" => Ok(CoreJwsSigningAlgorithm::EcdsaP384Sha384),
        "RS256" => Ok(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256),
        "ES256" => Ok(CoreJwsSigningAlgorithm::EcdsaP256Sha256),
        "PS256" => Ok(CoreJwsSigningAlgorithm::RsaSsaPssSha256),
        other => Err(JwtError::AlgorithmNotAllowed(other.chars().take(32).collect())),
    }
}

impl<'a> UnverifiedJwt<'a> {
    pub fn parse(token: &'a str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed("token too large"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed("not three dot-separated parts (JWS compact form)"));
        };
        let header: Header =
            serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
        if header.crit.is_some() {
            return Err(JwtError::Malformed("critical header extensions are not supported"));
        }
        let alg = pinned_alg(&header.alg)?;
        let typ = match header.typ {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t),
            Some(_) => return Err(JwtError::Malformed("typ is not a string")),
        };
        let signature = b64(s)?;
        if signature.is_empty() {
            return Err(JwtError::Malformed("empty signature"));
        }
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(UnverifiedJwt {
            alg,
            kid: header.kid,
            typ,
            signing_input,
            signature,
            payload: b64(p)?,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Refuses a token whose `typ` header says it is not of `kind`. Types compare case-insensitively, with or
    /// without `application/` (RFC 7515 §4.1.9). An access token must say `at+jwt` (RFC 9068 §4). Every explicit
    /// JWT type ends in `+jwt` (RFC 8725 §3.11), so an ID token with any such type, or a logout token with one other
    /// than `logout+jwt`, was signed for something else.
    pub fn check_kind(&self, kind: TokenKind) -> Result<(), JwtError> {
        let lower = self.typ.as_deref().map(str::to_ascii_lowercase);
        let typ = lower.as_deref().map(|t| t.strip_prefix("application/").unwrap_or(t));
        let shown = || {
            self.typ.as_deref().map_or("no typ".to_owned(), |t| {
                format!("typ {:?}", t.chars().take(64).collect::<String>())
            })
        };
        let fits = match kind {
            TokenKind::Access => typ == Some("at+jwt"),
            TokenKind::Id => !typ.is_some_and(|t| t.ends_with("+jwt")),
            TokenKind::Logout => !typ.is_some_and(|t| t.ends_with("+jwt") && t != "logout+jwt"),
        };
        if fits {
            return Ok(());
        }
        Err(JwtError::Type(match kind {
            TokenKind::Access => format!("{} must be typed at+jwt (RFC 9068 §4), not {}", kind.name(), shown()),
            _ => format!("{} marks another kind of token, not {}", shown(), kind.name()),
        }))
    }

    /// Verifies the signature with a key from `jwks` and returns the claims.
    ///
    /// With a `kid`, only keys with that id are tried, and [`JwtError::UnknownKey`] tells the caller the key set
    /// may be stale (Logto rotated its keys). Without a `kid`, every key that suits the algorithm is tried.
    pub fn verify(&self, jwks: &CoreJsonWebKeySet) -> Result<Map<String, Value>, JwtError> {
        let candidates: Vec<_> = jwks
            .keys()
            .iter()
            .filter(|k| match (&self.kid, k.key_id()) {
                (Some(want), Some(have)) => have.as_str() == want,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .filter(|k| match k.signing_alg() {
                JsonWebKeyAlgorithm::Algorithm(a) => *a == self.alg,
                JsonWebKeyAlgorithm::Unspecified => true,
                JsonWebKeyAlgorithm::Unsupported => false,
            })
            .collect();
        if candidates.is_empty() {
            if let Some(kid) = &self.kid {
                if !jwks
                    .keys()
                    .iter()
                    .any(|k| k.key_id().is_some_and(|id| id.as_str() == kid))
                {
                    return Err(JwtError::UnknownKey(kid.chars().take(64).collect()));
                }
            }
            return Err(JwtError::BadSignature);
        }
        let verified = candidates.iter().any(|key| {
            key.verify_signature(&self.alg, self.signing_input.as_bytes(), &self.signature)
                .is_ok()
        });
        if !verified {
            return Err(JwtError::BadSignature);
        }
        match serde_json::from_slice::<Value>(&self.payload) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(JwtError::Malformed("payload is not a JSON object")),
        }
    }
}

/// What an ID token must say (OIDC Core §3.1.3.7).
#[derive(Debug)]
pub struct IdTokenExpectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The sign-in attempt's nonce; `None` for an ID token from a refresh (OIDC Core §12.2: no nonce there).
    pub nonce: Option<&'a str>,
    pub now: u64,
    /// Clock leeway in seconds (`logto.clock_leeway`).
    pub leeway: u64,
}

/// A verified token's `exp` (seconds since the epoch, RFC 7519 §4.1.4), if it has a valid one.
pub fn expires_at(claims: &Map<String, Value>) -> Option<u64> {
    number(claims, "exp").ok().flatten()
}

/// The token's audiences (RFC 7519 §4.1.3: one string, or an array of them).
pub fn audiences(claims: &Map<String, Value>) -> Vec<&str> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Who acts for the token's subject (RFC 8693 §4.1): the `sub` of its `act` claim, `None` without one. Logto's
/// user impersonation puts `act: {"sub": "<actor's user id>"}` in the access token it exchanges for a subject token
/// when the exchange names an actor token. A nested `act` names earlier actors of a delegation chain, which the RFC
/// keeps for information only; the outer one is who acts now.
///
/// An `act` that is not an object, or whose `sub` is not a non-empty string a header can carry (visible ASCII, at
/// most 255 bytes), is an error: a token that says someone else acts without saying who cannot be passed on as the
/// subject's own.
pub fn actor(claims: &Map<String, Value>) -> Result<Option<&str>, JwtError> {
    let Some(act) = claims.get("act") else {
        return Ok(None);
    };
    let sub = act
        .as_object()
        .ok_or_else(|| JwtError::Claim("act is not an object".into()))?
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Claim("act has no sub naming the actor".into()))?;
    let printable = sub.bytes().all(|b| b.is_ascii_graphic());
    if sub.is_empty() || sub.len() > 255 || !printable {
        return Err(JwtError::Claim(
            "act.sub is not an identifier (1 to 255 visible ASCII characters)".into(),
        ));
    }
    Ok(Some(sub))
}

fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| JwtError::Claim(format!("{name} is not a positive number"))),
        Some(_) => Err(JwtError::Claim(format!("{name} is not a number"))),
    }
}

/// Checks `iss`, `aud`, `azp`, `exp`, `iat`, `nbf` with the expectations' leeway, and `nonce`.
pub fn check_id_token_claims(claims: &Map<String, Value>, want: &IdTokenExpectations<'_>) -> Result<(), JwtError> {
    check_common_with(claims, want.issuer, want.now, want.leeway)?;
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(JwtError::Claim("aud is missing".into())),
    };
    if !audiences.contains(&want.client_id) {
        return Err(JwtError::Claim("aud does not include this app".into()));
    }
    let azp_required = audiences.len() > 1 || claims.contains_key("azp");
    if azp_required && claims.get("azp").and_then(Value::as_str) != Some(want.client_id) {
        return Err(JwtError::Claim("azp is not this app".into()));
    }
    if let Some(expected) = want.nonce {
        let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(nonce.as_bytes(), expected.as_bytes())) {
            return Err(JwtError::Claim("nonce does not match the sign-in attempt".into()));
        }
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(JwtError::Claim("sub is missing".into())),
    }
}

/// What a back-channel logout token must say (OpenID Connect Back-Channel Logout 1.0 §2.4, §2.6).
pub fn check_logout_token_claims(
    claims: &Map<String, Value>,
    issuer: &str,
    client_id: &str,
    now: u64,
    max_age: u64,
    leeway: u64,
) -> Result<(), JwtError> {
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(JwtError::Claim("iss is not the configured Logto issuer".into()));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(JwtError::Claim("aud does not include this app".into()));
    }
    let iat = number(claims, "iat")?.ok_or_else(|| JwtError::Claim("iat is missing".into()))?;
    if iat > now.saturating_add(leeway) {
        return Err(JwtError::Claim("iat is in the future".into()));
    }
    if iat.saturating_add(max_age).saturating_add(leeway) < now {
        return Err(JwtError::Claim("the logout token is too old".into()));
    }
    if let Some(exp) = number(claims, "exp")? {
        if exp.saturating_add(leeway) <= now {
            return Err(JwtError::Claim("the token has expired".into()));
        }
    }
    match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() => {}
        _ => return Err(JwtError::Claim("jti is missing".into())),
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get("http://schemas.openid.net/event/backchannel-logout"));
    if !matches!(event, Some(Value::Object(_))) {
        return Err(JwtError::Claim(
            "events does not hold the back-channel logout event".into(),
        ));
    }
    if claims.contains_key("nonce") {
        return Err(JwtError::Claim("a logout token must not carry a nonce".into()));
    }
    let has = |k: &str| claims.get(k).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
    if !has("sub") && !has("sid") {
        return Err(JwtError::Claim("neither sub nor sid is present".into()));
    }
    Ok(())
}

/// [`check_common_with`] with [`DEFAULT_LEEWAY_SECS`].
pub fn check_common(claims: &Map<String, Value>, issuer: &str, now: u64) -> Result<(), JwtError> {
    check_common_with(claims, issuer, now, DEFAULT_LEEWAY_SECS)
}

/// `iss`, `exp`, `iat` and `nbf` (with `leeway` seconds of clock skew), common to every token Logto signs. `iss`, `exp` and `iat` are REQUIRED in ID
/// tokens (OpenID Connect Core 1.0 §2) and in JWT access tokens (RFC 9068 §2.2): a token without one is refused,
/// and the error names the missing claim.
pub fn check_common_with(claims: &Map<String, Value>, issuer: &str, now: u64, leeway: u64) -> Result<(), JwtError> {
    match claims.get("iss") {
        None | Some(Value::Null) => return Err(JwtError::Claim("iss is missing".into())),
        Some(iss) if iss.as_str() != Some(issuer) => {
            return Err(JwtError::Claim("iss is not the configured Logto issuer".into()))
        }
        Some(_) => {}
    }
    let exp = number(claims, "exp")?.ok_or_else(|| JwtError::Claim("exp is missing".into()))?;
    if exp.saturating_add(leeway) <= now {
        return Err(JwtError::Claim("the token has expired".into()));
    }
    let iat = number(claims, "iat")?.ok_or_else(|| JwtError::Claim("iat is missing".into()))?;
    if iat > now.saturating_add(leeway) {
        return Err(JwtError::Claim("iat is in the future".into()));
    }
    if let Some(nbf) = number(claims, "nbf")? {
        if nbf > now.saturating_add(leeway) {
            return Err(JwtError::Claim("the token is not valid yet (nbf)".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
