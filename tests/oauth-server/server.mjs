// A real OAuth2 authorization server for imapgate's tests: npm `oidc-provider` (a certified
// OpenID provider) on loopback, configured for what the proxy and Dovecot need.
//
//   node server.mjs [--cert CERT.pem --key KEY.pem]
//
// Needs Node >= 20 (oidc-provider 9 calls crypto.hash); scripts/install-deps.sh provides it.
//
// Prints one JSON line on stdout once listening, then serves until killed:
//   {"http": PORT, "https": PORT|null}
// Both listeners serve the same provider. The proxy talks HTTPS (when a certificate is given);
// Dovecot's introspection client talks plain HTTP.
//
// Clients (static; secrets are fixed strings, see CLIENTS below):
//   dovecot          introspection only (client_secret_post)
//   imapgate         refresh_token + device_code + authorization_code (client_secret_basic)
//   imapgate-short   the same, access tokens live 2 s (expiry tests)
//   imapgate-rotate  the same as -short, and refresh tokens rotate on every use (as Microsoft's)
//   imapgate-cc      client_credentials; its tokens name `mailbox_user` as their user
// Every access token carries `username` (the account id, or the client's mailbox_user), which
// introspection returns and Dovecot's oauth2 passdb compares with the login name.
//
// Test endpoints (loopback only, no authentication):
//   GET  /test/counts                 {"<client> <grant_type>": n, ...} token requests seen
//   GET  /test/grant?account=A&client=C   runs the device flow for account A and client C
//                                     (approving it through the real forms) -> token response
//   GET  /test/approve?user_code=X&account=A   approves a pending device code (forms)
//   GET  /test/slow?ms=N              holds every later /token request N ms (0: off)
//   GET  /test/fail?status=N          answers every later /token request with HTTP N (0: off)
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

import Provider from 'oidc-provider';

// The library prints notices with console.log/info: stdout is only for the line above.
console.log = console.error;
console.info = console.error;

const args = process.argv.slice(2);
const arg = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const certFile = arg('--cert');
const keyFile = arg('--key');

const SCOPE = 'openid email offline_access mail';
const proxyClient = (id, extra = {}) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/cb'],
  scope: SCOPE,
  ...extra,
});
const CLIENTS = [
  {
    client_id: 'dovecot',
    client_secret: 'dovecot-secret',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
  proxyClient('imapgate'),
  proxyClient('imapgate-short'),
  proxyClient('imapgate-rotate'),
  {
    client_id: 'imapgate-cc',
    client_secret: 'imapgate-cc-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'mail',
    mailbox_user: 'user3',
  },
];

const counts = {};
let slowMs = 0;
let failStatus = 0;

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

const plain = http.createServer();
const httpPort = await listen(plain);
let secure = null;
let httpsPort = null;
if (certFile && keyFile) {
  secure = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
  httpsPort = await listen(secure);
}
const issuer = httpsPort ? `https://127.0.0.1:${httpsPort}` : `http://127.0.0.1:${httpPort}`;
const selfUrl = `http://127.0.0.1:${httpPort}`;

const provider = new Provider(issuer, {
  clients: CLIENTS,
  extraClientMetadata: { properties: ['mailbox_user'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: `${id}@example.test` }; } };
  },
  claims: { openid: ['sub'], email: ['email'] },
  scopes: ['openid', 'offline_access', 'email', 'mail'],
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'ClientCredentials') {
      const client = await ctx.oidc.provider.Client.find(token.clientId);
      return { username: client?.mailbox_user };
    }
    if (token.accountId) return { username: token.accountId };
    return undefined;
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    userinfo: { enabled: true },
  },
  issueRefreshToken: async (ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  rotateRefreshToken: (ctx) => ctx.oidc.client.clientId === 'imapgate-rotate',
  ttl: {
    AccessToken: (ctx, token, client) => (['imapgate-short', 'imapgate-rotate'].includes(client.clientId) ? 2 : 3600),
    ClientCredentials: 3600,
    DeviceCode: 600,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
  },
  cookies: { keys: ['imapgate-test-cookie-key'] },
  pkce: { required: () => false },
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
});
provider.proxy = false;
// Quiet: the library logs its development-only warnings once; errors go to stderr.
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// Count token requests (by client and grant type), and make the endpoint slow or failing on
// demand.
provider.use(async (ctx, next) => {
  if (ctx.path === '/token' && ctx.method === 'POST') {
    if (slowMs > 0) await new Promise((r) => setTimeout(r, slowMs));
    if (failStatus > 0) {
      ctx.status = failStatus;
      ctx.body = { error: 'temporarily_unavailable' };
      return;
    }
    await next();
    const key = `${ctx.oidc?.client?.clientId ?? '?'} ${ctx.oidc?.params?.grant_type ?? '?'}`;
    counts[key] = (counts[key] ?? 0) + 1;
    return;
  }
  await next();
});

// --- driving the device flow's forms, as a person with a browser would ----------------------
class Browser {
  constructor() { this.jar = new Map(); }

  cookieHeader() {
    return [...this.jar.entries()].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  remember(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(c)) this.jar.delete(name);
      else this.jar.set(name, value);
    }
  }

  // Follows redirects; returns the final response's text and URL.
  async go(url, form) {
    let method = form ? 'POST' : 'GET';
    let body = form ? new URLSearchParams(form).toString() : undefined;
    for (let hops = 0; hops < 20; hops += 1) {
      const headers = { cookie: this.cookieHeader() };
      if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = await fetch(url, { method, headers, body, redirect: 'manual' });
      this.remember(res);
      if (res.status >= 300 && res.status < 400) {
        url = new URL(res.headers.get('location'), url).toString().replace(issuer, selfUrl);
        method = 'GET';
        body = undefined;
        continue;
      }
      return { status: res.status, text: await res.text(), url };
    }
    throw new Error('too many redirects');
  }
}

const field = (html, name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))?.[1];

async function approve(userCode, account) {
  const b = new Browser();
  let page = await b.go(`${selfUrl}/device?user_code=${encodeURIComponent(userCode)}`);
  // The page auto-posts xsrf + user_code; then a confirmation form.
  page = await b.go(`${selfUrl}/device`, { xsrf: field(page.text, 'xsrf'), user_code: userCode });
  page = await b.go(`${selfUrl}/device`, {
    xsrf: field(page.text, 'xsrf'), user_code: userCode, confirm: 'yes',
  });
  for (let step = 0; step < 5; step += 1) {
    if (page.text.includes('name="prompt" value="login"')) {
      page = await b.go(page.url, { prompt: 'login', login: account, password: 'any' });
    } else if (page.text.includes('name="prompt" value="consent"')) {
      page = await b.go(page.url, { prompt: 'consent' });
    } else {
      break;
    }
  }
  if (!/Sign-in Success|success/i.test(page.text)) {
    throw new Error(`device approval did not succeed: ${page.status} ${page.text.slice(0, 400)}`);
  }
}

async function tokenRequest(client, form) {
  const auth = Buffer.from(`${client}:${client}-secret`).toString('base64');
  const res = await fetch(`${selfUrl}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${auth}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, json: await res.json() };
}

async function grant(account, client) {
  const auth = Buffer.from(`${client}:${client}-secret`).toString('base64');
  const res = await fetch(`${selfUrl}/device/auth`, {
    method: 'POST',
    headers: { authorization: `Basic ${auth}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ scope: SCOPE, prompt: 'consent' }).toString(),
  });
  const dev = await res.json();
  if (!dev.user_code) throw new Error(`device authorization failed: ${JSON.stringify(dev)}`);
  await approve(dev.user_code, account);
  const out = await tokenRequest(client, {
    grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: dev.device_code,
  });
  if (out.status !== 200 || !out.json.refresh_token) {
    throw new Error(`device token request failed: ${JSON.stringify(out.json)}`);
  }
  // Not counted: only requests the proxy makes are of interest.
  const key = `${client} urn:ietf:params:oauth:grant-type:device_code`;
  counts[key] -= 1;
  if (counts[key] === 0) delete counts[key];
  return out.json;
}

const callback = provider.callback();
async function handle(req, res) {
  const url = new URL(req.url, selfUrl);
  if (!url.pathname.startsWith('/test/')) {
    callback(req, res);
    return;
  }
  const reply = (status, value) => {
    const data = JSON.stringify(value);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
    res.end(data);
  };
  try {
    const q = url.searchParams;
    switch (url.pathname) {
      case '/test/counts': return reply(200, counts);
      case '/test/slow': slowMs = Number(q.get('ms') ?? 0); return reply(200, { slowMs });
      case '/test/fail': failStatus = Number(q.get('status') ?? 0); return reply(200, { failStatus });
      case '/test/approve':
        await approve(q.get('user_code'), q.get('account'));
        return reply(200, { approved: true });
      case '/test/grant':
        return reply(200, await grant(q.get('account'), q.get('client') ?? 'imapgate'));
      default: return reply(404, { error: 'not found' });
    }
  } catch (e) {
    return reply(500, { error: String(e?.stack ?? e) });
  }
}
plain.on('request', handle);
secure?.on('request', handle);

process.stdout.write(`${JSON.stringify({ http: httpPort, https: httpsPort })}\n`);
