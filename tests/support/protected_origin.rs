//! Starts `tests/idp/protected-origin.mjs`: an origin written for Logto's Protected App, which checks the Basic
//! credentials and verifies `Logto-ID-Token` against the IdP's key set with jose, as Logto's documentation shows.
#![allow(dead_code)]

use std::process::{Child, ChildStdin};

use serde_json::json;

use super::idp::spawn_node;

pub struct ProtectedOrigin {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub port: u16,
}

impl ProtectedOrigin {
    pub fn start(issuer: &str, app_id: &str, app_secret: &str) -> ProtectedOrigin {
        let config = json!({"issuer": issuer, "app_id": app_id, "app_secret": app_secret});
        let (child, stdin, port) = spawn_node("protected-origin.mjs", "ORIGIN_CONFIG", &config.to_string())
            .unwrap_or_else(|e| panic!("protected app origin: {e}"));
        ProtectedOrigin {
            child,
            _stdin: stdin,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ProtectedOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
