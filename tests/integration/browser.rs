//! End-to-end runs in a real browser: Debian's Chromium, driven by playwright-core (tests/browser/e2e.mjs),
//! through sign-in on the IdP's page, the app, and sign-out. Cookies, SameSite and redirects are exercised as a
//! user's browser does. Screenshots land in target/browser-e2e/.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Chromium's path, or `None` (the test then says what to install and passes) where it is missing.
fn chromium() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    have_tool("Chromium", &[chromium.as_str()], "chromium").then_some(chromium)
}

fn interactive_idp() -> Idp {
    Idp::start(IdpOptions {
        interactive: true,
        ..Default::default()
    })
}

/// Runs e2e.mjs against the gate at `gate_url` with session cookie `cookie_name`, the first page's address ending in
/// `#fragment` unless `fragment` is empty, and returns what it saw, after the checks every run shares: the sign-in
/// page, back to the exact URL (its fragment too), the identity, the cookie kept from page
/// scripts, another site's link to the sign-out confirmed first, sign-out from the gate and Logto, and a sign-in
/// from a frame.
async fn signs_in_and_out(chromium: &str, gate_url: &str, cookie_name: &str, fragment: &str, shots: &str) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser");
    idp::npm_ci(&dir, "playwright-core").unwrap_or_else(|e| panic!("{e}"));
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser-e2e")
        .join(shots);
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new("node")
        .arg("e2e.mjs")
        .arg(gate_url)
        .arg(&shots)
        .current_dir(&dir)
        .env("CHROMIUM", chromium)
        .env("COOKIE_NAME", cookie_name)
        .env("FRAGMENT", fragment)
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
    let fragment = if fragment.is_empty() {
        String::new()
    } else {
        format!("#{fragment}")
    };
    assert_eq!(
        result["landedOn"],
        format!("{gate_url}/dashboard?tab=reports&x=1{fragment}"),
        "back to the exact URL"
    );
    assert_eq!(result["greeting"], "Hello, alice!");
    assert_eq!(result["userHeader"], "u_alice0001");
    assert_eq!(result["cookie"]["httpOnly"], true, "{result}");
    assert_eq!(result["cookie"]["sameSite"], "Lax");
    assert_eq!(result["cookie"]["path"], "/");
    assert_eq!(result["visibleToScript"], false);
    assert_eq!(result["crossSiteSignOut"], "/_logto/sign-out", "asked to confirm");
    assert_eq!(result["cookieWhileAsked"], true, "{result}");
    assert_eq!(result["confirmedSignOutPage"], "/_logto/signed-out");
    assert_eq!(result["signedOutPage"], "/_logto/signed-out");
    assert!(
        result["afterSignOut"].as_str().unwrap().starts_with("/interaction/"),
        "signed out of Logto too"
    );
    assert_eq!(result["cookieAfterSignOut"], false);
    assert_eq!(result["frameLinkTarget"], "_top", "{result}");
    assert!(
        result["frameSignInPage"].as_str().unwrap().starts_with("/interaction/"),
        "the frame's link signs in in the whole window: {result}"
    );
    assert_eq!(
        result["frameBackTo"],
        format!("{gate_url}/public/embeds"),
        "back to the page holding the frame"
    );
    assert_eq!(
        result["frameGreeting"], "Hello, alice!",
        "the frame shows the app once signed in"
    );
    result
}

/// What the browser tests add to the gate's configuration: the page holding a frame (`/public/embeds`) needs no
/// session.
const PUBLIC: &str = "[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n";

/// With `session.sign_out_clear_site_data`, the sign-out clears what the app kept in the browser; with
/// `session.keep_url_fragment`, the sign-in comes back to a hash router's page (`#/reports/42`), which the page's
/// script brought to the sign-in in Chromium.
#[tokio::test]
async fn a_real_browser_signs_in_sees_its_identity_and_signs_out() {
    let Some(chromium) = chromium() else {
        return;
    };
    let idp = interactive_idp();
    let upstream = Upstream::start().await;
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", PUBLIC, |t| {
        t.replace(
            "[session]\n",
            "[session]\nsign_out_clear_site_data = [\"cache\", \"storage\"]\nkeep_url_fragment = true\n",
        )
    })
    .await;
    let seen = signs_in_and_out(&chromium, &gate.url(), "logto_gate", "/reports/42", "plain").await;
    // `Clear-Site-Data` on the sign-out's redirect: the browser cleared what the app kept (http://127.0.0.1 is a
    // potentially trustworthy origin, where browsers honour it).
    assert_eq!(seen["storageAfterSignOut"], Value::Null, "{seen}");
}

/// A `__Host-` session cookie (RFC 6265bis §4.1.3.2: browsers keep it only `Secure`, host-only, at `Path=/`) over
/// TLS: the browser keeps every cookie the sign-in needs, the callback's attempt cookie included (a `__Host-` named
/// one scoped to the callback path would be dropped and no sign-in could finish).
#[tokio::test]
async fn a_real_browser_signs_in_with_a_host_prefixed_cookie_over_tls() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "gate");
    let idp = interactive_idp();
    let upstream = Upstream::start().await;
    let tls = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let gate = TestGate::start_unready(
        idp.endpoint().as_str(),
        &upstream.url(),
        "",
        PUBLIC,
        |t| {
            t.replace("public_url = \"http://", "public_url = \"https://")
                .replace("[server]\n", &format!("[server]\n{tls}\n"))
                .replace("[session]\n", "[session]\ncookie_name = \"__Host-gate\"\n")
        },
        |public| idp.register_client(APP_ID, APP_SECRET, &public.replace("http://", "https://")),
    )
    .await;
    let gate_url = format!("https://127.0.0.1:{}", gate.port);
    let seen = signs_in_and_out(&chromium, &gate_url, "__Host-gate", "", "host-prefix").await;
    assert_eq!(seen["cookie"]["secure"], true, "{seen}");
    // Without `session.sign_out_clear_site_data` the browser keeps what the app stored.
    assert_eq!(seen["storageAfterSignOut"], "behind", "{seen}");
}
