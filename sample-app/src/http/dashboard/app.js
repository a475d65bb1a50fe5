// The ledger dashboard: plain JavaScript, no framework, nothing loaded from elsewhere.
// Routes (in the URL's hash): "#/" the overview, "#/{collection}/{id}" one aggregate.
'use strict';

const POLL_MS = 1000;
const HISTORY = 60;          // commands/s samples kept for the sparkline
const EVENTS_PAGE = 50;      // events per page on the aggregate page
const SVG_NS = 'http://www.w3.org/2000/svg';

const ui = {
  paused: false,
  timer: null,
  generation: 0,
  route: null,
  // Overview.
  previous: null,            // the last /stats answer, for rates
  rates: {},                 // aggregate_type -> [commands/s, …]
  collections: [],
  // Aggregate page.
  agg: null,
};

// ---------- small helpers ----------

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function setText(selector, text, root = document) {
  const node = typeof selector === 'string' ? $(selector, root) : selector;
  if (node && node.textContent !== String(text)) node.textContent = text;
}

const fmt = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));

function fmtRate(r) {
  if (!Number.isFinite(r)) return '–';
  if (r === 0) return '0';
  if (r < 10) return r.toFixed(1);
  return Math.round(r).toLocaleString('en-US');
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 100) return `${ms.toFixed(2)} ms`;
  if (ms < 10000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function fmtBound(le, unit) {
  if (le === null) return 'more';
  if (unit === 'events') return le >= 1000 ? `${le / 1000}k` : String(le);
  if (le < 1) return String(le).replace(/^0/, '');
  return le >= 1000 ? `${le / 1000}s` : String(le);
}

function ago(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(seconds)) return '–';
  if (seconds < 1.5) return 'just now';
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

function clock(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '–' : date.toLocaleTimeString('en-GB', { hour12: false });
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function getJSON(url) {
  const response = await fetch(url, { cache: 'no-store', headers: { accept: 'application/json' } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

const aggPath = (collection, id) => `/${encodeURIComponent(collection)}/${encodeURIComponent(id)}`;
const aggHash = (collection, id) => `#${aggPath(collection, id)}`;

function markUpdated(ok, at) {
  const dot = $('#live-dot');
  dot.className = 'dot';
  if (ui.paused) {
    dot.classList.add('paused');
    setText('#updated', 'paused');
    return;
  }
  // Restart the pulse.
  void dot.offsetWidth;
  dot.classList.add(ok ? 'ok' : 'err');
  setText('#updated', ok ? `updated ${clock(at || new Date().toISOString())}` : 'offline, retrying…');
}

function showError(selector, error) {
  const banner = $(selector);
  if (!error) {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  setText(banner, error.message || String(error));
}

// ---------- routing and polling ----------

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '');
  if (parts.length >= 2) {
    return { view: 'aggregate', collection: decodeURIComponent(parts[0]), id: decodeURIComponent(parts.slice(1).join('/')) };
  }
  return { view: 'overview' };
}

// The stores' description for the header, once (the overview's polls refresh it).
async function loadStores() {
  try {
    const health = await getJSON('/health');
    if (!$('#stores').textContent) setText('#stores', health.stores);
  } catch (error) {
    console.warn('cannot read /health', error);
  }
}

function route() {
  ui.route = parseRoute();
  const crumbs = $('#crumbs');
  crumbs.replaceChildren();
  if (ui.route.view === 'aggregate') {
    crumbs.append(
      el('a', { href: '#/', text: 'overview' }),
      el('span', { class: 'sep', text: '/' }),
      el('span', { text: ui.route.collection }),
      el('span', { class: 'sep', text: '/' }),
      el('span', { text: ui.route.id }),
    );
    enterAggregate(ui.route.collection, ui.route.id);
  } else {
    ui.agg = null;
    crumbs.append(el('span', { text: 'overview' }));
    document.title = 'Ledger · dashboard';
  }
  $('#view-overview').hidden = ui.route.view !== 'overview';
  $('#view-aggregate').hidden = ui.route.view !== 'aggregate';
  tick();
}

// One chain of polls: a tick started while another waits for its answers takes over, and
// the older one schedules nothing.
async function tick() {
  clearTimeout(ui.timer);
  const generation = ++ui.generation;
  if (!ui.paused) {
    try {
      if (ui.route.view === 'overview') await refreshOverview();
      else await refreshAggregate();
    } catch (error) {
      console.error(error);
    }
  }
  if (generation === ui.generation) ui.timer = setTimeout(tick, POLL_MS);
}

// ---------- overview ----------

async function refreshOverview() {
  let stats;
  try {
    stats = await getJSON('/stats');
  } catch (error) {
    showError('#overview-error', new Error(`Cannot read /stats: ${error.message}`));
    markUpdated(false);
    return;
  }
  if (ui.route.view !== 'overview') return;
  showError('#overview-error', null);
  setText('#stores', stats.stores);
  const previous = ui.previous;
  ui.previous = stats;
  const seconds = previous ? (Date.parse(stats.at) - Date.parse(previous.at)) / 1000 : 0;
  for (const type of stats.types) {
    const before = previous && previous.types.find((t) => t.aggregate_type === type.aggregate_type);
    const history = (ui.rates[type.aggregate_type] ||= []);
    if (before && seconds > 0) {
      history.push(Math.max(0, (type.commands.total - before.commands.total) / seconds));
      if (history.length > HISTORY) history.shift();
    }
    renderType(type, history);
  }
  renderOpenForm(stats.types);
  renderRecent(stats.recent || []);
  renderReminders(stats.reminders);
  markUpdated(true, stats.at);
}

function typeCard(type) {
  const key = type.aggregate_type;
  let card = document.querySelector(`#types [data-type="${CSS.escape(key)}"]`);
  if (card) return card;
  const kpi = (figure, label, extra) =>
    el('div', { class: `kpi ${extra || ''}` },
      el('span', { class: 'label', text: label }),
      el('span', { class: 'value', 'data-figure': figure, 'data-type': key, text: '–' }));
  const snapStat = (figure, label) =>
    el('div', {}, el('span', { class: 'label', text: label }),
      el('span', { class: 'value', 'data-figure': figure, 'data-type': key, text: '–' }));
  card = el('article', { class: 'card type', 'data-type': key },
    el('div', { class: 'type-head' },
      el('h2', { text: type.collection || key }),
      el('span', { class: 'sub', 'data-figure': 'subtitle', text: '' })),
    el('div', { class: 'kpis' },
      kpi('live_actors', 'Live actors'),
      kpi('activations', 'Activations'),
      kpi('commands_per_second', 'Commands / s', 'rate'),
      kpi('commands_total', 'Commands')),
    el('div', { class: 'spark-row' },
      el('div', { class: 'spark-holder' }),
      el('span', { class: 'spark-label', 'data-figure': 'spark_label', text: '' })),
    el('div', { class: 'chips', 'data-figure': 'outcomes' }),
    el('div', { class: 'hists' },
      el('div', { class: 'hist' },
        el('h3', { text: 'Events replayed per activation' }),
        el('div', { class: 'hist-holder', 'data-hist': 'replay_size' }),
        el('div', { class: 'caption', 'data-figure': 'replay_caption' })),
      el('div', { class: 'hist' },
        el('h3', { text: 'Activation time (ms)' }),
        el('div', { class: 'hist-holder', 'data-hist': 'activation_time' }),
        el('div', { class: 'caption', 'data-figure': 'activation_caption' }))),
    el('h3', { text: 'Snapshots' }),
    el('div', { class: 'snap-stats' },
      snapStat('snapshots_taken', 'taken'),
      snapStat('snapshots_failed', 'failed'),
      snapStat('snapshots_skipped_invalid', 'skipped invalid'),
      snapStat('snapshots_superseded', 'superseded'),
      snapStat('snapshot_bytes_stored', 'bytes stored'),
      snapStat('snapshot_compression', 'compression')));
  $('#types').append(card);
  return card;
}

function renderType(type, history) {
  const card = typeCard(type);
  const figure = (name) => card.querySelector(`[data-figure="${name}"]`);
  const rate = history.length ? history[history.length - 1] : 0;
  setText(figure('subtitle'), `aggregate type “${type.aggregate_type}”`);
  setText(figure('live_actors'), fmt(type.live_actors));
  setText(figure('activations'), fmt(type.activations));
  setText(figure('commands_per_second'), fmtRate(rate));
  setText(figure('commands_total'), fmt(type.commands.total));

  const holder = card.querySelector('.spark-holder');
  holder.replaceChildren(sparkline(history));
  const peak = history.length ? Math.max(...history) : 0;
  setText(figure('spark_label'), `commands/s, last ${history.length} s · peak ${fmtRate(peak)}`);

  const c = type.commands;
  const chip = (label, value, tone) =>
    el('span', { class: `chip ${value > 0 ? tone : ''}` }, `${label} `, el('b', { text: fmt(value) }));
  figure('outcomes').replaceChildren(
    chip('ok', c.succeeded, 'good'),
    chip('rejected', c.rejected, 'warn'),
    chip('failed', c.failed, 'bad'),
    chip('duplicate', c.duplicate, ''),
    chip('conflicts', c.conflicts, 'warn'),
    chip('expired', c.expired, 'warn'),
    chip('indeterminate', c.indeterminate, 'bad'),
    chip('passivations', type.runtime.passivations, ''),
    chip('crashes', type.runtime.crashes, 'bad'),
  );

  card.querySelector('[data-hist="replay_size"]').replaceChildren(
    histogram(type.histograms.replay_size, 'activations', ''));
  card.querySelector('[data-hist="activation_time"]').replaceChildren(
    histogram(type.histograms.activation_time, 'activations', 'time'));
  setText(figure('replay_caption'),
    `mean ${type.replay.mean.toFixed(1)} · max ${fmt(type.replay.max)} · ${fmt(type.replay.events_replayed)} events in all`);
  const last = type.last_activation;
  setText(figure('activation_caption'),
    `mean ${fmtMs(type.activation_time.mean_ms)} · max ${fmtMs(type.activation_time.max_ms)}` +
    (last ? ` · last ${fmtMs(last.elapsed_ms)}` : ''));

  const s = type.snapshots;
  setText(figure('snapshots_taken'), fmt(s.taken));
  setText(figure('snapshots_failed'), fmt(s.failed));
  setText(figure('snapshots_skipped_invalid'), fmt(s.skipped_invalid));
  setText(figure('snapshots_superseded'), fmt(s.superseded));
  setText(figure('snapshot_bytes_stored'), fmtBytes(s.bytes_stored));
  setText(figure('snapshot_compression'),
    s.bytes_stored > 0 ? `${(s.bytes_uncompressed / s.bytes_stored).toFixed(2)}×` : '–');
}

function sparkline(values) {
  const width = 300;
  const height = 44;
  const root = svg('svg', { class: 'spark', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none' });
  root.append(svg('line', { x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, stroke: '#e3e7ee' }));
  if (values.length < 2) return root;
  const max = Math.max(1, ...values);
  const step = width / (HISTORY - 1);
  const offset = (HISTORY - values.length) * step;
  const points = values.map((v, i) => [offset + i * step, height - 2 - (v / max) * (height - 6)]);
  const line = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
  root.append(
    svg('polygon', { points: `${offset},${height} ${line} ${width},${height}`, fill: 'rgba(47,111,237,.12)' }),
    svg('polyline', { points: line, fill: 'none', stroke: '#2f6fed', 'stroke-width': 1.6, 'vector-effect': 'non-scaling-stroke' }),
  );
  return root;
}

function histogram(hist, what, tone) {
  const width = 320;
  const height = 130;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img' });
  if (!hist) {
    root.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'empty' },
      'not kept (no metrics recorder installed)'));
    return root;
  }
  // Buckets up to the last non-empty one (at least eight), so the bars stay readable.
  let lastUsed = -1;
  hist.buckets.forEach((b, i) => { if (b.count > 0) lastUsed = i; });
  const shown = hist.buckets.slice(0, Math.min(hist.buckets.length, Math.max(8, lastUsed + 2)));
  const max = Math.max(1, ...shown.map((b) => b.count));
  const top = 14;
  const bottom = 18;
  const slot = width / shown.length;
  const barWidth = Math.max(4, slot - 6);
  shown.forEach((bucket, i) => {
    const x = i * slot + (slot - barWidth) / 2;
    const full = height - top - bottom;
    const h = bucket.count > 0 ? Math.max(2, (bucket.count / max) * full) : 0;
    const lower = i === 0 ? null : shown[i - 1].le;
    const range = bucket.le === null
      ? `more than ${lower} ${hist.unit}`
      : `${lower === null ? '' : `more than ${lower}, `}at most ${bucket.le} ${hist.unit}`;
    const group = svg('g', {});
    group.append(svg('title', {}, `${range}: ${bucket.count} ${what}`));
    group.append(svg('rect', { class: 'bar-bg', x, y: top, width: barWidth, height: full, rx: 2 }));
    if (h > 0) {
      group.append(svg('rect', { class: `bar ${tone}`, x, y: height - bottom - h, width: barWidth, height: h, rx: 2 }));
      group.append(svg('text', { class: 'bar-count', x: x + barWidth / 2, y: height - bottom - h - 3 }, fmt(bucket.count)));
    }
    group.append(svg('text', { class: 'bar-label', x: x + barWidth / 2, y: height - 5 }, fmtBound(bucket.le, hist.unit)));
    root.append(group);
  });
  return root;
}

function renderOpenForm(types) {
  const select = $('#open-type');
  const collections = types.map((t) => t.collection).filter(Boolean);
  if (collections.join() === ui.collections.join()) return;
  ui.collections = collections;
  select.replaceChildren(...collections.map((c) => el('option', { value: c, text: c })));
}

function renderRecent(recent) {
  const body = $('#recent-table tbody');
  $('#recent-empty').hidden = recent.length > 0;
  body.replaceChildren(...recent.map((r) =>
    el('tr', { 'data-collection': r.collection, 'data-id': r.id },
      el('td', { class: 'muted', text: r.collection }),
      el('td', {}, el('a', { href: aggHash(r.collection, r.id), text: r.id })),
      el('td', { class: 'num', text: `v${fmt(r.version)}` }),
      el('td', { class: 'muted', title: r.recorded_at, text: ago(r.recorded_at) }))));
}

// The scheduler's figures (`reminders` of /stats); the card stays hidden without a scheduler.
function renderReminders(reminders) {
  const card = $('#reminders-card');
  card.hidden = !reminders;
  if (!reminders) return;
  const facts = [
    ['fired', fmt(reminders.fired)],
    ['refused', fmt(reminders.rejected)],
    ['stale', fmt(reminders.stale)],
    ['failed', fmt(reminders.failed)],
    ['in flight', fmt(reminders.in_flight)],
    ['lag p50', fmtMs(reminders.lag_p50_ms)],
    ['lag p99', fmtMs(reminders.lag_p99_ms)],
  ];
  const box = $('#reminders-facts');
  if (box.children.length !== facts.length) {
    box.replaceChildren(...facts.map(([label]) =>
      el('div', { class: 'fact', 'data-fact': label },
        el('span', { class: 'label', text: label }),
        el('span', { class: 'value', text: '–' }))));
  }
  facts.forEach(([, value], i) => setText(box.children[i].lastChild, value));
}

// ---------- one aggregate ----------

function enterAggregate(collection, id) {
  ui.agg = {
    collection,
    id,
    base: aggPath(collection, id),
    version: null,         // the stream's version, once known
    follow: true,          // the slider follows the newest version
    eventsTop: null,       // newest version of the events page shown; null = the newest
    atSeq: 0,              // answers to older slider moves are dropped
    atVersion: null,       // the version the shown state was rebuilt at
    debounce: null,
    snapshots: [],
  };
  document.title = `${id} · ${collection} · Ledger`;
  setText('#agg-type', `${collection} /`);
  setText('#agg-id', id);
  for (const s of ['#agg-version', '#agg-events', '#agg-snapshots', '#agg-last', '#tt-target',
    '#tt-version', '#tt-from-snapshot', '#tt-replayed', '#tt-elapsed', '#tt-reached', '#tt-state']) {
    setText(s, '–');
  }
  $('#tt-from-snapshot').removeAttribute('data-version');
  $('#events-table tbody').replaceChildren();
  $('#snapshots-table tbody').replaceChildren();
  $('#tt-marks').replaceChildren();
  const slider = $('#tt-slider');
  slider.max = 0;
  slider.value = 0;
  showError('#agg-error', null);
}

async function refreshAggregate() {
  const agg = ui.agg;
  if (!agg) return;
  let page;
  let snapshots;
  try {
    const top = agg.eventsTop ?? agg.version ?? EVENTS_PAGE;
    [page, snapshots] = await Promise.all([
      getJSON(`${agg.base}/events?after=${Math.max(0, top - EVENTS_PAGE)}&limit=${EVENTS_PAGE}`),
      getJSON(`${agg.base}/snapshots`),
    ]);
    // Following the newest events, but the stream has grown past this page: read the newest.
    if (agg.eventsTop === null && page.next_after !== null) {
      page = await getJSON(`${agg.base}/events?after=${Math.max(0, page.version - EVENTS_PAGE)}&limit=${EVENTS_PAGE}`);
    }
  } catch (error) {
    if (ui.agg !== agg) return;
    const kind = error.body && error.body.kind;
    const message = kind === 'not_found'
      ? `No aggregate ${agg.collection}/${agg.id}: it has no events.`
      : `Cannot read ${agg.collection}/${agg.id}: ${error.message}`;
    showError('#agg-error', new Error(message));
    markUpdated(error.status === 404);
    return;
  }
  if (ui.agg !== agg) return;
  showError('#agg-error', null);

  const grew = page.version !== agg.version;
  agg.version = page.version;
  agg.snapshots = snapshots.snapshots;
  setText('#agg-version', `v${fmt(page.version)}`);
  setText('#agg-events', fmt(page.version));
  setText('#agg-snapshots', fmt(snapshots.snapshots.length));

  const slider = $('#tt-slider');
  if (grew) {
    slider.max = page.version;
    setText('#tt-max', `v${fmt(page.version)}`);
    if (agg.follow) {
      slider.value = page.version;
      loadAt(page.version);
    }
  }
  renderMarks();
  renderEvents(page);
  renderSnapshots(snapshots.snapshots);
  markUpdated(true);
}

function renderEvents(page) {
  const events = page.events.slice().reverse();
  const last = page.events[page.events.length - 1];
  if (last) setText('#agg-last', `${last.event_type}, ${ago(last.recorded_at)}`);
  const first = events.length ? events[events.length - 1].version : 0;
  const top = events.length ? events[0].version : 0;
  setText('#events-range', events.length ? `v${fmt(first)} to v${fmt(top)} of ${fmt(page.version)}, newest first` : '');
  $('#events-newer').disabled = top >= page.version;
  $('#events-older').disabled = first <= 1;
  const target = Number($('#tt-slider').value);
  $('#events-table tbody').replaceChildren(...events.map((e) => {
    const payload = JSON.stringify(e.payload);
    const row = el('tr', { 'data-version': e.version, class: rowClass(e.version, target) },
      el('td', { class: 'num', text: e.version }),
      el('td', { class: 'etype', text: e.event_type }),
      el('td', { class: 'muted', title: e.recorded_at, text: clock(e.recorded_at) }),
      el('td', { class: 'payload' }, el('code', { title: payload, text: payload })),
      el('td', { class: 'muted' }, e.correlation_id
        ? el('code', { title: e.correlation_id, text: e.correlation_id.slice(-8) })
        : '–'));
    return row;
  }));
}

function rowClass(version, target) {
  if (version > target) return 'future';
  if (version === target) return 'at';
  return null;
}

function restyleEvents() {
  const target = Number($('#tt-slider').value);
  for (const row of document.querySelectorAll('#events-table tbody tr')) {
    const version = Number(row.dataset.version);
    row.classList.toggle('future', version > target);
    row.classList.toggle('at', version === target);
  }
}

function renderSnapshots(snapshots) {
  $('#snapshots-empty').hidden = snapshots.length > 0;
  const rows = snapshots.slice().sort((a, b) => b.version - a.version).map((s) => {
    const problems = [];
    if (s.integrity !== 'ok') problems.push(s.integrity);
    if (!s.schema_current) problems.push(`schema ${s.state_schema_version} is not current`);
    if (s.last_event_matches === false) problems.push('its last event is not in the stream');
    const badge = s.valid
      ? el('span', { class: 'badge good', title: `checksum ${s.checksum}`, text: 'verified' })
      : el('span', { class: 'badge bad', title: problems.join('; '), text: 'invalid' });
    return el('tr', { 'data-version': s.version, 'data-valid': String(s.valid) },
      el('td', { class: 'num' }, el('a', { href: '#', 'data-goto': s.version, title: 'Show the state here', text: s.version })),
      el('td', { class: 'muted nowrap', title: s.taken_at, text: ago(s.taken_at) }),
      el('td', { class: 'num nowrap', text: fmtBytes(s.stored_size) }),
      el('td', { class: 'num nowrap muted', text: fmtBytes(s.uncompressed_size) }),
      el('td', { class: 'muted small' }, s.codec, el('br'), s.compression),
      el('td', {}, badge));
  });
  $('#snapshots-table tbody').replaceChildren(...rows);
}

function renderMarks() {
  const agg = ui.agg;
  const marks = $('#tt-marks');
  const max = Math.max(1, agg.version || 1);
  marks.replaceChildren(...agg.snapshots.map((s) => el('span', {
    class: `mark ${s.valid ? '' : 'bad'}`,
    style: `left:${((s.version / max) * 100).toFixed(3)}%`,
    title: `snapshot at v${s.version}${s.valid ? '' : ' (invalid)'}`,
  })));
}

function moveSlider(version, immediately) {
  const agg = ui.agg;
  if (!agg || agg.version === null) return;
  const slider = $('#tt-slider');
  const target = Math.max(0, Math.min(agg.version, version));
  slider.value = target;
  agg.follow = target === agg.version;
  setText('#tt-target', `v${fmt(target)}`);
  restyleEvents();
  clearTimeout(agg.debounce);
  if (immediately) loadAt(target);
  else agg.debounce = setTimeout(() => loadAt(target), 80);
}

async function loadAt(version) {
  const agg = ui.agg;
  if (!agg) return;
  const seq = ++agg.atSeq;
  setText('#tt-target', `v${fmt(version)}`);
  $('#tt-state').classList.add('loading');
  restyleEvents();
  let answer;
  try {
    answer = await getJSON(`${agg.base}/at?version=${version}`);
  } catch (error) {
    if (ui.agg !== agg || seq !== agg.atSeq) return;
    $('#tt-state').classList.remove('loading');
    setText('#tt-state', `Cannot rebuild v${version}: ${error.message}`);
    return;
  }
  if (ui.agg !== agg || seq !== agg.atSeq) return;
  agg.atVersion = answer.version;
  const from = answer.from_snapshot;
  const fromNode = $('#tt-from-snapshot');
  if (from) fromNode.setAttribute('data-version', from.version);
  else fromNode.removeAttribute('data-version');
  setText(fromNode, from ? `v${fmt(from.version)}` : 'none');
  fromNode.title = from ? `taken ${from.taken_at}` : 'no snapshot at or before this version: replayed from the first event';
  setText('#tt-version', answer.version);
  setText('#tt-replayed', fmt(answer.events_replayed));
  setText('#tt-elapsed', fmtMs(answer.elapsed_ms));
  setText('#tt-reached', answer.reached_at ? `${clock(answer.reached_at)}` : 'before the first event');
  $('#tt-reached').title = answer.reached_at || '';
  const state = $('#tt-state');
  state.classList.remove('loading');
  setText(state, JSON.stringify(answer.state, null, 2));
}

// ---------- wiring ----------

function wire() {
  window.addEventListener('hashchange', route);
  $('#pause').addEventListener('click', () => {
    ui.paused = !ui.paused;
    $('#pause').textContent = ui.paused ? 'Resume' : 'Pause';
    markUpdated(true);
    if (!ui.paused) tick();
  });
  $('#open-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const id = $('#open-id').value.trim();
    if (id) location.hash = aggHash($('#open-type').value, id);
  });
  const slider = $('#tt-slider');
  slider.addEventListener('input', () => moveSlider(Number(slider.value), false));
  slider.addEventListener('change', () => moveSlider(Number(slider.value), true));
  $('#tt-prev').addEventListener('click', () => moveSlider(Number(slider.value) - 1, true));
  $('#tt-next').addEventListener('click', () => moveSlider(Number(slider.value) + 1, true));
  $('#tt-latest').addEventListener('click', () => moveSlider(ui.agg ? ui.agg.version : 0, true));
  $('#snapshots-table').addEventListener('click', (event) => {
    const link = event.target.closest('[data-goto]');
    if (!link) return;
    event.preventDefault();
    moveSlider(Number(link.dataset.goto), true);
  });
  const page = (direction) => {
    const agg = ui.agg;
    if (!agg || agg.version === null) return;
    const top = agg.eventsTop ?? agg.version;
    const next = top + direction * EVENTS_PAGE;
    agg.eventsTop = next >= agg.version ? null : Math.max(Math.min(EVENTS_PAGE, agg.version), next);
    tick();
  };
  $('#events-newer').addEventListener('click', () => page(1));
  $('#events-older').addEventListener('click', () => page(-1));
}

wire();
route();
loadStores();
