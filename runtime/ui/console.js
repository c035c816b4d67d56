// The dcbd web console: one page, five views, the public HTTP API only
// (API.md). No framework and no build step; every text from the node goes
// into the page as text (textContent), never as markup.
//
//   Overview    GET /v1/stats every second (rates from two samples), the
//               projector, queue and member lists every few seconds
//   Events      GET /v1/read backwards for the latest events, then a live
//               tail over SSE (GET /v1/subscribe) from the head that read
//               answered; each event's `prev` must be the position of the
//               one before it (the badge), also across reconnects and pauses;
//               older events page by page with GET /read backwards
//   Projectors  GET /v1/projectors every second; pause, resume, rebuild;
//               dead letters with retry and skip
//   Jobs        GET /v1/queues, /v1/jobs (by state, paged with `before`),
//               /v1/jobs/{id}; retry and cancel; /v1/triggers
//   Cluster     GET /v1/cluster and the projectors' owners
//
// Only the visible view polls; the tail keeps running in the background.
'use strict';

// -- helpers ----------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/// An element with attributes/properties and children (strings become text).
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtInt(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : '–';
}

function fmtRate(r) {
  if (r === null || r === undefined || !isFinite(r)) return '–';
  return r >= 100 ? Math.round(r).toLocaleString('en-US') : r.toFixed(1);
}

function fmtDuration(ms) {
  if (ms === undefined || ms === null) return '–';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function short(text, n) {
  return text.length > n ? text.slice(0, n - 1) + '…' : text;
}

/// `data` pretty-printed when it is JSON, as it is otherwise.
function prettyData(data) {
  try {
    return JSON.stringify(JSON.parse(data), null, 2);
  } catch {
    return data;
  }
}

function pill(text, kind) {
  return el('span', { class: `pill ${kind || ''}`, text });
}

const stateKind = {
  running: 'ok', up: 'ok', completed: 'ok', available: 'ok',
  paused: 'warn', standby: '', rebuilding: 'warn', scheduled: '', retryable: 'warn',
  failed: 'bad', unreachable: 'bad', discarded: 'bad', cancelled: '',
};

/// The job states of API.md §7, in the order of a job's life.
const jobStates = ['available', 'scheduled', 'running', 'retryable', 'completed', 'discarded', 'cancelled'];

function splitList(text) {
  return text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

// -- the API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const statusWords = {
  400: 'The node refused the request',
  404: 'Not found',
  405: 'Not allowed',
  409: 'Not possible now',
  413: 'Too large',
  500: 'The node failed',
  503: 'The node is busy or cannot reach its database; try again',
};

/// Calls the node; answers the body's text, throws an ApiError with the
/// node's message in plain words.
async function request(path, init) {
  let res;
  try {
    res = await fetch(path, { ...init, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'The node cannot be reached (is it running?).');
  }
  const text = await res.text();
  if (!res.ok) {
    let doc = null;
    try {
      doc = JSON.parse(text);
    } catch {
      doc = null;
    }
    const words = statusWords[res.status] || `The node answered ${res.status}`;
    const why = doc && doc.message ? `: ${doc.message}` : '.';
    throw new ApiError(res.status, (doc && doc.code) || `http_${res.status}`, words + why);
  }
  return text;
}

/// Calls the node; answers the parsed JSON (see `request`).
async function api(method, path, body) {
  const text = await request(path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return text ? JSON.parse(text) : null;
}

const enc = encodeURIComponent;

function showError(err, context) {
  const text = err instanceof ApiError ? err.message : `Something went wrong: ${err}`;
  $('error-text').textContent = context ? `${context}: ${text}` : text;
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

/// Runs an action of a button: disables it meanwhile, shows what fails.
async function act(button, context, fn) {
  if (button) button.disabled = true;
  try {
    await fn();
    clearError();
  } catch (e) {
    showError(e, context);
  } finally {
    if (button) button.disabled = false;
  }
}

/// Asks before an action that loses work. Resolves true to go on.
function confirmAction(text, yesLabel) {
  const dlg = $('confirm-dialog');
  $('confirm-text').textContent = text;
  $('confirm-yes').textContent = yesLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      $('confirm-yes').onclick = null;
      $('confirm-no').onclick = null;
      dlg.onclose = null;
      if (dlg.open) dlg.close();
      resolve(answer);
    };
    $('confirm-yes').onclick = () => done(true);
    $('confirm-no').onclick = () => done(false);
    dlg.onclose = () => done(false);
    dlg.showModal();
  });
}

// -- views and polling --------------------------------------------------------

const views = {};
let current = null;

/// A view: `enter` when shown, `refresh` every `every` ms while shown.
function view(name, v) {
  views[name] = v;
}

let pollTimer = null;

async function poll() {
  const v = views[current];
  if (!v || !v.refresh) return;
  try {
    await v.refresh();
    if (v.pollFailed) {
      v.pollFailed = false;
      clearError();
    }
  } catch (e) {
    v.pollFailed = true;
    showError(e, 'Refreshing');
  }
  if (views[current] === v) pollTimer = setTimeout(poll, v.every || 2000);
}

function route() {
  const name = (location.hash.replace(/^#\/?/, '').split('?')[0]) || 'overview';
  const next = views[name] ? name : 'overview';
  if (next === current) return;
  current = next;
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== `page-${next}`;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === next);
  clearTimeout(pollTimer);
  const v = views[next];
  if (v.enter) v.enter();
  poll();
}

// -- Overview -----------------------------------------------------------------

const overview = {
  samples: [], // {t, appends, events, deliveries, reads}
  every: 1000,
  lists: 0,

  async refresh() {
    const s = await api('GET', '/v1/stats');
    $('node-name').textContent = s.node;
    const appends = Object.values(s.appends || {}).reduce((a, b) => a + b, 0);
    const failed = appends - ((s.appends && s.appends.ok) || 0);
    this.samples.push({ t: s.time_ms, appends, events: s.events_appended, deliveries: s.deliveries, reads: s.reads });
    if (this.samples.length > 61) this.samples.shift();
    const n = this.samples.length;
    const rate = (key, i) => {
      const a = this.samples[i - 1];
      const b = this.samples[i];
      const dt = (b.t - a.t) / 1000;
      return dt > 0 ? Math.max(0, (b[key] - a[key]) / dt) : null;
    };
    const last = (key) => (n >= 2 ? rate(key, n - 1) : null);
    $('ov-head').textContent = fmtInt(s.head);
    $('ov-appends').textContent = fmtRate(last('appends'));
    $('ov-events').textContent = fmtRate(last('events'));
    $('ov-deliveries').textContent = fmtRate(last('deliveries'));
    $('ov-reads').textContent = fmtRate(last('reads'));
    $('ov-subs').textContent = fmtInt(s.subscriptions);
    $('ov-failed').textContent = fmtInt(failed);
    $('ov-uptime').textContent = fmtDuration(s.uptime_ms);
    const series = (key) => this.samples.slice(1).map((_, i) => rate(key, i + 1));
    spark($('ov-appends-spark'), series('appends'));
    spark($('ov-deliveries-spark'), series('deliveries'));
    // The lists every third second.
    if (this.lists++ % 3 === 0) await this.refreshLists();
  },

  async refreshLists() {
    const [projectors, queues, cluster] = await Promise.all([
      api('GET', '/v1/projectors'), api('GET', '/v1/queues'), api('GET', '/v1/cluster')]);
    const byState = {};
    for (const p of projectors) byState[p.state] = (byState[p.state] || 0) + 1;
    const dead = projectors.reduce((a, p) => a + p.dead_letters, 0);
    $('ov-projectors').textContent = projectors.length === 0 ? 'none'
      : Object.entries(byState).map(([k, v]) => `${v} ${k}`).join(', ') +
        (dead ? `; ${dead} dead letter${dead === 1 ? '' : 's'}` : '; no dead letters');
    const total = (state) => queues.reduce((a, q) => a + (q[state] || 0), 0);
    $('ov-jobs').textContent = queues.length === 0 ? 'none'
      : `${queues.length} queue${queues.length === 1 ? '' : 's'}: ` +
        jobStates.map((st) => `${fmtInt(total(st))} ${st}`).join(', ');
    const up = cluster.members.filter((m) => m.status === 'up').length;
    const unreachable = cluster.members.length - up;
    $('ov-cluster').textContent = `${cluster.members.length} member${cluster.members.length === 1 ? '' : 's'}: ` +
      `${up} up` + (unreachable ? `, ${unreachable} unreachable` : '');
  },
};
view('overview', overview);

function spark(svg, values) {
  const vs = values.filter((v) => v !== null);
  svg.replaceChildren();
  if (vs.length < 2) return;
  const max = Math.max(...vs, 1);
  const step = 120 / Math.max(values.length - 1, 1);
  let d = '';
  values.forEach((v, i) => {
    if (v === null) return;
    d += `${d ? 'L' : 'M'}${(i * step).toFixed(1)},${(29 - (v / max) * 28).toFixed(1)}`;
  });
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  path.setAttribute('d', d);
  svg.append(path);
}

// -- Events -------------------------------------------------------------------

const maxRows = 500;

const tail = {
  query: { items: [] },
  source: null,
  paused: false,
  generation: 0,  // a new filter starts a new generation; late answers of old ones are dropped
  last: 0,        // the position of the last matching event seen (the chain's anchor)
  resumeAfter: 0, // where the stream resumes: the last event or checkpoint id
  chained: 0,     // events checked against their prev since the tail started
  broken: null,   // the first break of the chain, if any
  oldest: null,   // the lowest position shown (browse backwards from it)

  async start() {
    const gen = ++this.generation;
    this.stop();
    this.chained = 0;
    this.broken = null;
    this.oldest = null;
    $('ev-table').tBodies[0].replaceChildren();
    $('ev-older-note').textContent = '';
    this.setLive('connecting', '');
    this.updateChain();
    // The latest events and the head, in one read.
    const q = enc(JSON.stringify(this.query));
    const opts = enc(JSON.stringify({ backwards: true, limit: 50 }));
    let lines;
    try {
      lines = await readLines(`/v1/read?query=${q}&options=${opts}`);
    } catch (e) {
      if (gen === this.generation) {
        this.setLive('not connected', 'bad');
        showError(e, 'Reading the latest events');
      }
      return;
    }
    if (gen !== this.generation) return;
    const events = lines.filter((l) => l.position !== undefined);
    const head = lines.find((l) => l.head !== undefined);
    // The newest matching event at or below the head anchors the chain: the
    // first live event's prev must be it (0: none matched).
    this.last = events.length ? events[0].position : 0;
    this.resumeAfter = head ? head.head : this.last;
    for (const e of events) this.addRow(e, 'end');
    this.oldest = events.length ? events[events.length - 1].position : null;
    $('ev-older').disabled = events.length < 50;
    this.updateCount();
    if (!this.paused) this.connect();
  },

  connect() {
    const q = enc(JSON.stringify(this.query));
    const gen = this.generation;
    // EventSource resends Last-Event-ID itself when it reconnects.
    const src = new EventSource(`/v1/subscribe?query=${q}&after=${this.resumeAfter}`);
    this.source = src;
    src.onopen = () => gen === this.generation && this.setLive('live', 'ok');
    src.onerror = () => {
      if (gen !== this.generation) return;
      if (src.readyState === EventSource.CLOSED) {
        // Refused (not a dropped connection, which the browser retries):
        // the node's subscription limit, or a query it does not accept.
        this.setLive('closed', 'bad');
        showError(new ApiError(0, 'closed', 'The node refused the live tail (it may be at its ' +
          'subscription limit). Apply the filter again to retry.'), 'Live tail');
      } else {
        this.setLive('reconnecting', 'warn');
      }
    };
    src.addEventListener('event', (m) => {
      if (gen !== this.generation) return;
      const e = JSON.parse(m.data);
      this.check(e);
      this.resumeAfter = e.position;
      this.addRow(e, 'start');
      this.updateCount();
    });
    src.addEventListener('checkpoint', (m) => {
      if (gen !== this.generation) return;
      const c = JSON.parse(m.data);
      this.resumeAfter = Math.max(this.resumeAfter, c.position);
    });
    src.addEventListener('caught_up', () => gen === this.generation && this.setLive('live', 'ok'));
  },

  stop() {
    if (this.source) this.source.close();
    this.source = null;
  },

  /// The chain: each event's prev is the position of the matching event
  /// before it, so a hole or a duplicate shows at once.
  check(e) {
    if (e.prev === this.last && e.position > this.last) {
      this.chained++;
    } else if (!this.broken) {
      this.broken = `at ${e.position}: prev ${e.prev}, expected ${this.last}`;
    }
    this.last = e.position;
    this.updateChain();
  },

  updateChain() {
    const badge = $('ev-chain');
    if (this.broken) {
      badge.textContent = `chain broken ${this.broken}`;
      badge.className = 'pill bad';
    } else {
      badge.textContent = `chain complete: ${fmtInt(this.chained)} live event${this.chained === 1 ? '' : 's'}`;
      badge.className = 'pill ok';
    }
  },

  setLive(text, kind) {
    const b = $('ev-live');
    b.textContent = this.paused ? 'paused' : text;
    b.className = `pill ${this.paused ? 'warn' : kind}`;
  },

  updateCount() {
    const n = $('ev-table').tBodies[0].rows.length;
    $('ev-count').textContent = `${fmtInt(n)} shown`;
  },

  addRow(e, where) {
    const body = $('ev-table').tBodies[0];
    const row = el('tr', { class: where === 'start' ? 'fresh' : '', 'data-position': String(e.position), onclick: () => showEvent(e) },
      el('td', { class: 'num', text: String(e.position) }),
      el('td', { text: e.type }),
      el('td', {}, (e.tags || []).map((t) => el('span', { class: 'tag', text: t }))),
      el('td', { class: 'data', text: short(e.data || '', 140) }));
    if (where === 'start') {
      body.prepend(row);
      while (body.rows.length > maxRows) {
        body.lastElementChild.remove();
        this.oldest = Number(body.lastElementChild.dataset.position);
        $('ev-older').disabled = false;
      }
    } else {
      body.append(row);
    }
  },

  async older(button) {
    if (this.oldest === null || this.oldest <= 1) {
      $('ev-older-note').textContent = 'This is the beginning of the log.';
      return;
    }
    const gen = this.generation;
    await act(button, 'Reading older events', async () => {
      const q = enc(JSON.stringify(this.query));
      const opts = enc(JSON.stringify({ backwards: true, limit: 50, from: this.oldest - 1 }));
      // The dcb.events read: a JSON array, newest first when backwards.
      const events = await api('GET', `/read?query=${q}&options=${opts}`);
      if (gen !== this.generation) return;
      for (const e of events) this.addRow(e, 'end');
      if (events.length) this.oldest = events[events.length - 1].position;
      if (events.length < 50) {
        this.oldest = 0;
        $('ev-older-note').textContent = 'This is the beginning of the log.';
      }
      this.updateCount();
    });
  },

  togglePause() {
    this.paused = !this.paused;
    $('ev-pause').textContent = this.paused ? 'Resume tail' : 'Pause tail';
    if (this.paused) {
      this.stop();
      this.setLive('paused', 'warn');
    } else {
      // From where it stopped: the chain goes on.
      this.setLive('connecting', '');
      this.connect();
    }
  },
};

/// GET an NDJSON answer, parsed line by line; a line {"error": ..} throws.
async function readLines(path) {
  const text = await request(path, { headers: { Accept: 'application/x-ndjson' } });
  const lines = text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  const failed = lines.find((l) => l.error);
  if (failed) throw new ApiError(500, failed.error.code, `The read failed midway: ${failed.error.message}`);
  return lines;
}

function showEvent(e) {
  $('ed-position').textContent = String(e.position);
  const fields = $('ed-fields');
  fields.replaceChildren();
  const add = (k, v) => fields.append(el('dt', { text: k }), el('dd', { text: v }));
  add('position', String(e.position));
  if (e.prev !== undefined) add('prev', String(e.prev));
  add('type', e.type);
  add('tags', (e.tags || []).join(', ') || '(none)');
  if (e.metadata) add('metadata', e.metadata);
  $('ed-data').textContent = prettyData(e.data || '');
  $('event-dialog').showModal();
}

view('events', {
  enter() {
    if (!tail.started) {
      tail.started = true;
      tail.start();
    }
  },
});

function applyFilter(types, tags) {
  const item = {};
  if (types.length) item.types = types;
  if (tags.length) item.tags = tags;
  tail.query = { items: types.length || tags.length ? [item] : [] };
  tail.start();
}

// -- Projectors ---------------------------------------------------------------

const projectors = {
  every: 1000,
  rows: new Map(), // name -> {row, cells, buttons}
  selected: null,

  async refresh() {
    const list = await api('GET', '/v1/projectors');
    $('pj-empty').hidden = list.length > 0;
    const body = $('pj-table').tBodies[0];
    const seen = new Set();
    for (const p of list) {
      seen.add(p.name);
      let r = this.rows.get(p.name);
      if (!r) {
        r = this.makeRow(p.name);
        this.rows.set(p.name, r);
        body.append(r.row);
      }
      this.fill(r, p);
    }
    for (const [name, r] of this.rows) {
      if (!seen.has(name)) {
        r.row.remove();
        this.rows.delete(name);
      }
    }
    if (this.selected) await this.refreshDeadLetters();
  },

  makeRow(name) {
    const cells = {};
    const cell = (key, cls) => (cells[key] = el('td', { class: cls || '' }));
    const buttons = {
      pause: el('button', { class: 'small secondary', text: 'Pause', 'data-action': 'pause',
        onclick: (ev) => this.manage(ev.target, name, 'pause') }),
      resume: el('button', { class: 'small secondary', text: 'Resume', 'data-action': 'resume',
        onclick: (ev) => this.manage(ev.target, name, 'resume') }),
      rebuild: el('button', { class: 'small danger', text: 'Rebuild', 'data-action': 'rebuild',
        onclick: (ev) => this.rebuild(ev.target, name) }),
      letters: el('button', { class: 'small secondary', text: 'Dead letters', 'data-action': 'dead-letters',
        onclick: () => this.select(name) }),
    };
    const row = el('tr', { 'data-name': name },
      el('td', { text: name }), cell('state'), cell('position', 'num'), cell('lag', 'num'),
      cell('heartbeat', 'num'), cell('owner'), cell('epoch', 'num'), cell('dead', 'num'),
      el('td', {}, el('div', { class: 'actions' }, Object.values(buttons))));
    return { row, cells, buttons };
  },

  fill(r, p) {
    r.cells.state.replaceChildren(pill(p.state, stateKind[p.state]));
    if (p.error) r.cells.state.append(el('div', { class: 'muted', text: short(p.error, 80), title: p.error }));
    r.cells.position.textContent = fmtInt(p.position);
    r.cells.lag.textContent = fmtInt(p.lag);
    r.cells.heartbeat.textContent = p.heartbeat_age_ms === undefined ? '–' : fmtDuration(p.heartbeat_age_ms);
    r.cells.owner.textContent = p.owner || '(none)';
    r.cells.epoch.textContent = fmtInt(p.epoch);
    r.cells.dead.textContent = fmtInt(p.dead_letters);
    r.row.dataset.state = p.state;
    // What fits the state; from a stale view the call is harmless: asked for
    // the state it is in already, the node changes nothing and answers it.
    r.buttons.pause.disabled = !['running', 'standby', 'rebuilding'].includes(p.state);
    r.buttons.resume.disabled = !['paused', 'failed'].includes(p.state);
  },

  async manage(button, name, action) {
    await act(button, `${action[0].toUpperCase()}${action.slice(1)} ${name}`, async () => {
      const p = await api('POST', `/v1/projectors/${enc(name)}/${action}`);
      const r = this.rows.get(name);
      if (r && p) this.fill(r, p);
    });
  },

  async rebuild(button, name) {
    const ok = await confirmAction(
      `Rebuild ${name}? Its read model is cleared and rebuilt from the first event; ` +
      'until it catches up, readers see a partial read model.', 'Rebuild');
    if (ok) await this.manage(button, name, 'rebuild');
  },

  async select(name) {
    this.selected = name;
    $('pj-detail').hidden = false;
    $('pj-detail-name').textContent = name;
    await act(null, `Dead letters of ${name}`, () => this.refreshDeadLetters());
  },

  async refreshDeadLetters() {
    const name = this.selected;
    const letters = await api('GET', `/v1/projectors/${enc(name)}/dead-letters`);
    if (name !== this.selected) return;
    const body = $('dl-table').tBodies[0];
    $('dl-empty').hidden = letters.length > 0;
    body.replaceChildren(...letters.map((d) => el('tr', { 'data-position': String(d.position) },
      el('td', { class: 'num', text: String(d.position) }),
      el('td', { class: 'data', text: d.error }),
      el('td', { class: 'num', text: String(d.attempts) }),
      el('td', {}, el('div', { class: 'actions' },
        el('button', { class: 'small', text: 'Retry', onclick: (ev) => this.letter(ev.target, name, d.position, 'retry') }),
        el('button', { class: 'small danger', text: 'Skip', onclick: (ev) => this.skip(ev.target, name, d.position) }))))));
  },

  async letter(button, name, position, action) {
    await act(button, `${action === 'retry' ? 'Retrying' : 'Skipping'} event ${position} of ${name}`, async () => {
      await api('POST', `/v1/projectors/${enc(name)}/dead-letters/${position}/${action}`);
      await this.refreshDeadLetters();
    });
  },

  async skip(button, name, position) {
    const ok = await confirmAction(
      `Skip event ${position} for ${name}? The projector will never apply it.`, 'Skip');
    if (ok) await this.letter(button, name, position, 'skip');
  },
};
view('projectors', projectors);

// -- Jobs ---------------------------------------------------------------------

const finalStates = ['completed', 'discarded', 'cancelled'];
const pageSize = 25;

const jobs = {
  every: 2000,
  state: '',      // '' = all states
  queue: '',
  kind: '',
  cursors: [],    // the `before` of each page shown before this one
  before: null,   // this page's `before`
  next: null,     // the next (older) page's `before`
  selected: null,
  queues: [],

  enter() {
    if (!$('jb-states').childElementCount) {
      const tabs = [['', 'all'], ...jobStates.map((s) => [s, s])];
      for (const [state, label] of tabs)
        $('jb-states').append(el('button', { type: 'button', role: 'tab', text: label, 'data-state': state,
          onclick: () => this.setState(state) }));
      this.markTab();
    }
  },

  markTab() {
    for (const b of $('jb-states').children) b.classList.toggle('active', b.dataset.state === this.state);
  },

  setState(state) {
    this.state = state;
    this.firstPage();
    this.markTab();
    act(null, 'Listing jobs', () => this.refreshList());
  },

  firstPage() {
    this.cursors = [];
    this.before = null;
  },

  async refresh() {
    const [queues, triggers] = await Promise.all([api('GET', '/v1/queues'), api('GET', '/v1/triggers')]);
    this.fillQueues(queues);
    this.fillTriggers(triggers);
    await this.refreshList();
    if (this.selected !== null) await this.refreshJob();
  },

  fillQueues(queues) {
    this.queues = queues;
    $('q-empty').hidden = queues.length > 0;
    $('q-table').tBodies[0].replaceChildren(...queues.map((q) => el('tr', { 'data-queue': q.queue },
      el('td', { text: q.queue }),
      jobStates.map((s) => el('td', { class: 'num' },
        q[s] ? el('button', { class: 'link', text: fmtInt(q[s]), title: `${s} jobs of ${q.queue}`,
          onclick: () => { this.queue = q.queue; $('jb-queue').value = q.queue; this.setState(s); } })
          : '0')))));
    const select = $('jb-queue');
    const have = new Set([...select.options].map((o) => o.value));
    for (const q of queues) if (!have.has(q.queue)) select.append(el('option', { value: q.queue, text: q.queue }));
  },

  fillTriggers(triggers) {
    $('tr-empty').hidden = triggers.length > 0;
    $('tr-table').tBodies[0].replaceChildren(...triggers.map((t) => el('tr', { 'data-name': t.name },
      el('td', { text: t.name }),
      el('td', { class: 'data', text: short(JSON.stringify(t.query), 120) }),
      el('td', { text: t.queue }),
      el('td', { text: t.kind }),
      el('td', { class: 'num', text: fmtInt(t.position) }),
      el('td', {}, el('button', { class: 'small danger', text: 'Delete',
        onclick: (ev) => this.deleteTrigger(ev.target, t.name) })))));
  },

  async deleteTrigger(button, name) {
    const ok = await confirmAction(`Delete trigger ${name}? Events after its position will create no jobs.`, 'Delete');
    if (!ok) return;
    await act(button, `Deleting trigger ${name}`, async () => {
      await api('DELETE', `/v1/triggers/${enc(name)}`);
      this.fillTriggers(await api('GET', '/v1/triggers'));
    });
  },

  async refreshList() {
    const params = new URLSearchParams({ limit: String(pageSize) });
    if (this.state) params.set('state', this.state);
    if (this.queue) params.set('queue', this.queue);
    if (this.kind) params.set('kind', this.kind);
    if (this.before !== null) params.set('before', String(this.before));
    const list = await api('GET', `/v1/jobs?${params}`);
    $('jb-empty').hidden = list.length > 0;
    $('jb-table').tBodies[0].replaceChildren(...list.map((j) => el('tr', { 'data-id': String(j.id), onclick: () => this.open(j.id) },
      el('td', { class: 'num', text: String(j.id) }),
      el('td', { text: j.queue }),
      el('td', { text: j.kind }),
      el('td', {}, pill(j.state, stateKind[j.state])),
      el('td', { class: 'num', text: `${j.attempt}/${j.max_attempts}` }),
      el('td', { class: 'num', text: String(j.priority) }),
      el('td', { text: fmtTime(j.scheduled_at) }))));
    this.next = list.length === pageSize ? list[list.length - 1].id : null;
    $('jb-older').disabled = this.next === null;
    $('jb-newer').disabled = this.cursors.length === 0;
    $('jb-page').textContent = `page ${this.cursors.length + 1}`;
  },

  older() {
    if (this.next === null) return;
    this.cursors.push(this.before);
    this.before = this.next;
    act(null, 'Listing jobs', () => this.refreshList());
  },

  newer() {
    if (!this.cursors.length) return;
    this.before = this.cursors.pop();
    act(null, 'Listing jobs', () => this.refreshList());
  },

  async open(id) {
    this.selected = id;
    await act(null, `Job ${id}`, () => this.refreshJob());
  },

  async refreshJob() {
    const id = this.selected;
    let j;
    try {
      j = await api('GET', `/v1/jobs/${id}`);
    } catch (e) {
      if (e.status === 404) {
        this.selected = null;
        $('jb-detail').hidden = true;
        throw new ApiError(404, 'not_found', `There is no job ${id} (finished jobs are pruned after their retention).`);
      }
      throw e;
    }
    if (id !== this.selected) return;
    $('jb-detail').hidden = false;
    $('jb-detail').dataset.id = String(j.id);
    $('jb-detail-id').textContent = `#${j.id}`;
    const st = $('jb-detail-state');
    st.textContent = j.state;
    st.className = `pill ${stateKind[j.state] || ''}`;
    $('jb-retry').disabled = j.state === 'running';
    $('jb-cancel').disabled = finalStates.includes(j.state);
    const fields = $('jb-fields');
    fields.replaceChildren();
    const add = (k, v) => fields.append(el('dt', { text: k }), el('dd', { text: v }));
    add('queue', j.queue);
    add('kind', j.kind);
    add('attempt', `${j.attempt} of ${j.max_attempts}`);
    add('priority', String(j.priority));
    add('scheduled at', fmtTime(j.scheduled_at));
    add('created at', fmtTime(j.created_at));
    if (j.attempted_at) add('attempted at', fmtTime(j.attempted_at));
    if (j.finalized_at) add('finalized at', fmtTime(j.finalized_at));
    if (j.worker) add('worker', j.worker);
    if (j.unique_key) add('unique key', j.unique_key);
    if (j.trigger) add('trigger', `${j.trigger} (event ${j.trigger_position})`);
    if (j.lease_expires_at) add('lease expires', fmtTime(j.lease_expires_at));
    const errors = j.errors || [];
    $('jb-errors-empty').hidden = errors.length > 0;
    $('jb-errors').tBodies[0].replaceChildren(...errors.map((e) => el('tr', {},
      el('td', { class: 'num', text: String(e.attempt ?? '') }),
      el('td', { text: fmtTime(e.at) }),
      el('td', { class: 'data', text: e.error ?? JSON.stringify(e) }))));
    $('jb-args').textContent = JSON.stringify(j.args, null, 2);
  },

  async retry(button) {
    const id = this.selected;
    await act(button, `Retrying job ${id}`, async () => {
      await api('POST', `/v1/jobs/${id}/retry`);
      await this.refreshJob();
      await this.refreshList();
    });
  },

  async cancel(button) {
    const id = this.selected;
    const ok = await confirmAction(`Cancel job ${id}? It will not run again (a running attempt's outcome is refused).`, 'Cancel job');
    if (!ok) return;
    await act(button, `Cancelling job ${id}`, async () => {
      await api('POST', `/v1/jobs/${id}/cancel`);
      await this.refreshJob();
      await this.refreshList();
    });
  },
};
view('jobs', jobs);

// -- Cluster ------------------------------------------------------------------

view('cluster', {
  every: 2000,
  async refresh() {
    const [cluster, list] = await Promise.all([api('GET', '/v1/cluster'), api('GET', '/v1/projectors')]);
    $('cl-table').tBodies[0].replaceChildren(...cluster.members.map((m) => el('tr', { 'data-name': m.name },
      el('td', {}, m.name, m.name === cluster.self ? el('span', { class: 'muted', text: ' (this node)' }) : null),
      el('td', {}, pill(m.status, stateKind[m.status])),
      el('td', { text: m.addr || '–' }),
      el('td', {}, m.http ? el('a', { href: `http://${m.http}/ui`, text: m.http }) : '–'),
      el('td', { text: m.incarnation || '–' }),
      el('td', { text: fmtTime(m.since) }))));
    $('own-empty').hidden = list.length > 0;
    $('own-table').tBodies[0].replaceChildren(...list.map((p) => el('tr', { 'data-name': p.name },
      el('td', { text: p.name }),
      el('td', { text: p.owner || '(none)' }),
      el('td', { class: 'num', text: fmtInt(p.epoch) }),
      el('td', {}, pill(p.state, stateKind[p.state])))));
  },
});

// -- wiring -------------------------------------------------------------------

function wire() {
  $('error-close').addEventListener('click', clearError);
  $('ev-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    applyFilter(splitList($('ev-types').value), splitList($('ev-tags').value));
  });
  $('ev-clear').addEventListener('click', () => {
    $('ev-types').value = '';
    $('ev-tags').value = '';
    applyFilter([], []);
  });
  $('ev-pause').addEventListener('click', () => tail.togglePause());
  $('ev-older').addEventListener('click', (ev) => tail.older(ev.target));
  $('jb-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    jobs.queue = $('jb-queue').value;
    jobs.kind = $('jb-kind').value.trim();
    jobs.firstPage();
    act(null, 'Listing jobs', () => jobs.refreshList());
  });
  $('jb-goto-btn').addEventListener('click', () => {
    const id = $('jb-goto').value.trim();
    if (!/^[1-9][0-9]{0,17}$/.test(id)) {
      showError(new ApiError(0, 'invalid', 'A job number is a positive whole number.'), 'Opening a job');
      return;
    }
    jobs.open(Number(id));
  });
  $('jb-older').addEventListener('click', () => jobs.older());
  $('jb-newer').addEventListener('click', () => jobs.newer());
  $('jb-retry').addEventListener('click', (ev) => jobs.retry(ev.target));
  $('jb-cancel').addEventListener('click', (ev) => jobs.cancel(ev.target));
  window.addEventListener('hashchange', route);
  route();
}

wire();
