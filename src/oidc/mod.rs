//! OpenID Connect against Logto: discovery and key set, the authorization request, the code exchange, ID token
//! verification, userinfo, token revocation and introspection, and the end-session URL.
//!
//! Only sign-in, callback, refresh and sign-out talk to Logto, and an open WebSocket tunnel's grant check. A
//! signed-in request never does: the session cookie holds all it needs, so signed-in users keep working while Logto
//! is unreachable.

mod credentials;
pub(crate) mod extras;
mod grant;
pub mod http;
pub mod jwt;
mod verify;

pub(crate) use credentials::AppCredentials;
pub use grant::IntrospectionError;
pub use verify::{TokenError, LOGOUT_TOKEN_MAX_AGE};

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::CoreJsonWebKeySet;
use serde::Deserialize;
use serde_json::{Map, Value};

use self::http::IdpHttp;
use self::jwt::TokenKind;
use crate::config::LogtoConfig;
use crate::error::{ClientError, GateError, IdpError};

/// Tokens anyone can send (bearer tokens, logout tokens) with an unknown `kid` make the gate re-fetch the key set at
/// most once per this long, so forged tokens cannot make it hammer Logto. They have a budget of their own: an ID
/// token from the token endpoint (the gate's own authenticated request) may always cause a re-fetch.
pub const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);

/// How often the key set is fetched on its own schedule when Logto's answer has no `Cache-Control: max-age`, and
/// the bounds put on one that has: rotations are then usually picked up before the first token needs them.
const JWKS_REFRESH_DEFAULT: Duration = Duration::from_secs(15 * 60);
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(10);
const JWKS_REFRESH_MAX: Duration = Duration::from_secs(24 * 3600);
/// After a scheduled fetch failed, the next try comes this soon.
const JWKS_REFRESH_RETRY: Duration = Duration::from_secs(60);

/// Who handed the gate a token: that decides what an unknown `kid` may cost.
#[derive(Debug, Clone, Copy)]
pub enum TokenSource {
    /// The token endpoint's answer to the gate's own authenticated request (ID tokens, resource and organization
    /// tokens): an unknown `kid` means Logto rotated its keys, and the key set is fetched again.
    TokenEndpoint,
    /// Anyone: a bearer token or a back-channel logout token, named for the log.
    Untrusted(&'static str),
}

impl TokenSource {
    fn name(self) -> &'static str {
        match self {
            TokenSource::TokenEndpoint => "an ID or access token from Logto's token endpoint",
            TokenSource::Untrusted(kind) => kind,
        }
    }
}

/// How long any single request to Logto may take.
pub const IDP_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of Logto's discovery document the gate uses (OpenID Connect Discovery 1.0 §3).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 7009 token revocation (RFC 8414 §2).
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RFC 7662 token introspection (RFC 8414 §2).
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// RFC 9207: the provider puts `iss` on authorization responses.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// Discovery document and key set, loaded together.
#[derive(Debug)]
pub struct Loaded {
    pub metadata: Metadata,
    pub jwks: Arc<CoreJsonWebKeySet>,
}

/// The tokens Logto returns from the token endpoint (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The gate's view of Logto.
pub struct Oidc {
    http: IdpHttp,
    config: LogtoConfig,
    credentials: Arc<AppCredentials>,
    redirect_uri: String,
    loaded: RwLock<Option<Arc<Loaded>>>,
    /// Serialises loads and key-set fetches (one in flight, its result shared by everyone waiting); holds when the
    /// last key-set fetch finished.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    /// When an untrusted token last caused a re-fetch (their budget, see [`JWKS_REFETCH_COOLDOWN`]).
    untrusted_refetch: std::sync::Mutex<Option<Instant>>,
    /// The key set's freshness from its last fetch (`Cache-Control: max-age`, bounded).
    jwks_refresh: std::sync::Mutex<Duration>,
    /// Set once the log said that Logto offers no token introspection (said once, not per tunnel).
    no_introspection_told: std::sync::atomic::AtomicBool,
}

impl Oidc {
    pub fn new(config: LogtoConfig, redirect_uri: String) -> Result<Self, String> {
        Ok(Oidc {
            http: IdpHttp::new(IDP_TIMEOUT)?,
            credentials: AppCredentials::new(&config)?,
            config,
            redirect_uri,
            loaded: RwLock::new(None),
            refetch: tokio::sync::Mutex::new(None),
            untrusted_refetch: std::sync::Mutex::new(None),
            jwks_refresh: std::sync::Mutex::new(JWKS_REFRESH_DEFAULT),
            no_introspection_told: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &LogtoConfig {
        &self.config
    }

    /// The app's credentials, kept current from `logto.app_secret_file` once [`AppCredentials::watch`]ed.
    pub(crate) fn credentials(&self) -> &Arc<AppCredentials> {
        &self.credentials
    }

    /// What is loaded now, without waiting.
    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.loaded.read().ok().and_then(|g| g.clone())
    }

    /// What is loaded, loading it first when it is not (for example when Logto was down at start).
    pub async fn ensure_loaded(&self) -> Result<Arc<Loaded>, GateError> {
        if let Some(l) = self.loaded() {
            return Ok(l);
        }
        let waited = Instant::now();
        let mut fetched = self.refetch.lock().await;
        if let Some(l) = self.loaded() {
            return Ok(l);
        }
        // Another attempt held the lock and failed (Logto slow or down): answer now instead of waiting as long again.
        if waited.elapsed() > Duration::from_secs(1) {
            return Err(IdpError::Unreachable("the last attempt to reach Logto failed".into()).into());
        }
        let loaded = Arc::new(self.fetch_all().await?);
        *fetched = Some(Instant::now());
        self.store(loaded.clone());
        Ok(loaded)
    }

    fn store(&self, loaded: Arc<Loaded>) {
        if let Ok(mut g) = self.loaded.write() {
            *g = Some(loaded);
        }
    }

    /// Fetches the discovery document and the key set. The document's issuer must be exactly the configured one
    /// (OpenID Connect Discovery 1.0 §4.3).
    pub async fn fetch_all(&self) -> Result<Loaded, GateError> {
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer);
        let resp = self.http.get(&url, None).await?;
        if !resp.status.is_success() {
            return Err(IdpError::BadResponse(format!("{url} answered {}", resp.status)).into());
        }
        let metadata: Metadata = serde_json::from_slice(&resp.body)
            .map_err(|e| IdpError::BadResponse(format!("{url} is not a discovery document: {e}")))?;
        if metadata.issuer != self.config.issuer {
            return Err(IdpError::BadResponse(format!(
                "the discovery document names issuer {:?}, but logto.endpoint gives {:?}",
                metadata.issuer, self.config.issuer
            ))
            .into());
        }
        let jwks = self.fetch_jwks(&metadata.jwks_uri).await?;
        Ok(Loaded {
            metadata,
            jwks: Arc::new(jwks),
        })
    }

    /// Fetches the key set, and notes how long Logto says it stays fresh.
    async fn fetch_jwks(&self, url: &str) -> Result<CoreJsonWebKeySet, GateError> {
        let resp = self.http.get(url, None).await?;
        if let Ok(mut refresh) = self.jwks_refresh.lock() {
            *refresh = resp.max_age.map_or(JWKS_REFRESH_DEFAULT, |age| {
                age.clamp(JWKS_REFRESH_MIN, JWKS_REFRESH_MAX)
            });
        }
        if !resp.status.is_success() {
            return Err(IdpError::BadResponse(format!("{url} answered {}", resp.status)).into());
        }
        let jwks: CoreJsonWebKeySet = serde_json::from_slice(&resp.body)
            .map_err(|e| IdpError::BadResponse(format!("{url} is not a JSON Web Key Set: {e}")))?;
        if jwks.keys().is_empty() {
            return Err(IdpError::BadResponse(format!("{url} holds no usable signing key")).into());
        }
        Ok(jwks)
    }

    /// Keeps trying to load discovery and keys in the background until it succeeds, with capped backoff; then
    /// fetches the key set again on its own schedule (Logto's `max-age`, bounded) for as long as the gate runs.
    pub fn spawn_background_load(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                let Some(oidc) = me.upgrade() else { return };
                match oidc.ensure_loaded().await {
                    Ok(_) => {
                        tracing::info!(issuer = %oidc.config.issuer, "Logto discovery document and signing keys loaded");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "Logto is not reachable yet");
                        drop(oidc);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
            loop {
                let next = match me.upgrade() {
                    Some(oidc) => oidc.jwks_refresh.lock().map_or(JWKS_REFRESH_DEFAULT, |d| *d),
                    None => return,
                };
                tokio::time::sleep(next).await;
                let Some(oidc) = me.upgrade() else { return };
                if let Err(e) = oidc.refresh_jwks_on_schedule().await {
                    tracing::warn!(error = %e, retry_in = ?JWKS_REFRESH_RETRY, "Logto's signing keys could not be refreshed");
                    if let Ok(mut refresh) = oidc.jwks_refresh.lock() {
                        *refresh = JWKS_REFRESH_RETRY;
                    }
                }
            }
        });
    }

    /// The scheduled key-set fetch, through the same single flight as every other.
    async fn refresh_jwks_on_schedule(&self) -> Result<(), GateError> {
        let mut fetched = self.refetch.lock().await;
        let current = self.loaded().ok_or(IdpError::NotReady)?;
        let jwks = Arc::new(self.fetch_jwks(&current.metadata.jwks_uri).await?);
        *fetched = Some(Instant::now());
        self.store(Arc::new(Loaded {
            metadata: current.metadata.clone(),
            jwks,
        }));
        tracing::debug!("Logto's signing keys refreshed on schedule");
        Ok(())
    }

    /// The authorization request URL (OIDC Core §3.1.2.1, PKCE S256 per RFC 7636 §4.3) plus Logto's extras, each
    /// of `options` in place of the configured one.
    pub(crate) fn authorization_url(
        &self,
        loaded: &Loaded,
        state: &str,
        nonce: &str,
        code_challenge: &str,
        options: &extras::SignInOptions,
    ) -> String {
        let scope = self.config.scopes.join(" ");
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.config.app_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &scope),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ];
        if let Some(p) = &self.config.prompt {
            params.push(("prompt", p));
        }
        if let Some(f) = options.first_screen.as_ref().or(self.config.first_screen.as_ref()) {
            params.push(("first_screen", f));
        }
        if let Some(d) = options.direct_sign_in.as_ref().or(self.config.direct_sign_in.as_ref()) {
            params.push(("direct_sign_in", d));
        }
        if let Some(hint) = &options.login_hint {
            params.push(("login_hint", hint));
        }
        let max_age = options.max_age.map(|secs| secs.to_string());
        if let Some(max_age) = &max_age {
            params.push(("max_age", max_age));
        }
        for r in &self.config.resources {
            params.push(("resource", r));
        }
        if self.config.organization_id.is_some() {
            params.push(("resource", ORGANIZATIONS_RESOURCE));
        }
        append_query(&loaded.metadata.authorization_endpoint, &params)
    }

    /// One request to the token endpoint with `client_secret_basic` (RFC 6749 §2.3.1, §5.1, §5.2).
    async fn token_request(&self, loaded: &Loaded, form: &[(&str, &str)]) -> Result<TokenSet, TokenEndpointError> {
        let resp = self
            .http
            .post_form(&loaded.metadata.token_endpoint, self.credentials.client_basic(), form)
            .await
            .map_err(TokenEndpointError::Unreachable)?;
        if resp.status.is_success() {
            return serde_json::from_slice(&resp.body)
                .map_err(|e| TokenEndpointError::Unusable(format!("the token response is not usable: {e}")));
        }
        match serde_json::from_slice::<OAuthError>(&resp.body) {
            Ok(e) => Err(TokenEndpointError::Refused {
                status: resp.status,
                error: e.error,
                description: e.error_description.unwrap_or_default(),
            }),
            Err(_) => Err(TokenEndpointError::Unusable(format!(
                "token endpoint answered {}",
                resp.status
            ))),
        }
    }

    /// Uses a refresh token (RFC 6749 §6), without `resource`: the access token is then Logto's opaque one, the
    /// only kind its userinfo endpoint accepts. Once the refresh token is past 70 % of its life Logto rotates it:
    /// the response carries the next one, and this one must never be sent again; before that it is given back.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, RefreshError> {
        let loaded = self
            .ensure_loaded()
            .await
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        self.token_request(&loaded, &form).await.map_err(refresh_error)
    }

    /// The JWT access token for an API resource (RFC 8707 §2.2): the refresh grant with `resource`, as Logto's SDKs
    /// get it (Logto accepts any resource the authorization request named). Its audience is the resource and its
    /// `scope` the permissions granted for it. Returns the token response and the verified token's claims.
    pub async fn resource_token(
        &self,
        refresh_token: &str,
        resource: &str,
        sub: &str,
        now: u64,
    ) -> Result<(TokenSet, Map<String, Value>), RefreshError> {
        // Logto answers `invalid_target` for an indicator no API resource of the tenant has: the configuration's
        // mistake, which no retry mends.
        let refused = |e: TokenEndpointError| match e {
            TokenEndpointError::Refused { error, .. } if error == "invalid_target" => RefreshError::Denied(format!(
                "Logto has no API resource {resource:?} (invalid_target), which logto.resources names: create it in \
                 Logto Console, API resources, with exactly this identifier, or correct logto.resources"
            )),
            other => refresh_error(other),
        };
        self.audience_token(refresh_token, ("resource", resource), resource, sub, now, refused)
            .await
    }

    /// Logto's organization token (`logto.organization_id`): the refresh grant with `organization_id`. Logto answers
    /// only for members of the organization; the token's audience is `urn:logto:organization:<id>` and its `scope`
    /// the member's organization permissions (only when the authorization request named
    /// [`ORGANIZATIONS_RESOURCE`]). Returns the token response and the verified token's claims.
    pub async fn organization_token(
        &self,
        refresh_token: &str,
        organization_id: &str,
        sub: &str,
        now: u64,
    ) -> Result<(TokenSet, Map<String, Value>), RefreshError> {
        let audience = format!("urn:logto:organization:{organization_id}");
        self.audience_token(
            refresh_token,
            ("organization_id", organization_id),
            &audience,
            sub,
            now,
            refresh_error,
        )
        .await
    }

    /// The refresh grant with one extra parameter, for a JWT access token whose audience must be `audience` and
    /// whose subject must be `sub`; signature, issuer and times are checked as for any token Logto signs. A refusal
    /// reads as `refused` says.
    async fn audience_token(
        &self,
        refresh_token: &str,
        extra: (&str, &str),
        audience: &str,
        sub: &str,
        now: u64,
        refused: impl FnOnce(TokenEndpointError) -> RefreshError,
    ) -> Result<(TokenSet, Map<String, Value>), RefreshError> {
        let loaded = self
            .ensure_loaded()
            .await
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), extra];
        let tokens = self.token_request(&loaded, &form).await.map_err(refused)?;
        let invalid =
            |e: String| RefreshError::Unavailable(format!("the access token for {audience} was refused: {e}"));
        let claims = self
            .verify_signature(
                &loaded,
                &tokens.access_token,
                TokenKind::Access,
                TokenSource::TokenEndpoint,
            )
            .await
            .map_err(|e| invalid(format!("{e:?}")))?;
        jwt::check_common_with(&claims, &self.config.issuer, now, self.config.clock_leeway)
            .map_err(|e| invalid(e.to_string()))?;
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !aud_ok || claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(invalid("audience or subject does not match".into()));
        }
        Ok((tokens, claims))
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3) with `client_secret_basic`, without `resource`, as Logto's
    /// SDKs do: the access token is then the opaque one userinfo accepts (Logto's `/oidc/me` refuses any token with
    /// an audience). A resource's JWT access token comes next, from [`Oidc::resource_token`].
    pub async fn exchange_code(&self, loaded: &Loaded, code: &str, verifier: &str) -> Result<TokenSet, GateError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        self.token_request(loaded, &form).await.map_err(|e| match e {
            TokenEndpointError::Unreachable(idp) => idp.into(),
            TokenEndpointError::Refused { error, description, .. } if error == "invalid_grant" => {
                ClientError::CodeRejected(if description.is_empty() { error } else { description }).into()
            }
            other => other
                .credentials_refused()
                .unwrap_or_else(|| IdpError::BadResponse(other.to_string()))
                .into(),
        })
    }

    /// Claims from Logto's userinfo endpoint (`/oidc/me`): the only source of `identities` and `custom_data`.
    /// Its `sub` must equal the ID token's (OIDC Core §5.3.4).
    pub async fn userinfo(
        &self,
        loaded: &Loaded,
        access_token: &str,
        sub: &str,
    ) -> Result<Map<String, Value>, GateError> {
        let Some(url) = loaded.metadata.userinfo_endpoint.as_deref() else {
            return Err(IdpError::BadResponse("the discovery document has no userinfo_endpoint".into()).into());
        };
        let resp = self.http.get(url, Some(access_token)).await?;
        if resp.status == ::http::StatusCode::UNAUTHORIZED {
            if let Some(aud) = jwt_audience(access_token) {
                // A tenant with a default API resource issues a JWT for it even to an exchange without `resource`,
                // and Logto's userinfo refuses every token with an audience.
                return Err(IdpError::Misconfigured(format!(
                    "Logto issued the sign-in's access token for the API resource {aud:?}, so its userinfo endpoint \
                     refused it; this happens when the tenant has a default API resource. Remove the default (Logto \
                     Console, API resources) or stop using claims only userinfo provides (identities, custom_data, \
                     organization_data: a github_logins rule or such a [headers] mapping)"
                ))
                .into());
            }
        }
        if !resp.status.is_success() {
            return Err(IdpError::BadResponse(format!("userinfo answered {}", resp.status)).into());
        }
        let claims = match serde_json::from_slice::<Value>(&resp.body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(IdpError::BadResponse("userinfo is not a JSON object".into()).into()),
        };
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(IdpError::BadResponse("userinfo is for another subject".into()).into());
        }
        Ok(claims)
    }

    /// Proves the app's credentials (`logto-gate check`): a token request with a code that cannot exist. Logto
    /// authenticates the client before it looks at the code (RFC 6749 §5.2), so `invalid_client` means the app id
    /// or secret is wrong, and `invalid_grant` that they are right.
    pub async fn check_credentials(&self, loaded: &Loaded) -> Result<(), String> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", "logto-gate-check-not-a-real-code"),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", "logto-gate-check-not-a-real-code-verifier-0000000000"),
        ];
        match self.token_request(loaded, &form).await {
            Err(TokenEndpointError::Refused { error, .. }) if error == "invalid_grant" => Ok(()),
            Err(TokenEndpointError::Refused { error, description, .. }) if error == "invalid_client" => Err(format!(
                "Logto refused the app's credentials (invalid_client{}): check logto.app_id and logto.app_secret",
                if description.is_empty() {
                    String::new()
                } else {
                    format!(": {description}")
                }
            )),
            Err(other) => Err(match other.credentials_refused() {
                Some(refused) => refused.to_string(),
                None => format!("the token endpoint gave an unexpected answer: {other}"),
            }),
            Ok(_) => Err("the token endpoint accepted a made-up code".into()),
        }
    }

    /// Where to send the browser to end Logto's own session (OpenID Connect RP-Initiated Logout 1.0 §2). Logto
    /// honours `post_logout_redirect_uri` only with `client_id` or `id_token_hint`; the gate sends `client_id`,
    /// so the session cookie need not carry the raw ID token. `state` is handed back to the post-logout URL
    /// (§3). Without an end-session endpoint (or before discovery loaded) the browser goes straight to the
    /// post-logout URL, with `state` as Logto would have added it.
    pub fn end_session_url(&self, state: Option<&str>) -> String {
        let after = self.config.post_logout_redirect_uri.as_str();
        match self.loaded().and_then(|l| l.metadata.end_session_endpoint.clone()) {
            Some(endpoint) => {
                let mut params = vec![
                    ("client_id", self.config.app_id.as_str()),
                    ("post_logout_redirect_uri", after),
                ];
                params.extend(state.map(|s| ("state", s)));
                append_query(&endpoint, &params)
            }
            None => match state {
                Some(state) => append_query(after, &[("state", state)]),
                None => after.to_owned(),
            },
        }
    }
}

/// How a token endpoint request failed.
#[derive(Debug, thiserror::Error)]
enum TokenEndpointError {
    #[error("{0}")]
    Unreachable(IdpError),
    #[error("token endpoint refused the request ({status}): {error} {description}")]
    Refused {
        status: ::http::StatusCode,
        error: String,
        description: String,
    },
    #[error("{0}")]
    Unusable(String),
}

/// Logto's `error_description` for an app secret past its expiry (`invalid_request`, HTTP 400; Logto's
/// koaAppSecretTranspilation).
const SECRET_EXPIRED: &str = "client secret has expired";

impl TokenEndpointError {
    /// Logto's refusal of the app's own credentials: `invalid_client` (RFC 6749 §5.2: unknown app, wrong secret),
    /// or its `invalid_request` for a secret past the expiry set in the console.
    fn credentials_refused(&self) -> Option<IdpError> {
        match self {
            TokenEndpointError::Refused { error, .. } if error == "invalid_client" => Some(IdpError::InvalidClient),
            TokenEndpointError::Refused { error, description, .. }
                if error == "invalid_request" && description == SECRET_EXPIRED =>
            {
                Some(IdpError::SecretExpired)
            }
            _ => None,
        }
    }
}

/// Why a refresh did not give new tokens.
#[derive(Debug)]
pub enum RefreshError {
    /// `invalid_grant`: the grant was revoked or the token reused; the session is over.
    Revoked(String),
    /// Logto could not be asked or gave an unusable answer; try again later.
    Unavailable(String),
    /// Logto refused this particular request (e.g. not a member of the organization).
    Denied(String),
}

/// Logto's `resource` for organization tokens: only when the authorization request names it does an organization
/// token carry the member's organization permissions in `scope`.
pub const ORGANIZATIONS_RESOURCE: &str = "urn:logto:resource:organizations";

/// How a refresh-grant refusal reads: `invalid_grant` ends the session; Logto's exact answer for a non-member
/// asking for an organization token (HTTP 403 `access_denied`, "user is not a member of the organization") is a
/// denial; anything else is Logto failing, to be tried again (the app's credentials refused included: the session is
/// not the one at fault, and the log says what to mend).
fn refresh_error(e: TokenEndpointError) -> RefreshError {
    match e {
        TokenEndpointError::Refused { error, description, .. } if error == "invalid_grant" => {
            RefreshError::Revoked(if description.is_empty() { error } else { description })
        }
        TokenEndpointError::Refused {
            status,
            error,
            description,
        } if status == ::http::StatusCode::FORBIDDEN
            && error == "access_denied"
            && description == "user is not a member of the organization" =>
        {
            RefreshError::Denied(description)
        }
        other => RefreshError::Unavailable(match other.credentials_refused() {
            Some(refused) => refused.to_string(),
            None => other.to_string(),
        }),
    }
}

/// The `aud` of a token that reads as a JWT, unverified (only to explain a refusal in the log).
fn jwt_audience(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("aud")? {
        Value::String(a) => Some(a.chars().take(200).collect()),
        Value::Array(list) => list
            .first()
            .and_then(Value::as_str)
            .map(|a| a.chars().take(200).collect()),
        _ => None,
    }
}

/// Appends form-encoded parameters to a URL that may already have a query.
fn append_query(base: &str, params: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

#[cfg(test)]
mod tests;
