// An origin written for Logto Cloud's Protected App, as Logto's documentation shows it: every request must carry
// `Authorization: Basic base64(appId:appSecret)`; a signed-in request's `Logto-ID-Token` is verified with jose
// against `<endpoint>/oidc/jwks` with issuer `<endpoint>/oidc` (signature, issuer, expiry). It answers JSON saying
// what it verified, so the gate's tests can check the contract end to end.
//
// Started as `node protected-origin.mjs` with ORIGIN_CONFIG holding JSON: { "issuer", "app_id", "app_secret" }.
// Prints `LISTENING <port>` once it accepts connections; exits when stdin closes.
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const config = JSON.parse(process.env.ORIGIN_CONFIG || '{}');
const jwks = createRemoteJWKSet(new URL(`${config.issuer}/jwks`));
const basic = `Basic ${Buffer.from(`${config.app_id}:${config.app_secret}`).toString('base64')}`;

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.headers.authorization !== basic) {
      return send(res, 401, { error: 'not through the protected app proxy' });
    }
    const host = req.headers['logto-host'] || null;
    const token = req.headers['logto-id-token'];
    if (!token) return send(res, 200, { signed_in: false, host, path: req.url });
    try {
      const { payload } = await jwtVerify(token, jwks, { issuer: config.issuer });
      return send(res, 200, { signed_in: true, sub: payload.sub, sid: payload.sid, exp: payload.exp, host, path: req.url });
    } catch (err) {
      return send(res, 401, { error: `Logto-ID-Token refused: ${err.code || err.message}` });
    }
  } catch (err) {
    return send(res, 500, { error: String(err && err.message) });
  }
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
