//! A sign-in attempt: what the callback needs to finish the authorization code flow safely.
//!
//! Each attempt has its own short-lived encrypted cookie, named after its `state`, so several tabs signing in at
//! once all succeed, and an attempt that is never finished simply expires (`Max-Age`) instead of piling up.
//! The cookie is scoped to the callback path, so it never travels with ordinary requests, and holds only the
//! return path and start time: the nonce and PKCE verifier are derived from the state with the sealing key
//! (see [`crate::session::cookies::CookieCodec::new_attempt`]).

use serde::{Deserialize, Serialize};

/// How long a person has to finish signing in at Logto: as long as Logto keeps the sign-in open (its OIDC
/// interaction lives an hour, `Interaction: 3600` in Logto's provider settings), so that someone who comes back
/// to Logto's page after a while is not refused by the gate after Logto let them in.
pub const ATTEMPT_TTL_SECS: u64 = 3600;

/// Length of a `state` value: 32 random bytes, base64url without padding.
pub const STATE_LEN: usize = 43;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignInAttempt {
    /// The `state` sent to Logto (RFC 6749 §10.12: binds the callback to this browser).
    pub state: String,
    /// The `nonce` the ID token must carry (OIDC Core §3.1.2.1).
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636).
    pub pkce_verifier: String,
    /// Same-origin path to return to.
    pub return_to: String,
    /// When the attempt started, seconds since the epoch.
    pub created: u64,
    /// The `max_age` asked of Logto, if any: the ID token must then say the person signed in at most this long
    /// before it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

impl SignInAttempt {
    pub fn is_fresh(&self, now: u64) -> bool {
        now >= self.created.saturating_sub(60) && now < self.created + ATTEMPT_TTL_SECS
    }
}

/// A `state` received on the callback is used to name a cookie, so it must look exactly like one we issue.
pub fn is_well_formed_state(state: &str) -> bool {
    state.len() == STATE_LEN
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_states_we_could_have_issued_are_well_formed() {
        assert!(is_well_formed_state(&"a".repeat(STATE_LEN)));
        assert!(!is_well_formed_state(&"a".repeat(STATE_LEN - 1)));
        assert!(!is_well_formed_state(&format!("{};x", "a".repeat(STATE_LEN - 2))));
        assert!(!is_well_formed_state(&format!("{}=", "a".repeat(STATE_LEN - 1))));
    }
}
