// A deliberately misbehaving OpenID provider for logto-gate's relying-party conformance tests.
//
// The test IdP (server.mjs, oidc-provider) is well behaved and can never send a broken ID token. This one replays
// the cases of the OpenID RP certification test plan that apply to a confidential code-flow client (Basic and
// Config profiles) plus RFC 9207: each start chooses one case, and every answer of the sign-in flow is shaped by it.
// It needs nothing but Node.js (node:crypto signs and exports the keys).
//
// Started as `node rogue.mjs` with ROGUE_CONFIG holding JSON: { "client_id", "client_secret", "case", "port"? }.
// It prints `LISTENING <port>` on stdout once it accepts connections and exits when stdin closes.
//
// Endpoints (issuer `<origin>/oidc`, as Logto):
//   GET  /oidc/.well-known/openid-configuration   discovery; advertises RFC 9207's authorization_response_iss_parameter_supported
//   GET  /oidc/jwks                                the key set the case publishes
//   GET  /oidc/auth                                redirects straight back to redirect_uri with a code (no sign-in page)
//   POST /oidc/token                               client_secret_basic; the ID token the case asks for
//   GET  /oidc/me                                  userinfo for the bearer token
//   POST /__rogue/rotate                           a new signing key first (the old one stays published)
//   GET  /__rogue/stats                            counters: discovery, jwks, auth, token, userinfo
//
// Cases (the gate must refuse the first group and accept the second):
//   refused:  sig_none, sig_hs256, bad_sig_es384, bad_sig_rs256, missing_iss, missing_sub, missing_aud, missing_exp,
//             missing_iat, aud_foreign, azp_foreign, aud_multiple_no_azp, iss_foreign, nonce_invalid, nonce_missing,
//             exp_past, iat_future, userinfo_bad_sub, callback_iss_missing, callback_iss_foreign,
//             discovery_issuer_mismatch
//   accepted: valid_es384, valid_rs256, aud_multiple_with_azp, kid_absent_single, kid_absent_multiple, key_rotation
import http from 'node:http';
import crypto from 'node:crypto';

const config = JSON.parse(process.env.ROGUE_CONFIG || '{}');
const host = '127.0.0.1';
const testCase = config.case || 'valid_es384';
const SUBJECT = 'u_rogue0001';
let origin = '';
let issuer = '';

function key(kind) {
  const { privateKey } =
    kind === 'rsa'
      ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
      : crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    privateKey,
    alg: kind === 'rsa' ? 'RS256' : 'ES384',
    kid: crypto.randomBytes(12).toString('base64url'),
    public: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, n: jwk.n, e: jwk.e },
  };
}

const rsaCases = new Set(['valid_rs256', 'bad_sig_rs256']);
// The signing key is first; the rest stay published (after a rotation, the old key).
const keys = [key(rsaCases.has(testCase) ? 'rsa' : 'ec')];
if (testCase === 'kid_absent_multiple') keys.push(key('ec'));
// Which key signs: the last one for kid_absent_multiple, so a relying party must try more than the first.
const signer = () => (testCase === 'kid_absent_multiple' ? keys[keys.length - 1] : keys[0]);
const withoutKid = testCase === 'kid_absent_single' || testCase === 'kid_absent_multiple';

function publishedKeys() {
  return keys.map((k) => {
    const pub = Object.fromEntries(Object.entries(k.public).filter(([, v]) => v !== undefined));
    const out = { ...pub, use: 'sig', alg: k.alg };
    if (!withoutKid) out.kid = k.kid;
    return out;
  });
}

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function sign(header, payload) {
  const input = `${b64(header)}.${b64(payload)}`;
  if (header.alg === 'none') return `${input}.`;
  if (header.alg === 'HS256') {
    const mac = crypto.createHmac('sha256', config.client_secret).update(input).digest('base64url');
    return `${input}.${mac}`;
  }
  const k = signer();
  const sig =
    header.alg === 'RS256'
      ? crypto.sign('sha256', Buffer.from(input), k.privateKey)
      : crypto.sign('sha384', Buffer.from(input), { key: k.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

function idToken(nonce) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    sub: SUBJECT,
    aud: config.client_id,
    exp: now + 3600,
    iat: now,
    auth_time: now,
    nonce,
    username: 'rogue',
    email: 'rogue@example.com',
    sid: 'rogue-session',
  };
  const k = signer();
  const header = { alg: k.alg, typ: 'JWT' };
  if (!withoutKid) header.kid = k.kid;
  switch (testCase) {
    case 'sig_none':
      return sign({ alg: 'none', typ: 'JWT' }, claims);
    case 'sig_hs256':
      return sign({ alg: 'HS256', typ: 'JWT', kid: k.kid }, claims);
    case 'bad_sig_es384':
    case 'bad_sig_rs256': {
      const token = sign(header, claims);
      const [h, p, s] = token.split('.');
      const raw = Buffer.from(s, 'base64url');
      raw[raw.length >> 1] ^= 0x01;
      return `${h}.${p}.${raw.toString('base64url')}`;
    }
    case 'missing_iss':
    case 'missing_sub':
    case 'missing_aud':
    case 'missing_exp':
    case 'missing_iat':
      delete claims[testCase.slice('missing_'.length)];
      break;
    case 'aud_foreign':
      claims.aud = 'someone-else';
      break;
    case 'azp_foreign':
      claims.azp = 'someone-else';
      break;
    case 'aud_multiple_no_azp':
      claims.aud = [config.client_id, 'someone-else'];
      break;
    case 'aud_multiple_with_azp':
      claims.aud = [config.client_id, 'someone-else'];
      claims.azp = config.client_id;
      break;
    case 'iss_foreign':
      claims.iss = 'https://evil.example/oidc';
      break;
    case 'nonce_invalid':
      claims.nonce = 'not-the-nonce-of-this-attempt';
      break;
    case 'nonce_missing':
      delete claims.nonce;
      break;
    case 'exp_past':
      claims.iat = now - 7200;
      claims.auth_time = now - 7200;
      claims.exp = now - 3600;
      break;
    case 'iat_future':
      claims.iat = now + 3600;
      claims.exp = now + 7200;
      break;
    default:
      break;
  }
  return sign(header, claims);
}

const stats = { discovery: 0, jwks: 0, auth: 0, token: 0, userinfo: 0 };
const codes = new Map(); // code -> { nonce, redirect_uri }
const accessTokens = new Set();

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c) => {
      data += c;
    });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

function discovery() {
  return {
    issuer: testCase === 'discovery_issuer_mismatch' ? 'https://evil.example/oidc' : issuer,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
    userinfo_endpoint: `${issuer}/me`,
    jwks_uri: `${issuer}/jwks`,
    end_session_endpoint: `${issuer}/session/end`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['ES384', 'RS256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
  };
}

function authorize(res, url) {
  stats.auth += 1;
  const redirect = url.searchParams.get('redirect_uri');
  const state = url.searchParams.get('state');
  if (!redirect || url.searchParams.get('client_id') !== config.client_id) {
    return send(res, 400, { error: 'invalid_request' });
  }
  const code = crypto.randomBytes(16).toString('base64url');
  codes.set(code, { nonce: url.searchParams.get('nonce'), redirect_uri: redirect });
  const back = new URL(redirect);
  back.searchParams.set('code', code);
  if (state !== null) back.searchParams.set('state', state);
  if (testCase === 'callback_iss_foreign') back.searchParams.set('iss', 'https://evil.example/oidc');
  else if (testCase !== 'callback_iss_missing') back.searchParams.set('iss', issuer);
  res.writeHead(302, { location: back.toString(), 'content-length': 0 });
  return res.end();
}

async function token(req, res) {
  stats.token += 1;
  const params = new URLSearchParams(await readBody(req));
  const expected = `Basic ${Buffer.from(`${encodeURIComponent(config.client_id)}:${encodeURIComponent(config.client_secret)}`).toString('base64')}`;
  if (req.headers.authorization !== expected) {
    return send(res, 401, { error: 'invalid_client' });
  }
  const attempt = codes.get(params.get('code'));
  codes.delete(params.get('code'));
  if (params.get('grant_type') !== 'authorization_code' || !attempt || attempt.redirect_uri !== params.get('redirect_uri')) {
    return send(res, 400, { error: 'invalid_grant' });
  }
  const accessToken = crypto.randomBytes(24).toString('base64url');
  accessTokens.add(accessToken);
  return send(
    res,
    200,
    { access_token: accessToken, token_type: 'Bearer', expires_in: 3600, id_token: idToken(attempt.nonce), scope: 'openid profile email' },
    { 'cache-control': 'no-store' },
  );
}

function userinfo(req, res) {
  stats.userinfo += 1;
  const auth = req.headers.authorization || '';
  if (!auth.startsWith('Bearer ') || !accessTokens.has(auth.slice(7))) {
    return send(res, 401, { error: 'invalid_token' });
  }
  const sub = testCase === 'userinfo_bad_sub' ? 'u_someone_else' : SUBJECT;
  return send(res, 200, { sub, username: 'rogue', custom_data: { team: 'rogues' } });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, origin);
    const route = url.pathname;
    if (route === '/oidc/.well-known/openid-configuration') {
      stats.discovery += 1;
      return send(res, 200, discovery());
    }
    if (route === '/oidc/jwks') {
      stats.jwks += 1;
      return send(res, 200, { keys: publishedKeys() });
    }
    if (route === '/oidc/auth') return authorize(res, url);
    if (route === '/oidc/token' && req.method === 'POST') return await token(req, res);
    if (route === '/oidc/me') return userinfo(req, res);
    if (route === '/__rogue/rotate' && req.method === 'POST') {
      keys.unshift(key('ec'));
      return send(res, 200, { kid: keys[0].kid });
    }
    if (route === '/__rogue/stats') return send(res, 200, stats);
    return send(res, 404, { error: 'not found' });
  } catch (err) {
    if (!res.headersSent) send(res, 500, { error: String(err && err.message) });
    else res.end();
  }
});

server.listen(config.port || 0, host, () => {
  const { port } = server.address();
  origin = `http://${host}:${port}`;
  issuer = `${origin}/oidc`;
  process.stdout.write(`LISTENING ${port}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
