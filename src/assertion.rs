//! The signed identity assertion: a short-lived JWT (RFC 7519, ES256) on every proxied request as
//! `X-Logto-Gate-Assertion`, so the upstream can verify who the user is without trusting the network.
//!
//! Claims: `iss` = the gate's public URL, `aud` = `assertion.audience`, `sub`, `email`, `username`, `roles`,
//! `organizations` (when known), `act` (`{"sub": ...}`, RFC 8693 §4.1, when someone acts for the subject), `auth_time`
//! (when Logto said when the person signed in: the app can ask for a recent sign-in itself, as rules do with
//! `max_age`), `iat`, `exp`. The public key is served as a JWK Set at `/_logto/jwks.json`; its `kid` is the RFC 7638
//! thumbprint. The key comes from `assertion.signing_key_file` (PKCS#8 PEM, EC P-256) or is generated at start, in
//! which case every replica has its own key and upstreams must fetch each replica's key set (give all replicas the same
//! key file instead).

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};

use crate::config::AssertionConfig;

/// The header carrying the assertion.
pub const HEADER: &str = "x-logto-gate-assertion";

/// Claims copied from the session into the assertion when present (`email` only when not marked unverified).
const COPIED_CLAIMS: [&str; 5] = ["sub", "email", "username", "roles", "organizations"];

pub struct AssertionSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    #[cfg(test)]
    kid: String,
    header_b64: String,
    issuer: String,
    audience: String,
    lifetime_secs: u64,
    jwks: Bytes,
}

impl AssertionSigner {
    pub fn new(config: &AssertionConfig, issuer: &str) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = match &config.signing_key_file {
            Some(path) => read_pkcs8_pem(path)?,
            None => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| "assertion: cannot generate a signing key".to_owned())?
                .as_ref()
                .to_vec(),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).map_err(|_| {
            "assertion.signing_key_file: not an EC P-256 private key in PKCS#8 form \
             (convert with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem)"
                .to_owned()
        })?;
        // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
        let public = key.public_key().as_ref();
        let (x, y) = match public {
            [0x04, rest @ ..] if rest.len() == 64 => {
                (URL_SAFE_NO_PAD.encode(&rest[..32]), URL_SAFE_NO_PAD.encode(&rest[32..]))
            }
            _ => return Err("assertion: unexpected public key form".to_owned()),
        };
        // RFC 7638: the thumbprint over the required members in lexicographic order.
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, thumbprint_input.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        let jwks =
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}]});
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        Ok(AssertionSigner {
            key,
            rng,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            #[cfg(test)]
            kid,
            issuer: issuer.to_owned(),
            audience: config.audience.clone(),
            lifetime_secs: config.lifetime.as_secs().max(1),
            jwks: Bytes::from(jwks.to_string()),
        })
    }

    #[cfg(test)]
    fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK Set served at `/_logto/jwks.json`.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// A signed assertion about `claims`, `actor` acting for their subject if someone does, and when they signed in
    /// at Logto (`auth_time`, OIDC Core §2) if that is known, valid from `now` for the configured lifetime.
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        actor: Option<&str>,
        auth_time: Option<u64>,
        now: u64,
    ) -> Result<String, String> {
        let mut payload = Map::new();
        payload.insert("iss".into(), Value::String(self.issuer.clone()));
        payload.insert("aud".into(), Value::String(self.audience.clone()));
        for name in COPIED_CLAIMS {
            if let Some(v) = crate::identity::passed_claim(claims, name).filter(|v| !v.is_null()) {
                payload.insert(name.into(), v.clone());
            }
        }
        if let Some(actor) = actor {
            payload.insert("act".into(), json!({ "sub": actor }));
        }
        if let Some(at) = auth_time {
            payload.insert("auth_time".into(), Value::from(at));
        }
        payload.insert("iat".into(), Value::from(now));
        payload.insert("exp".into(), Value::from(now + self.lifetime_secs));
        let body = URL_SAFE_NO_PAD.encode(Value::Object(payload).to_string());
        let signing_input = format!("{}.{body}", self.header_b64);
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| "assertion: signing failed".to_owned())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// Reads a `-----BEGIN PRIVATE KEY-----` (PKCS#8) PEM file.
fn read_pkcs8_pem(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("assertion.signing_key_file: cannot read {}: {e}", path.display()))?;
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let (Some(b), Some(e)) = (text.find(begin), text.find(end)) else {
        return Err(format!(
            "assertion.signing_key_file: {} holds no PKCS#8 PEM block (-----BEGIN PRIVATE KEY-----); \
             convert an EC key with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem",
            path.display()
        ));
    };
    let body: String = text[b + begin.len()..e]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|_| format!("assertion.signing_key_file: {} is not valid base64 PEM", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwt::{check_common, UnverifiedJwt};
    use openidconnect::core::CoreJsonWebKeySet;
    use std::time::Duration;

    fn signer() -> AssertionSigner {
        let config = AssertionConfig {
            audience: "app".into(),
            signing_key_file: None,
            lifetime: Duration::from_secs(60),
        };
        AssertionSigner::new(&config, "https://gate.example.com").unwrap()
    }

    #[test]
    fn assertions_verify_with_the_published_key_set() {
        let s = signer();
        let mut claims = Map::new();
        claims.insert("sub".into(), "u1".into());
        claims.insert("roles".into(), json!(["admin"]));
        claims.insert("picture".into(), Value::Null);
        let token = s.sign(&claims, None, None, 1000).unwrap();
        let jwks: CoreJsonWebKeySet = serde_json::from_slice(&s.jwks()).unwrap();
        let jwt = UnverifiedJwt::parse(&token).unwrap();
        assert_eq!(jwt.kid(), Some(s.kid()));
        let verified = jwt.verify(&jwks).unwrap();
        assert_eq!(verified["sub"], "u1");
        assert_eq!(verified["aud"], "app");
        assert_eq!(verified["exp"], 1060);
        assert!(verified.get("picture").is_none());
        assert!(verified.get("act").is_none(), "no one acts for u1");
        let acted = s.sign(&claims, Some("u_agent"), Some(900), 1000).unwrap();
        let verified = UnverifiedJwt::parse(&acted).unwrap().verify(&jwks).unwrap();
        assert_eq!(verified["act"], json!({"sub": "u_agent"}));
        assert_eq!(verified["sub"], "u1");
        check_common(&verified, "https://gate.example.com", 1000).unwrap();
        // Another gate's key does not verify it.
        let other: CoreJsonWebKeySet = serde_json::from_slice(&signer().jwks()).unwrap();
        assert!(jwt.verify(&other).is_err());
    }

    #[test]
    fn a_key_file_that_is_not_pkcs8_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(
            &f,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let config = AssertionConfig {
            audience: "a".into(),
            signing_key_file: Some(f),
            lifetime: Duration::from_secs(60),
        };
        let err = AssertionSigner::new(&config, "https://g").err().unwrap();
        assert!(err.contains("openssl pkcs8"), "{err}");
    }
}
