//! One end-to-end run in a real browser: Debian's Chromium, driven by playwright-core (tests/browser/e2e.mjs),
//! through sign-in on the IdP's page, the app, and sign-out. Cookies, SameSite and redirects are exercised as a
//! user's browser does. Screenshots land in target/browser-e2e/.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn a_real_browser_signs_in_sees_its_identity_and_signs_out() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !have_tool("Chromium", &[chromium.as_str()], "chromium") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser");
    idp::npm_ci(&dir, "playwright-core").unwrap_or_else(|e| panic!("{e}"));
    let idp = Idp::start(IdpOptions {
        interactive: true,
        ..Default::default()
    });
    let upstream = Upstream::start().await;
    let gate = TestGate::start(&idp, &upstream.url(), "", "").await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser-e2e");
    std::fs::create_dir_all(&shots).unwrap();

    let mut child = Command::new("node")
        .arg("e2e.mjs")
        .arg(gate.url())
        .arg(&shots)
        .current_dir(&dir)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser test did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|_| panic!("no result from the browser:\n{stdout}\n{stderr}"));
    assert!(out.status.success(), "browser test failed: {result}\n{stderr}");
    assert!(
        result["signInPage"].as_str().unwrap().starts_with("/interaction/"),
        "{result}"
    );
    assert_eq!(
        result["landedOn"],
        format!("{}/dashboard?tab=reports&x=1", gate.url()),
        "back to the exact URL"
    );
    assert_eq!(result["greeting"], "Hello, alice!");
    assert_eq!(result["userHeader"], "u_alice0001");
    assert_eq!(result["cookie"]["httpOnly"], true);
    assert_eq!(result["cookie"]["sameSite"], "Lax");
    assert_eq!(result["cookie"]["path"], "/");
    assert_eq!(result["visibleToScript"], false);
    assert_eq!(result["signedOutPage"], "/_logto/signed-out");
    assert!(
        result["afterSignOut"].as_str().unwrap().starts_with("/interaction/"),
        "signed out of Logto too"
    );
    assert_eq!(result["cookieAfterSignOut"], false);
}
