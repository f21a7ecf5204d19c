//! Starts the misbehaving OpenID provider (`tests/idp/rogue.mjs`) for the relying-party conformance tests: one
//! case per start, chosen by name (the cases are listed at the top of rogue.mjs).
#![allow(dead_code)]

use std::process::{Child, ChildStdin};

use serde_json::{json, Value};

use super::idp::{blocking_json, spawn_node};
use super::{APP_ID, APP_SECRET};

/// The subject every token of the misbehaving provider names.
pub const ROGUE_SUBJECT: &str = "u_rogue0001";

/// A running misbehaving provider. Killed on drop; it also exits when our end of its stdin closes.
pub struct RogueIdp {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub port: u16,
}

impl RogueIdp {
    /// Starts the provider answering as `case` says, for the test app's client id and secret.
    pub fn start(case: &str) -> RogueIdp {
        let config = json!({"client_id": APP_ID, "client_secret": APP_SECRET, "case": case});
        let (child, stdin, port) = spawn_node("rogue.mjs", "ROGUE_CONFIG", &config.to_string())
            .unwrap_or_else(|e| panic!("misbehaving provider ({case}): {e}"));
        RogueIdp {
            child,
            _stdin: stdin,
            port,
        }
    }

    /// `logto.endpoint` for the gate: the issuer is `<endpoint>/oidc`, as with Logto.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Puts a new signing key first (its `kid` is new); the old key stays published.
    pub fn rotate(&self) {
        blocking_json("POST", &format!("{}/__rogue/rotate", self.endpoint()), Some(json!({})));
    }

    /// Counters: discovery, jwks, auth, token, userinfo.
    pub fn stats(&self) -> Value {
        blocking_json("GET", &format!("{}/__rogue/stats", self.endpoint()), None)
    }
}

impl Drop for RogueIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
