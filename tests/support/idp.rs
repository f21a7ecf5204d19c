//! Starts the Logto-compatible test IdP (`tests/idp/server.mjs`, oidc-provider) on a free loopback port.
//! Shared by the integration tests and `examples/demo.rs`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};

/// How long the IdP may take to start (Node.js start-up plus loading oidc-provider).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How a start that timed out is reported.
const NO_PORT: &str = "no port reported";

/// A process's state, kernel wait channel and thread count from /proc, for a start-up that hung.
fn process_state(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    format!(
        "in state {}, waiting in {:?}, with {} threads, {} ticks of CPU",
        fields.first().unwrap_or(&"?"),
        wchan,
        fields.get(17).unwrap_or(&"?"),
        fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
    )
}

pub fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("idp")
}

/// Runs `npm ci` in tests/idp once per process when its dependencies are not installed yet.
pub fn ensure_installed() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().map_err(|e| e.to_string())?;
    DONE.get_or_init(|| npm_ci(&idp_dir(), "oidc-provider")).clone()
}

/// `npm ci` in `dir` unless `node_modules/<package>` is already there.
pub fn npm_ci(dir: &std::path::Path, package: &str) -> Result<(), String> {
    {
        let dir = dir.to_owned();
        if dir.join(format!("node_modules/{package}/package.json")).is_file() {
            return Ok(());
        }
        eprintln!("installing npm dependencies (npm ci in {})", dir.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("cannot run npm (is Node.js installed?): {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("npm ci in {} failed: {status}", dir.display()))
        }
    }
}

/// A running test IdP. Killed on drop; it also exits by itself when our end of its stdin closes.
pub struct Idp {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub port: u16,
    /// The host name in its issuer (it listens on 127.0.0.1 whatever this is).
    host: String,
}

#[derive(Default, Clone)]
pub struct IdpOptions {
    pub clients: Vec<Value>,
    pub access_token_ttl: Option<u64>,
    pub interactive: bool,
    pub resources: Option<Value>,
    /// The tenant's default API resource (a JWT for it even without `resource` at the token endpoint).
    pub default_resource: Option<String>,
    /// `Cache-Control: max-age` on the key set, in seconds.
    pub jwks_max_age: Option<u64>,
    pub port: Option<u16>,
    /// The host name of its issuer, e.g. "localhost" so its cookies are not the app's (default 127.0.0.1).
    pub public_host: Option<String>,
    /// ID tokens' lifetime in seconds (default 3600).
    pub id_token_ttl: Option<u64>,
    /// Refresh tokens past 70 % of their life, which Logto rotates on every use (and whose reuse it treats as
    /// theft). Fresh ones, the default, Logto gives back unchanged.
    pub refresh_tokens_aged: bool,
    /// The tenant's ID token settings: which of Logto's extended claims (`roles`, `organizations`, `custom_data`,
    /// ...) the ID token carries; userinfo carries them all. Default: Logto's, `roles`, `organizations` and
    /// `organization_roles`.
    pub id_token_extended_claims: Option<Vec<&'static str>>,
    /// The app's "Always issue Refresh Token" setting: a refresh token even without `prompt=consent`.
    pub always_issue_refresh_token: bool,
}

impl Idp {
    /// Starts the IdP; a start that reports no port in time is tried once more (with what the first one said on
    /// stderr and where it was stuck printed: a rare start-up hang, seen only on the first run after a rebuild
    /// while the machine was busy, is not yet understood).
    pub fn start(options: IdpOptions) -> Idp {
        match Self::try_start(options.clone()) {
            Ok(idp) => idp,
            Err(first) if first.starts_with(NO_PORT) => {
                eprintln!("test IdP: {first}\ntest IdP: trying once more");
                Self::try_start(options).unwrap_or_else(|e| panic!("test IdP, second try: {e}\nfirst try: {first}"))
            }
            Err(e) => panic!("test IdP: {e}"),
        }
    }

    pub fn try_start(options: IdpOptions) -> Result<Idp, String> {
        ensure_installed()?;
        let mut config = json!({
            "clients": options.clients,
            "interactive": options.interactive,
            "port": options.port.unwrap_or(0),
        });
        if let Some(ttl) = options.access_token_ttl {
            config["access_token_ttl"] = json!(ttl);
        }
        if let Some(r) = options.resources {
            config["resources"] = r;
        }
        if let Some(ttl) = options.id_token_ttl {
            config["id_token_ttl"] = json!(ttl);
        }
        if let Some(age) = options.jwks_max_age {
            config["jwks_max_age"] = json!(age);
        }
        if let Some(d) = options.default_resource {
            config["default_resource"] = json!(d);
        }
        if options.refresh_tokens_aged {
            config["refresh_tokens_aged"] = json!(true);
        }
        if options.always_issue_refresh_token {
            config["always_issue_refresh_token"] = json!(true);
        }
        if let Some(claims) = options.id_token_extended_claims {
            config["id_token_extended_claims"] = json!(claims);
        }
        let host = options.public_host.unwrap_or_else(|| "127.0.0.1".to_owned());
        config["public_host"] = json!(host);
        let (child, stdin, port) = spawn_node("server.mjs", "IDP_CONFIG", &config.to_string())?;
        Ok(Idp {
            child,
            _stdin: stdin,
            port,
            host,
        })
    }

    /// Like `logto.endpoint`: the issuer is `<endpoint>/oidc`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn issuer(&self) -> String {
        format!("{}/oidc", self.endpoint())
    }

    fn post(&self, path: &str, body: Value) -> Value {
        blocking_json("POST", &format!("{}{path}", self.endpoint()), Some(body))
    }

    fn get(&self, path: &str) -> Value {
        blocking_json("GET", &format!("{}{path}", self.endpoint()), None)
    }

    /// Registers (or replaces) a confidential web app, as "Traditional web" in the Logto console.
    pub fn register_client(&self, client_id: &str, secret: &str, public_url: &str) {
        self.register_client_with_backchannel(client_id, secret, public_url, None);
    }

    /// Like [`Idp::register_client`], with a back-channel logout URI (`backchannel_logout_session_required`).
    pub fn register_client_with_backchannel(
        &self,
        client_id: &str,
        secret: &str,
        public_url: &str,
        backchannel: Option<&str>,
    ) {
        let mut client = json!({
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uris": [format!("{public_url}/_logto/callback")],
            "post_logout_redirect_uris": [format!("{public_url}/"), format!("{public_url}/_logto/signed-out")],
        });
        if let Some(uri) = backchannel {
            client["backchannel_logout_uri"] = json!(uri);
            client["backchannel_logout_session_required"] = json!(true);
        }
        self.post("/__test/clients", client);
    }

    /// The next token response carries a forged ID token: `mode` is "none", "hs256" (keyed with the client
    /// secret), "payload" (claims changed, signature kept), "resign" (validly signed, wrong claims) or
    /// "typed-at+jwt" (validly signed, right claims, typed as an access token).
    pub fn tamper_next_id_token(&self, mode: &str, overrides: Value) {
        self.post(
            "/__test/tamper-next-id-token",
            json!({"mode": mode, "overrides": overrides}),
        );
    }

    /// Holds refresh-token grants at the token endpoint (`true`) until released (`false`).
    pub fn hold_refreshes(&self, hold: bool) {
        self.post("/__test/hold-refreshes", json!({ "hold": hold }));
    }

    /// Registers a machine-to-machine app (client-credentials grant only).
    pub fn register_m2m_app(&self, client_id: &str, secret: &str) {
        self.post(
            "/__test/clients",
            json!({"client_id": client_id, "client_secret": secret, "grant_types": ["client_credentials"],
                   "response_types": [], "redirect_uris": []}),
        );
    }

    /// The next organization token request is refused with `status` and the JSON `body`.
    pub fn refuse_next_organization_token(&self, status: u16, body: Value) {
        self.post(
            "/__test/next-organization-token-error",
            json!({"status": status, "body": body}),
        );
    }

    /// Suspends the user `sub` as a Logto 1.42 admin does: every refresh token, opaque access token and session of
    /// theirs is deleted and later refreshes are refused (no back-channel logout is sent); returns how many refresh
    /// tokens went.
    pub fn suspend(&self, sub: &str) -> u64 {
        self.post("/__test/suspend", json!({ "sub": sub }))["deleted"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Deletes the user `sub` as Logto 1.42's Management API does: their refresh tokens, opaque access tokens and
    /// sessions are deleted, then the account (a refresh is then refused); grants stay, and no back-channel logout is
    /// sent. Returns how many accounts went.
    pub fn delete_user(&self, sub: &str) -> u64 {
        self.post("/__test/delete-user", json!({ "sub": sub }))["deleted"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Replaces the claims named in `claims` of the user `sub`, as an admin editing the user in Logto (a role taken
    /// away): tokens and userinfo carry them from then on.
    pub fn update_account(&self, sub: &str, claims: Value) {
        self.post("/__test/update-account", json!({ "sub": sub, "claims": claims }));
    }

    /// An admin sets the app `client_id`'s added secrets in Logto (`[{name, value, expires_at?}]`, `expires_at` in
    /// milliseconds), and deletes its own (legacy) secret when `delete_legacy`.
    pub fn set_app_secrets(&self, client_id: &str, secrets: Value, delete_legacy: bool) {
        self.post(
            "/__test/app-secrets",
            json!({ "client_id": client_id, "secrets": secrets, "delete_legacy": delete_legacy }),
        );
    }

    /// An admin deletes the API resource `indicator` in Logto: token requests naming it are refused
    /// (`invalid_target`) from then on.
    pub fn delete_resource(&self, indicator: &str) {
        assert_eq!(
            self.post("/__test/delete-resource", json!({ "indicator": indicator }))["deleted"],
            true,
            "{indicator} was not a resource of the IdP"
        );
    }

    /// A subject token for the user `sub`, as Logto's Management API issues for impersonation
    /// (`POST /api/subject-tokens`): good once, for 600 s, at the token endpoint's token exchange (RFC 8693).
    pub fn subject_token(&self, sub: &str) -> String {
        self.post("/__test/subject-token", json!({ "userId": sub }))["subjectToken"]
            .as_str()
            .expect("a subject token")
            .to_owned()
    }

    /// Revokes every grant, as a Logto admin revoking the user's sessions would.
    pub fn revoke_grants(&self) -> u64 {
        self.post("/__test/revoke-grants", json!({}))["revoked"]
            .as_u64()
            .unwrap_or(0)
    }

    /// How many grants with refresh tokens still exist (revoked ones do not).
    pub fn live_grants(&self) -> u64 {
        self.get("/__test/live-grants")["live"].as_u64().unwrap_or(0)
    }

    pub fn add_account(&self, id: &str, claims: Value) {
        self.post("/__test/accounts", json!({"id": id, "claims": claims}));
    }

    /// Adds the account "carol" (`sub` u_carol03), a member of 400 organizations: a session that keeps their ids (a
    /// rule reads organizations) needs four cookies.
    pub fn add_member_of_400_organizations(&self) {
        let organizations: Vec<String> = (0..400).map(|i| format!("org_{i:020}")).collect();
        self.add_account(
            "carol",
            json!({"sub": "u_carol03", "username": "carol", "email": "carol@example.com",
                "email_verified": true, "roles": [], "organizations": organizations}),
        );
    }

    /// Rotates to a new RSA-4096 key without `alg`, next to the old EC key; ID tokens become RS256.
    pub fn rotate_keys_to_rsa(&self) {
        self.rotate_keys("rsa");
    }

    /// Puts a new signing key first: "rsa" (RS256), "ec256" (ES256) or "ps256" (PS256).
    pub fn rotate_keys(&self, kind: &str) {
        self.post("/__test/rotate-keys", json!({ "kind": kind }));
    }

    /// A JWT over `payload` signed with the IdP's current key (header fields may be overridden).
    pub fn sign(&self, payload: Value, header: Value) -> String {
        let v = self.post("/__test/sign", json!({"payload": payload, "header": header}));
        v["token"].as_str().unwrap_or_default().to_owned()
    }

    pub fn stats(&self) -> Value {
        self.get("/__test/stats")
    }

    pub fn last_authorization_request(&self) -> Value {
        self.get("/__test/last-auth")
    }

    pub fn jwks(&self) -> Value {
        self.get("/oidc/jwks")
    }
}

/// Starts `node <script>` in tests/idp with its JSON configuration in the environment variable `env_var`, and waits
/// (bounded) for the `LISTENING <port>` line. Returns the child, our end of its stdin (it exits when that closes)
/// and the port.
pub fn spawn_node(script: &str, env_var: &str, config: &str) -> Result<(Child, Option<ChildStdin>, u16), String> {
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(idp_dir())
        .env(env_var, config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start node: {e}"))?;
    let stdin = child.stdin.take();
    // The last lines of stderr, to say why an IdP that never came up failed.
    let stderr_tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<String>::new()));
    let mut stderr_reader = None;
    if let Some(stderr) = child.stderr.take() {
        let tail = std::sync::Arc::clone(&stderr_tail);
        stderr_reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut t = tail.lock().unwrap();
                if t.len() == 20 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }));
    }
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(port) = line.strip_prefix("LISTENING ") {
                let _ = tx.send(port.trim().parse::<u16>().ok());
                break;
            }
        }
        // Keep draining so the IdP never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(port)) => Ok((child, stdin, port)),
        outcome => {
            let exited = child.try_wait().ok().flatten();
            let stuck = process_state(child.id());
            let _ = child.kill();
            let _ = child.wait();
            if let Some(reader) = stderr_reader {
                let _ = reader.join(); // Ends with the child: its stderr is closed now.
            }
            let why = match (outcome, exited) {
                (Err(mpsc::RecvTimeoutError::Timeout), _) => {
                    format!("{NO_PORT} within {START_TIMEOUT:?} (node was {stuck})")
                }
                (_, Some(status)) => format!("node exited ({status}) before listening"),
                _ => "node closed its stdout before listening".to_owned(),
            };
            let tail: Vec<String> = stderr_tail.lock().unwrap().iter().cloned().collect();
            Err(format!("{why}; stderr:\n{}", tail.join("\n")))
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP/1.1 JSON client over std, so the harness needs no runtime of its own.
pub fn blocking_json(method: &str, url: &str, body: Option<Value>) -> Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to the IdP");
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("write to the IdP");
    let mut resp = String::new();
    stream.read_to_string(&mut resp).expect("read from the IdP");
    let payload = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(payload).unwrap_or(Value::Null)
}
