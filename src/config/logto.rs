//! `[logto]`: the Logto tenant and application, and what the gate asks Logto for.

use std::time::Duration;

use super::checks::{http_url, non_empty, refuse_placeholder, secret_source, Pending, Problems, SecretSource};
use super::raw::RawLogto;
use super::{LogtoConfig, PublicUrl, Secret, BASE_SCOPES};

/// Where the operator finds the app's real id and secret.
pub(super) const APP_CREDENTIALS: &str = "copy it from the application's details page in the Logto console";

/// Validates `[logto]`; `None` when a key of it has a problem. The sign-out landing page defaults to one on
/// `public_url`; an `app_secret_file` is left in `pending`. Scopes that rules and headers need are added by the
/// caller.
pub(super) fn validate_logto(
    p: &mut Problems,
    raw: RawLogto,
    public_url: Option<&PublicUrl>,
    pending: &mut Pending,
) -> Option<LogtoConfig> {
    let before = p.len();
    let endpoint = p
        .required("logto.endpoint", non_empty(raw.endpoint))
        .and_then(|v| http_url(p, "logto.endpoint", &v, true))
        .map(|u| u.as_str().trim_end_matches('/').to_owned());
    if let Some(e) = &endpoint {
        if e.ends_with("/oidc") {
            p.add(
                "logto.endpoint",
                format!("`{e}` ends with /oidc: give the Logto endpoint itself, the issuer is <endpoint>/oidc"),
            );
        }
    }
    let app_id = p.required("logto.app_id", non_empty(raw.app_id));
    let app_secret = secret_source(p, "logto.app_secret", raw.app_secret, raw.app_secret_file);
    if let Some(v) = &app_id {
        refuse_placeholder(p, "logto.app_id", v, APP_CREDENTIALS);
    }
    let app_secret = match app_secret {
        Some(SecretSource::Inline(v)) => {
            refuse_placeholder(p, "logto.app_secret", &v, APP_CREDENTIALS);
            Some(Secret::new(v))
        }
        Some(SecretSource::File(path)) => {
            pending.app_secret_file = Some(path);
            Some(Secret::new(String::new()))
        }
        None => None,
    };
    let mut scopes: Vec<String> = BASE_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    for s in raw.scopes.unwrap_or_default() {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            p.add("logto.scopes", format!("`{s}` is not a valid scope token"));
        } else if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let mut resources = Vec::new();
    for r in raw.resources.unwrap_or_default() {
        match url::Url::parse(&r) {
            Ok(u) if u.fragment().is_none() => resources.push(r),
            _ => p.add(
                "logto.resources",
                format!("`{r}` is not an absolute URI without a fragment (RFC 8707 §2)"),
            ),
        }
    }
    let prompt = match raw.prompt {
        None => Some("consent".to_owned()),
        Some(s) if s.trim().is_empty() => None,
        Some(s) => {
            let ok = s
                .split(' ')
                .all(|v| matches!(v, "none" | "login" | "consent" | "select_account"));
            if !ok {
                p.add(
                    "logto.prompt",
                    format!("`{s}` must be space-separated values of none, login, consent, select_account"),
                );
            }
            Some(s)
        }
    };
    let clock_leeway = clock_leeway(p, non_empty(raw.clock_leeway));
    let organization_id = non_empty(raw.organization_id);
    if let Some(org) = &organization_id {
        if !org.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            p.add(
                "logto.organization_id",
                format!("`{org}` is not a Logto organization id"),
            );
        }
        let s = "urn:logto:scope:organizations".to_owned();
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let first_screen = non_empty(raw.first_screen);
    let direct_sign_in = non_empty(raw.direct_sign_in);
    for (key, v) in [
        ("logto.first_screen", &first_screen),
        ("logto.direct_sign_in", &direct_sign_in),
    ] {
        if let Some(v) = v {
            if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)) {
                p.add(key, format!("`{v}` may only contain letters, digits and - _ : ."));
            }
        }
    }
    let post_logout_redirect_uri = match non_empty(raw.post_logout_redirect_uri) {
        Some(v) => http_url(p, "logto.post_logout_redirect_uri", &v, true).map(|u| u.to_string()),
        // A page that says the person is signed out, with "Sign in again": landing on the app's root instead would
        // start a new sign-in at once (silently, with direct_sign_in).
        None => public_url.map(|pu| pu.join(crate::routes::paths::SIGNED_OUT)),
    };

    if p.len() > before {
        return None;
    }
    let endpoint = endpoint?;
    Some(LogtoConfig {
        issuer: format!("{endpoint}/oidc"),
        endpoint,
        app_id: app_id?,
        app_secret: app_secret?,
        scopes,
        resources,
        prompt,
        first_screen,
        direct_sign_in,
        post_logout_redirect_uri: post_logout_redirect_uri?,
        organization_id,
        clock_leeway,
    })
}

/// `logto.clock_leeway`: how far the gate's and Logto's clocks may disagree, for every token the gate verifies
/// (ID, access, organization and logout tokens). Zero is allowed; more than five minutes is refused, since a
/// short-lived token would then live on long after it expired.
fn clock_leeway(p: &mut Problems, raw: Option<String>) -> u64 {
    let Some(text) = raw else {
        return crate::oidc::jwt::DEFAULT_LEEWAY_SECS;
    };
    match humantime::parse_duration(&text) {
        Ok(d) if d <= Duration::from_secs(300) => d.as_secs(),
        Ok(_) => {
            p.add("logto.clock_leeway", format!("`{text}` is longer than 5m"));
            crate::oidc::jwt::DEFAULT_LEEWAY_SECS
        }
        Err(e) => {
            p.add(
                "logto.clock_leeway",
                format!("`{text}` is not a duration like \"30s\" ({e})"),
            );
            crate::oidc::jwt::DEFAULT_LEEWAY_SECS
        }
    }
}

/// The Logto scope that makes a claim available.
pub(super) fn scope_for_claim(root: &str) -> Option<&'static str> {
    match root {
        "email" | "email_verified" => Some("email"),
        "phone_number" | "phone_number_verified" => Some("phone"),
        "roles" => Some("roles"),
        "organizations" | "organization_data" => Some("urn:logto:scope:organizations"),
        "organization_roles" => Some("urn:logto:scope:organization_roles"),
        "custom_data" => Some("custom_data"),
        "identities" => Some("identities"),
        _ => None,
    }
}
