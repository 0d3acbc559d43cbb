// sessionforge sessions dashboard: an ES module with no dependencies, served next to the admin API.
//
// Everything that comes from the API or from clients (ids, user names, user agents, messages) is put
// into the page with textContent / setAttribute only, never parsed as HTML. The page runs under
// `default-src 'self'`: no inline script or style, no network resource other than the admin API.

const API = new URL('./', import.meta.url); // <mount>/ : this module is served at <mount>/dashboard.js
const TOKEN_KEY = 'sessionforge.admin.token';
const SAMPLE_MS = 3000;
const WINDOW_MS = 5 * 60 * 1000;
const PAGE_SIZE = 50;
const FETCH_TIMEOUT_MS = 6000;
const METRICS_RETRY_MS = 60000;
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dashboard: missing #${id}`);
  return el;
};

// ---------------------------------------------------------------- token (sessionStorage only)

function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}
function setToken(t) {
  try {
    sessionStorage.setItem(TOKEN_KEY, t);
  } catch {
    /* storage disabled: the token lives for this page only */
  }
  memToken = t;
}
function clearToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* nothing stored */
  }
  memToken = '';
}
let memToken = '';
const token = () => getToken() || memToken;

// ---------------------------------------------------------------- API access

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const state = {
  auth: 'unknown', // 'unknown' | 'ok' | 'needed'
  metrics: 'unknown', // 'unknown' | 'present' | 'absent'
  metricsCheckedAt: 0,
  paused: false,
  liveGen: 0,
  liveTimer: 0,
  history: [], // samples, oldest first
  transitions: [], // {kind, at, source}
  lastMode: null,
  lastCounters: null,
  busy: false,
};

/** Calls `path` (relative to the mount). Resolves with {status, ok, body, text}; rejects with ApiError
 *  on a network failure, a timeout or a 401 (after switching the page to the token form). */
async function api(path, { method = 'GET', accept = 'application/json' } = {}) {
  const headers = { Accept: accept };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
  let res;
  let text;
  try {
    res = await fetch(new URL(path, API), {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
      signal: ctrl.signal,
    });
    text = await res.text();
  } catch (e) {
    throw new ApiError(0, e && e.name === 'AbortError' ? 'the admin API did not answer in time' : 'could not reach the admin API');
  } finally {
    clearTimeout(timer);
  }
  let body = null;
  if ((res.headers.get('content-type') || '').includes('json')) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (res.status === 401) {
    needToken(!!t);
    throw new ApiError(401, errorText(res.status, body));
  }
  return { status: res.status, ok: res.ok, body, text };
}

function errorText(status, body) {
  const msg = body && typeof body.error === 'string' ? body.error : '';
  return msg ? `HTTP ${status}: ${msg}` : `HTTP ${status}`;
}

/** `s` as one URL path segment. "." and ".." (even percent-encoded) are path steps to a URL parser,
 *  so they cannot name a user or a session in a path: refused rather than sent somewhere else. */
function segment(s) {
  if (s === '.' || s === '..') throw new ApiError(400, `"${s}" cannot be used in a URL path`);
  return encodeURIComponent(s);
}

// ---------------------------------------------------------------- small helpers

const pad = (n) => String(n).padStart(2, '0');
const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
const dateTime = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;

function parseTime(s) {
  if (typeof s !== 'string') return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

function relative(ms) {
  const past = ms < 0;
  const s = Math.abs(Math.round(ms / 1000));
  let v;
  if (s < 60) v = `${s} s`;
  else if (s < 3600) v = `${Math.round(s / 60)} min`;
  else if (s < 86400 * 2) v = `${Math.round(s / 3600)} h`;
  else v = `${Math.round(s / 86400)} days`;
  return past ? `${v} ago` : `in ${v}`;
}

function fmtBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '?';
  const units = ['B', 'K', 'M', 'G', 'T'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return i === 0 ? `${n}B` : `${n.toFixed(2)}${units[i]}`;
}

function fmtRate(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  if (v === 0) return '0';
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

const num = (v) => {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '') return Number(v);
  return NaN;
};

function text(el, s) {
  el.textContent = s == null ? '' : String(s);
  return el;
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c == null) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

function s(tag, attrs = {}, content) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v != null) el.setAttribute(k, String(v));
  }
  if (content != null) el.textContent = String(content);
  return el;
}

// ---------------------------------------------------------------- page-level state display

function setError(msg) {
  const el = $('error');
  if (!msg) {
    el.hidden = true;
    if (el.textContent) el.textContent = '';
    return;
  }
  if (el.textContent !== msg) el.textContent = msg;
  el.hidden = false;
}

function setLive(kind, msg) {
  const el = $('live');
  el.dataset.state = kind;
  el.textContent = msg;
}

function setResult(kind, msg, deleted) {
  const el = $('result');
  el.dataset.state = kind;
  el.textContent = msg || '';
  if (typeof deleted === 'number') el.dataset.deleted = String(deleted);
  else delete el.dataset.deleted;
}

function needToken(hadToken) {
  if (state.auth === 'needed') return;
  state.auth = 'needed';
  stopLive();
  if (hadToken) clearToken();
  clearData();
  $('data').hidden = true;
  $('forget-token').hidden = true;
  setError('');
  text(
    $('token-reason'),
    hadToken
      ? 'The admin API refused the saved token (HTTP 401). Enter a valid bearer token.'
      : "This admin API asks for a bearer token. It is kept in this tab's session storage only, sent as an Authorization header, and forgotten when the tab closes.",
  );
  $('token-section').hidden = false;
  setLive('error', 'Token required');
  const input = $('token-input');
  input.value = '';
  input.focus();
}

function authOk() {
  if (state.auth !== 'ok') {
    state.auth = 'ok';
    $('token-section').hidden = true;
    $('data').hidden = false;
  }
  $('forget-token').hidden = !token();
}

function clearData() {
  state.history = [];
  state.transitions = [];
  state.lastMode = null;
  state.lastCounters = null;
  const banner = $('banner');
  banner.dataset.mode = 'unknown';
  banner.dataset.state = 'unknown';
  text($('banner-title'), 'Loading…');
  text($('mode'), '…');
  text($('health'), '…');
  text($('session-count'), '');
  text($('last-transition'), 'none seen');
  $('banner-detail').hidden = true;
  $('memory').hidden = true;
  $('disk').hidden = true;
  $('resources-empty').hidden = false;
  $('warnings').replaceChildren();
  $('rows').replaceChildren();
  text($('list-summary'), '');
  text($('page-info'), '');
  $('list-message').hidden = true;
  setResult('idle', '');
  renderChart();
}

// ---------------------------------------------------------------- status banner

function classify(stats, health) {
  const mode = (health && health.sessionStore) || (stats && stats.sessionStore) || null;
  const status = health && typeof health.status === 'string' ? health.status : null;
  const redis = health && typeof health.redis === 'string' ? health.redis : null;
  if (!stats && !health) return { state: 'unknown', mode, title: 'Cannot read the session store status' };
  if (mode === 'file' && redis && redis !== 'healthy') {
    return { state: 'failover', mode, title: `FAILOVER: serving sessions from files — Redis ${redis}` };
  }
  if (status === 'unavailable') {
    return { state: 'unavailable', mode, title: `UNAVAILABLE: the ${mode || 'session'} store is not working` };
  }
  if (status === 'degraded') return { state: 'degraded', mode, title: `DEGRADED: the ${mode || 'session'} store reports problems` };
  if (redis === 'unhealthy') return { state: 'degraded', mode, title: `DEGRADED: Redis unhealthy (sessions in ${mode || '?'})` };
  if (status === 'ok') {
    const where = mode === 'redis' ? 'Redis' : mode === 'file' ? 'files' : mode || 'the store';
    return { state: 'ok', mode, title: `Healthy — sessions stored in ${where}` };
  }
  if (status) return { state: 'degraded', mode, title: `Store status: ${status}` };
  return { state: 'unknown', mode, title: `Sessions stored in ${mode || '?'} (health unknown)` };
}

function renderBanner(stats, health, healthStatus, problems) {
  const c = classify(stats, health);
  const banner = $('banner');
  banner.dataset.state = c.state;
  banner.dataset.mode = c.mode || 'unknown';
  text($('banner-title'), c.title);
  text($('mode'), c.mode || 'unknown');
  if (health) {
    const parts = [typeof health.status === 'string' ? health.status : '?'];
    if (typeof health.redis === 'string') parts.push(`Redis ${health.redis}`);
    if (healthStatus && healthStatus !== 200) parts.push(`HTTP ${healthStatus}`);
    text($('health'), parts.join(' · '));
  } else {
    text($('health'), 'unknown');
  }
  const count = $('session-count');
  if (stats && Number.isFinite(num(stats.sessionCount))) {
    text(count, String(num(stats.sessionCount)));
    count.removeAttribute('title');
    count.classList.remove('stale');
  } else if (count.textContent) {
    count.classList.add('stale');
    count.title = 'last known value: the current count could not be read';
  }
  const details = [];
  if (health && typeof health.detail === 'string' && health.detail) details.push(health.detail);
  details.push(...problems);
  const detail = $('banner-detail');
  text(detail, details.join(' · '));
  detail.hidden = details.length === 0;
  renderTransitions(health);
}

function renderTransitions(health) {
  // The server's own record wins; transitions this page saw between samples fill in otherwise.
  const lt = health && health.lastTransition;
  if (lt && typeof lt === 'object') {
    const at = parseTime(lt.at);
    const kind = typeof lt.kind === 'string' ? lt.kind : 'transition';
    if (at && !state.transitions.some((t) => t.kind === kind && Math.abs(t.at - at.getTime()) < 10000)) {
      // An earlier page-detected mark of the same kind within a sample is the same event.
      state.transitions = state.transitions.filter((t) => !(t.kind === kind && t.source !== 'server' && Math.abs(t.at - at.getTime()) < SAMPLE_MS * 3));
      state.transitions.push({ kind, at: at.getTime(), source: 'server' });
      state.transitions.sort((a, b) => a.at - b.at);
    }
  }
  const el = $('last-transition');
  if (state.transitions.length === 0) {
    text(el, 'none seen');
    el.dataset.kind = 'none';
    return;
  }
  const recent = state.transitions.slice(-2).reverse();
  const [first, second] = recent;
  let msg = `last ${first.kind} ${clock(new Date(first.at))}`;
  if (second) msg += `, ${second.kind} ${clock(new Date(second.at))}`;
  text(el, msg);
  el.dataset.kind = first.kind;
  el.title = recent.map((t) => `${t.kind} at ${dateTime(new Date(t.at))}${t.source === 'server' ? '' : ' (seen by this page)'}`).join('\n');
}

// ---------------------------------------------------------------- resources

function renderResources(stats) {
  const mem = stats.memoryUsage && typeof stats.memoryUsage === 'object' ? stats.memoryUsage : null;
  const disk = stats.diskUsage && typeof stats.diskUsage === 'object' ? stats.diskUsage : null;
  const memEl = $('memory');
  if (mem) {
    const used = num(mem.used_memory);
    const max = num(mem.maxmemory);
    const human = typeof mem.used_memory_human === 'string' ? mem.used_memory_human : fmtBytes(used);
    const bar = $('memory-bar');
    const label = stats.sessionStore === 'redis' || mem.maxmemory_policy != null ? 'Redis memory' : 'Memory';
    text(memEl.querySelector('.resource__label'), label);
    if (Number.isFinite(used) && Number.isFinite(max) && max > 0) {
      const pct = Math.min(100, (used / max) * 100);
      text($('memory-text'), `${human} of ${fmtBytes(max)} (${pct.toFixed(1)} %)`);
      bar.dataset.level = pct >= 90 ? 'bad' : pct >= 75 ? 'warn' : 'ok';
      $('memory-fill').style.width = `${pct.toFixed(2)}%`; // CSSOM: allowed by style-src 'self'
      memEl.dataset.percent = pct.toFixed(1);
    } else {
      text($('memory-text'), `${human || '?'}${mem.maxmemory != null ? ' (no maxmemory limit)' : ''}`);
      bar.dataset.level = 'none';
      delete memEl.dataset.percent;
    }
    const policyLine = $('memory-policy').parentElement;
    if (typeof mem.maxmemory_policy === 'string') {
      text(policyLine.firstElementChild, 'Eviction policy');
      text($('memory-policy'), mem.maxmemory_policy);
      policyLine.hidden = false;
    } else if (mem.entries != null) {
      text(policyLine.firstElementChild, 'Entries');
      text($('memory-policy'), String(mem.entries));
      policyLine.hidden = false;
    } else {
      policyLine.hidden = true;
    }
    memEl.hidden = false;
  } else {
    memEl.hidden = true;
  }

  const diskEl = $('disk');
  if (disk) {
    const rows = [];
    if (typeof disk.directory === 'string') rows.push(['Session directory', disk.directory]);
    if (disk.files != null) rows.push(['Files', String(disk.files)]);
    const bytes = num(disk.bytes);
    if (disk.human != null || Number.isFinite(bytes)) rows.push(['Size', typeof disk.human === 'string' ? disk.human : fmtBytes(bytes)]);
    if (disk.setAside != null) rows.push(['Set aside', String(disk.setAside)]);
    $('disk-list').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]));
    diskEl.hidden = false;
  } else {
    diskEl.hidden = true;
  }
  $('resources-empty').hidden = !!(mem || disk);

  const warnings = Array.isArray(stats.warnings) ? stats.warnings : [];
  $('warnings').replaceChildren(
    ...warnings.map((w) =>
      h('div', { class: 'warning', 'data-testid': 'warning' }, h('strong', { text: 'Warning' }), typeof w === 'string' ? w : JSON.stringify(w)),
    ),
  );
}

// ---------------------------------------------------------------- metrics

/** Sums every sample of each metric name over its label sets. */
function parseMetrics(body) {
  const sums = new Map();
  for (const raw of body.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    sums.set(m[1], (sums.get(m[1]) || 0) + v);
  }
  return sums;
}

const COUNTERS = {
  loads: 'sessionforge_sessions_loaded_total',
  saves: 'sessionforge_sessions_saved_total',
  created: 'sessionforge_sessions_created_total',
  errors: 'sessionforge_store_errors_total',
  failovers: 'sessionforge_failovers_total',
  failbacks: 'sessionforge_failbacks_total',
};

// ---------------------------------------------------------------- sampling

let sampling = null;

function startLive() {
  stopLive();
  if (state.paused || state.auth === 'needed') return;
  const gen = state.liveGen;
  const loop = async () => {
    if (gen !== state.liveGen) return;
    const t0 = Date.now();
    await sampleOnce();
    if (gen !== state.liveGen) return;
    state.liveTimer = setTimeout(loop, Math.max(250, SAMPLE_MS - (Date.now() - t0)));
  };
  loop();
}

function stopLive() {
  state.liveGen += 1;
  clearTimeout(state.liveTimer);
}

/** One sample; concurrent callers share the one in flight. */
function sampleOnce() {
  if (!sampling) sampling = sample().finally(() => (sampling = null));
  return sampling;
}

async function sample() {
  const t = Date.now();
  const wantMetrics = state.metrics !== 'absent' || t - state.metricsCheckedAt > METRICS_RETRY_MS;
  const [st, he, me] = await Promise.allSettled([
    api('stats'),
    api('health'),
    wantMetrics ? api('metrics', { accept: 'text/plain' }) : Promise.resolve(null),
  ]);
  if (state.auth === 'needed') return;

  const problems = [];
  let stats = null;
  if (st.status === 'fulfilled' && st.value.ok && st.value.body && typeof st.value.body === 'object') {
    stats = st.value.body;
  } else {
    const why = st.status === 'rejected' ? st.reason.message : errorText(st.value.status, st.value.body);
    problems.push(`stats: ${why}`);
    if (st.status === 'fulfilled' && st.value.status === 403) {
      setError(`The admin API refused this browser (${why}). Open the dashboard from an address the admin service allows.`);
    } else {
      setError(`Could not read the session statistics (${why}).`);
    }
  }
  if (stats) setError('');

  let health = null;
  let healthStatus = 0;
  if (he.status === 'fulfilled' && he.value.body && typeof he.value.body === 'object' && typeof he.value.body.status === 'string') {
    health = he.value.body; // 200 or 503, still JSON
    healthStatus = he.value.status;
  } else {
    problems.push(`health: ${he.status === 'rejected' ? he.reason.message : errorText(he.value.status, he.value.body)}`);
  }

  let counters = null;
  if (wantMetrics && me.status === 'fulfilled' && me.value) {
    state.metricsCheckedAt = t;
    if (me.value.ok) {
      state.metrics = 'present';
      counters = parseMetrics(me.value.text);
    } else if (me.value.status === 404) {
      state.metrics = 'absent';
    }
  }

  if (!stats && !health && (st.status === 'rejected' || st.value.status === 403)) {
    // Nothing to show yet (or any more): the error box says why.
    if (state.auth !== 'ok') {
      setLive('error', `Update failed ${clock(new Date())}`);
      return;
    }
  }
  if (stats || health) authOk();

  renderBanner(stats, health, healthStatus, problems);
  if (stats) renderResources(stats);
  record(t, stats, health, counters);
  renderChart();
  setLive(stats ? 'live' : 'error', `${stats ? 'Updated' : 'Update failed'} ${clock(new Date())}${state.paused ? ' · paused' : ''}`);
}

function record(t, stats, health, counters) {
  const last = state.history[state.history.length - 1];
  if (last && t <= last.t) return;
  const mode = (health && health.sessionStore) || (stats && stats.sessionStore) || null;
  let count = stats ? num(stats.sessionCount) : NaN;
  if (!Number.isFinite(count) && counters && counters.has('sessionforge_sessions')) count = counters.get('sessionforge_sessions');
  const smp = { t, ok: !!stats, count: Number.isFinite(count) ? count : null, mode, loads: null, saves: null, errors: null };

  // Rates: counter differences over the time between this sample and the one before (if that one had them).
  const prev = state.lastCounters;
  if (counters && prev && last && prev.t === last.t) {
    const dt = (t - prev.t) / 1000;
    for (const k of ['loads', 'saves', 'errors']) {
      const a = prev.values.get(COUNTERS[k]);
      const b = counters.get(COUNTERS[k]);
      if (a != null && b != null && b >= a && dt > 0) smp[k] = (b - a) / dt;
      else if (a == null && b == null && counters.size > 0) smp[k] = 0; // not exported yet: nothing happened
    }
  }

  // Transitions: a change of serving mode between two samples, or the failover/failback counters moving.
  const seen = new Set();
  if (mode && state.lastMode && mode !== state.lastMode) {
    const kind = mode === 'redis' ? 'failback' : state.lastMode === 'redis' ? 'failover' : 'switch';
    seen.add(kind);
    addTransition(kind, t);
    // Another store serves now: the list (and any cursor into it) was the other store's.
    list.cursor = null;
    list.stack = [];
    list.next = null;
    loadList();
  }
  if (counters && prev) {
    for (const kind of ['failovers', 'failbacks']) {
      const a = prev.values.get(COUNTERS[kind]);
      const b = counters.get(COUNTERS[kind]);
      const k = kind.slice(0, -1);
      if (a != null && b != null && b > a && !seen.has(k)) addTransition(k, t);
    }
  }
  if (mode) state.lastMode = mode;
  state.lastCounters = counters ? { t, values: counters } : null;

  state.history.push(smp);
  const cutoff = t - WINDOW_MS - SAMPLE_MS * 2;
  while (state.history.length && state.history[0].t < cutoff) state.history.shift();
  state.transitions = state.transitions.filter((x) => x.at >= cutoff || x === state.transitions[state.transitions.length - 1] || x === state.transitions[state.transitions.length - 2]);
  renderTransitions(null);
}

function addTransition(kind, at) {
  // A server-reported transition close by is the same event.
  if (state.transitions.some((x) => x.kind === kind && Math.abs(x.at - at) < SAMPLE_MS * 3)) return;
  state.transitions.push({ kind, at, source: 'page' });
}

// ---------------------------------------------------------------- chart

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function tickLabel(v) {
  if (v === 0) return '0';
  if (Math.abs(v) >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (Math.abs(v) >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

let chartWidth = 0;

function renderChart() {
  const svg = $('chart');
  const box = $('chart-box');
  const W = Math.max(280, Math.round(box.clientWidth || chartWidth || 600));
  chartWidth = W;
  const H = W < 520 ? 220 : 260;
  svg.setAttribute('width', String(W));
  svg.setAttribute('height', String(H));
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const rates = state.metrics !== 'absent';
  const m = { l: 44, r: rates ? 46 : 14, t: 24, b: 30 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;

  const keep = [svg.querySelector('title'), svg.querySelector('desc')];
  svg.replaceChildren(...keep.filter(Boolean));
  const hist = state.history;
  const now = hist.length ? hist[hist.length - 1].t : Date.now();
  const t0 = now - WINDOW_MS;
  const x = (t) => m.l + ((t - t0) / WINDOW_MS) * pw;
  const inWin = hist.filter((p) => p.t >= t0 - SAMPLE_MS);

  const maxCount = niceMax(Math.max(0, ...inWin.map((p) => p.count ?? 0)));
  const maxRate = niceMax(Math.max(0, ...inWin.flatMap((p) => [p.loads ?? 0, p.saves ?? 0, p.errors ?? 0])));
  const yL = (v) => m.t + ph - (v / maxCount) * ph;
  const yR = (v) => m.t + ph - (v / maxRate) * ph;

  const g = s('g', { class: 'axes' });
  svg.append(g);
  const TICKS = 4;
  for (let i = 0; i <= TICKS; i += 1) {
    const y = m.t + ph - (i / TICKS) * ph;
    g.append(s('line', { class: 'grid-line', x1: m.l, x2: m.l + pw, y1: y, y2: y }));
    g.append(s('text', { class: 'axis-label', x: m.l - 6, y: y + 4, 'text-anchor': 'end' }, tickLabel((maxCount * i) / TICKS)));
    if (rates) g.append(s('text', { class: 'axis-label', x: m.l + pw + 6, y: y + 4, 'text-anchor': 'start' }, tickLabel((maxRate * i) / TICKS)));
  }
  g.append(s('text', { class: 'axis-title', x: m.l - 6, y: m.t - 10, 'text-anchor': 'end' }, 'sessions'));
  if (rates) g.append(s('text', { class: 'axis-title', x: m.l + pw + 6, y: m.t - 10, 'text-anchor': 'start' }, 'per s'));
  g.append(s('line', { class: 'axis-line', x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph }));
  const step = pw < 360 ? 120000 : 60000;
  for (let tt = Math.ceil(t0 / step) * step; tt <= now; tt += step) {
    const xx = x(tt);
    g.append(s('line', { class: 'axis-line', x1: xx, x2: xx, y1: m.t + ph, y2: m.t + ph + 4 }));
    const d = new Date(tt);
    g.append(s('text', { class: 'axis-label', x: xx, y: m.t + ph + 17, 'text-anchor': 'middle' }, `${pad(d.getHours())}:${pad(d.getMinutes())}`));
  }

  const clip = (v) => Math.max(m.l, Math.min(m.l + pw, v));
  // Gaps: samples whose stats call failed.
  const gaps = s('g', { class: 'gaps' });
  svg.append(gaps);
  let gapStart = null;
  inWin.forEach((p, i) => {
    const prevT = i > 0 ? inWin[i - 1].t : p.t - SAMPLE_MS;
    const nextT = i + 1 < inWin.length ? inWin[i + 1].t : p.t;
    if (!p.ok && gapStart == null) gapStart = prevT;
    if (!p.ok && (i + 1 === inWin.length || inWin[i + 1].ok)) {
      const a = clip(x(gapStart));
      const b = clip(x(nextT));
      gaps.append(s('rect', { class: 'gap', 'data-testid': 'chart-gap', x: a, y: m.t, width: Math.max(2, b - a), height: ph }));
      gapStart = null;
    }
  });

  const series = [
    ['count', yL],
    ...(rates ? [['loads', yR], ['saves', yR], ['errors', yR]] : []),
  ];
  for (const [key, y] of series) {
    let d = '';
    let run = 0;
    const lone = [];
    inWin.forEach((p, i) => {
      const v = p[key];
      if (v == null) {
        if (run === 1) lone.push(inWin[i - 1]);
        run = 0;
        return;
      }
      d += `${run === 0 ? 'M' : 'L'}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
      run += 1;
    });
    if (run === 1) lone.push(inWin[inWin.length - 1]);
    if (d) svg.append(s('path', { class: `line line--${key}`, d, 'data-series': key }));
    for (const p of lone) svg.append(s('circle', { class: `dot--${key}`, cx: x(p.t), cy: y(p[key]), r: 3 }));
    const lastP = [...inWin].reverse().find((p) => p[key] != null);
    if (lastP) svg.append(s('circle', { class: `dot--${key}`, cx: x(lastP.t), cy: y(lastP[key]), r: 3.5 }));
  }

  // Failover / failback marks.
  const marks = state.transitions.filter((tr) => tr.at >= t0 && tr.at <= now + SAMPLE_MS);
  marks.forEach((tr, i) => {
    const xx = clip(x(tr.at));
    const mg = s('g', { class: `mark mark--${tr.kind}`, 'data-testid': 'chart-marker', 'data-kind': tr.kind });
    mg.append(s('line', { class: 'marker', x1: xx, x2: xx, y1: m.t - 4, y2: m.t + ph }));
    const label = `${tr.kind} ${clock(new Date(tr.at))}`;
    const right = xx > m.l + pw - 110;
    const ly = m.t + 12 + (i % 2) * 15;
    const lx = right ? xx - 4 : xx + 4;
    const approxW = label.length * 6.2;
    mg.append(s('rect', { class: 'marker-label-bg', x: right ? lx - approxW : lx, y: ly - 10, width: approxW, height: 13, rx: 2 }));
    mg.append(s('text', { class: 'marker-label', x: lx, y: ly, 'text-anchor': right ? 'end' : 'start' }, label));
    svg.append(mg);
  });

  if (!inWin.length) {
    svg.append(s('text', { class: 'empty-label', x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle' }, 'Waiting for the first sample…'));
  }

  // Legend values and a text description for screen readers.
  const lastOf = (k) => [...inWin].reverse().find((p) => p[k] != null)?.[k];
  const lc = lastOf('count');
  text($('legend-count'), lc == null ? '' : String(lc));
  text($('legend-loads'), fmtRate(lastOf('loads')));
  text($('legend-saves'), fmtRate(lastOf('saves')));
  text($('legend-errors'), fmtRate(lastOf('errors')));
  $('legend').dataset.rates = rates ? 'on' : 'off';
  const note = $('chart-note');
  note.hidden = rates;
  text(note, rates ? '' : 'This app exports no /metrics: only the session count is plotted.');
  const desc = svg.querySelector('desc');
  if (desc) {
    desc.textContent = inWin.length
      ? `Latest: ${lc ?? 'unknown'} sessions` +
        (rates ? `, ${fmtRate(lastOf('loads'))} loads/s, ${fmtRate(lastOf('saves'))} saves/s, ${fmtRate(lastOf('errors'))} store errors/s` : '') +
        `. ${marks.length} failover/failback marks; ${inWin.filter((p) => !p.ok).length} failed samples.`
      : 'No samples yet.';
  }
}

// ---------------------------------------------------------------- session list

const list = { user: null, cursor: null, stack: [], next: null, seq: 0 };

async function loadList() {
  const seq = ++list.seq;
  let path;
  if (list.user === '.' || list.user === '..') {
    showListMessage(`The user id "${list.user}" cannot be looked up: "." and ".." are not usable in a URL path.`);
    return;
  }
  if (list.user) {
    path = `users/${segment(list.user)}/sessions`;
  } else {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (list.cursor) q.set('cursor', list.cursor);
    path = `sessions?${q}`;
  }
  $('refresh').disabled = true;
  let r;
  try {
    r = await api(path);
  } catch (e) {
    if (seq === list.seq && e.status !== 401) showListMessage(`Could not load the sessions: ${e.message}.`);
    return;
  } finally {
    if (seq === list.seq) $('refresh').disabled = false;
  }
  if (seq !== list.seq) return;
  if (!r.ok || !r.body || !Array.isArray(r.body.sessions)) {
    // 501 says the store cannot list sessions: its message stands in for the list.
    showListMessage(r.status === 501 && r.body && r.body.error ? r.body.error : `Could not load the sessions (${errorText(r.status, r.body)}).`);
    return;
  }
  authOk();
  renderList(r.body);
}

function showListMessage(msg) {
  const el = $('list-message');
  text(el, msg);
  el.hidden = false;
  $('table-wrap').hidden = true;
  $('rows').replaceChildren();
  $('pager').hidden = true;
  text($('list-summary'), '');
  $('userbar').hidden = true;
}

function timeCell(label, raw, { rel = false } = {}) {
  const d = parseTime(raw);
  const td = h('td', { 'data-label': label });
  if (!d) {
    td.append(h('span', { class: 'none', text: raw == null ? '—' : String(raw) }));
    return td;
  }
  const delta = d.getTime() - Date.now();
  // One child, so that the phone layout (label | value grid) keeps the value in one column.
  const val = h('span', { class: 'cell-val' }, h('time', { datetime: raw, title: `${raw} (${relative(delta)})`, text: dateTime(d) }));
  if (rel) {
    const expired = delta < 0;
    val.append(' ', h('span', { class: expired ? 'rel rel--expired' : 'muted rel', text: expired ? `(expired ${relative(delta)})` : `(${relative(delta)})` }));
  }
  td.append(val);
  return td;
}

function renderList(body) {
  const sessions = body.sessions;
  $('list-message').hidden = true;
  $('table-wrap').hidden = false;
  const rows = sessions.map((sess) => {
    const id = typeof sess.id === 'string' ? sess.id : String(sess.id);
    const user = typeof sess.user === 'string' && sess.user !== '' ? sess.user : null;
    const agent = typeof sess.userAgent === 'string' && sess.userAgent !== '' ? sess.userAgent : null;
    const short = id.length > 8 ? `${id.slice(0, 8)}…` : id;

    const userCell = h('td', { 'data-label': 'User', 'data-testid': 'row-user', class: 'cell-user' });
    if (user) {
      const b = h('button', { type: 'button', class: 'btn btn--link', title: `Show only the sessions of ${user}`, text: user });
      b.addEventListener('click', () => applyFilter(user));
      userCell.append(b);
    } else {
      userCell.append(h('span', { class: 'none', title: 'no user', text: '—' }));
    }
    const agentCell = h('td', { 'data-label': 'User agent', 'data-testid': 'row-agent', class: 'cell-agent' });
    if (agent) agentCell.textContent = agent;
    else agentCell.append(h('span', { class: 'none', title: 'no user agent recorded', text: '—' }));

    const end = h('button', {
      type: 'button',
      class: 'btn btn--small btn--danger',
      'data-testid': 'end-session',
      'aria-label': `End session ${short}${user ? ` of ${user}` : ''}`,
      text: 'End session',
    });
    end.addEventListener('click', () => endSession(id, user));

    return h(
      'tr',
      { class: 'session-row', 'data-testid': 'session-row', 'data-id': id },
      userCell,
      timeCell('Created', sess.createdAt),
      timeCell('Last access', sess.lastAccess),
      timeCell('Expires', sess.expires, { rel: true }),
      agentCell,
      h('td', { 'data-label': 'Id', class: 'cell-id' }, h('code', { title: id, text: short })),
      h('td', { class: 'cell-action' }, end),
    );
  });
  if (!rows.length) {
    rows.push(h('tr', { class: 'empty' }, h('td', { colspan: '7', text: list.user ? 'This user has no sessions.' : 'No sessions stored.' })));
  }
  $('rows').replaceChildren(...rows);

  const total = num(body.total);
  if (list.user) {
    $('pager').hidden = true;
    const n = Number.isFinite(total) ? total : sessions.length;
    const p = $('userbar-text');
    p.replaceChildren(`${n} session${n === 1 ? '' : 's'} of user `, h('strong', { text: list.user }));
    text($('end-user'), `End all sessions of ${list.user}`);
    $('end-user').disabled = n === 0 || state.busy;
    $('userbar').hidden = false;
    text($('list-summary'), '');
  } else {
    $('userbar').hidden = true;
    list.next = typeof body.nextCursor === 'string' && body.nextCursor ? body.nextCursor : null;
    const from = list.stack.length * PAGE_SIZE + (sessions.length ? 1 : 0);
    const to = list.stack.length * PAGE_SIZE + sessions.length;
    const of = Number.isFinite(total) ? ` of ${total}` : '';
    text($('page-info'), sessions.length ? `${from}–${to}${of}` : `none${of}`);
    text($('list-summary'), Number.isFinite(total) ? `${total} session${total === 1 ? '' : 's'} stored.` : '');
    $('prev').disabled = list.stack.length === 0;
    $('next').disabled = !list.next;
    $('pager').hidden = list.stack.length === 0 && !list.next;
  }
}

function applyFilter(user) {
  const u = (user || '').trim();
  $('user-filter').value = u;
  list.user = u || null;
  list.cursor = null;
  list.stack = [];
  list.next = null;
  $('clear-filter').hidden = !list.user;
  setResult('idle', '');
  loadList();
}

// ---------------------------------------------------------------- confirmation and actions

function confirmDialog(title, message, okLabel) {
  const d = $('confirm');
  if (d.open) return Promise.resolve(false);
  text($('confirm-title'), title);
  text($('confirm-text'), message);
  text($('confirm-ok'), okLabel);
  d.returnValue = '';
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
    $('confirm-cancel').focus();
  });
}

function describe(body) {
  const msg = body && typeof body.message === 'string' ? body.message : '';
  const n = body && typeof body.deletedSessions === 'number' ? body.deletedSessions : null;
  if (msg && n != null && !msg.includes(String(n))) return `${msg} (${n} deleted)`;
  if (msg) return msg;
  if (n != null) return `Done: ${n} session${n === 1 ? '' : 's'} deleted.`;
  return 'Done.';
}

function setBusy(b) {
  state.busy = b;
  for (const el of document.querySelectorAll('[data-testid="end-session"], #end-user, #cleanup')) el.disabled = b;
}

async function act(title, message, okLabel, method, path) {
  if (state.busy) return;
  if (!(await confirmDialog(title, message, okLabel))) {
    setResult('idle', '');
    return;
  }
  setBusy(true);
  setResult('pending', 'Working…');
  try {
    const r = await api(path, { method });
    if (r.ok && r.body && r.body.success !== false) {
      setResult('ok', describe(r.body), typeof r.body.deletedSessions === 'number' ? r.body.deletedSessions : undefined);
    } else {
      setResult('error', `Failed: ${errorText(r.status, r.body)}`);
    }
  } catch (e) {
    if (e.status === 401) return;
    setResult('error', `Failed: ${e.message}`);
  } finally {
    setBusy(false);
  }
  await Promise.all([loadList(), freshSample()]);
}

/** A sample started after now (one already in flight may predate the change just made). */
async function freshSample() {
  if (sampling) await sampling;
  return sampleOnce();
}

function endSession(id, user) {
  const short = `${id.slice(0, 8)}…`;
  act(
    'End this session?',
    `Session ${short}${user ? ` of ${user}` : ''} will be deleted; its browser is logged out on its next request.`,
    'End session',
    'DELETE',
    `sessions/${segment(id)}`,
  );
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('token-input');
    const t = input.value.trim();
    if (!/^[\x21-\x7e]+$/.test(t)) {
      text($('token-reason'), 'A bearer token is one word of printable ASCII characters.');
      input.focus();
      return;
    }
    input.value = '';
    setToken(t);
    state.auth = 'unknown';
    $('token-section').hidden = true;
    setLive('idle', 'Connecting…');
    start();
  });

  $('forget-token').addEventListener('click', () => {
    clearToken();
    stopLive();
    clearData();
    $('forget-token').hidden = true;
    state.auth = 'unknown';
    $('data').hidden = true;
    setResult('idle', '');
    start();
  });

  $('pause').addEventListener('click', () => {
    state.paused = !state.paused;
    const b = $('pause');
    b.setAttribute('aria-pressed', String(state.paused));
    text(b, state.paused ? 'Resume live updates' : 'Pause live updates');
    if (state.paused) {
      stopLive();
      setLive('paused', 'Paused');
    } else {
      startLive();
    }
  });

  $('filter-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    applyFilter($('user-filter').value);
  });
  $('clear-filter').addEventListener('click', () => applyFilter(''));
  $('refresh').addEventListener('click', () => {
    loadList();
    sampleOnce();
  });
  $('next').addEventListener('click', () => {
    if (!list.next) return;
    list.stack.push(list.cursor);
    list.cursor = list.next;
    loadList();
  });
  $('prev').addEventListener('click', () => {
    if (!list.stack.length) return;
    list.cursor = list.stack.pop();
    loadList();
  });
  $('cleanup').addEventListener('click', () =>
    act('Run cleanup?', 'Expired sessions are deleted from the store now, instead of waiting for their expiry.', 'Run cleanup', 'POST', 'cleanup'),
  );
  $('end-user').addEventListener('click', () => {
    const user = list.user;
    if (!user) return;
    act(
      `End all sessions of ${user}?`,
      `Every session of user ${user} is deleted: they are logged out everywhere, on every instance.`,
      'End all sessions',
      'DELETE',
      `users/${segment(user)}/sessions`,
    );
  });

  const dialog = $('confirm');
  $('confirm-ok').addEventListener('click', () => dialog.close('ok'));
  $('confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
  dialog.addEventListener('click', (ev) => {
    if (ev.target === dialog) {
      // A click on the backdrop (outside the dialog's box) cancels.
      const r = dialog.getBoundingClientRect();
      const inside = ev.clientX >= r.left && ev.clientX <= r.right && ev.clientY >= r.top && ev.clientY <= r.bottom;
      if (!inside) dialog.close('cancel');
    }
  });

  let raf = 0;
  const onResize = () => {
    cancelAnimationFrame(raf);
    raf = requestAnimationFrame(() => {
      if (Math.round($('chart-box').clientWidth) !== chartWidth) renderChart();
    });
  };
  if ('ResizeObserver' in window) new ResizeObserver(onResize).observe($('chart-box'));
  else window.addEventListener('resize', onResize);
}

function start() {
  if (!state.paused) setLive('idle', 'Connecting…');
  loadList();
  startLive();
  if (state.paused) sampleOnce();
}

wire();
renderChart();
start();
