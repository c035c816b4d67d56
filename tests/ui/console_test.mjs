// ctest UiConsole: the web console (/ui) of a real dcbd-courses node, driven
// in Debian's chromium (headless) by puppeteer-core.
//
//   node console_test.mjs --node <dcbd-courses binary> [--screenshots DIR]
//
// Starts the node on its own schema and ports (PostgreSQL: DCBD_TEST_PG_DSN,
// as ./dev test sets it), writes events and jobs through the HTTP API, and
// checks what an operator sees and does in the page: the live tail shows an
// appended event within a second with a complete prev chain, filters,
// browses back; pause and resume of the projector course_seats with its
// buttons; dead letters (a retry the handler refuses again, shown in plain
// words; a skip after a confirmation); a confirmed rebuild; a discarded
// job retried, a job cancelled after a
// confirmation; an unknown job explained in plain words; the cluster page;
// a narrow screen. It fails on any console error or uncaught exception in
// the page (but the one 404 it provokes on purpose) and on any request that
// leaves the node. With --screenshots it saves one PNG per page there (the
// README's images come from such a run).
//
// Without chromium, puppeteer-core (npm ci in tests/ui) or a database it
// exits 77 (skipped), except under CI=true, where that is a failure.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const SKIP = 77;
const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const nodeBinary = opt('--node');
const shotDir = opt('--screenshots');
const chromium = process.env.DCBD_CHROMIUM || '/usr/bin/chromium';
const dsn = process.env.DCBD_TEST_PG_DSN;

function skip(why) {
  if (process.env.CI === 'true') {
    console.error(`cannot run under CI=true: ${why}`);
    process.exit(1);
  }
  console.log(`SKIPPED: ${why}`);
  process.exit(SKIP);
}

if (!nodeBinary) {
  console.error('usage: console_test.mjs --node <dcbd-courses> [--screenshots DIR]');
  process.exit(2);
}
if (!dsn) skip('DCBD_TEST_PG_DSN is not set (./dev test sets it)');
if (!existsSync(chromium)) skip(`no browser at ${chromium} (Debian package chromium; ./dev deps installs it)`);
let puppeteer;
try {
  puppeteer = (await import('puppeteer-core')).default;
} catch (e) {
  skip(`puppeteer-core is not installed (npm ci in tests/ui; ./dev deps does it): ${e.message}`);
}

// -- the node -------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const schema = `ui_test_${process.pid}_${Date.now() % 100000}`;
const nodeName = 'ui-node';
const peerName = 'ui-peer';
if (shotDir) mkdirSync(shotDir, { recursive: true });

/// A dcbd-courses process on the test's schema, in a cluster with the
/// other one (`clusterPort` is its own middleman port, `seeds` the other's).
async function startNode(name, clusterPort, seeds) {
  const http = await freePort();
  const metrics = await freePort();
  const log = path.join(shotDir || '/tmp', `dcbd-${name}-${process.pid}.log`);
  const proc = spawn(nodeBinary, [], {
    env: {
      ...process.env,
      DCB_POSTGRES_DSN: dsn,
      DCB_SCHEMA: schema,
      DCB_NODE_NAME: name,
      DCB_HTTP_ADDR: `127.0.0.1:${http}`,
      DCB_METRICS_ADDR: `127.0.0.1:${metrics}`,
      DCB_CLUSTER_ADDR: `127.0.0.1:${clusterPort}`,
      DCB_CLUSTER_SEEDS: seeds,
    },
    stdio: ['ignore', openSync(log, 'w'), openSync(log, 'a')],
  });
  const n = { name, proc, log, base: `http://127.0.0.1:${http}`, exited: null };
  proc.on('exit', (code, signal) => {
    n.exited = { code, signal };
  });
  await until(`${name} to be ready`, async () => {
    if (n.exited) throw new Error(`${name} exited: ${JSON.stringify(n.exited)}; see ${log}`);
    const r = await fetch(`${n.base}/readyz`).catch(() => null);
    return r && r.ok;
  }, 30000);
  return n;
}

async function stopNode(n, signal = 'SIGTERM') {
  if (!n || n.exited !== null) return;
  n.proc.kill(signal);
  for (let i = 0; i < 100 && n.exited === null; i++) await sleep(100);
  if (n.exited === null) n.proc.kill('SIGKILL');
}

const nodeClusterPort = await freePort();
const peerClusterPort = await freePort();
let node = null;
let peer = null;
let base = null;
let browser = null;

async function cleanUp() {
  if (browser) await browser.close().catch(() => {});
  await stopNode(peer);
  await stopNode(node);
  try {
    execFileSync('psql', [dsn, '-qc', `DROP SCHEMA IF EXISTS ${schema} CASCADE`], { stdio: 'ignore' });
  } catch {
    console.error(`could not drop schema ${schema}`);
  }
}

async function call(method, route, body) {
  const res = await fetch(base + route, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function until(what, fn, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await sleep(50);
  }
}

function check(ok, message) {
  if (!ok) throw new Error(message);
}

function event(type, tags, data) {
  return { type, tags, data: typeof data === 'string' ? data : JSON.stringify(data) };
}

/// Appends; answers {first_position, last_position}.
function append(events) {
  return call('POST', '/v1/append', { events });
}

// -- the test -------------------------------------------------------------------

const consoleErrors = [];
const outside = [];
let expected404 = 0;
let expected409 = 0;
const timings = [];

async function run() {
  // The page's node first, so that it owns the projector; its peer joins
  // once the projector runs.
  node = await startNode(nodeName, nodeClusterPort, `127.0.0.1:${peerClusterPort}`);
  base = node.base;

  // Data: 60 course events (more than the tail's first page), one the
  // projector cannot apply (a dead letter), jobs in several states.
  const seed = [];
  for (let i = 1; i <= 20; i++) seed.push(event('CourseDefined', [`course:c${i}`], { course: `c${i}`, capacity: 30 }));
  for (let i = 1; i <= 40; i++)
    seed.push(event('StudentSubscribed', [`course:c${(i % 4) + 1}`, `student:s${i}`], { course: `c${(i % 4) + 1}`, student: `s${i}` }));
  await append(seed);
  const poison = await append([event('StudentSubscribed', ['course:broken'], 'not an object')]);
  const poisonPosition = poison.last_position;
  // A job that fails for good (external worker, discard), one to cancel.
  const doomed = await call('POST', '/v1/jobs', { queue: 'reports', kind: 'monthly_report', args: { month: '2026-11' }, max_attempts: 1 });
  const fetched = await call('POST', '/v1/jobs/fetch', { queue: 'reports', kinds: ['monthly_report'], max: 1, lease_ms: 30000 });
  check(fetched.jobs.length === 1 && fetched.jobs[0].id === doomed.id, `fetch answered ${JSON.stringify(fetched)}`);
  await call('POST', `/v1/jobs/${doomed.id}/fail`, { lease: fetched.jobs[0].lease, error: 'the report service answered 502', discard: true });
  const later = await call('POST', '/v1/jobs', { queue: 'reports', kind: 'yearly_report', args: { year: 2026 }, delay_ms: 3600000 });
  await until('the projector to run and dead-letter the bad event', async () => {
    const p = await call('GET', '/v1/projectors/course_seats');
    return p.state === 'running' && p.dead_letters === 1 && p.position >= poisonPosition;
  });

  peer = await startNode(peerName, peerClusterPort, `127.0.0.1:${nodeClusterPort}`);

  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = `${m.text()} (${m.location()?.url ?? ''})`;
    if (expected404 > 0 && /status of 404/.test(m.text())) {
      expected404--;
      return;
    }
    if (expected409 > 0 && /status of 409/.test(m.text())) {
      expected409--;
      return;
    }
    consoleErrors.push(text);
  });
  page.on('pageerror', (e) => consoleErrors.push(`uncaught: ${e.message}`));
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(base + '/') && !url.startsWith('data:')) outside.push(url);
  });
  // The long pages (the tail) are taken as the screen shows them.
  const shot = async (name, fullPage = true) => {
    if (shotDir) await page.screenshot({ path: path.join(shotDir, `${name}.png`), fullPage });
  };
  const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());
  const waitText = async (sel, re, timeout = 10000) => {
    try {
      await page.waitForFunction((s, src) => {
        const e = document.querySelector(s);
        return e && new RegExp(src).test(e.textContent);
      }, { timeout, polling: 50 }, sel, re.source);
    } catch (e) {
      const now = await page.$eval(sel, (x) => x.textContent).catch(() => '(no such element)');
      throw new Error(`${sel} never matched ${re}; it reads "${now}"; banner: "${await text('#error-text')}"`);
    }
  };

  // -- overview ------------------------------------------------------------------
  const headNow = (await call('GET', '/v1/head')).head;
  await page.goto(`${base}/ui`, { waitUntil: 'load' });
  await waitText('#ov-head', /^[\d,]+$/);
  const shownHead = Number((await text('#ov-head')).replace(/,/g, ''));
  check(shownHead >= headNow, `overview head ${shownHead} < ${headNow}`);
  check((await text('#node-name')) === nodeName, 'the header names the node');
  await waitText('#ov-projectors', /running/);
  await waitText('#ov-jobs', /discarded/);
  await waitText('#ov-cluster', /^2 members: 2 up$/);
  // Rates need two samples; appends while the page watches make them move,
  // until the page shows a rate above zero (and the screenshot with it).
  let feeding = true;
  const feeder = (async () => {
    for (let i = 0; feeding && i < 200; i++) {
      await append([event('PageViewed', ['page:overview'], { i })]);
      await sleep(100);
    }
  })();
  await waitText('#ov-appends', /^(?!0(\.0*)?$)[\d.,]+$/, 15000);
  // The appends/s sparkline has a few points.
  await page.waitForFunction(() => {
    const p = document.querySelector('#ov-appends-spark path');
    return p && (p.getAttribute('d').match(/L/g) || []).length >= 2;
  }, { timeout: 10000 });
  await shot('overview');
  feeding = false;
  await feeder;

  // -- events: the tail ----------------------------------------------------------
  await page.click('#nav a[data-page="events"]');
  await waitText('#ev-live', /^live$/);
  const firstRows = await page.$$eval('#ev-table tbody tr', (rs) => rs.length);
  check(firstRows === 50, `the tail starts with the latest 50 events, showed ${firstRows}`);
  for (let i = 0; i < 3; i++) {
    const r = await append([event('StudentSubscribed', ['course:c9', `student:live${i}`], { course: 'c9', student: `live${i}` })]);
    const pos = r.last_position;
    const t0 = Date.now();
    // The bound: in the tail within a second of the append's answer.
    await page.waitForSelector(`#ev-table tbody tr[data-position="${pos}"]`, { timeout: 1000 });
    timings.push(Date.now() - t0);
  }
  await waitText('#ev-chain', /^chain complete: 3 live events$/);
  // The newest row is on top.
  const topType = await text('#ev-table tbody tr:first-child td:nth-child(2)');
  check(topType === 'StudentSubscribed', `top row is ${topType}`);

  // Browse backwards to the beginning of the log: every event, once.
  const total = (await call('GET', '/v1/head')).head;
  await page.click('#ev-older');
  await waitText('#ev-older-note', /beginning of the log/);
  const shown = await page.$$eval('#ev-table tbody tr', (rs) => rs.map((r) => Number(r.dataset.position)));
  check(shown.length === total && shown.every((p, i) => p === total - i),
    `browsing back shows ${shown.length} rows, not positions ${total}..1 once each`);

  // Filter: StudentSubscribed of course c2 only.
  await page.$eval('#ev-types', (e) => { e.value = 'StudentSubscribed'; });
  await page.$eval('#ev-tags', (e) => { e.value = 'course:c2'; });
  await page.click('#ev-filter button[type="submit"]');
  await waitText('#ev-live', /^live$/);
  await until('the filtered rows', () => page.$$eval('#ev-table tbody tr', (rs) => rs.length > 0 &&
    rs.every((r) => r.children[1].textContent === 'StudentSubscribed' && r.children[2].textContent.includes('course:c2'))));
  const skipped = await append([event('StudentSubscribed', ['course:c3', 'student:x'], { course: 'c3', student: 'x' })]);
  const matching = await append([event('StudentSubscribed', ['course:c2', 'student:y'], { course: 'c2', student: 'y' })]);
  await page.waitForSelector(`#ev-table tbody tr[data-position="${matching.last_position}"]`, { timeout: 1000 });
  check(!(await page.$(`#ev-table tbody tr[data-position="${skipped.last_position}"]`)), 'the filter let a course:c3 event through');
  await waitText('#ev-chain', /^chain complete: 1 live event$/);

  // Pause, append, resume: the chain continues without a hole.
  await page.click('#ev-pause');
  await waitText('#ev-live', /^paused$/);
  const whilePaused = await append([event('StudentSubscribed', ['course:c2', 'student:z'], { course: 'c2', student: 'z' })]);
  await sleep(300);
  check(!(await page.$(`#ev-table tbody tr[data-position="${whilePaused.last_position}"]`)), 'a paused tail showed an event');
  await page.click('#ev-pause');
  await page.waitForSelector(`#ev-table tbody tr[data-position="${whilePaused.last_position}"]`, { timeout: 5000 });
  await waitText('#ev-chain', /^chain complete: 2 live events$/);

  // An event, whole.
  await page.click(`#ev-table tbody tr[data-position="${matching.last_position}"]`);
  await page.waitForSelector('#event-dialog[open]');
  const data = await text('#ed-data');
  check(JSON.parse(data).student === 'y', `the event dialog shows ${data}`);
  await shot('event');
  await page.click('#event-dialog form button');
  await page.waitForSelector('#event-dialog:not([open])');
  // Back to every event for the screenshot.
  await page.click('#ev-clear');
  await waitText('#ev-live', /^live$/);
  await waitText('#ev-count', /^50 shown$/);
  await shot('events', false);

  // -- projectors ----------------------------------------------------------------
  await page.click('#nav a[data-page="projectors"]');
  const row = '#pj-table tbody tr[data-name="course_seats"]';
  await page.waitForSelector(`${row}[data-state="running"]`);
  await page.click(`${row} button[data-action="pause"]`);
  await page.waitForSelector(`${row}[data-state="paused"]`, { timeout: 5000 });
  check((await call('GET', '/v1/projectors/course_seats')).state === 'paused', 'the node did not pause the projector');
  await page.click(`${row} button[data-action="resume"]`);
  await page.waitForSelector(`${row}[data-state="running"]`, { timeout: 5000 });
  check((await call('GET', '/v1/projectors/course_seats')).state === 'running', 'the node did not resume the projector');
  // Rebuild asks first; keeping it changes nothing.
  const epoch = (await call('GET', '/v1/projectors/course_seats')).epoch;
  const position = (await call('GET', '/v1/projectors/course_seats')).position;
  await page.click(`${row} button[data-action="rebuild"]`);
  await page.waitForSelector('#confirm-dialog[open]');
  check(/Rebuild course_seats/.test(await text('#confirm-text')), 'the rebuild confirmation names the projector');
  await page.click('#confirm-no');
  await page.waitForSelector('#confirm-dialog:not([open])');
  await sleep(300);
  const after = await call('GET', '/v1/projectors/course_seats');
  check(after.state === 'running' && after.epoch === epoch && after.position >= position, 'declining the rebuild rebuilt');
  // Dead letters.
  await page.click(`${row} button[data-action="dead-letters"]`);
  await page.waitForSelector(`#dl-table tbody tr[data-position="${poisonPosition}"]`);
  await waitText('#pj-table tbody tr[data-name="course_seats"] td:nth-child(5)', /\d/);
  await shot('projectors');
  // Retry: the example's handler rejects the event again; the node's 409
  // is shown in plain words and the letter stays, with one attempt more
  // (the browser logs the 409).
  const letterRow = `#dl-table tbody tr[data-position="${poisonPosition}"]`;
  const attempts = (await call('GET', '/v1/projectors/course_seats/dead-letters'))[0].attempts;
  expected409 = 1;
  // (Clicked in the page in one step: the list is redrawn every second.)
  await page.$eval(`${letterRow} button:not(.danger)`, (b) => b.click());
  await page.waitForSelector('#error:not([hidden])');
  await waitText('#error-text', /failed again on event/);
  await page.click('#error-close');
  await page.waitForSelector('#error[hidden]');
  const letters = await call('GET', '/v1/projectors/course_seats/dead-letters');
  check(letters.length === 1 && letters[0].attempts === attempts + 1, `after a retry the node has ${JSON.stringify(letters)}`);
  // Skip asks first, then drops the letter for good.
  await page.$eval(`${letterRow} button.danger`, (b) => b.click());
  await page.waitForSelector('#confirm-dialog[open]');
  check(/Skip event/.test(await text('#confirm-text')), 'the skip confirmation says what it does');
  await page.click('#confirm-yes');
  await page.waitForSelector(letterRow, { hidden: true, timeout: 5000 });
  check((await call('GET', '/v1/projectors/course_seats/dead-letters')).length === 0, 'the node kept the skipped dead letter');
  // Rebuild, confirmed: the read model is recounted from the start, so the
  // skipped event is met, and parked, again.
  await page.$eval(`${row} button[data-action="rebuild"]`, (b) => b.click());
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-yes');
  await page.waitForSelector('#confirm-dialog:not([open])');
  await until('the rebuild to recount and park the bad event again', async () => {
    const p = await call('GET', '/v1/projectors/course_seats');
    return p.state === 'running' && p.dead_letters === 1 && p.position >= poisonPosition;
  });
  await waitText(`${row} td:nth-child(2)`, /running/);

  // -- jobs ------------------------------------------------------------------------
  await page.click('#nav a[data-page="jobs"]');
  await page.waitForSelector('#q-table tbody tr[data-queue="reports"]');
  await page.waitForSelector('#q-table tbody tr[data-queue="confirmations"]');
  await page.click('#jb-states button[data-state="discarded"]');
  await page.waitForSelector(`#jb-table tbody tr[data-id="${doomed.id}"]`);
  await page.click(`#jb-table tbody tr[data-id="${doomed.id}"]`);
  await waitText('#jb-detail-state', /^discarded$/);
  await waitText('#jb-errors tbody', /the report service answered 502/);
  await shot('jobs');
  await page.click('#jb-retry');
  await waitText('#jb-detail-state', /^available$/);
  check((await call('GET', `/v1/jobs/${doomed.id}`)).state === 'available', 'the node did not retry the discarded job');
  // Cancel asks first.
  await page.$eval('#jb-goto', (e, id) => { e.value = String(id); }, later.id);
  await page.click('#jb-goto-btn');
  await waitText('#jb-detail-id', new RegExp(`^#${later.id}$`));
  await waitText('#jb-detail-state', /^scheduled$/);
  await page.click('#jb-cancel');
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-yes');
  await waitText('#jb-detail-state', /^cancelled$/);
  check((await call('GET', `/v1/jobs/${later.id}`)).state === 'cancelled', 'the node did not cancel the job');
  // An unknown job is explained in plain words (the browser logs the 404).
  expected404 = 1;
  await page.$eval('#jb-goto', (e) => { e.value = '987654321'; });
  await page.click('#jb-goto-btn');
  await page.waitForSelector('#error:not([hidden])');
  await waitText('#error-text', /There is no job 987654321/);
  await page.click('#error-close');
  await page.waitForSelector('#error[hidden]');
  // Triggers: the example's.
  await page.waitForSelector('#tr-table tbody tr[data-name]');

  // -- cluster ---------------------------------------------------------------------
  await page.click('#nav a[data-page="cluster"]');
  const member = (name) => `#cl-table tbody tr[data-name="${name}"]`;
  await waitText(`${member(nodeName)} td:nth-child(2)`, /^up$/);
  await waitText(`${member(nodeName)} td:nth-child(1)`, /\(this node\)/);
  await waitText(`${member(peerName)} td:nth-child(2)`, /^up$/);
  // Each member links to its own console.
  const peerLink = await page.$eval(`${member(peerName)} td:nth-child(4) a`, (a) => a.getAttribute('href'));
  check(peerLink === `${peer.base}/ui`, `the peer's console link is ${peerLink}`);
  await waitText('#own-table tbody tr[data-name="course_seats"] td:nth-child(2)', new RegExp(`^${nodeName}$`));
  // A peer killed shows as unreachable (middleman timeout 3 s), not gone.
  await stopNode(peer, 'SIGKILL');
  await waitText(`${member(peerName)} td:nth-child(2)`, /^unreachable$/, 15000);
  await shot('cluster');

  // -- a narrow screen ---------------------------------------------------------------
  await page.setViewport({ width: 390, height: 844, isMobile: true });
  for (const p of ['overview', 'events', 'projectors', 'jobs', 'cluster']) {
    await page.click(`#nav a[data-page="${p}"]`);
    await sleep(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `the ${p} page is ${overflow} px wider than a 390 px screen`);
  }
  await page.click('#nav a[data-page="events"]');
  await shot('narrow-events', false);
  // Late errors (the last polls) count too.
  await sleep(500);
}

let failed = null;
try {
  await run();
} catch (e) {
  failed = e;
}
await cleanUp();
if (consoleErrors.length) console.error(`console errors in the page:\n  ${consoleErrors.join('\n  ')}`);
if (outside.length) console.error(`requests that left the node:\n  ${outside.join('\n  ')}`);
if (timings.length) console.log(`append answered -> row in the tail: ${timings.join(', ')} ms`);
if (failed) console.error(`FAILED: ${failed.stack || failed}\n(node logs: ${[node, peer].filter(Boolean).map((n) => n.log).join(', ')})`);
if (failed || consoleErrors.length || outside.length) process.exit(1);
console.log('console test passed');
