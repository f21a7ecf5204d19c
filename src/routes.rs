//! The paths the gate answers itself (all under `/_logto/`), and the first phase of the pipeline: which of them a
//! request is for, by its path alone. Config, error pages and cookies name these paths; nothing here depends on
//! the pipeline.

use crate::metrics::RouteClass;

/// The paths the gate owns. Everything else is the app's.
pub(crate) mod paths {
    pub(crate) const PREFIX: &str = "/_logto/";
    pub(crate) const SIGN_IN: &str = "/_logto/sign-in";
    pub(crate) const CALLBACK: &str = "/_logto/callback";
    pub(crate) const SIGN_OUT: &str = "/_logto/sign-out";
    pub(crate) const USERINFO: &str = "/_logto/userinfo";
    pub(crate) const HEALTHZ: &str = "/_logto/healthz";
    pub(crate) const READYZ: &str = "/_logto/readyz";
    pub(crate) const AUTH: &str = "/_logto/auth";
    pub(crate) const JWKS: &str = "/_logto/jwks.json";
    pub(crate) const BACKCHANNEL_LOGOUT: &str = "/_logto/backchannel-logout";
    /// Where Logto sends the browser after sign-out by default: a page that says so, with "Sign in again".
    pub(crate) const SIGNED_OUT: &str = "/_logto/signed-out";
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    SignIn,
    Callback,
    SignOut,
    UserInfo,
    Healthz,
    Readyz,
    ForwardAuth,
    Jwks,
    BackchannelLogout,
    SignedOut,
    UnknownGatePath,
    App,
}

impl Route {
    /// A health probe's (`/_logto/healthz`, `/_logto/readyz`): its access line has a target of its own.
    pub(crate) fn is_probe(self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz)
    }

    pub(crate) fn class(self) -> RouteClass {
        match self {
            Route::App => RouteClass::App,
            Route::SignIn => RouteClass::SignIn,
            Route::Callback => RouteClass::Callback,
            Route::SignOut | Route::SignedOut => RouteClass::SignOut,
            Route::UserInfo => RouteClass::UserInfo,
            Route::Healthz | Route::Readyz => RouteClass::Health,
            Route::ForwardAuth => RouteClass::ForwardAuth,
            Route::Jwks => RouteClass::Jwks,
            Route::BackchannelLogout => RouteClass::BackchannelLogout,
            Route::UnknownGatePath => RouteClass::Unknown,
        }
    }
}

/// Phase 1: classify by path alone.
pub(crate) fn classify(path: &str) -> Route {
    if !path.starts_with(paths::PREFIX) {
        return Route::App;
    }
    match path {
        paths::SIGN_IN => Route::SignIn,
        paths::CALLBACK => Route::Callback,
        paths::SIGN_OUT => Route::SignOut,
        paths::USERINFO => Route::UserInfo,
        paths::HEALTHZ => Route::Healthz,
        paths::READYZ => Route::Readyz,
        paths::AUTH => Route::ForwardAuth,
        // Envoy's HTTP ext_authz appends the original path to its path_prefix.
        p if p.starts_with(paths::AUTH) && p.as_bytes().get(paths::AUTH.len()) == Some(&b'/') => Route::ForwardAuth,
        paths::JWKS => Route::Jwks,
        paths::BACKCHANNEL_LOGOUT => Route::BackchannelLogout,
        paths::SIGNED_OUT => Route::SignedOut,
        _ => Route::UnknownGatePath,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_gate_paths_are_gate_endpoints() {
        assert_eq!(classify("/_logto/callback"), Route::Callback);
        assert_eq!(classify("/_logto/sign-in"), Route::SignIn);
        assert_eq!(classify("/_logto/other"), Route::UnknownGatePath);
        assert_eq!(classify("/_logto"), Route::App);
        assert_eq!(classify("/app/_logto/callback"), Route::App);
    }
}
