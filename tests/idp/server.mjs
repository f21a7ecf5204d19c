// A Logto-compatible OpenID provider for logto-gate's tests and demo.
//
// It is `oidc-provider` (the engine Logto is built on) configured the way Logto configures it:
//   - issuer `<origin>/oidc`, routes /oidc/auth, /oidc/token, /oidc/me, /oidc/jwks, /oidc/session/end
//   - EC P-384 signing key (ES384) by default; after /__test/rotate-keys an RSA-4096 key without an `alg`
//     member is put first (next to the old EC key) and ID tokens switch to RS256, as after a Logto key rotation
//   - confidential web apps authenticate with client_secret_basic
//   - refresh tokens only with offline_access AND prompt=consent (oidc-provider's default, kept by Logto), rotated
//     for a confidential client only past 70 % of their 14-day life (Logto's default)
//   - `identities`, `sso_identities`, `custom_data` and `organization_data` only from userinfo (the tenant's
//     default ID token settings; `id_token_extended_claims` sets others), claims without a value are JSON null,
//     `updated_at`/`created_at` in milliseconds, `sid` in every ID token, `iss` on the authorization response
//     (RFC 9207)
//   - error bodies with Logto's `code` and `message` next to `error` and `error_description`; `scope: ""` in the
//     answer to a token request that names a `resource`
//   - a consent step even for first-party apps, RP-initiated logout that signs out without a question
//   - organization tokens from the refresh grant with `organization_id` (members only, the organizations scope
//     required), spending the refresh token as any refresh does; with `resource` too, a token for the resource
//     carrying `organization_id` and the scopes the member's organization roles grant for it
//   - the token exchange (RFC 8693) of Logto's user impersonation, `act` naming the actor (see tokenExchange)
//
// Started as `node server.mjs` with the environment variable IDP_CONFIG holding JSON (all optional):
//   { "port": 0, "host": "127.0.0.1", "public_host": "localhost", "id_token_ttl": 3600, "clients": [ {client_id, client_secret, redirect_uris, post_logout_redirect_uris} ],
//     "accounts": { "<id>": { claims... } }, "interactive": false, "access_token_ttl": 3600,
//     "resources": { "<indicator>": { "scopes": ["read"] } }, "default_resource": "<indicator>", "jwks_max_age": 10,
//     "refresh_tokens_aged": false, "id_token_extended_claims": ["roles", "organizations", "organization_roles"],
//     "always_issue_refresh_token": false }
// It prints `LISTENING <port>` on stdout once it accepts connections and exits when stdin closes, so a test
// harness that dies never leaves it behind.
//
// Test-only endpoints (never part of Logto):
//   POST /__test/clients        JSON client metadata, added by client_id (again: redirect URIs are added)
//   POST /__test/accounts       JSON {id, claims}
//   POST /__test/rotate-keys    {kind}: put a new key first; "rsa" (default) is Logto's rotation to RSA-4096 without
//                               `alg` (ID tokens become RS256); "ec256" gives ES256, "ps256" PS256
//   GET  /__test/stats          counters: token grants by grant_type, userinfo calls, jwks fetches, discovery fetches,
//                               and token_requests: [{grant_type, resource}] in order
//   POST /__test/next-organization-token-error {status, body}: the next organization token request gets this answer
//   GET  /__test/last-auth      the query parameters of the last authorization request
//   POST /__test/tamper-next-id-token {mode: none|hs256|payload|resign|typed-at+jwt, overrides}: forge the next ID token
//   POST /__test/hold-refreshes {hold}: refresh-token grants wait while held (stats.held_refreshes counts them)
//                               and go on when released
//   POST /__test/revoke-grants  revoke every grant (refresh tokens then get invalid_grant)
//   POST /__test/suspend {sub}  Logto's suspension of a user: their refresh tokens, opaque access tokens and sessions
//                               deleted (signOutUser), and every later refresh refused
//   POST /__test/delete-user {sub} Logto's deletion of a user: the same deletions first, then the account
//   POST /__test/update-account {sub, claims}: an admin's edit of a user (roles, organizations): the claims given
//                               replace the account's, for tokens and userinfo from then on
//   POST /__test/delete-resource {indicator}: an admin's deletion of an API resource (token requests naming it
//                               get invalid_target from then on)
//   GET  /__test/live-grants    how many grants with refresh tokens still exist
//   POST /__test/subject-token {userId}: Logto's Management API POST /api/subject-tokens, a subject token for the
//                               token exchange (impersonation; see tokenExchange)
// Logto behaviour also kept: RFC 7009 revocation at /oidc/token/revocation (counted in stats.revocations), RFC 7662
// introspection at /oidc/token/introspection (stats.introspections lists each request's token_type_hint).
//   POST /__test/app-secrets    {client_id, secrets: [{name, value, expires_at?}], delete_legacy?}: Logto's added app
//                               secrets (see appSecrets); stats.app_secrets counts their uses by name
//   POST /__test/sign           {payload, header?}: a JWT signed with the current key (to build access tokens)
// In tests (interactive=false) sign-in completes by itself: the account is the `idp_login_as` cookie on the IdP's
// origin, else "alice". In the demo (interactive=true) a small sign-in page asks which account to use.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(process.env.IDP_CONFIG || '{}');
const host = config.host || '127.0.0.1';

const now = Date.now();
const accounts = {
  alice: {
    sub: 'u_alice0001',
    name: 'Alice Example',
    picture: null,
    username: 'alice',
    email: 'alice@example.com',
    email_verified: true,
    phone_number: null,
    phone_number_verified: false,
    roles: ['admin', 'editor'],
    organizations: ['org_acme'],
    organization_roles: ['org_acme:member'],
    organization_data: [{ id: 'org_acme', name: 'Acme', description: null }],
    organization_permissions: { org_acme: ['read:members', 'invite:members'] },
    created_at: now - 86_400_000,
    updated_at: now,
    custom_data: { team: 'platform' },
    identities: {
      github: {
        userId: '1234567',
        details: {
          id: '1234567',
          name: 'Alice Example',
          email: 'alice@example.com',
          avatar: 'https://avatars.githubusercontent.com/u/1234567',
          rawData: { userInfo: { login: 'Alice-GH', id: 1234567, name: 'Alice Example' } },
        },
      },
    },
    sso_identities: [
      { issuer: 'https://sso.acme.example', identityId: 'alice@acme', detail: { email: 'alice@acme.example' } },
    ],
  },
  bob: {
    sub: 'u_bob000002',
    name: null,
    picture: null,
    username: 'bob',
    email: 'bob@contractor.example.net',
    email_verified: false,
    phone_number: null,
    phone_number_verified: false,
    roles: [],
    organizations: [],
    organization_roles: [],
    organization_data: [],
    created_at: now - 3_600_000,
    updated_at: now,
    custom_data: {},
    identities: {},
    sso_identities: [],
  },
  ...(config.accounts || {}),
};
for (const [id, claims] of Object.entries(accounts)) {
  if (!claims.sub) claims.sub = id;
}

// Claims by scope as Logto defines them.
const claimsByScope = {
  openid: ['sub'],
  profile: ['name', 'picture', 'username', 'created_at', 'updated_at'],
  email: ['email', 'email_verified'],
  phone: ['phone_number', 'phone_number_verified'],
  roles: ['roles'],
  'urn:logto:scope:organizations': ['organizations', 'organization_data'],
  'urn:logto:scope:organization_roles': ['organization_roles'],
  custom_data: ['custom_data'],
  identities: ['identities', 'sso_identities'],
};
// Logto's "extended" claims: userinfo always releases them (for the granted scopes); the ID token only those the
// tenant's ID token settings enable, by default `roles`, `organizations` and `organization_roles`
// (config.id_token_extended_claims sets another list, as an admin can in the Console).
const extendedClaims = new Set([
  'roles', 'organizations', 'organization_data', 'organization_roles', 'custom_data', 'identities', 'sso_identities',
]);
const idTokenExtendedClaims = new Set(config.id_token_extended_claims || ['roles', 'organizations', 'organization_roles']);

const stats = {
  grants: {}, userinfo: 0, jwks: 0, discovery: 0, authorizations: 0, end_sessions: 0, backchannel: { success: 0, error: 0 },
  token_requests: [], revocations: 0, introspections: [], held_refreshes: 0,
  // Client authentications with one of an app's added secrets, by the secret's name (Logto's audit log names it).
  app_secrets: {},
  // Sign-ins the person went through (Logto's sign-in page), as against sign-ins its session answered alone.
  logins: 0,
};
// While set (POST /__test/hold-refreshes {hold: true}), refresh-token grants wait here until released, so a test can
// act while the gate's refresh is at Logto.
let holdRefreshes = false;
const heldRefreshes = [];
// Logto's resource for organization tokens: only grants whose authorization request named it get organization
// permissions in their organization tokens' `scope`.
const ORGANIZATIONS_RESOURCE = 'urn:logto:resource:organizations';
// The scopes the provider knows besides resources' (oidc-provider's `scopes`).
const OIDC_SCOPES = ['openid', 'offline_access', ...Object.keys(claimsByScope).filter((s) => s !== 'openid')];
const organizationGrants = new Set();
const grantIds = new Set();
// Every refresh token, opaque access token and session stored, by its id: the account it belongs to (what Logto's
// signOutUser deletes when an admin suspends or deletes a user).
const refreshTokenAccounts = new Map();
const accessTokenAccounts = new Map();
const sessionAccounts = new Map();
let lastAuth = {};

// Logto's signOutUser (libraries/user.ts): every refresh token, opaque access token and session of the user
// deleted (revokeInstanceByUserId for each kind). Answers how many refresh tokens went.
async function signOutUser(sub) {
  let refreshTokens = 0;
  for (const [owners, model] of [
    [refreshTokenAccounts, 'RefreshToken'],
    [accessTokenAccounts, 'AccessToken'],
    [sessionAccounts, 'Session'],
  ]) {
    for (const [id, accountId] of owners) {
      if (accountId !== sub) continue;
      await provider[model].adapter.destroy(id);
      owners.delete(id);
      if (model === 'RefreshToken') refreshTokens += 1;
    }
  }
  return refreshTokens;
}

function ecKey() {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(16).toString('base64url'), alg: 'ES384', use: 'sig' };
}

function ec256Key() {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(16).toString('base64url'), alg: 'ES256', use: 'sig' };
}

function rsaKey(modulusLength = 4096) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength });
  const jwk = privateKey.export({ format: 'jwk' });
  // Logto publishes rotated RSA keys without an `alg` member.
  return { ...jwk, kid: crypto.randomBytes(16).toString('base64url'), use: 'sig' };
}

const state = {
  keys: [ecKey()],
  idTokenAlg: 'ES384',
  clients: config.clients || [],
  cookieKeys: [crypto.randomBytes(32).toString('base64url')],
};

let issuer;
let provider;

// A Logto application other than machine-to-machine may use the code, refresh and token-exchange grants
// (core/src/oidc/utils.ts, getConstantClientMetadata).
function normaliseClient(client) {
  return {
    grant_types: ['authorization_code', 'refresh_token', TOKEN_EXCHANGE],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    post_logout_redirect_uris: [],
    ...client,
  };
}

async function findAccount(ctx, sub) {
  const account = Object.values(accounts).find((a) => a.sub === sub);
  // As Logto: "The user may be deleted after the token is issued" (a refresh is then invalid_grant).
  if (!account) throw new errors.InvalidGrant('user not found');
  // As Logto 1.42's findAccount: a suspended user's surviving tokens still cannot be used.
  if (account.suspended) throw new errors.InvalidGrant('user is suspended');
  return {
    accountId: sub,
    async claims(use, scope) {
      const granted = new Set(String(scope || '').split(' '));
      const out = { sub: account.sub };
      for (const [s, names] of Object.entries(claimsByScope)) {
        if (!granted.has(s)) continue;
        for (const name of names) {
          if (use !== 'userinfo' && extendedClaims.has(name) && !idTokenExtendedClaims.has(name)) continue;
          if (name in account) out[name] = account[name];
        }
      }
      return out;
    },
  };
}

// What Logto's resource indicators give a resource's access tokens: its scopes, its indicator as audience, a JWT.
function resourceServerInfo(indicator) {
  if (indicator === ORGANIZATIONS_RESOURCE) {
    return { scope: '', audience: indicator, accessTokenFormat: 'jwt', jwt: { sign: { alg: state.idTokenAlg } } };
  }
  const resource = (config.resources || {})[indicator];
  if (!resource) throw new errors.InvalidTarget();
  return {
    scope: (resource.scopes || []).join(' '),
    audience: indicator,
    accessTokenTTL: config.access_token_ttl || 3600,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: state.idTokenAlg } },
  };
}

// Logto's user impersonation (core/src/oidc/grants/token-exchange, RFC 8693): the Management API issues a subject
// token for a user (POST /api/subject-tokens; here /__test/subject-token), good once for 600 s; an app exchanges it
// at the token endpoint for an access token of that user, a JWT when `resource` is named. With `actor_token` (an
// opaque access token with `openid`, of whoever acts) the token carries `act: {sub: <actor>}`; without one nothing
// in the token tells it from the user's own.
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const subjectTokens = new Map();

async function tokenExchange(p, ctx) {
  const { client, params } = ctx.oidc;
  for (const name of ['subject_token', 'subject_token_type']) {
    if (!params[name]) throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  }
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) throw new errors.InvalidGrant('unsupported subject token type');
  const subject = subjectTokens.get(String(params.subject_token));
  if (!subject || subject.expiresAt <= Date.now()) throw new errors.InvalidGrant('subject token not found');
  if (subject.consumedAt) throw new errors.InvalidGrant('subject token is already consumed');
  const account = await findAccount(ctx, subject.userId);
  ctx.oidc.entity('Account', account);
  if (params.actor_token && params.actor_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidGrant('unsupported actor token type');
  }
  let actorId;
  if (params.actor_token) {
    const actor = await p.AccessToken.find(String(params.actor_token)).catch(() => undefined);
    if (!actor?.accountId) throw new errors.InvalidGrant('invalid actor token');
    if (!String(actor.scope || '').split(' ').includes('openid')) {
      throw new errors.InvalidGrant('actor token must have openid scope');
    }
    actorId = actor.accountId;
  }
  const requested = String(params.scope || '').split(' ').filter(Boolean);
  const grant = new p.Grant({ accountId: account.accountId, clientId: client.clientId });
  let resourceServer;
  let scope;
  if (params.resource) {
    const indicator = String(params.resource);
    resourceServer = new p.ResourceServer(indicator, resourceServerInfo(indicator));
    scope = requested.filter((s) => resourceServer.scopes.has(s)).join(' ');
    grant.addResourceScope(indicator, scope);
  } else {
    scope = requested.filter((s) => OIDC_SCOPES.includes(s)).join(' ');
    grant.addOIDCScope(scope);
  }
  const grantId = await grant.save();
  ctx.oidc.entity('Grant', grant);
  const token = new p.AccessToken({
    accountId: account.accountId, clientId: client.clientId, client, gty: TOKEN_EXCHANGE, grantId, scope,
  });
  if (resourceServer) token.resourceServer = resourceServer;
  if (actorId) token.extra = { act: { sub: actorId } };
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();
  subject.consumedAt = Date.now();
  ctx.body = { access_token: value, expires_in: token.expiration, scope: token.scope, token_type: token.tokenType };
}

function buildProvider() {
  const p = new Provider(issuer, {
    clients: state.clients.map(normaliseClient),
    jwks: { keys: state.keys },
    cookies: { keys: state.cookieKeys },
    clientDefaults: {
      id_token_signed_response_alg: state.idTokenAlg,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['ES384', 'RS256', 'ES256', 'PS256'],
    },
    claims: claimsByScope,
    scopes: OIDC_SCOPES,
    conformIdTokenClaims: false,
    extraParams: ['first_screen', 'interaction_mode', 'direct_sign_in', 'organization_id', 'login_hint'],
    ttl: {
      AccessToken: config.access_token_ttl || 3600,
      IdToken: config.id_token_ttl || 3600,
      AuthorizationCode: 600,
      Interaction: 3600,
      Session: 14 * 86400,
      // Logto's grants last 180 days whatever the refresh token's life ("the longest allowed duration of the refresh
      // token"), so a refresh token rotated past 70 % goes on past its first 14 days.
      Grant: 180 * 86400,
      RefreshToken: 14 * 86400,
    },
    // Logto's rule (core/src/oidc/init.ts): with the app's "rotate refresh token" switch on (the default),
    // oidc-provider's own: a public client's refresh token on every use, a confidential client's (the gate's) only
    // once it is past 70 % of its 14-day life; before that Logto answers with the same refresh token.
    // `refresh_tokens_aged` stands for a refresh token past that point, which a test cannot wait for: every use
    // then rotates it, and a consumed one presented again is reuse (oidc-provider revokes the grant).
    rotateRefreshToken: (ctx) => {
      const { RefreshToken: refreshToken, Client: client } = ctx.oidc.entities;
      if (client.clientAuthMethod === 'none' && !refreshToken.isSenderConstrained()) return true;
      return Boolean(config.refresh_tokens_aged) || refreshToken.ttlPercentagePassed() >= 70;
    },
    // Logto's rule (core/src/oidc/init.ts): a refresh token with offline_access (which oidc-provider keeps only with
    // prompt=consent), or without it for a traditional web app whose "Always issue Refresh Token" setting is on
    // (config.always_issue_refresh_token).
    issueRefreshToken: (ctx, client, code) => client.grantTypeAllowed('refresh_token')
      && (code.scopes.has('offline_access')
        || (client.applicationType === 'web' && Boolean(config.always_issue_refresh_token))),
    pkce: { required: () => false },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        // Logto ends the session at once, without oidc-provider's "Do you want to sign out?" question.
        logoutSource: async (ctx, form) => {
          const withYes = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
          ctx.body = `<!DOCTYPE html><html><head><title>Signing out</title></head><body>${withYes}
            <script>document.forms[0].submit()</script>
            <noscript><button type="submit" form="op.logoutForm">Sign out</button></noscript></body></html>`;
        },
      },
      backchannelLogout: { enabled: true },
      // RFC 7009, as Logto: revoking a refresh token ends its grant (Logto keeps offline_access grants through
      // end-session, so only this ends them).
      revocation: { enabled: true },
      // RFC 7662, enabled in Logto too (core/src/oidc/init.ts): `active` says whether a token still stands.
      introspection: { enabled: true },
      // Machine-to-machine apps: the client-credentials grant, with `resource` for a JWT whose `sub` is the
      // app's own client_id (as Logto's M2M tokens).
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // A tenant may set a default API resource (config.default_resource); then even a token request without
        // `resource` gets a JWT for it (oidc-provider: granted by default, then used when none is named).
        // Otherwise, as in Logto, a JWT only when `resource` is sent to the token endpoint.
        defaultResource: () => config.default_resource,
        useGrantedResource: () => Boolean(config.default_resource),
        getResourceServerInfo: (ctx, indicator) => resourceServerInfo(indicator),
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // oidc-provider refuses outgoing requests (back-channel logout) to special-use addresses such as loopback, to
    // stop SSRF. Everything here runs on loopback, so the test IdP drops that guard; a real Logto posts to the
    // gate's public URL.
    // Logto's back-channel logout requests carry an empty User-Agent.
    fetch: (url, options) => {
      const { dispatcher, ...rest } = options;
      return globalThis.fetch(url, { ...rest, headers: { ...rest.headers, 'user-agent': '' } });
    },
    findAccount,
    // As Logto (core/src/oidc/extra-token-claims.ts): an access token from the token exchange keeps the `act` its
    // grant recorded (RFC 8693 §4.1: who acts for the subject).
    extraTokenClaims: (ctx, token) => (token.gty === TOKEN_EXCHANGE && token.extra?.act ? { act: token.extra.act } : undefined),
  });
  p.proxy = false;
  p.registerGrantType(
    TOKEN_EXCHANGE,
    (ctx) => tokenExchange(p, ctx),
    ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'scope', 'resource'],
  );
  p.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type;
    stats.grants[type] = (stats.grants[type] || 0) + 1;
    const idToken = ctx.body && ctx.body.id_token;
    if (idToken) {
      stats.last_id_token_header = JSON.parse(Buffer.from(idToken.split('.')[0], 'base64url').toString('utf8'));
    }
  });
  p.on('end_session.success', () => {
    stats.end_sessions += 1;
  });
  p.on('backchannel.success', () => {
    stats.backchannel.success += 1;
  });
  p.on('backchannel.error', (ctx, err) => {
    stats.backchannel.error += 1;
    stats.backchannel.last_error = String(err && err.message);
  });
  p.on('refresh_token.saved', (token) => {
    grantIds.add(token.grantId);
    refreshTokenAccounts.set(token.jti, token.accountId);
  });
  // JWT access tokens (for a resource) are not stored, so only opaque ones are saved and can be deleted.
  p.on('access_token.saved', (token) => {
    accessTokenAccounts.set(token.jti, token.accountId);
  });
  p.on('session.saved', (session) => {
    if (session.accountId) sessionAccounts.set(session.jti, session.accountId);
  });
  // Logto's ID tokens always carry `sid`; oidc-provider's only for apps registered for back-channel logout with
  // `backchannel_logout_session_required`.
  p.Client.prototype.includeSid = () => true;
  // Logto's error bodies carry its own `code` and `message` next to OAuth's `error` and `error_description`.
  p.use(async (ctx, next) => {
    await next();
    const body = ctx.body;
    if (ctx.status >= 400 && body && typeof body === 'object' && typeof body.error === 'string' && !body.code) {
      ctx.body = { ...body, code: `oidc.${body.error}`, message: body.error_description || body.error };
    }
    // Logto answers a token request that names a `resource` (a JWT access token for it) with `scope: ""`; the
    // token's own `scope` claim holds the granted scopes.
    if (ctx.status === 200 && body && typeof body === 'object' && body.access_token && ctx.oidc?.params?.resource) {
      ctx.body = { ...body, scope: '' };
    }
    const last = stats.token_requests[stats.token_requests.length - 1];
    if (ctx.path === '/token' && last && ctx.body && typeof ctx.body === 'object') last.answered_scope = ctx.body.scope;
  });
  p.on('grant.error', (ctx) => {
    const type = `${ctx.oidc.params?.grant_type || 'unknown'}_error`;
    stats.grants[type] = (stats.grants[type] || 0) + 1;
  });
  return p;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function cookieValue(req, name) {
  for (const part of String(req.headers.cookie || '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function finishConsent(req, res, details) {
  const { prompt: { details: promptDetails }, params, session: { accountId } } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (promptDetails.missingOIDCScope) grant.addOIDCScope(promptDetails.missingOIDCScope.join(' '));
  if (promptDetails.missingOIDCClaims) grant.addOIDCClaims(promptDetails.missingOIDCClaims);
  if (promptDetails.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(promptDetails.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  if ([].concat(params.resource || []).includes(ORGANIZATIONS_RESOURCE)) organizationGrants.add(grantId);
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

function signJwt(payload, headerExtra = {}) {
  const key = state.keys[0];
  const alg = state.idTokenAlg;
  // A header field given as null is left out (a token without `typ`, say).
  const header = Object.fromEntries(Object.entries({ alg, kid: key.kid, ...headerExtra }).filter(([, v]) => v !== null));
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const privateKey = crypto.createPrivateKey({ key, format: 'jwk' });
  const hash = { ES384: 'sha384', ES256: 'sha256', RS256: 'sha256', PS256: 'sha256' }[alg];
  const options = { key: privateKey, dsaEncoding: 'ieee-p1363' };
  if (alg === 'PS256') Object.assign(options, { padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  return `${input}.${crypto.sign(hash, Buffer.from(input), options).toString('base64url')}`;
}

// Attack tests: the next token response's ID token is replaced by a forged one (see /__test/tamper-next-id-token).
let pendingTamper = null;

function interceptIdToken(res, tamper) {
  const chunks = [];
  const end = res.end.bind(res);
  res.write = (chunk) => {
    chunks.push(Buffer.from(chunk));
    return true;
  };
  res.end = (chunk, ...rest) => {
    if (chunk && typeof chunk !== 'function') chunks.push(Buffer.from(chunk));
    let body = Buffer.concat(chunks).toString('utf8');
    try {
      const json = JSON.parse(body);
      if (json.id_token) {
        json.id_token = forge(json.id_token, tamper);
        body = JSON.stringify(json);
      }
    } catch {
      // not JSON: leave it
    }
    if (!res.headersSent) res.setHeader('content-length', Buffer.byteLength(body));
    return end(body);
  };
}

function forge(original, { mode, overrides = {} }) {
  const [h, p, sig] = original.split('.');
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  for (const [k, v] of Object.entries(overrides)) {
    if (v === null) delete payload[k];
    else payload[k] = v;
  }
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  if (mode === 'none') return `${enc({ alg: 'none', typ: 'JWT' })}.${enc(payload)}.`;
  if (mode === 'hs256') {
    // "Signed" with the client secret, as a confused verifier might accept.
    const client = state.clients.find((c) => c.client_id === payload.aud) || state.clients[0];
    const input = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(payload)}`;
    const mac = crypto.createHmac('sha256', client.client_secret).update(input).digest('base64url');
    return `${input}.${mac}`;
  }
  if (mode === 'payload') return `${h}.${enc(payload)}.${sig}`; // claims changed, signature kept
  // The genuine claims, validly signed, typed as an access token (RFC 9068): a token of another kind.
  if (mode === 'typed-at+jwt') return signJwt(payload, { typ: 'at+jwt' });
  return signJwt(payload); // "resign": a valid signature over wrong claims
}

// Logto's organization token: the refresh grant with `organization_id` returns an access token for the
// organization (aud urn:logto:organization:<id>, scope = the user's organization permissions), only for members.
// As Logto's grant (core/src/oidc/grants/refresh-token.ts, a fork of oidc-provider's refresh grant), it needs the
// refresh token to carry the organizations scope, spends the token as the plain refresh grant does (rotated past
// 70 % of its life, or always with `refresh_tokens_aged`; a consumed one presented again revokes the grant, counted
// as a refresh_token_error as Logto's refresh grant counts it) and answers with the refresh token to use next. With
// `resource` as well, the token is for the resource and names the organization (organization-level API resources;
// the member's scopes for it come from the account's `organization_resource_scopes[org][resource]`).
let nextOrganizationTokenError = null;

// Logto's application secrets: an app may hold several besides its own (legacy) one, each with an optional expiry,
// so that one can be rotated without downtime (Console: Endpoints & Credentials; Management API
// /api/applications/{id}/secrets). As Logto's koaAppSecretTranspilation: Basic credentials naming one of them are
// rewritten to the app's own secret for oidc-provider, which knows one secret per client; an expired one is refused
// with invalid_request "client secret has expired" (400, rendered with `code` and `message`). Any other secret is
// left to oidc-provider. Set by POST /__test/app-secrets.
const appSecrets = new Map();

// Returns the refusal to send, or null once the request may go on (its credentials rewritten when they named an
// added secret).
function transpileAppSecret(req) {
  const [scheme, encoded, extra] = String(req.headers.authorization || '').split(' ');
  if (scheme?.toLowerCase() !== 'basic' || !encoded || extra !== undefined) return null;
  const [id, secret] = Buffer.from(encoded, 'base64').toString().split(':').map((part) => {
    try {
      return decodeURIComponent(part.replaceAll('+', '%20'));
    } catch {
      return undefined;
    }
  });
  const client = state.clients.find((c) => c.client_id === id);
  const added = (appSecrets.get(id) || []).find((s) => s.value === secret);
  if (!client || !added) return null;
  stats.app_secrets[added.name] = (stats.app_secrets[added.name] || 0) + 1;
  if (added.expires_at && added.expires_at < Date.now()) {
    const description = 'client secret has expired';
    return { error: 'invalid_request', error_description: description, code: 'oidc.invalid_request', message: description };
  }
  const own = `${encodeURIComponent(id)}:${encodeURIComponent(client.client_secret)}`;
  req.headers.authorization = `Basic ${Buffer.from(own).toString('base64')}`;
  return null;
}

async function organizationToken(req, res, params) {
  if (nextOrganizationTokenError) {
    const { status, body } = nextOrganizationTokenError;
    nextOrganizationTokenError = null;
    return send(res, status, body);
  }
  const refused = (status, body) => {
    stats.grants.organization_token_error = (stats.grants.organization_token_error || 0) + 1;
    return send(res, status, { ...body, code: `oidc.${body.error}`, message: body.error_description });
  };
  const [id, secret] = Buffer.from(String(req.headers.authorization || '').replace(/^Basic /, ''), 'base64')
    .toString('utf8').split(':').map(decodeURIComponent);
  const client = state.clients.find((c) => c.client_id === id);
  if (!client || client.client_secret !== secret) return send(res, 401, { error: 'invalid_client' });
  const value = params.get('refresh_token');
  let rt = await provider.RefreshToken.find(value, { ignoreExpiration: true });
  if (!rt || rt.isExpired || rt.clientId !== id || !(await provider.Grant.find(rt.grantId))) {
    return refused(400, { error: 'invalid_grant', error_description: 'grant request is invalid' });
  }
  if (!rt.scopes.has('urn:logto:scope:organizations')) {
    return refused(403, { error: 'insufficient_scope', error_description: 'refresh token missing required scope' });
  }
  if (rt.consumed) {
    stats.grants.refresh_token_error = (stats.grants.refresh_token_error || 0) + 1;
    await Promise.all([rt.destroy(), provider.Grant.adapter.destroy(rt.grantId)]);
    return refused(400, { error: 'invalid_grant', error_description: 'refresh token already used' });
  }
  const org = params.get('organization_id');
  const account = Object.values(accounts).find((a) => a.sub === rt.accountId);
  if (!account || !(account.organizations || []).includes(org)) {
    return refused(403, { error: 'access_denied', error_description: 'user is not a member of the organization' });
  }
  // As Logto's refresh grant: the scopes asked for must be the refresh token's.
  const asked = String(params.get('scope') || '').split(' ').filter(Boolean);
  if (asked.some((p) => !rt.scopes.has(p))) {
    return refused(400, { error: 'invalid_scope', error_description: 'refresh token missing requested scopes' });
  }
  let next = value;
  if (Boolean(config.refresh_tokens_aged) || rt.ttlPercentagePassed() >= 70) {
    await rt.consume();
    rt = new provider.RefreshToken({
      accountId: rt.accountId, acr: rt.acr, amr: rt.amr, authTime: rt.authTime, claims: rt.claims,
      client: await provider.Client.find(id), expiresWithSession: rt.expiresWithSession, iiat: rt.iiat,
      grantId: rt.grantId, gty: rt.gty, nonce: rt.nonce, resource: rt.resource,
      rotations: typeof rt.rotations === 'number' ? rt.rotations + 1 : 1, scope: rt.scope,
      sessionUid: rt.sessionUid, sid: rt.sid,
    });
    next = await rt.save();
    stats.grants.organization_token_rotations = (stats.grants.organization_token_rotations || 0) + 1;
  }
  const now = Math.floor(Date.now() / 1000);
  const ttl = config.access_token_ttl || 3600;
  const jti = crypto.randomBytes(12).toString('base64url');
  const resource = params.get('resource');
  if (resource) {
    // Logto's organization-level API resource token: with `resource` too, the refresh grant gives an access token
    // for the resource (not the organization) that also carries `organization_id`, and whose scopes are those the
    // member's organization roles grant for the resource (getResourceServerInfo and extraTokenClaims with
    // organization_id), among the scopes asked for (or the refresh token's). The answer's scope is "" as for every
    // resource token.
    const granted = ((account.organization_resource_scopes || {})[org] || {})[resource];
    if (!granted) return refused(400, { error: 'invalid_target', error_description: 'resource indicator is missing, or unknown' });
    const wanted = new Set(params.get('scope') ? params.get('scope').split(' ') : rt.scope.split(' '));
    const token = signJwt({
      iss: issuer, sub: rt.accountId, aud: resource, client_id: id, organization_id: org,
      scope: granted.filter((p) => wanted.has(p)).join(' '), iat: now, exp: now + ttl, jti,
    }, { typ: 'at+jwt' });
    stats.grants.organization_resource_token = (stats.grants.organization_resource_token || 0) + 1;
    return send(res, 200, { access_token: token, token_type: 'Bearer', expires_in: ttl, refresh_token: next, scope: '' });
  }
  // As Logto: the member's organization permissions only when the sign-in asked for the organizations resource.
  const scope = organizationGrants.has(rt.grantId) ? ((account.organization_permissions || {})[org] || []).join(' ') : '';
  const token = signJwt({
    iss: issuer, sub: rt.accountId, aud: `urn:logto:organization:${org}`, client_id: id, scope, iat: now,
    exp: now + ttl, jti,
  }, { typ: 'at+jwt' });
  stats.grants.organization_token = (stats.grants.organization_token || 0) + 1;
  return send(res, 200, { access_token: token, token_type: 'Bearer', expires_in: ttl, refresh_token: next, scope });
}

async function interaction(req, res, url) {
  const details = await provider.interactionDetails(req, res);
  const { prompt } = details;
  if (prompt.name === 'login') {
    let accountId;
    if (req.method === 'POST') {
      accountId = new URLSearchParams(await readBody(req)).get('account');
    } else if (!config.interactive) {
      accountId = cookieValue(req, 'idp_login_as') || 'alice';
    }
    if (accountId && accounts[accountId]) {
      // The session's accountId is the subject, as in Logto; `accountId` here is the login name.
      const login = { accountId: accounts[accountId].sub };
      stats.logins += 1;
      await provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
      return;
    }
    const options = Object.entries(accounts)
      .map(([id, a]) => `<option value="${escapeHtml(id)}">${escapeHtml(a.username || id)} (${escapeHtml(a.email || 'no email')})</option>`)
      .join('');
    const hint = details.params.first_screen === 'register' ? '<p>(first_screen=register: this would be the sign-up page)</p>' : '';
    // As Logto's sign-in experience: only Logto's own origins may frame it (koa-security-headers, frame-ancestors).
    res.setHeader('content-security-policy', "frame-ancestors 'self'");
    send(res, 200, `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign in - test IdP</title>
      <style>body{font-family:system-ui,sans-serif;max-width:28em;margin:4em auto}select,button{font-size:1em;padding:.4em}</style></head>
      <body><h1>Sign in</h1><p>This is logto-gate's local, Logto-compatible test identity provider.
      With a real Logto tenant this is Logto's sign-in page (or GitHub, with direct_sign_in).</p>${hint}
      <form method="post" action="${escapeHtml(url.pathname)}"><label>Account <select name="account">${options}</select></label>
      <button type="submit" id="sign-in">Sign in</button></form></body></html>`, 'text/html; charset=utf-8');
    return;
  }
  if (prompt.name === 'consent') {
    await finishConsent(req, res, details);
    return;
  }
  send(res, 400, { error: `unsupported prompt ${prompt.name}` });
}

async function testEndpoint(req, res, url) {
  if (url.pathname === '/__test/sign' && req.method === 'POST') {
    // Signs {payload, header?} with the current signing key, as Logto would sign an access token; tests change
    // claims (aud, exp, ...) or the kid to build tokens the gate must refuse.
    const body = JSON.parse((await readBody(req)) || '{}');
    return send(res, 200, { token: signJwt(body.payload || {}, { typ: 'at+jwt', ...(body.header || {}) }) });
  }
  if (url.pathname === '/__test/stats') return send(res, 200, stats);
  if (url.pathname === '/__test/live-grants') {
    // Grants that refresh tokens were issued for and that still exist (revocation and revoke-grants end them).
    let live = 0;
    for (const id of grantIds) if (await provider.Grant.find(id)) live += 1;
    return send(res, 200, { live });
  }
  if (url.pathname === '/__test/last-auth') return send(res, 200, lastAuth);
  if (req.method !== 'POST') return send(res, 405, { error: 'method not allowed' });
  const body = JSON.parse((await readBody(req)) || '{}');
  if (url.pathname === '/__test/clients') {
    // Registering a client_id again adds its redirect URIs (several gates may share one app registration).
    const existing = state.clients.find((c) => c.client_id === body.client_id);
    const union = (a, b) => [...new Set([...(a || []), ...(b || [])])];
    const merged = existing
      ? {
        ...existing,
        ...body,
        redirect_uris: union(existing.redirect_uris, body.redirect_uris),
        post_logout_redirect_uris: union(existing.post_logout_redirect_uris, body.post_logout_redirect_uris),
      }
      : body;
    state.clients = state.clients.filter((c) => c.client_id !== body.client_id).concat([merged]);
  } else if (url.pathname === '/__test/next-organization-token-error') {
    nextOrganizationTokenError = body;
    return send(res, 200, { ok: true });
  } else if (url.pathname === '/__test/hold-refreshes') {
    holdRefreshes = Boolean(body.hold);
    if (!holdRefreshes) heldRefreshes.splice(0).forEach((release) => release());
    return send(res, 200, { ok: true });
  } else if (url.pathname === '/__test/tamper-next-id-token') {
    pendingTamper = body;
    return send(res, 200, { ok: true });
  } else if (url.pathname === '/__test/revoke-grants') {
    // As when an admin revokes the user's sessions in Logto: every refresh token stops working.
    for (const id of grantIds) await provider.Grant.adapter.destroy(id);
    const revoked = grantIds.size;
    grantIds.clear();
    return send(res, 200, { revoked });
  } else if (url.pathname === '/__test/suspend') {
    // As Logto 1.42 when an admin suspends a user (PATCH /api/users/:id/is-suspended): the user is marked suspended
    // (findAccount then refuses every refresh) and signOutUser deletes every refresh token, opaque access token and
    // session of theirs; grants stay, and no back-channel logout is sent. Answers how many refresh tokens went.
    const account = Object.values(accounts).find((a) => a.sub === body.sub);
    if (account) account.suspended = true;
    return send(res, 200, { deleted: await signOutUser(body.sub) });
  } else if (url.pathname === '/__test/delete-user') {
    // As Logto 1.42's Management API (DELETE /api/users/:userId): signOutUser first, then the user's row
    // (deleteUserById); grants stay, no back-channel logout is sent. Answers how many accounts went.
    await signOutUser(body.sub);
    let deleted = 0;
    for (const [id, account] of Object.entries(accounts)) {
      if (account.sub !== body.sub) continue;
      delete accounts[id];
      deleted += 1;
    }
    return send(res, 200, { deleted });
  } else if (url.pathname === '/__test/subject-token') {
    // Logto's Management API POST /api/subject-tokens {userId}: a subject token for the token exchange.
    if (!Object.values(accounts).some((a) => a.sub === body.userId)) return send(res, 404, { error: 'user not found' });
    const subjectToken = `sub_${crypto.randomBytes(16).toString('base64url')}`;
    subjectTokens.set(subjectToken, { userId: body.userId, expiresAt: Date.now() + 600_000, consumedAt: null });
    return send(res, 201, { subjectToken, expiresIn: 600 });
  } else if (url.pathname === '/__test/update-account') {
    const account = Object.values(accounts).find((a) => a.sub === body.sub);
    if (!account) return send(res, 404, { error: 'not_found' });
    Object.assign(account, body.claims, { sub: body.sub });
    return send(res, 200, { ok: true });
  } else if (url.pathname === '/__test/app-secrets') {
    // {client_id, secrets: [{name, value, expires_at?}], delete_legacy?}: the app's added secrets from now on
    // (expires_at in milliseconds, as Logto's); delete_legacy: the app's own secret no longer authenticates it.
    const client = state.clients.find((c) => c.client_id === body.client_id);
    if (!client) return send(res, 404, { error: 'no such client' });
    appSecrets.set(body.client_id, body.secrets || []);
    if (body.delete_legacy) client.client_secret = crypto.randomBytes(32).toString('base64url');
  } else if (url.pathname === '/__test/delete-resource') {
    // As an admin deleting an API resource in Logto's Console (DELETE /api/resources/:id): from then on a token
    // request naming it is refused with invalid_target (getResourceServerInfo finds no resource).
    const known = Boolean((config.resources || {})[body.indicator]);
    if (known) delete config.resources[body.indicator];
    return send(res, known ? 200 : 404, { deleted: known });
  } else if (url.pathname === '/__test/accounts') {
    accounts[body.id] = { sub: body.id, ...body.claims };
    return send(res, 200, { ok: true });
  } else if (url.pathname === '/__test/rotate-keys') {
    // kind: "rsa" (Logto's rotation: RSA-4096, RS256), "ec256" (ES256) or "ps256" (RSA-PSS).
    const kind = body.kind || 'rsa';
    if (kind === 'ec256') {
      state.keys = [ec256Key(), ...state.keys];
      state.idTokenAlg = 'ES256';
    } else if (kind === 'ps256') {
      state.keys = [rsaKey(2048), ...state.keys];
      state.idTokenAlg = 'PS256';
    } else {
      state.keys = [rsaKey(), ...state.keys];
      state.idTokenAlg = 'RS256';
    }
  } else {
    return send(res, 404, { error: 'not found' });
  }
  provider = buildProvider();
  return send(res, 200, { ok: true });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith('/__test/')) return await testEndpoint(req, res, url);
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res, url);
    if (url.pathname === '/oidc' || url.pathname.startsWith('/oidc/')) {
      const route = url.pathname.slice('/oidc'.length) || '/';
      if (route === '/jwks') {
        stats.jwks += 1;
        if (config.jwks_max_age) {
          // How long the key set may be cached (config.jwks_max_age seconds), whatever oidc-provider would say.
          const writeHead = res.writeHead.bind(res);
          res.writeHead = (status, ...rest) => {
            res.setHeader('cache-control', `public, max-age=${config.jwks_max_age}`);
            return writeHead(status, ...rest);
          };
        }
      }
      if (route === '/.well-known/openid-configuration') stats.discovery += 1;
      if (route === '/me') stats.userinfo += 1;
      if (route === '/token/revocation') stats.revocations += 1;
      if (route === '/token/introspection' && req.method === 'POST') {
        // Read here to count which token was asked about; oidc-provider then takes the read body from req.body.
        req.body = await readBody(req);
        stats.introspections.push({ token_type_hint: new URLSearchParams(req.body).get('token_type_hint') });
      }
      if (route === '/auth') {
        stats.authorizations += 1;
        lastAuth = { ...Object.fromEntries(url.searchParams), resources: url.searchParams.getAll('resource') };
      }
      if (['/token', '/token/revocation', '/token/introspection'].includes(route) && req.method === 'POST') {
        const refused = transpileAppSecret(req);
        if (refused) return send(res, 400, refused);
      }
      if (route === '/token' && req.method === 'POST') {
        // Read the body here so an organization token request (Logto's extension of the refresh grant) can be
        // answered; oidc-provider then takes the already-read body from req.body.
        req.body = await readBody(req);
        const params = new URLSearchParams(req.body);
        // Which token requests named a resource, in order: Logto's JWT access tokens need one (RFC 8707).
        stats.token_requests.push({ grant_type: params.get('grant_type'), resource: params.get('resource') });
        if (params.get('grant_type') === 'refresh_token' && params.get('organization_id')) {
          return organizationToken(req, res, params);
        }
        if (params.get('grant_type') === 'refresh_token' && holdRefreshes) {
          stats.held_refreshes += 1;
          await new Promise((release) => heldRefreshes.push(release));
        }
        if (pendingTamper) {
          interceptIdToken(res, pendingTamper, params);
          pendingTamper = null;
        }
      }
      req.originalUrl = req.url;
      req.url = req.url.slice('/oidc'.length) || '/';
      return provider.callback()(req, res);
    }
    return send(res, 404, { error: 'not found' });
  } catch (err) {
    if (!res.headersSent) send(res, 500, { error: String(err && err.message) });
    else res.end();
  }
});

server.listen(config.port || 0, host, () => {
  const { port } = server.address();
  // The issuer may name another host than the one listened on (the demo uses "localhost", so the IdP's cookies
  // are not sent to the app on 127.0.0.1).
  issuer = `http://${config.public_host || host}:${port}/oidc`;
  provider = buildProvider();
  process.stdout.write(`LISTENING ${port}\n`);
});

// Exit with the parent: a harness that dies closes our stdin.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
