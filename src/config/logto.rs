//! `[logto]`: the Logto tenant and application, and what the gate asks Logto for.

use std::time::Duration;

use super::checks::{http_url, non_empty, refuse_placeholder, secret_source, Problems, SecretSource};
use super::raw::RawLogto;
use super::{LogtoConfig, PublicUrl, Secret, UpstreamConfig, BASE_SCOPES};

/// Where the operator finds the app's real id and secret.
pub(super) const APP_CREDENTIALS: &str = "copy it from the application's details page in the Logto console";

/// Validates `[logto]`; `None` when a key of it has a problem. The sign-out landing page defaults to one on
/// `public_url`; an `app_secret_file` is named in it, to be read once the whole configuration is valid. Scopes that
/// rules and headers need are added by the caller.
pub(super) fn validate_logto(p: &mut Problems, raw: RawLogto, public_url: Option<&PublicUrl>) -> Option<LogtoConfig> {
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
    let (app_secret, app_secret_file) = match app_secret {
        Some(SecretSource::Inline(v)) => {
            refuse_placeholder(p, "logto.app_secret", &v, APP_CREDENTIALS);
            (Some(Secret::new(v)), None)
        }
        Some(SecretSource::File(path)) => (Some(Secret::new(String::new())), Some(path)),
        None => (None, None),
    };
    let mut scopes: Vec<String> = BASE_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    for s in raw.scopes.unwrap_or_default() {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            // RFC 6749 §3.3: a scope token is visible ASCII except `"` and `\`; several are several strings.
            let hint = if s.split_ascii_whitespace().count() > 1 {
                let each: Vec<String> = s.split_ascii_whitespace().map(|t| format!("\"{t}\"")).collect();
                format!(": one scope per string, like [{}]", each.join(", "))
            } else {
                " (RFC 6749 §3.3: visible ASCII, no quote or backslash)".to_owned()
            };
            p.add("logto.scopes", format!("`{s}` is not a valid scope token{hint}"));
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
            let values: Vec<&str> = s.split(' ').filter(|v| !v.is_empty()).collect();
            if !values
                .iter()
                .all(|v| matches!(*v, "none" | "login" | "consent" | "select_account"))
            {
                p.add(
                    "logto.prompt",
                    format!("`{s}` must be space-separated values of none, login, consent, select_account"),
                );
            }
            Some(values.join(" "))
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
    if let Some(v) = prompt
        .as_deref()
        .filter(|v| v.contains(' ') && v.split(' ').any(|t| t == "none"))
    {
        p.add(
            "logto.prompt",
            format!("`{v}`: none cannot be combined with other values (OpenID Connect Core 3.1.2.1)"),
        );
    }
    let first_screen = non_empty(raw.first_screen);
    if let Some(v) = &first_screen {
        if let Err(e) = crate::oidc::extras::check_first_screen(v) {
            p.add("logto.first_screen", e);
        }
    }
    let direct_sign_in = non_empty(raw.direct_sign_in);
    if let Some(v) = &direct_sign_in {
        if let Err(e) = crate::oidc::extras::check_direct_sign_in(v) {
            p.add("logto.direct_sign_in", e);
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
        app_secret_file,
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

/// What the refresh token is needed for, in this configuration, when `logto.prompt` lacks `consent`: Logto then
/// issues none unless the app's "Always issue Refresh Token" setting is on (its `alwaysIssueRefreshToken`, which
/// the gate cannot see), and the API resource's and the organization's tokens could not be obtained (every sign-in
/// would fail at the callback), and the access token or ID token the app is sent would stop being renewed within
/// the hour (sent expired, or no longer sent). A warning at start and in `check`, not a refusal: with that setting
/// on, such a configuration works.
/// `passes_access_tokens`: whether any app is sent the access token ([`super::Config::passes_access_tokens`]).
pub(super) fn refresh_token_caveat(
    logto: &LogtoConfig,
    upstream: &UpstreamConfig,
    passes_access_tokens: bool,
) -> Option<String> {
    if logto
        .prompt
        .as_deref()
        .is_some_and(|v| v.split(' ').any(|v| v == "consent"))
    {
        return None;
    }
    let needs: Vec<&str> = [
        (
            !logto.resources.is_empty(),
            "logto.resources (the API resource's token)",
        ),
        (
            logto.organization_id.is_some(),
            "logto.organization_id (the organization token)",
        ),
        (
            passes_access_tokens,
            "upstream.pass_access_token (a renewed access token)",
        ),
        (
            upstream.protected_app,
            "upstream.protected_app (a renewed Logto-ID-Token)",
        ),
    ]
    .into_iter()
    .filter_map(|(set, what)| set.then_some(what))
    .collect();
    if needs.is_empty() {
        return None;
    }
    let written = logto
        .prompt
        .as_deref()
        .map_or_else(|| "an empty prompt (none sent)".to_owned(), |v| format!("`{v}`"));
    Some(format!(
        "logto.prompt: {written} lacks consent, without which Logto issues no refresh token unless the app's \
         \"Always issue Refresh Token\" setting is on, and {} {} one: add consent (e.g. \"login consent\") or turn \
         that setting on in the Logto Console",
        needs.join(" and "),
        if needs.len() > 1 { "need" } else { "needs" }
    ))
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
pub(crate) fn scope_for_claim(root: &str) -> Option<&'static str> {
    match root {
        "email" | "email_verified" => Some("email"),
        "phone_number" | "phone_number_verified" => Some("phone"),
        "roles" => Some("roles"),
        "organizations" | "organization_data" => Some("urn:logto:scope:organizations"),
        "organization_roles" => Some("urn:logto:scope:organization_roles"),
        "custom_data" => Some("custom_data"),
        "identities" | "sso_identities" => Some("identities"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::Config;

    fn with(logto: &str) -> Result<Config, Vec<String>> {
        Config::from_toml_str(&MINIMAL.replace("[logto]\n", &format!("[logto]\n{logto}\n")), no_env()).map_err(|e| e.0)
    }

    fn refused(logto: &str, key: &str, says: &str) {
        let lines = with(logto).expect_err(logto);
        assert!(
            lines.iter().any(|l| l.starts_with(key) && l.contains(says)),
            "{logto}: no `{key}` line saying {says:?} in {lines:?}"
        );
    }

    #[test]
    fn first_screen_is_one_logto_knows() {
        for ok in ["register", "sign_in", "identifier:sign_in", "single_sign_on", "signIn"] {
            let c = with(&format!("first_screen = \"{ok}\"")).expect(ok);
            assert_eq!(c.logto.first_screen.as_deref(), Some(ok));
        }
        for bad in ["signUp", "Register", "sign-in", "identifier"] {
            refused(
                &format!("first_screen = \"{bad}\""),
                "logto.first_screen:",
                &format!("`{bad}` is not one of Logto's first screens: sign_in, register"),
            );
        }
    }

    #[test]
    fn direct_sign_in_names_a_method_and_a_connector() {
        for ok in ["social:github", "sso:a1b2c3", "social:google-workspace"] {
            let c = with(&format!("direct_sign_in = \"{ok}\"")).expect(ok);
            assert_eq!(c.logto.direct_sign_in.as_deref(), Some(ok));
        }
        for (bad, says) in [
            ("github", "names no method"),
            ("oauth:github", "`oauth` is not a direct sign-in method"),
            ("social:", "is not a connector target or id"),
            ("social:git hub", "is not a connector target or id"),
            ("social:github:x", "is not a connector target or id"),
        ] {
            refused(&format!("direct_sign_in = \"{bad}\""), "logto.direct_sign_in:", says);
        }
    }

    #[test]
    fn a_prompt_without_consent_is_a_caveat_where_a_refresh_token_is_needed() {
        // Alone, a prompt without consent only costs the refresh: sessions last their lifetime on one sign-in.
        let alone = with("prompt = \"login\"").expect("valid");
        assert_eq!(alone.logto.prompt.as_deref(), Some("login"));
        assert!(alone.caveats().is_empty());
        assert_eq!(
            with("prompt = \"login  consent\"")
                .expect("valid")
                .logto
                .prompt
                .as_deref(),
            Some("login consent")
        );
        let resources = "resources = [\"https://api.example.com\"]\n";
        let org = "organization_id = \"org_1\"\n";
        let consent = with(&format!("{resources}{org}prompt = \"login consent\"")).expect("valid");
        assert!(consent.caveats().is_empty(), "consent keeps the refresh token");
        // Without consent, Logto still issues one when the app's "Always issue Refresh Token" is on: accepted, with
        // the caveat named.
        let caveat = |logto: &str| with(logto).expect("accepted").caveats().join("\n");
        assert_eq!(
            caveat(&format!("{resources}prompt = \"login\"")),
            "logto.prompt: `login` lacks consent, without which Logto issues no refresh token unless the app's \
             \"Always issue Refresh Token\" setting is on, and logto.resources (the API resource's token) needs one: \
             add consent (e.g. \"login consent\") or turn that setting on in the Logto Console"
        );
        assert!(caveat(&format!("{org}prompt = \"select_account\""))
            .contains("and logto.organization_id (the organization token) needs one"));
        assert!(caveat(&format!("{resources}{org}prompt = \"\"")).starts_with(
            "logto.prompt: an empty prompt (none sent) lacks consent, without which Logto issues no refresh token"
        ));
        assert!(caveat(&format!("{resources}{org}prompt = \"\"")).contains(
            "logto.resources (the API resource's token) and logto.organization_id (the organization token) need one"
        ));
        for upstream in ["pass_access_token = true", "protected_app = true"] {
            let text = MINIMAL
                .replace("[upstream]\n", &format!("[upstream]\n{upstream}\n"))
                .replace("[logto]\n", "[logto]\nprompt = \"login\"\n");
            let caveats = Config::from_toml_str(&text, no_env()).expect(upstream).caveats();
            let key = upstream.split(' ').next().unwrap_or_default();
            assert!(
                caveats
                    .iter()
                    .any(|l| l.starts_with("logto.prompt: `login` lacks consent")
                        && l.contains(&format!("upstream.{key} (a renewed"))),
                "{upstream}: {caveats:?}"
            );
        }
        refused("prompt = \"none consent\"", "logto.prompt:", "none cannot be combined");
    }
}
