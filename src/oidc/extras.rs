//! What the authorization request may say about the sign-in page itself: Logto's `first_screen` and
//! `direct_sign_in` (its SDKs' `firstScreen` and `directSignIn`) and OpenID Connect's `login_hint` (Core §3.1.2.1),
//! set for every sign-in (`[logto]`) or for one (`/_logto/sign-in?first_screen=register`).

/// The values Logto's `first_screen` takes (`FirstScreen` in `@logto/schemas`); Logto shows a broken page for any
/// other. `signIn` is the older spelling of `sign_in`, still accepted.
pub(crate) const FIRST_SCREENS: [&str; 7] = [
    "sign_in",
    "register",
    "reset_password",
    "identifier:sign_in",
    "identifier:register",
    "single_sign_on",
    "signIn",
];

/// The longest `login_hint` passed on: an email address (254 at most, RFC 5321 §4.5.3.1.3), a phone number or a
/// username fits.
const LOGIN_HINT_MAX: usize = 320;

/// `first_screen` must be one of [`FIRST_SCREENS`].
pub(crate) fn check_first_screen(v: &str) -> Result<(), String> {
    if FIRST_SCREENS.contains(&v) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not one of Logto's first screens: {}",
        shown(v),
        FIRST_SCREENS.join(", ")
    ))
}

/// `direct_sign_in`: `social:<connector target>` or `sso:<connector id>`, the two forms Logto knows. Logto silently
/// shows its own sign-in page for anything else (`github` without `social:`, say), so a mistake would only show as
/// the skip not happening.
pub(crate) fn check_direct_sign_in(v: &str) -> Result<(), String> {
    let usage = "write social:<connector target> (e.g. \"social:github\") or sso:<connector id>";
    let Some((method, target)) = v.split_once(':') else {
        return Err(format!("`{}` names no method: {usage}", shown(v)));
    };
    if !matches!(method, "social" | "sso") {
        return Err(format!(
            "`{}`: `{}` is not a direct sign-in method: {usage}",
            shown(v),
            shown(method)
        ));
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!(
            "`{}`: `{}` is not a connector target or id (letters, digits, - _ .): {usage}",
            shown(v),
            shown(target)
        ));
    }
    Ok(())
}

/// `login_hint`: the identifier Logto's page starts with (an email address, a phone number, a username), at most
/// [`LOGIN_HINT_MAX`] bytes and no control characters.
pub(crate) fn check_login_hint(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > LOGIN_HINT_MAX || v.chars().any(char::is_control) {
        return Err(format!(
            "must be an email address, phone number or username: 1 to {LOGIN_HINT_MAX} bytes, no control characters"
        ));
    }
    Ok(())
}

/// The largest `max_age` a sign-in link may ask for: ten years, in seconds.
const MAX_AGE_MAX: u64 = 10 * 366 * 86_400;

/// `max_age`: a number of seconds (digits only, at most [`MAX_AGE_MAX`]). Asking for a more recent sign-in only
/// ever asks more of the person, so any such value may come from a link.
pub(crate) fn check_max_age(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(secs) if v.bytes().all(|b| b.is_ascii_digit()) && secs <= MAX_AGE_MAX => Ok(secs),
        _ => Err(format!(
            "`{}` is not a number of seconds from 0 to {MAX_AGE_MAX}",
            shown(v)
        )),
    }
}

/// At most 64 characters of a value, for a message that repeats it (a query parameter may be long).
fn shown(v: &str) -> String {
    v.chars().take(64).collect()
}

/// A check of one parameter's value, saying what is wrong with it.
type Check = fn(&str) -> Result<(), String>;

/// One sign-in's choices for Logto's page, each in place of `[logto]`'s for that sign-in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SignInOptions {
    pub(crate) first_screen: Option<String>,
    pub(crate) direct_sign_in: Option<String>,
    pub(crate) login_hint: Option<String>,
    /// OIDC Core's `max_age` (§3.1.2.1), in seconds: Logto asks the person to sign in again unless they did so at
    /// most this long ago, and says when they did (`auth_time`). Sent when a rule's `max_age` asks for a more
    /// recent sign-in (`/_logto/sign-in?max_age=900`); the callback then holds Logto to it.
    pub(crate) max_age: Option<u64>,
}

impl SignInOptions {
    /// From `/_logto/sign-in`'s query parameters `first_screen`, `direct_sign_in`, `login_hint` and `max_age`
    /// (others are not read); a bad value is an error naming its parameter.
    pub(crate) fn from_query(params: &[(String, String)]) -> Result<SignInOptions, String> {
        let mut options = SignInOptions::default();
        for (name, value) in params {
            if name == "max_age" {
                let secs = check_max_age(value).map_err(|e| format!("the parameter `max_age`: {e}"))?;
                options.max_age = Some(secs);
                continue;
            }
            let (slot, check): (&mut Option<String>, Check) = match name.as_str() {
                "first_screen" => (&mut options.first_screen, check_first_screen),
                "direct_sign_in" => (&mut options.direct_sign_in, check_direct_sign_in),
                "login_hint" => (&mut options.login_hint, check_login_hint),
                _ => continue,
            };
            check(value).map_err(|e| format!("the parameter `{name}`: {e}"))?;
            *slot = Some(value.clone());
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_sign_in_link_may_choose_the_first_screen_a_connector_and_a_hint() {
        let options = SignInOptions::from_query(&query(&[
            ("redirect", "/x"),
            ("first_screen", "register"),
            ("direct_sign_in", "social:github"),
            ("login_hint", "alice+test@example.com"),
            ("max_age", "900"),
            ("utm_source", "mail"),
        ]))
        .unwrap();
        assert_eq!(
            options,
            SignInOptions {
                first_screen: Some("register".into()),
                direct_sign_in: Some("social:github".into()),
                login_hint: Some("alice+test@example.com".into()),
                max_age: Some(900),
            }
        );
        assert_eq!(SignInOptions::from_query(&[]).unwrap(), SignInOptions::default());
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_parameter() {
        let long = "a".repeat(LOGIN_HINT_MAX + 1);
        for (name, value, says) in [
            ("first_screen", "signUp", "is not one of Logto's first screens"),
            ("direct_sign_in", "github", "names no method"),
            ("direct_sign_in", "social:git hub", "is not a connector target"),
            ("direct_sign_in", "password:x", "is not a direct sign-in method"),
            ("login_hint", "", "1 to 320 bytes"),
            ("login_hint", long.as_str(), "1 to 320 bytes"),
            ("login_hint", "a\r\nb", "no control characters"),
            ("max_age", "-1", "is not a number of seconds"),
            ("max_age", "+60", "is not a number of seconds"),
            ("max_age", "1e3", "is not a number of seconds"),
            ("max_age", "999999999999", "is not a number of seconds"),
        ] {
            let err = SignInOptions::from_query(&query(&[(name, value)])).unwrap_err();
            assert!(err.starts_with(&format!("the parameter `{name}`: ")), "{err}");
            assert!(err.contains(says), "{name}={value:?}: {err}");
        }
    }
}
