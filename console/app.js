// The Switchyard console: one page over the public HTTP API, routed by location.pathname.
// Everything shown comes from the API with the caller's key; API data only ever reaches
// the DOM as text (textContent, attribute values), never as markup.

import { renderGraph } from '/console/graph.js';

const KEY = 'switchyard.api-key';
const STATUSES = ['running', 'completed', 'failed', 'cancelled'];
const main = document.getElementById('main');

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const link = (href, text, attrs = {}) => h('a', { href, ...attrs }, text);
const badge = (status) => h('span', { class: `badge status-${status}` }, status);
const short = (id) => (id ? `${id.slice(0, 8)}…${id.slice(-4)}` : '');
const time = (at) => (at ? at.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—');
const json = (value) => JSON.stringify(value);
const instanceLink = (id) => link(`/console/instances/${id}`, short(id), { class: 'mono', title: id });
const versionHref = (name, v) => `/console/definitions/${encodeURIComponent(name)}/versions/${v}`;

function table(headers, rows, attrs = {}) {
  const body = rows.length
    ? rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))
    : h('tr', {}, h('td', { colspan: headers.length, class: 'empty' }, 'None'));
  return h('div', { class: 'table-wrap' },
    h('table', attrs, h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))), h('tbody', {}, body)));
}

const section = (title, ...content) => h('section', { class: 'card' }, h('h2', {}, title), content);

function problemBox(error) {
  const p = error.problem ?? { title: 'Request failed', detail: String(error.message ?? error) };
  return h('div', { class: 'problem', role: 'alert' },
    h('strong', {}, p.title ?? `HTTP ${error.status}`),
    p.detail && h('p', {}, p.detail),
    p.correlation_id && h('p', { class: 'muted' }, 'Correlation id: ', h('code', {}, p.correlation_id)));
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? problem?.title ?? `HTTP ${status}`);
    Object.assign(this, { status, problem });
  }
}

// crypto.randomUUID needs a secure context; a console on plain http elsewhere has none.
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function api(path, { method = 'GET', body, headers = {}, signal } = {}) {
  const init = { method, signal, headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  if (method === 'POST' && !init.headers['Idempotency-Key']) init.headers['Idempotency-Key'] = newKey();
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    showKeyForm('The server did not accept this key.');
  }
  if (!response.ok && response.status !== 304) throw new ApiError(response.status, data);
  return { status: response.status, data, headers: response.headers };
}

const get = async (path, signal) => (await api(path, { signal })).data;
const query = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)).toString();

// ---------------------------------------------------------------- key form and routing

let pageAbort = new AbortController();

function showKeyForm(message) {
  pageAbort.abort();
  document.getElementById('forget-key').hidden = true;
  const input = h('input', { type: 'password', id: 'key', 'data-testid': 'key-input', required: true, autocomplete: 'off' });
  const form = h('form', { class: 'card key-form', 'data-testid': 'key-form', onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    render();
  } },
  h('h1', {}, 'API key'),
  h('p', {}, 'Enter the API key you use with the CLI. It is kept in this tab\'s session storage only.'),
  message && h('p', { class: 'problem', role: 'alert' }, message),
  h('label', { for: 'key' }, 'Key'), input,
  h('button', { type: 'submit', 'data-testid': 'key-submit' }, 'Continue'));
  main.replaceChildren(form);
  input.focus();
}

const routes = [
  [/^\/console\/?$/, homePage, 'home'],
  [/^\/console\/definitions\/([^/]+)\/versions\/(\d+)$/, versionPage, 'home'],
  [/^\/console\/definitions\/([^/]+)$/, definitionRedirect, 'home'],
  [/^\/console\/instances$/, instancesPage, 'instances'],
  [/^\/console\/instances\/([^/]+)$/, instancePage, 'instances'],
];

function navigate(href) {
  history.pushState(null, '', href);
  render();
}

async function render() {
  pageAbort.abort();
  pageAbort = new AbortController();
  const { signal } = pageAbort;
  if (!sessionStorage.getItem(KEY)) return showKeyForm();
  document.getElementById('forget-key').hidden = false;
  const path = location.pathname.replace(/\/+$/, '') || '/console';
  const [pattern, page, nav] = routes.find(([re]) => re.test(path)) ?? [null, notFound, ''];
  for (const a of document.querySelectorAll('[data-nav]')) a.toggleAttribute('aria-current', a.dataset.nav === nav);
  const params = (pattern ? path.match(pattern).slice(1) : []).map(decodeURIComponent);
  main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  try {
    const content = await page(params, signal);
    if (!signal.aborted && content) main.replaceChildren(content);
  } catch (error) {
    if (!signal.aborted && error.status !== 401) main.replaceChildren(problemBox(error));
  }
}

function notFound() {
  return h('div', { class: 'card' }, h('h1', {}, 'Not found'), h('p', {}, 'No console page here. ', link('/console/', 'Home')));
}

// ---------------------------------------------------------------- home

async function homePage(_, signal) {
  const [definitions, failures] = await Promise.all([
    get('/v1/definitions', signal), get('/v1/instances?status=failed&limit=10', signal)]);
  const counts = (name, v) => STATUSES.map((status) => {
    const n = v.instances[status] ?? 0;
    return n ? link(`/console/instances?${query({ definition: name, version: v.version, status })}`, String(n), { class: `count status-${status}` })
      : h('span', { class: 'muted' }, '0');
  });
  const head = ['Definition', 'Version', 'New instances', 'Deployed', ...STATUSES];
  const groups = definitions.items.map((d) => h('tbody', { 'data-testid': `definition-${d.name}` },
    d.versions.map((v, i) => h('tr', {},
      i === 0 && h('th', { rowspan: d.versions.length, scope: 'rowgroup' }, link(versionHref(d.name, d.default_version ?? v.version), d.name)),
      h('td', {}, link(versionHref(d.name, v.version), `v${v.version}`), v.retired && h('span', { class: 'badge' }, 'retired')),
      h('td', {}, d.default_version === v.version ? h('span', { class: 'badge accent' }, d.pinned_version ? 'default (pinned)' : 'default') : ''),
      h('td', {}, time(v.deployed_at)),
      counts(d.name, v).map((c) => h('td', { class: 'num' }, c))))));
  const defs = h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, head.map((t) => h('th', {}, t)))), groups));
  return h('div', { 'data-testid': 'home' },
    h('h1', {}, 'Definitions'),
    h('section', { class: 'card' }, definitions.items.length ? defs : h('p', {}, 'No definition deployed.')),
    section('Recent failures', table(['Instance', 'Definition', 'State', 'Error', 'Updated'],
      failures.items.map((i) => [instanceLink(i.id), link(versionHref(i.definition, i.definition_version), `${i.definition} v${i.definition_version}`),
        i.state, i.error ?? '', time(i.updated_at)]))));
}

async function definitionRedirect([name], signal) {
  const d = await get(`/v1/definitions/${encodeURIComponent(name)}`, signal);
  history.replaceState(null, '', versionHref(name, d.default_version ?? d.versions.at(-1)?.version ?? 1));
  render();
}

// ---------------------------------------------------------------- definition version

// Instances per state, counted from the list (a page of 500 at most: "500+" beyond).
async function stateCounts(name, version, states, signal) {
  const entries = await Promise.all(states.map(async (state) => {
    const page = await get(`/v1/instances?${query({ definition: name, version, state, limit: 500 })}`, signal);
    return [state, { n: page.items.length, more: Boolean(page.next_cursor) }];
  }));
  return new Map(entries);
}
const countText = (c) => (c && c.n ? `${c.n}${c.more ? '+' : ''}` : '');

async function versionPage([name, v], signal) {
  const base = `/v1/definitions/${encodeURIComponent(name)}`;
  const [definition, version] = await Promise.all([get(base, signal), get(`${base}/versions/${v}`, signal)]);
  const counts = await stateCounts(name, v, version.states.map((s) => s.name), signal);
  const others = definition.versions.map((x) => x.version).filter((x) => x !== version.version);
  const wanted = Number(new URLSearchParams(location.search).get('against'));
  const against = others.includes(wanted) ? wanted : (others.filter((x) => x < version.version).at(-1) ?? others[0]);
  const graphCounts = new Map([...counts].map(([s, c]) => [s, countText(c)]));
  return h('div', { class: 'version-page' },
    h('p', { class: 'crumbs' }, link('/console/', 'Definitions'), ' / ', name),
    h('h1', {}, `${name} `, h('span', { class: 'muted' }, `version ${version.version}`)),
    h('nav', { class: 'tabs' }, definition.versions.map((x) => link(versionHref(name, x.version), `v${x.version}`,
      { 'aria-current': x.version === version.version ? 'page' : null }))),
    h('dl', { class: 'facts' },
      fact('New instances get', definition.default_version === version.version ? 'this version' : `v${definition.default_version ?? '—'}`),
      fact('Deployed', time(version.deployed_at)),
      fact('Retired', version.retired_at ? time(version.retired_at) : 'no'),
      fact('Migrates from', version.migrates_from.length ? version.migrates_from.map((x) => `v${x}`).join(', ') : '—'),
      fact('Module', h('code', { title: version.sha256 }, version.sha256.slice(0, 16))),
      fact('Instances', link(`/console/instances?${query({ definition: name, version: version.version })}`, 'list'))),
    section('State graph', h('div', { class: 'graph-box' }, renderGraph(version, { counts: graphCounts })), legend()),
    against !== undefined ? await diffSection(definition, version, counts, against, signal) : null,
    section('States', table(['State', 'Status', 'Instances', 'Description'], version.states.map((s) => [
      h('code', {}, s.name), s.terminal ? badge(s.status) : h('span', { class: 'muted' }, 'running'),
      countText(counts.get(s.name)) || '0', s.description]))),
    section('Actions', table(['Action', 'From', 'To', 'Who', 'Description'], version.actions.map((a) => [
      h('code', {}, a.name), a.from.join(', '), a.to.join(', '),
      a.admin_only ? h('span', { class: 'badge admin' }, 'admin only') : 'any', a.description]))));
}

const fact = (term, value) => h('div', {}, h('dt', {}, term), h('dd', {}, value));

function legend() {
  return h('p', { class: 'legend muted' }, 'Terminal states have a double border coloured by status; ',
    'dashed edges are admin-only actions, dotted ones transitions seen in history but not declared as actions ',
    '(events, effects); the badge on a state counts its instances.');
}

async function diffSection(definition, version, counts, otherVersion, signal) {
  const { name } = definition;
  const other = await get(`/v1/definitions/${encodeURIComponent(name)}/versions/${otherVersion}`, signal);
  const mine = new Map(version.states.map((s) => [s.name, s]));
  const theirs = new Map(other.states.map((s) => [s.name, s]));
  const stateText = (s) => (s.terminal ? `terminal, ${s.status}` : 'running');
  const lacking = (a, b) => [...a.keys()].filter((k) => !b.has(k));
  const states = [
    ...lacking(mine, theirs).map((s) => ['added', s, stateText(mine.get(s))]),
    ...lacking(theirs, mine).map((s) => ['removed', s, stateText(theirs.get(s))]),
    ...[...mine.keys()].filter((s) => theirs.has(s) && stateText(mine.get(s)) !== stateText(theirs.get(s)))
      .map((s) => ['changed', s, `${stateText(theirs.get(s))} → ${stateText(mine.get(s))}`]),
  ];
  const actionText = (a) => `${a.from.join(', ')} → ${a.to.join(', ')}${a.admin_only ? ' (admin only)' : ''}`;
  const myActions = new Map(version.actions.map((a) => [a.name, a]));
  const theirActions = new Map(other.actions.map((a) => [a.name, a]));
  const actions = [
    ...lacking(myActions, theirActions).map((a) => ['added', a, actionText(myActions.get(a))]),
    ...lacking(theirActions, myActions).map((a) => ['removed', a, actionText(theirActions.get(a))]),
    ...[...myActions.keys()].filter((a) => theirActions.has(a) && actionText(myActions.get(a)) !== actionText(theirActions.get(a)))
      .map((a) => ['changed', a, `${actionText(theirActions.get(a))}  ⇒  ${actionText(myActions.get(a))}`]),
  ];
  // Running instances only sit in non-terminal states, so a state's count is its running count.
  const running = (map, states, c) => states.filter((s) => !map.get(s).terminal).reduce((sum, s) => sum + (c.get(s)?.n ?? 0), 0);
  const theirLacking = lacking(theirs, mine);
  const theirCounts = await stateCounts(name, otherVersion, theirLacking, signal);
  const change = ([kind, what, detail]) => [h('span', { class: `badge diff-${kind}` }, kind), h('code', {}, what), detail];
  return h('section', { class: 'card', 'data-testid': 'diff' },
    h('h2', {}, `Compared with version ${otherVersion}`),
    h('nav', { class: 'tabs small' }, 'Compare with: ', definition.versions
      .filter((x) => x.version !== version.version)
      .map((x) => link(`${versionHref(name, version.version)}?against=${x.version}`, `v${x.version}`, { 'aria-current': x.version === otherVersion ? 'page' : null }))),
    h('h3', {}, 'States'), table(['Change', 'State', 'Detail'], states.map(change)),
    h('h3', {}, 'Actions'), table(['Change', 'Action', 'Detail'], actions.map(change)),
    h('ul', { class: 'plain' },
      h('li', {}, h('strong', {}, String(running(mine, lacking(mine, theirs), counts))),
        ` running instance(s) of v${version.version} sit in states v${otherVersion} lacks`),
      h('li', {}, h('strong', {}, String(running(theirs, theirLacking, theirCounts))),
        ` running instance(s) of v${otherVersion} sit in states v${version.version} lacks`)));
}

// ---------------------------------------------------------------- instance list

async function instancesPage(_, signal) {
  const params = Object.fromEntries(new URLSearchParams(location.search));
  const filters = ['definition', 'version', 'state', 'status', 'parent'];
  const listQuery = query({ ...Object.fromEntries(filters.map((f) => [f, params[f]])), cursor: params.cursor, limit: 25 });
  const [definitions, page] = await Promise.all([get('/v1/definitions', signal), get(`/v1/instances?${listQuery}`, signal)]);
  const field = (name, control) => h('label', {}, h('span', {}, name), control);
  const select = (name, options) => h('select', { name, 'data-testid': `filter-${name}` },
    h('option', { value: '' }, 'any'), options.map((o) => h('option', { value: o, selected: params[name] === String(o) }, o)));
  const input = (name, attrs = {}) => h('input', { name, value: params[name] ?? '', 'data-testid': `filter-${name}`, ...attrs });
  const form = h('form', { class: 'filters card', onsubmit: (event) => {
    event.preventDefault();
    const values = Object.fromEntries([...new FormData(event.target)].map(([k, v]) => [k, String(v).trim()]));
    navigate(`/console/instances?${query(values)}`);
  } },
  field('Definition', select('definition', definitions.items.map((d) => d.name))),
  field('Version', input('version', { type: 'number', min: 1, inputmode: 'numeric' })),
  field('State', input('state', { placeholder: 'e.g. VALIDATING' })),
  field('Status', select('status', STATUSES)),
  field('Parent', input('parent', { placeholder: 'instance id' })),
  h('button', { type: 'submit', 'data-testid': 'filter-submit' }, 'Filter'),
  link('/console/instances', 'Clear'));
  const rows = page.items.map((i) => [instanceLink(i.id),
    link(versionHref(i.definition, i.definition_version), `${i.definition} v${i.definition_version}`),
    h('code', {}, i.state), badge(i.status), String(i.revision), time(i.updated_at), i.parent_id ? instanceLink(i.parent_id) : '']);
  const filtered = { ...params };
  delete filtered.cursor;
  return h('div', {},
    h('h1', {}, 'Instances'), form,
    h('section', { class: 'card' },
      table(['Instance', 'Definition', 'State', 'Status', 'Rev', 'Updated', 'Parent'], rows, { 'data-testid': 'instances-table' }),
      h('p', { class: 'pager' },
        params.cursor && link(`/console/instances?${query(filtered)}`, '« First page'),
        page.next_cursor && link(`/console/instances?${query({ ...filtered, cursor: page.next_cursor })}`, 'Next page »', { 'data-testid': 'next-page' }))));
}

// ---------------------------------------------------------------- instance page

async function loadInstance(id, signal) {
  const base = `/v1/instances/${encodeURIComponent(id)}`;
  const [instance, history, diagnostics, children] = await Promise.all([
    get(base, signal), get(`${base}/history`, signal), get(`${base}/diagnostics`, signal),
    get(`/v1/instances?${query({ parent: id, limit: 100 })}`, signal)]);
  const versionPath = `/v1/definitions/${encodeURIComponent(instance.definition)}/versions/${instance.definition_version}`;
  // A deleted version has no manifest left: the page shows everything but the graph.
  const version = await get(versionPath, signal).catch((error) => { if (error.status === 404) return null; throw error; });
  return { instance, history: history.items, diagnostics, children: children.items, version };
}

async function instancePage([id], signal) {
  const root = h('div', { class: 'instance-page' });
  // A live refresh redraws the page; the <details> the reader opened stay open.
  const show = (model) => {
    const open = new Set([...root.querySelectorAll('details[open]')].map((d) => d.dataset.key));
    root.replaceChildren(...instanceView(model, () => refresh()));
    for (const d of root.querySelectorAll('details')) d.open = open.has(d.dataset.key);
  };
  let model = await loadInstance(id, signal);
  // Redraws only on a change, so a reader's scroll position survives quiet polls.
  const refresh = async () => {
    const next = await loadInstance(id, signal);
    if (signal.aborted || JSON.stringify(next) === JSON.stringify(model)) return;
    model = next;
    show(model);
  };
  show(model);
  follow(id, () => model.instance, refresh, signal);
  return root;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

// Long-polls the instance and refreshes the page when it moves; effects change without a
// new revision, so each answer (a change or a timed-out wait) refreshes everything.
async function follow(id, current, refresh, signal) {
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      // A finished instance answers a long-poll at once: look again now and then.
      if (current().status !== 'running') await sleep(5000, signal);
      if (signal.aborted) return;
      await api(`/v1/instances/${encodeURIComponent(id)}`, {
        signal, headers: { 'If-None-Match': `"${current().revision}"`, Prefer: 'wait=20' } });
      await refresh();
      setLive(true);
      backoff = 1000;
    } catch (error) {
      if (signal.aborted || error.status === 401) return;
      setLive(false);
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 30000);
    }
  }
}

function setLive(ok) {
  const indicator = document.querySelector('[data-testid="live"]');
  if (!indicator) return;
  indicator.className = ok ? 'live on' : 'live off';
  indicator.textContent = ok ? 'live' : 'reconnecting…';
}

function instanceView({ instance: i, history, diagnostics: d, children, version }, refresh) {
  const visited = new Set(history.flatMap((e) => [e.from_state, e.to_state]).filter(Boolean));
  const taken = new Set(history.filter((e) => e.from_state).map((e) => `${e.from_state}\u0000${e.to_state}`));
  const header = h('section', { class: 'card instance-head' },
    h('p', { class: 'crumbs' }, link('/console/instances', 'Instances'), ' / ', h('span', { class: 'mono' }, i.id)),
    h('div', { class: 'headline' },
      h('h1', {}, h('span', { 'data-testid': 'instance-state', class: 'state-name' }, i.state)),
      h('span', { 'data-testid': 'instance-status', class: `badge status-${i.status}` }, i.status),
      h('span', { 'data-testid': 'live', class: 'live on' }, 'live')),
    i.message && h('p', { class: i.error ? 'problem' : 'message' }, i.message),
    h('dl', { class: 'facts' },
      fact('Definition', link(versionHref(i.definition, i.definition_version), `${i.definition} v${i.definition_version}`)),
      fact('Revision', String(i.revision)),
      fact('Parent', i.parent_id ? instanceLink(i.parent_id) : '—'),
      fact('Allowed actions', i.allowed_actions.length ? i.allowed_actions.join(', ') : '—'),
      fact('Created', time(i.created_at)),
      fact('Updated', time(i.updated_at)),
      i.callback_url && fact('Callback', i.callback_url)),
    adminButtons(i, refresh),
    h('details', { 'data-key': 'data' }, h('summary', {}, 'Data'), h('pre', {}, JSON.stringify(i.data, null, 2))));
  const graph = version
    ? section('State graph', h('div', { class: 'graph-box' }, renderGraph(withObserved(version, history), { current: i.state, visited, taken })), legend())
    : section('State graph', h('p', { class: 'muted' }, `Version ${i.definition_version} is deleted; its graph is gone.`));
  return [header, h('div', { class: 'split' }, graph, timeline(history)), effectsSection(d), eventsSection(d.events),
    relationsSection(d, children), section('Recent calls', table(['Seq', 'Trigger', 'Name', 'Fuel', 'Module', 'At'],
      d.recent_calls.map((c) => [String(c.seq), c.trigger, c.name, c.fuel_used.toLocaleString('en'), digest(c.module_sha256), time(c.at)])))];
}

// The manifest declares action edges only; transitions made by events, effects or admin
// overrides join the graph as "observed" edges, so the path taken is drawn whole.
function withObserved(version, history) {
  const known = new Set(version.states.map((s) => s.name));
  const declared = new Set(version.transitions.map((t) => `${t.from}\u0000${t.to}`));
  const observed = history.filter((e) => e.from_state && e.definition_version === version.version
    && known.has(e.from_state) && known.has(e.to_state) && !declared.has(`${e.from_state}\u0000${e.to_state}`))
    .map((e) => ({ from: e.from_state, to: e.to_state, action: e.trigger.name, observed: true }));
  return { ...version, transitions: [...version.transitions, ...observed] };
}

const digest = (sha) => h('code', { title: sha }, sha.slice(0, 12));

function timeline(history) {
  const entries = [...history].reverse().map((e) => h('li', { 'data-testid': 'timeline-entry', class: `kind-${e.trigger.kind}` },
    h('div', { class: 'entry-head' },
      h('span', { class: 'seq' }, `#${e.seq}`),
      h('span', { class: 'badge' }, `${e.trigger.kind} · ${e.trigger.name}`),
      h('code', {}, e.from_state ? `${e.from_state} → ${e.to_state}` : `→ ${e.to_state}`)),
    h('div', { class: 'entry-meta muted' },
      `${time(e.at)} · by ${e.actor} · v${e.definition_version} · `, digest(e.module_sha256),
      ` · fuel ${e.fuel_used.toLocaleString('en')}`, e.trigger.id && ` · key ${e.trigger.id}`),
    e.trigger.payload !== null && h('pre', { class: 'payload' }, json(e.trigger.payload))));
  return h('section', { class: 'card' }, h('h2', {}, 'Timeline'), h('ol', { class: 'timeline', 'data-testid': 'timeline' }, entries));
}

const OPEN = new Set(['pending', 'waiting', 'ready']);

function effectRows(effects) {
  return effects.map((e) => [e.kind, e.name ?? '', h('code', { title: e.id }, e.key), badge(e.status), String(e.attempts),
    time(e.next_attempt_at), e.last_error ?? '', e.result === null ? '' : h('code', { class: 'clip' }, json(e.result)), `#${e.seq}`]);
}

function effectsSection(d) {
  const head = ['Kind', 'Name', 'Key', 'Status', 'Attempts', 'Next attempt', 'Last error', 'Result', 'Asked by'];
  return h('section', { class: 'card', 'data-testid': 'effects' }, h('h2', {}, 'Effects'),
    h('h3', {}, 'Open'), table(head, effectRows(d.effects.filter((e) => OPEN.has(e.status)))),
    h('h3', {}, 'Finished'), table(head, effectRows(d.effects.filter((e) => !OPEN.has(e.status)))),
    h('h3', {}, 'Open timers'), table(['Key', 'Due', 'Asked by'], d.open_timers.map((t) => [h('code', {}, t.key), time(t.next_attempt_at), `#${t.seq}`])));
}

function eventsSection(events) {
  return section('Received events', table(['Event id', 'Type', 'Status', 'Applied in', 'Received', 'Code / reason', 'Payload'],
    events.map((e) => [h('code', {}, e.event_id), e.type, badge(e.status), e.seq ? `#${e.seq}` : '', time(e.received_at),
      [e.code, e.reason ?? e.last_error].filter(Boolean).join(': '), h('code', { class: 'clip' }, json(e.payload))])));
}

function relationsSection(d, children) {
  return section('Children and callbacks',
    h('h3', {}, 'Child instances'), table(['Instance', 'Definition', 'State', 'Status'], children.map((c) => [
      instanceLink(c.id), `${c.definition} v${c.definition_version}`, h('code', {}, c.state), badge(c.status)])),
    h('h3', {}, 'Child effects'), table(['Definition', 'Key', 'Status', 'Attempts', 'Last error'],
      d.children.map((c) => [c.name ?? '', h('code', {}, c.key), badge(c.status), String(c.attempts), c.last_error ?? ''])),
    h('h3', {}, 'Callback deliveries'), table(['Status', 'Attempts', 'Next attempt', 'Last error', 'Updated'],
      d.callback_deliveries.map((c) => [badge(c.status), String(c.attempts), time(c.next_attempt_at), c.last_error ?? '', time(c.updated_at)])));
}

// ---------------------------------------------------------------- admin actions

function adminButtons(i, refresh) {
  const path = `/v1/admin/instances/${encodeURIComponent(i.id)}`;
  const override = (kind, title) => () => confirmDialog({
    title, text: `${title} ${i.id} (now ${i.state}). This is recorded in its history with your reason.`,
    submitLabel: title,
    submit: (reason, key) => api(`${path}/${kind}`, { method: 'POST', body: { reason }, headers: { 'Idempotency-Key': key } }),
    done: refresh,
  });
  return h('div', { class: 'admin-actions' },
    h('span', { class: 'muted' }, 'Admin:'),
    h('button', { type: 'button', class: 'danger', 'data-testid': 'admin-cancel', disabled: i.status !== 'running', onclick: override('cancel', 'Cancel') }, 'Cancel…'),
    h('button', { type: 'button', 'data-testid': 'admin-force-complete', disabled: i.status === 'completed' || i.status === 'cancelled',
      onclick: override('force-complete', 'Force-complete') }, 'Force-complete…'),
    h('button', { type: 'button', 'data-testid': 'admin-migrate', onclick: () => migrateDialog(i, path, refresh) }, 'Migrate…'));
}

// A modal asking for a reason; `submit(reason, idempotencyKey)` runs on confirmation. The
// key is made once per dialog, so a repeated click replays instead of acting twice.
function confirmDialog({ title, text, fields = [], submitLabel, submit, done, before }) {
  const key = newKey();
  const reason = h('textarea', { id: 'confirm-reason', 'data-testid': 'confirm-reason', rows: 3, required: true });
  const errors = h('div', {});
  const confirm = h('button', { type: 'submit', class: 'danger', 'data-testid': 'confirm-submit' }, submitLabel);
  const dialog = h('dialog', { class: 'confirm' },
    h('form', { method: 'dialog', onsubmit: async (event) => {
      event.preventDefault();
      if (!reason.value.trim()) return errors.replaceChildren(h('p', { class: 'problem' }, 'A reason is required.'));
      confirm.disabled = true;
      try {
        await submit(reason.value.trim(), key);
        dialog.close();
        done();
      } catch (error) {
        errors.replaceChildren(problemBox(error));
      } finally {
        confirm.disabled = false;
      }
    } },
    h('h2', {}, title), h('p', {}, text), fields,
    h('label', { for: 'confirm-reason' }, 'Reason'), reason, errors,
    h('div', { class: 'buttons' }, before, confirm,
      h('button', { type: 'button', onclick: () => dialog.close() }, 'Close'))));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
  return { dialog, confirm, reason, errors };
}

// Migrating asks for a dry run first: its result is shown, and only then can it be confirmed.
async function migrateDialog(i, path, refresh) {
  const definition = await get(`/v1/definitions/${encodeURIComponent(i.definition)}`, pageAbort.signal);
  const target = h('select', { id: 'migrate-to', 'data-testid': 'migrate-to' },
    definition.versions.filter((v) => v.version !== i.definition_version && !v.retired)
      .map((v) => h('option', { value: v.version }, `v${v.version}`)));
  const result = h('div', { class: 'dry-run', 'data-testid': 'dry-run-result' });
  const parts = confirmDialog({
    title: 'Migrate', text: `Move ${i.id} from v${i.definition_version} (${i.state}) to another version.`,
    fields: [h('label', { for: 'migrate-to' }, 'To version'), target, result],
    submitLabel: 'Migrate',
    before: h('button', { type: 'button', 'data-testid': 'migrate-dry-run', onclick: () => dryRun() }, 'Dry run'),
    submit: (reason, key) => api(`${path}/migrate`, { method: 'POST', body: { to_version: Number(target.value), reason }, headers: { 'Idempotency-Key': key } }),
    done: refresh,
  });
  const invalidate = () => { parts.confirm.disabled = true; result.replaceChildren(); };
  target.addEventListener('change', invalidate);
  parts.reason.addEventListener('input', invalidate);
  invalidate();
  async function dryRun() {
    const reason = parts.reason.value.trim();
    if (!reason) return parts.errors.replaceChildren(h('p', { class: 'problem' }, 'A reason is required.'));
    parts.errors.replaceChildren();
    try {
      const { data } = await api(`${path}/migrate`, { method: 'POST', body: { to_version: Number(target.value), reason, dry_run: true } });
      parts.confirm.disabled = false;
      result.replaceChildren(h('p', {}, `Dry run: v${data.definition_version}, state `, h('code', {}, data.state), ' ', badge(data.status),
        `, revision ${data.revision}.`), h('details', {}, h('summary', {}, 'Data after migration'), h('pre', {}, JSON.stringify(data.data, null, 2))));
    } catch (error) {
      result.replaceChildren(problemBox(error));
    }
  }
}

// ---------------------------------------------------------------- start

document.addEventListener('click', (event) => {
  const a = event.target.closest('a[href]');
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/console')) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', render);
document.getElementById('forget-key').addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  showKeyForm();
});
render();
