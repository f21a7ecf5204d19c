//! What Logto says about a session's grant: revoking its refresh token at sign-out (RFC 7009) and asking whether
//! it still stands (RFC 7662), both with the app's client authentication, as at the token endpoint.

use serde_json::Value;

use super::Oidc;

/// Why Logto could not say whether a grant stands ([`Oidc::grant_stands`]).
#[derive(Debug, thiserror::Error)]
pub enum IntrospectionError {
    /// Logto's discovery document names no `introspection_endpoint`: there is nobody to ask.
    #[error("Logto's discovery document has no introspection_endpoint")]
    Unsupported,
    /// Logto could not be asked or gave an unusable answer; try again later.
    #[error("{0}")]
    Failed(String),
}

impl Oidc {
    /// Revokes a refresh token at Logto (RFC 7009 §2.1, client authentication as at the token endpoint), so the
    /// grant behind it can no longer mint tokens: Logto keeps `offline_access` grants through end-session, and
    /// only revocation ends them. Without a revocation endpoint in discovery there is nothing to call.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> Result<(), String> {
        let loaded = self.ensure_loaded().await.map_err(|e| e.to_string())?;
        let Some(url) = loaded.metadata.revocation_endpoint.as_deref() else {
            return Err("Logto's discovery document has no revocation_endpoint".into());
        };
        let form = [("token", refresh_token), ("token_type_hint", "refresh_token")];
        let resp = self
            .http
            .post_form(url, self.credentials.client_basic(), &form)
            .await
            .map_err(|e| e.to_string())?;
        // RFC 7009 §2.2: 200 whether or not the token was still valid.
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", resp.status))
        }
    }

    /// Asks Logto whether `refresh_token`, the one `sub`'s session holds, still stands (RFC 7662 §2.1, client
    /// authentication as at the token endpoint), without spending it. Logto answers `active: false` for a token it
    /// deleted (an admin suspending or deleting the user deletes every refresh token of theirs first, since Logto
    /// 1.42), whose grant was revoked, that expired, or that was rotated away; it does not look the user up, so a
    /// user deleted by an older Logto, which kept their tokens, still reads as active. An active answer for another
    /// client or subject (RFC 7662 §2.2 `client_id`, `sub`) is not this session's grant and counts as inactive.
    pub async fn grant_stands(&self, refresh_token: &str, sub: &str) -> Result<bool, IntrospectionError> {
        let loaded = self
            .ensure_loaded()
            .await
            .map_err(|e| IntrospectionError::Failed(e.to_string()))?;
        let Some(url) = loaded.metadata.introspection_endpoint.as_deref() else {
            if !self
                .no_introspection_told
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    "Logto's discovery document has no introspection_endpoint: WebSocket tunnels close when their \
                     session is signed out or logged out, but cannot learn that its grant was revoked"
                );
            }
            return Err(IntrospectionError::Unsupported);
        };
        let form = [("token", refresh_token), ("token_type_hint", "refresh_token")];
        let resp = self
            .http
            .post_form(url, self.credentials.client_basic(), &form)
            .await
            .map_err(|e| IntrospectionError::Failed(e.to_string()))?;
        if !resp.status.is_success() {
            return Err(IntrospectionError::Failed(format!("{url} answered {}", resp.status)));
        }
        let answer: Value = serde_json::from_slice(&resp.body)
            .map_err(|_| IntrospectionError::Failed(format!("{url} did not answer with JSON")))?;
        let Some(active) = answer.get("active").and_then(Value::as_bool) else {
            return Err(IntrospectionError::Failed(format!(
                "{url} answered without a boolean `active` (RFC 7662 §2.2)"
            )));
        };
        // Absent members say nothing; present ones must name this app and this person.
        let names = |member: &str, expected: &str| answer.get(member).is_none_or(|v| v.as_str() == Some(expected));
        Ok(active && names("client_id", &self.config.app_id) && names("sub", sub))
    }
}
