// Drives the admin dashboard in headless Chromium. Run by a Rust test that starts the real server and
// controls Redis; it can also be run by hand against any server that serves the dashboard.
//
// Env:
//   BASE        origin of the server, e.g. http://127.0.0.1:4567 (required)
//   DASHBOARD   path of the page, e.g. /api/sessions/dashboard (required)
//   TOKEN       bearer token (optional: bearer mode)
//   SCREENSHOT  where to write a full-page PNG (screenshot phase; skipped when unset)
//   SCREENSHOT_MOBILE  optional second PNG at 375 px width
//   PHASES      comma list of phases to run (default: all):
//               bearer-refused,count,xss,end-session,revoke-user,failover,screenshot
//   EXPECT_COUNT  sessions the page must show; EXPECT_USER  a user with >= 2 sessions;
//   XSS_AGENT   the hostile user agent one session was created with
//   CHROMIUM    browser binary (default /usr/bin/chromium); DEADLINE_MS  whole-run limit (default 90000)
//
// Protocol on stdio (one line each):
//   stdout  STEP <name>       the Rust side must act (kill-redis, restart-redis), then write OK on stdin
//   stdin   OK
//   stdout  CHECK <name> ok   a check passed
//   stdout  ENDED <id>        the session with this store id was ended through the UI
//   stdout  REVOKED <user>    all sessions of this user were ended through the UI
//   stdout  FAIL <name>: <reason>   then exit 1
// Diagnostics go to stderr. Exit 0 when every requested phase passed.

import { chromium } from 'playwright-core';
import readline from 'node:readline';

const ALL = ['bearer-refused', 'count', 'xss', 'end-session', 'revoke-user', 'failover', 'screenshot'];
const env = process.env;
const BASE = (env.BASE || '').replace(/\/+$/, '');
const DASHBOARD = env.DASHBOARD || '';
const TOKEN = env.TOKEN || '';
const PHASES = new Set((env.PHASES || ALL.join(',')).split(',').map((p) => p.trim()).filter(Boolean));
const DEADLINE_MS = Number(env.DEADLINE_MS || 90000);
const STEP_TIMEOUT_MS = Number(env.STEP_TIMEOUT_MS || 30000);

const out = (line) => process.stdout.write(`${line}\n`);
const diag = (...a) => process.stderr.write(`[dashboard.mjs] ${a.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let browser = null;
let finishing = false;

class Fail extends Error {
  constructor(name, reason) {
    super(`${name}: ${reason}`);
    this.check = name;
    this.reason = reason;
  }
}

async function finish(code, failLine) {
  if (finishing) return;
  finishing = true;
  if (failLine) out(failLine.replace(/[\r\n]+/g, ' '));
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  process.exit(code);
}

const deadline = setTimeout(() => finish(1, `FAIL deadline: the run took longer than ${DEADLINE_MS} ms`), DEADLINE_MS);
deadline.unref();

// ---------------------------------------------------------------- stdin: OK lines from the Rust test

const stdinLines = [];
let stdinWaiter = null;
let stdinClosed = false;
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (l) => {
  stdinLines.push(l.trim());
  if (stdinWaiter) stdinWaiter();
});
rl.on('close', () => {
  stdinClosed = true;
  if (stdinWaiter) stdinWaiter();
});

async function step(name, check) {
  out(`STEP ${name}`);
  const until = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const i = stdinLines.indexOf('OK');
    if (i >= 0) {
      stdinLines.splice(0, i + 1);
      return;
    }
    if (stdinClosed) throw new Fail(check, `stdin closed before OK for STEP ${name}`);
    const left = until - Date.now();
    if (left <= 0) throw new Fail(check, `no OK on stdin within ${STEP_TIMEOUT_MS} ms after STEP ${name}`);
    await new Promise((r) => {
      stdinWaiter = r;
      setTimeout(r, left);
    });
    stdinWaiter = null;
  }
}

// ---------------------------------------------------------------- helpers

/** Polls `fn` (async, returns truthy when done) until `ms`; throws Fail(name, describe()) on timeout. */
async function waitFor(name, ms, fn, describe) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) {
      const why = describe ? await Promise.resolve(describe(last)).catch((e) => String(e)) : String(last);
      throw new Fail(name, `timed out after ${ms} ms: ${why}`);
    }
    await sleep(150);
  }
}

const tid = (id) => `[data-testid="${id}"]`;

async function textOf(page, id) {
  return page.$eval(tid(id), (el) => el.textContent.trim()).catch(() => null);
}

async function visible(page, id) {
  const el = await page.$(tid(id));
  return !!el && (await el.isVisible());
}

async function rows(page) {
  return page.$$eval(tid('session-row'), (trs) =>
    trs.map((tr) => ({
      id: tr.getAttribute('data-id'),
      user: tr.querySelector('[data-testid="row-user"]')?.textContent ?? null,
      agent: tr.querySelector('[data-testid="row-agent"]')?.textContent ?? null,
    })),
  );
}

async function confirmDialog(page, name, expectText) {
  await waitFor(name, 5000, () => page.$eval(tid('confirm-dialog'), (d) => d.open), () => 'the confirmation <dialog> did not open');
  if (expectText) {
    const t = await page.$eval(tid('confirm-dialog'), (d) => d.textContent);
    if (!t.includes(expectText)) throw new Fail(name, `the confirmation does not mention ${JSON.stringify(expectText)}: ${JSON.stringify(t)}`);
  }
  await page.click(tid('confirm-ok'));
  await waitFor(name, 3000, () => page.$eval(tid('confirm-dialog'), (d) => !d.open), () => 'the dialog stayed open after confirming');
}

async function resultOk(page, name) {
  return waitFor(
    name,
    10000,
    () => page.$eval(tid('result'), (el) => (el.dataset.state === 'ok' ? { text: el.textContent, deleted: el.dataset.deleted } : el.dataset.state === 'error' ? Promise.reject(new Error(`error result: ${el.textContent}`)) : null)),
    (last) => (last instanceof Error ? last.message : 'no success shown in the result area'),
  );
}

// ---------------------------------------------------------------- main

async function main() {
  if (!BASE || !DASHBOARD) throw new Fail('setup', 'BASE and DASHBOARD must be set');
  for (const p of PHASES) if (!ALL.includes(p)) throw new Fail('setup', `unknown phase ${p}`);

  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
  context.setDefaultTimeout(10000);
  const page = await context.newPage();

  // Anything that looks like script injection or a CSP violation fails the run.
  const problems = [];
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (/content security policy|refused to (load|execute|apply|connect|frame)/i.test(t)) problems.push(`CSP: ${t}`);
    else if (m.type() === 'error' && !/^Failed to load resource/.test(t)) problems.push(`console error: ${t}`);
    else if (m.type() === 'error' || m.type() === 'warning') diag(`console ${m.type()}: ${t}`);
  });
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile || '?'}:${e.lineNumber || 0}`);
    });
  });
  const writes = [];
  page.on('request', (r) => {
    if (r.method() !== 'GET') writes.push(`${r.method()} ${r.url()}`);
  });

  const assertClean = async (name) => {
    const csp = await page.evaluate(() => window.__cspViolations || []).catch(() => []);
    const all = [...problems, ...csp.map((v) => `CSP: ${v}`), ...dialogs.map((d) => `native dialog opened (${d})`)];
    if (all.length) throw new Fail(name, all.join(' | '));
  };

  const url = `${BASE}${DASHBOARD}`;
  const resp = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 15000 });
  if (!resp || resp.status() !== 200) throw new Fail('setup', `GET ${url} answered ${resp ? resp.status() : 'nothing'}`);

  // ---- authentication
  if (TOKEN) {
    const name = 'bearer-refused';
    await waitFor(name, 10000, () => visible(page, 'token-form'), () => 'the token form did not appear without a token');
    const leaked = await page.evaluate(() => ({
      rows: document.querySelectorAll('[data-testid="session-row"]').length,
      count: document.querySelector('[data-testid="session-count"]')?.textContent.trim() ?? '',
      dataVisible: !!document.querySelector('[data-testid="banner"]')?.checkVisibility?.(),
    }));
    if (leaked.rows || leaked.count || leaked.dataVisible) throw new Fail(name, `data shown without a token: ${JSON.stringify(leaked)}`);
    await page.fill(tid('token-input'), TOKEN);
    await page.click(tid('token-save'));
    await waitFor(name, 10000, async () => /^\d+$/.test((await textOf(page, 'session-count')) || '') && !(await visible(page, 'token-form')), async () => `no data after entering the token (count ${JSON.stringify(await textOf(page, 'session-count'))})`);
    const where = await page.evaluate((t) => ({
      session: Object.keys(sessionStorage).some((k) => sessionStorage.getItem(k) === t),
      local: Object.keys(localStorage).some((k) => (localStorage.getItem(k) || '').includes(t)),
      cookie: document.cookie.includes(t),
      url: location.href.includes(t),
    }), TOKEN);
    if (!where.session || where.local || where.cookie || where.url) throw new Fail(name, `token must live in sessionStorage only: ${JSON.stringify(where)}`);
    if (PHASES.has(name)) out(`CHECK ${name} ok`);
  }

  // ---- count
  const expectCount = env.EXPECT_COUNT != null && env.EXPECT_COUNT !== '' ? Number(env.EXPECT_COUNT) : null;
  await waitFor('count', 10000, async () => (await rows(page)).length > 0 || (await visible(page, 'list-message')), () => 'no session rows listed');
  if (PHASES.has('count')) {
    const name = 'count';
    if (expectCount == null || !Number.isFinite(expectCount)) throw new Fail(name, 'EXPECT_COUNT not set');
    await waitFor(
      name,
      10000,
      async () => (await textOf(page, 'session-count')) === String(expectCount) && (await rows(page)).length === Math.min(expectCount, 50),
      async () => `shown count ${JSON.stringify(await textOf(page, 'session-count'))}, ${(await rows(page)).length} rows; expected ${expectCount}`,
    );
    await assertClean(name);
    out(`CHECK ${name} ok`);
  }

  // ---- xss
  if (PHASES.has('xss')) {
    const name = 'xss';
    const agent = env.XSS_AGENT;
    if (!agent) throw new Fail(name, 'XSS_AGENT not set');
    let found = false;
    for (let pageNo = 0; pageNo < 20 && !found; pageNo += 1) {
      found = (await rows(page)).some((r) => r.agent === agent);
      if (found) break;
      const next = await page.$(`${tid('next')}:not([disabled])`);
      if (!next || !(await next.isVisible())) break;
      const before = (await rows(page)).map((r) => r.id).join();
      await next.click();
      await waitFor(name, 5000, async () => (await rows(page)).map((r) => r.id).join() !== before);
    }
    if (!found) throw new Fail(name, `no row whose agent cell reads exactly ${JSON.stringify(agent)}`);
    const imgs = await page.evaluate(() => ({ table: document.querySelectorAll('table img').length, page: document.querySelectorAll('img').length }));
    if (imgs.table || imgs.page) throw new Fail(name, `an <img> element was created from data: ${JSON.stringify(imgs)}`);
    await sleep(500); // an onerror handler would have fired by now
    if (dialogs.length) throw new Fail(name, `a native dialog opened: ${dialogs.join('; ')}`);
    await assertClean(name);
    out(`CHECK ${name} ok`);
    // Back to the first page for the next phases.
    while (await page.$(`${tid('prev')}:not([disabled])`)) {
      const before = (await rows(page)).map((r) => r.id).join();
      await page.click(tid('prev'));
      await waitFor(name, 5000, async () => (await rows(page)).map((r) => r.id).join() !== before);
    }
  }

  // ---- end-session
  if (PHASES.has('end-session')) {
    const name = 'end-session';
    const list = await rows(page);
    // The first row, skipping EXPECT_USER's sessions so that revoke-user still finds at least two.
    const target = list.find((r) => !env.EXPECT_USER || r.user !== env.EXPECT_USER) || list[0];
    if (!target) throw new Fail(name, 'no session row to end');
    const rowSel = `${tid('session-row')}[data-id="${target.id}"]`;

    // Cancelling changes nothing.
    const writesBefore = writes.length;
    await page.click(`${rowSel} ${tid('end-session')}`);
    await waitFor(name, 5000, () => page.$eval(tid('confirm-dialog'), (d) => d.open), () => 'the confirmation <dialog> did not open');
    await page.click(tid('confirm-cancel'));
    await waitFor(name, 3000, () => page.$eval(tid('confirm-dialog'), (d) => !d.open), () => 'cancel did not close the dialog');
    await sleep(300);
    if (writes.length !== writesBefore) throw new Fail(name, `cancelling still sent ${writes.slice(writesBefore).join(', ')}`);
    if (!(await page.$(rowSel))) throw new Fail(name, 'the row vanished after cancelling');

    await page.click(`${rowSel} ${tid('end-session')}`);
    await confirmDialog(page, name, target.id.slice(0, 8));
    const r = await resultOk(page, name);
    await waitFor(name, 10000, async () => !(await page.$(rowSel)), () => 'the ended session is still listed');
    if (!writes.slice(writesBefore).some((w) => w.startsWith('DELETE ') && w.includes(target.id))) throw new Fail(name, `no DELETE for ${target.id} was sent`);
    diag(`end-session result: ${r.text}`);
    await assertClean(name);
    out(`ENDED ${target.id}`);
    out(`CHECK ${name} ok`);
  }

  // ---- revoke-user
  if (PHASES.has('revoke-user')) {
    const name = 'revoke-user';
    const user = env.EXPECT_USER;
    if (!user) throw new Fail(name, 'EXPECT_USER not set');
    await page.fill(tid('user-filter'), user);
    await page.click(tid('apply-filter'));
    await waitFor(
      name,
      10000,
      async () => {
        const rs = await rows(page);
        return rs.length >= 2 && rs.every((r) => r.user === user) && (await visible(page, 'end-user'));
      },
      async () => `user view of ${user}: ${JSON.stringify((await rows(page)).map((r) => r.user))}`,
    );
    const label = await textOf(page, 'end-user');
    if (!label.includes(user)) throw new Fail(name, `the button does not name the user: ${JSON.stringify(label)}`);
    await page.click(tid('end-user'));
    await confirmDialog(page, name, user);
    const r = await resultOk(page, name);
    const deleted = r.deleted != null ? Number(r.deleted) : Number((/(\d+)/.exec(r.text) || [])[1]);
    if (!(deleted >= 2)) throw new Fail(name, `result does not show >= 2 deleted sessions: ${JSON.stringify(r)}`);
    await waitFor(name, 10000, async () => (await rows(page)).length === 0, () => 'the user still has listed sessions');
    await assertClean(name);
    out(`REVOKED ${user}`);
    out(`CHECK ${name} ok`);
    // Back to all sessions.
    await page.fill(tid('user-filter'), '');
    await page.click(tid('apply-filter'));
  }

  // ---- failover
  if (PHASES.has('failover')) {
    const name = 'failover';
    const banner = tid('banner');
    const bannerState = () => page.$eval(banner, (b) => ({ mode: b.dataset.mode, state: b.dataset.state, title: b.querySelector('[data-testid="banner-title"]')?.textContent ?? '', transition: b.querySelector('[data-testid="last-transition"]')?.textContent ?? '' }));
    await waitFor(name, 10000, async () => (await bannerState()).mode === 'redis', async () => `the banner does not show redis before the failover: ${JSON.stringify(await bannerState())}`);
    await step('kill-redis', name);
    await waitFor(
      name,
      15000,
      async () => {
        const b = await bannerState();
        const styled = await page.$eval(banner, (el) => {
          const bg = getComputedStyle(el).backgroundImage + getComputedStyle(el).backgroundColor;
          return el.dataset.state === 'failover' && /gradient|rgb\((1[5-9]\d|2\d\d), \d{1,2}, \d{1,2}\)/.test(bg);
        });
        return b.mode === 'file' && b.state === 'failover' && /FAILOVER/.test(b.title) && styled;
      },
      async () => `banner after kill-redis: ${JSON.stringify(await bannerState())}`,
    );
    diag(`failover shown: ${JSON.stringify(await bannerState())}`);
    await step('restart-redis', name);
    await waitFor(
      name,
      20000,
      async () => {
        const b = await bannerState();
        return b.mode === 'redis' && b.state !== 'failover' && /fail(over|back)/.test(b.transition) && (await visible(page, 'last-transition'));
      },
      async () => `banner after restart-redis: ${JSON.stringify(await bannerState())}`,
    );
    const marks = await page.$$eval(`${tid('chart')} [data-testid="chart-marker"]`, (m) => m.map((g) => g.getAttribute('data-kind')));
    if (!marks.length) throw new Fail(name, 'the chart marks no failover/failback');
    diag(`after failback: ${JSON.stringify(await bannerState())}; chart marks ${marks.join(',')}`);
    await assertClean(name);
    out(`CHECK ${name} ok`);
  }

  // ---- screenshot
  if (PHASES.has('screenshot')) {
    const name = 'screenshot';
    if (env.SCREENSHOT) {
      await page.screenshot({ path: env.SCREENSHOT, fullPage: true });
      diag(`wrote ${env.SCREENSHOT}`);
    } else {
      diag('SCREENSHOT not set: no PNG written');
    }
    // Phone width: nothing may stick out sideways.
    await page.setViewportSize({ width: 375, height: 812 });
    await sleep(400);
    const overflow = await page.evaluate(() => {
      const w = document.documentElement.clientWidth;
      const wide = [...document.querySelectorAll('body *')]
        .filter((el) => el.getBoundingClientRect().right > w + 1 && el.getClientRects().length && !el.closest('.visually-hidden'))
        .slice(0, 5)
        .map((el) => `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.split(' ')[0]}` : ''}`);
      return { scroll: document.documentElement.scrollWidth, width: w, wide };
    });
    if (overflow.scroll > overflow.width + 1) throw new Fail(name, `the page scrolls sideways at 375 px: ${JSON.stringify(overflow)}`);
    if (env.SCREENSHOT_MOBILE) {
      await page.screenshot({ path: env.SCREENSHOT_MOBILE, fullPage: true });
      diag(`wrote ${env.SCREENSHOT_MOBILE}`);
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    await assertClean(name);
    out(`CHECK ${name} ok`);
  }

  await assertClean('console');
  out('CHECK console ok');
}

main().then(
  () => finish(0),
  (e) => {
    if (e instanceof Fail) return finish(1, `FAIL ${e.check}: ${e.reason}`);
    const msg = (e && e.message ? e.message : String(e)).split('\n')[0];
    return finish(1, `FAIL error: ${msg}`);
  },
);
