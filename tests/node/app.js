// A small Express app shaped like the djforge example, sharing its sessions with sessionforge:
// express-session over connect-redis (node-redis) or session-file-store. The Rust integration
// tests start it as a child process and wait for the single stdout line `listening on <port>`.
//
// Environment:
//   PORT                 port to listen on, 127.0.0.1 only (0 or unset: a free port)
//   REDIS_URL            redis://host:port for connect-redis (prefix SESSION_PREFIX)
//   SESSION_STORE=file   use session-file-store in SESSION_DIR instead of Redis
//   SESSION_DIR          the session-file-store directory (file mode)
//   SESSION_SECRET       required; comma-separated, the first one signs, all verify
//   SESSION_COOKIE_NAME  default connect.sid
//   SESSION_MAX_AGE_MS   cookie maxAge in ms, default 3600000
//   SESSION_PREFIX       Redis key prefix, default djforge:sess:
//   ROLLING=1            rolling: true
//
// Everything the app logs goes to stderr: stdout carries only the `listening on` line.

import express from 'express';
import session from 'express-session';
import { RedisStore } from 'connect-redis';
import { createClient } from 'redis';
import sessionFileStore from 'session-file-store';

const env = process.env;

function fail(message) {
  console.error(`app.js: ${message}`);
  process.exit(2);
}

function log(...args) {
  console.error('[app]', ...args);
}

const secrets = (env.SESSION_SECRET ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s.length > 0);
if (secrets.length === 0) fail('SESSION_SECRET is required (comma-separated list)');

const cookieName = env.SESSION_COOKIE_NAME || 'connect.sid';
const maxAge = env.SESSION_MAX_AGE_MS === undefined || env.SESSION_MAX_AGE_MS === ''
  ? 3600000
  : Number(env.SESSION_MAX_AGE_MS);
if (!Number.isFinite(maxAge) || maxAge <= 0) fail(`bad SESSION_MAX_AGE_MS: ${env.SESSION_MAX_AGE_MS}`);
const port = env.PORT === undefined || env.PORT === '' ? 0 : Number(env.PORT);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad PORT: ${env.PORT}`);
const rolling = env.ROLLING === '1' || env.ROLLING === 'true';
const prefix = env.SESSION_PREFIX ?? 'djforge:sess:';

let redisClient = null;
let store;
if (env.SESSION_STORE === 'file') {
  if (!env.SESSION_DIR) fail('SESSION_STORE=file needs SESSION_DIR');
  const FileStore = sessionFileStore(session);
  // session-file-store logs its retries with console.log by default: keep stdout clean.
  store = new FileStore({ path: env.SESSION_DIR, logFn: (msg) => log(msg) });
} else {
  if (!env.REDIS_URL) fail('REDIS_URL is required (or SESSION_STORE=file with SESSION_DIR)');
  let connectedOnce = false;
  redisClient = createClient({
    url: env.REDIS_URL,
    // While Redis is down, fail commands at once (a 500 from the app) rather than queueing them.
    disableOfflineQueue: true,
    socket: {
      connectTimeout: 2000,
      // The first connection must succeed; later, reconnect every 50..500 ms.
      reconnectStrategy: (retries, cause) => (connectedOnce
        ? Math.min((retries + 1) * 50, 500)
        : new Error(`cannot connect: ${cause?.message ?? cause}`)),
    },
  });
  redisClient.on('error', (err) => log('redis error:', err.message));
  redisClient.on('ready', () => {
    connectedOnce = true;
  });
  try {
    await redisClient.connect();
  } catch (err) {
    fail(`cannot connect to ${env.REDIS_URL}: ${err.message}`);
  }
  store = new RedisStore({ client: redisClient, prefix });
}

const cookieOptions = {
  path: '/',
  secure: false,
  httpOnly: true,
  sameSite: 'lax',
  maxAge,
};

// Keys a client may not write through PUT /api/node-field/:key: the session's own fields and
// methods, and anything that would reach an object prototype.
const RESERVED = new Set([
  'cookie', 'id', 'req', '__proto__', 'constructor', 'prototype', 'touch', 'resetMaxAge',
  'save', 'reload', 'destroy', 'regenerate',
]);

const app = express();
app.disable('x-powered-by');
app.set('etag', false);

app.get('/health', (req, res) => {
  res.json({ status: 'ok' });
});

app.use(session({
  name: cookieName,
  secret: secrets,
  store,
  resave: false,
  saveUninitialized: false,
  rolling,
  cookie: cookieOptions,
}));
app.use(express.json({ strict: false }));

app.get('/api/me', (req, res) => {
  const visits = (req.session.visits || 0) + 1;
  req.session.visits = visits;
  res.json({ user: req.session.user ?? null, visits });
});

app.post('/api/login', (req, res, next) => {
  const user = req.body?.user;
  if (typeof user !== 'string' || user.length === 0) {
    res.status(400).json({ error: 'body must be {"user": "<non-empty string>"}' });
    return;
  }
  req.session.regenerate((err) => {
    if (err) {
      next(err);
      return;
    }
    req.session.user = user;
    res.json({ success: true, user });
  });
});

app.post('/api/logout', (req, res, next) => {
  req.session.destroy((err) => {
    if (err) {
      next(err);
      return;
    }
    const { maxAge: _ignored, ...clearOptions } = cookieOptions;
    res.clearCookie(cookieName, clearOptions);
    res.json({ success: true });
  });
});

app.put('/api/node-field/:key', (req, res) => {
  const { key } = req.params;
  if (RESERVED.has(key)) {
    res.status(400).json({ error: `reserved session key: ${key}` });
    return;
  }
  if (req.body === undefined) {
    res.status(400).json({ error: 'a JSON body (Content-Type: application/json) is required' });
    return;
  }
  req.session[key] = req.body;
  res.json({ success: true });
});

// The session as express-session holds it (JSON.stringify: the cookie through Cookie#toJSON).
// Does not modify the session. The session id is in the X-Session-Id header.
app.get('/api/session', (req, res) => {
  res.set('X-Session-Id', req.sessionID);
  res.json(req.session);
});

// Reads the session without modifying it: express-session then only touches it in the store.
app.get('/api/touch', (req, res) => {
  res.json({ user: req.session.user ?? null, visits: req.session.visits ?? 0 });
});

app.use((req, res) => {
  res.status(404).json({ error: 'not found' });
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  const status = Number.isInteger(err.status) && err.status >= 400 && err.status < 600 ? err.status : 500;
  if (status >= 500) log('error:', err.stack || err);
  if (res.headersSent) {
    res.end();
    return;
  }
  res.status(status).json({ error: err.message || String(err) });
});

const server = app.listen(port, '127.0.0.1', (err) => {
  if (err) fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.stdout.write(`listening on ${server.address().port}\n`);
});
server.on('error', (err) => fail(`server error: ${err.message}`));

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal}: shutting down`);
  // Should the closing hang, exit anyway.
  setTimeout(() => {
    log('shutdown took over 5 s: exiting');
    process.exit(0);
  }, 5000).unref();
  await new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  log('http server closed');
  if (redisClient) {
    try {
      await redisClient.close();
      log('redis client closed');
    } catch (err) {
      log('redis close:', err.message);
    }
  }
  if (store.options?.reapIntervalObject) clearInterval(store.options.reapIntervalObject);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
