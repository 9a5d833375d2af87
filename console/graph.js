// The state graph of a definition version, laid out in layers and drawn as SVG.
//
// Layout (a small Sugiyama): states get BFS layers from the initial state, terminal
// states sink below every state that leads to them, edges spanning several layers run
// through invisible "dummy" points (shared by edges with the same target and label, so
// the many `cancel` edges join into one trunk), layers are ordered by barycenters to
// cut crossings, then nodes are pulled towards their neighbours.

const SVG = 'http://www.w3.org/2000/svg';
const NODE_H = 40;
const LAYER_GAP = 80;
const NODE_GAP = 56;
const DUMMY_W = 12;
const PAD = 24;
const JUNCTION = 30; // how far above its target a bundle of edges meets
const FONT = '600 13px system-ui, sans-serif';
const LABEL_FONT = '12px system-ui, sans-serif';

let measureContext;
function textWidth(text, font) {
  measureContext ??= document.createElement('canvas').getContext('2d');
  measureContext.font = font;
  return measureContext.measureText(text).width;
}

// One edge per (from, to) pair, labelled with every action that takes it. Transitions
// marked `observed` are not in the manifest but were seen in an instance's history.
function pairEdges(version) {
  const adminOnly = new Map(version.actions.map((a) => [a.name, a.admin_only]));
  const pairs = new Map();
  for (const t of version.transitions) {
    const key = `${t.from}\u0000${t.to}`;
    if (!pairs.has(key)) pairs.set(key, { from: t.from, to: t.to, actions: [] });
    const edge = pairs.get(key);
    if (!edge.actions.includes(t.action)) edge.actions.push(t.action);
    edge.observed = (edge.observed ?? true) && Boolean(t.observed);
  }
  for (const edge of pairs.values()) {
    edge.admin = edge.actions.every((name) => adminOnly.get(name));
    edge.text = edge.actions.map((name) => (adminOnly.get(name) && !edge.admin ? `${name} (admin)` : name)).join(', ')
      + (edge.admin ? ' (admin)' : '');
  }
  return [...pairs.values()];
}

function assignLayers(version, edges) {
  const layer = new Map();
  const walk = (roots) => {
    const queue = roots.filter((r) => !layer.has(r));
    for (const r of queue) layer.set(r, 0);
    while (queue.length) {
      const state = queue.shift();
      for (const e of edges) {
        if (e.from === state && !layer.has(e.to)) {
          layer.set(e.to, layer.get(state) + 1);
          queue.push(e.to);
        }
      }
    }
  };
  // The manifest declares action edges only: a state entered through an event (an
  // effect's result) is reached by none, so one with actions of its own starts a walk too.
  walk([version.initial_state]);
  walk(version.states.filter((s) => !layer.has(s.name) && edges.some((e) => e.from === s.name)).map((s) => s.name));
  // States without any edge: rows of four below the rest.
  const deepest = Math.max(...layer.values());
  version.states.filter((s) => !layer.has(s.name) && !s.terminal)
    .forEach((s, i) => layer.set(s.name, deepest + 1 + Math.floor(i / 4)));
  // Terminal states end the flow: below everything that reaches them, else at the bottom.
  const bottom = Math.max(...version.states.filter((s) => !s.terminal).map((s) => layer.get(s.name))) + 1;
  for (const s of version.states.filter((s) => s.terminal)) {
    const preds = edges.filter((e) => e.to === s.name && e.from !== s.name).map((e) => layer.get(e.from) + 1);
    layer.set(s.name, preds.length ? Math.max(...preds) : bottom);
  }
  return layer;
}

// Items per layer: real nodes and dummies; forward edges become chains of item ids.
function buildLayers(version, edges, layer) {
  const items = new Map();
  const rows = [];
  const add = (item) => {
    items.set(item.id, item);
    (rows[item.layer] ??= []).push(item);
  };
  for (const s of version.states) {
    add({ id: s.name, layer: layer.get(s.name), w: textWidth(s.name, FONT) + 32, state: s });
  }
  for (const e of edges) {
    const [a, b] = [layer.get(e.from), layer.get(e.to)];
    e.kind = e.from === e.to ? 'self' : b > a ? 'forward' : b === a ? 'flat' : 'back';
    if (e.kind !== 'forward') continue;
    e.chain = [e.from];
    for (let l = a + 1; l < b; l++) {
      const id = `\u0000${e.to}\u0000${e.text}\u0000${l}`;
      if (!items.has(id)) add({ id, layer: l, w: DUMMY_W, dummy: true });
      e.chain.push(id);
    }
    e.chain.push(e.to);
  }
  for (let l = 0; l < rows.length; l++) rows[l] ??= [];
  return { items, rows };
}

function neighbours(edges) {
  const up = new Map();
  const down = new Map();
  const link = (map, a, b) => {
    if (!map.has(a)) map.set(a, new Set());
    map.get(a).add(b);
  };
  for (const e of edges.filter((e) => e.kind === 'forward')) {
    for (let i = 1; i < e.chain.length; i++) {
      link(up, e.chain[i], e.chain[i - 1]);
      link(down, e.chain[i - 1], e.chain[i]);
    }
  }
  return { up, down };
}

function orderRows(rows, { up, down }) {
  const position = new Map();
  const index = () => rows.forEach((row) => row.forEach((item, i) => position.set(item.id, i)));
  const sortBy = (row, map) => {
    const centre = (item) => {
      const near = [...(map.get(item.id) ?? [])];
      return near.length ? near.reduce((sum, id) => sum + position.get(id), 0) / near.length : position.get(item.id);
    };
    const keyed = row.map((item) => [centre(item), item]);
    keyed.sort((x, y) => x[0] - y[0]);
    keyed.forEach(([, item], i) => { row[i] = item; });
  };
  index();
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let l = 1; l < rows.length; l++) { sortBy(rows[l], up); index(); }
    for (let l = rows.length - 2; l >= 0; l--) { sortBy(rows[l], down); index(); }
  }
}

// x of each item's centre: packed rows, centred, then nudged towards neighbours.
function placeRows(rows, { up, down }) {
  const x = new Map();
  const widest = Math.max(...rows.map((row) => row.reduce((sum, it) => sum + it.w, 0) + NODE_GAP * (row.length - 1)));
  for (const row of rows) {
    let cursor = (widest - (row.reduce((sum, it) => sum + it.w, 0) + NODE_GAP * (row.length - 1))) / 2;
    for (const item of row) {
      x.set(item.id, cursor + item.w / 2);
      cursor += item.w + NODE_GAP;
    }
  }
  for (let round = 0; round < 6; round++) {
    for (const row of rows) {
      const wanted = row.map((item) => {
        const near = [...(up.get(item.id) ?? []), ...(down.get(item.id) ?? [])];
        return near.length ? near.reduce((sum, id) => sum + x.get(id), 0) / near.length : x.get(item.id);
      });
      // Keep the order and the gaps: a forward pass pushes right, a backward pass left.
      for (let i = 0; i < row.length; i++) {
        const min = i ? x.get(row[i - 1].id) + (row[i - 1].w + row[i].w) / 2 + NODE_GAP : -Infinity;
        x.set(row[i].id, Math.max(min, (wanted[i] + x.get(row[i].id)) / 2));
      }
      for (let i = row.length - 2; i >= 0; i--) {
        const max = x.get(row[i + 1].id) - (row[i + 1].w + row[i].w) / 2 - NODE_GAP;
        x.set(row[i].id, Math.min(max, x.get(row[i].id)));
      }
    }
  }
  return x;
}

const bezierMid = (p0, c1, c2, p1) => ({
  x: (p0.x + 3 * c1.x + 3 * c2.x + p1.x) / 8,
  y: (p0.y + 3 * c1.y + 3 * c2.y + p1.y) / 8,
});

// Path data and label position for each edge kind.
function route(e, box, items, x, sideOf) {
  const from = box(e.from);
  const to = box(e.to);
  if (e.kind === 'self') {
    const [px, py] = [from.x + from.w, from.y + NODE_H / 2];
    return { d: `M${px},${py - 8} C${px + 44},${py - 34} ${px + 44},${py + 34} ${px},${py + 8}`, at: { x: px + 40, y: py }, anchor: 'start' };
  }
  if (e.kind === 'flat') {
    // Rightwards below the row, leftwards above it, so a pair both ways stays apart.
    const right = from.x < to.x;
    const y = right ? from.y + NODE_H : from.y;
    const bend = right ? 36 : -36;
    const a = { x: from.x + from.w / 2, y };
    const b = { x: to.x + to.w / 2, y };
    const c1 = { x: a.x, y: y + bend };
    const c2 = { x: b.x, y: y + bend };
    return { d: `M${a.x},${a.y} C${c1.x},${c1.y} ${c2.x},${c2.y} ${b.x},${b.y}`, at: bezierMid(a, c1, c2, b) };
  }
  if (e.kind === 'back') {
    // Up the outer side of the graph, curved so it does not hide a forward edge.
    const side = sideOf(from, to);
    const a = { x: side > 0 ? from.x + from.w : from.x, y: from.y + NODE_H / 2 };
    const b = { x: side > 0 ? to.x + to.w : to.x, y: to.y + NODE_H / 2 };
    const reach = side * (40 + 10 * Math.abs(from.y - to.y) / (NODE_H + LAYER_GAP));
    const outer = side > 0 ? Math.max(a.x, b.x) : Math.min(a.x, b.x);
    const c1 = { x: outer + reach, y: a.y };
    const c2 = { x: c1.x, y: b.y };
    return { d: `M${a.x},${a.y} C${c1.x},${c1.y} ${c2.x},${c2.y} ${b.x},${b.y}`, at: bezierMid(a, c1, c2, b) };
  }
  // Forward: down through the chain's dummies, vertical tangents at every layer.
  const points = [];
  e.chain.forEach((id, i) => {
    const item = items.get(id);
    const top = item.y;
    if (i === 0) points.push(e.bundled === 'out' ? { x: x.get(id), y: top + NODE_H + JUNCTION } : { x: x.get(id) + e.outPort, y: top + NODE_H });
    else if (i === e.chain.length - 1) points.push(e.bundled === 'in' ? { x: x.get(id), y: top - JUNCTION } : { x: x.get(id) + e.inPort, y: top });
    else points.push({ x: x.get(id), y: top }, { x: x.get(id), y: top + NODE_H });
  });
  let d = `M${points[0].x},${points[0].y}`;
  let at;
  for (let i = 1; i < points.length; i++) {
    const [a, b] = [points[i - 1], points[i]];
    if (a.x === b.x && b.y - a.y === NODE_H) { d += ` L${b.x},${b.y}`; continue; }
    const dy = (b.y - a.y) / 2;
    const c1 = { x: a.x, y: a.y + dy };
    const c2 = { x: b.x, y: b.y - dy };
    d += ` C${c1.x},${c1.y} ${c2.x},${c2.y} ${b.x},${b.y}`;
    at ??= bezierMid(a, c1, c2, b);
  }
  return { d, at };
}

// Spreads a node's forward edges over its bottom (out) and top (in) sides.
function assignPorts(edges, items, x) {
  const spread = (list, nodeId, portKey, otherOf) => {
    list.sort((p, q) => x.get(otherOf(p)) - x.get(otherOf(q)));
    const w = items.get(nodeId).w * 0.6;
    list.forEach((e, i) => { e[portKey] = list.length === 1 ? 0 : -w / 2 + (w * i) / (list.length - 1); });
  };
  const forward = edges.filter((e) => e.kind === 'forward');
  for (const id of items.keys()) {
    spread(forward.filter((e) => e.from === id), id, 'outPort', (e) => e.chain[1]);
    spread(forward.filter((e) => e.to === id), id, 'inPort', (e) => e.chain[e.chain.length - 2]);
  }
}

// Forward edges with the same target and label (every state's `cancel`) meet at one
// junction above the target and go on as a single labelled arrow; edges with the same
// source and label (a `retry` to several stages) leave it as one labelled stub.
function bundle(edges, box) {
  const groups = (keyOf) => {
    const byKey = new Map();
    for (const e of edges.filter((e) => e.kind === 'forward' && !e.bundled)) {
      byKey.set(keyOf(e), [...(byKey.get(keyOf(e)) ?? []), e]);
    }
    return [...byKey.values()].filter((group) => group.length > 1);
  };
  const into = groups((e) => `${e.to}\u0000${e.text}`).map((members) => {
    for (const e of members) e.bundled = 'in';
    const to = box(members[0].to);
    const x = to.x + to.w / 2;
    return { ...members[0], members, arrow: true, d: `M${x},${to.y - JUNCTION} L${x},${to.y}`, at: { x, y: to.y - JUNCTION / 2 } };
  });
  const out = groups((e) => `${e.from}\u0000${e.text}`).map((members) => {
    for (const e of members) e.bundled = 'out';
    const from = box(members[0].from);
    const [x, y] = [from.x + from.w / 2, from.y + NODE_H];
    return { ...members[0], members, arrow: false, d: `M${x},${y} L${x},${y + JUNCTION}`, at: { x, y: y + JUNCTION / 2 } };
  });
  return [...into, ...out];
}

export function layout(version) {
  const edges = pairEdges(version);
  const layer = assignLayers(version, edges);
  const { items, rows } = buildLayers(version, edges, layer);
  const near = neighbours(edges);
  orderRows(rows, near);
  const x = placeRows(rows, near);
  for (const item of items.values()) item.y = PAD + 28 + item.layer * (NODE_H + LAYER_GAP);
  assignPorts(edges, items, x);
  const box = (id) => ({ x: x.get(id) - items.get(id).w / 2, y: items.get(id).y, w: items.get(id).w });
  const centre = [...x.values()].reduce((a, b) => a + b, 0) / x.size;
  const sideOf = (a, b) => ((a.x + a.w / 2 + b.x + b.w / 2) / 2 >= centre ? 1 : -1);
  const bundles = bundle(edges, box);
  for (const e of edges) Object.assign(e, route(e, box, items, x, sideOf));
  const nodes = version.states.map((s) => ({ state: s, ...box(s.name) }));
  return { nodes, edges, bundles };
}

function el(name, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

let graphs = 0;

// options: counts (Map state -> number or text), current (state name), visited (Set of
// states), taken (Set of "from\u0000to" pairs).
export function renderGraph(version, { counts = new Map(), current, visited = new Set(), taken = new Set() } = {}) {
  const { nodes, edges, bundles } = layout(version);
  const id = `g${++graphs}`;
  const marker = (name, cls) => el('marker', { id: `${id}-${name}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    el('path', { d: 'M0,0 L10,5 L0,10 z', class: cls }));
  const svg = el('svg', { class: 'graph', 'data-testid': 'graph', role: 'img', 'aria-label': `State graph of ${version.name} version ${version.version}` },
    el('defs', {}, marker('arrow', 'arrow'), marker('taken', 'arrow taken')));
  const edgeLayer = el('g', { class: 'edges' });
  const labelLayer = el('g', { class: 'labels' });
  const nodeLayer = el('g', { class: 'nodes' });
  svg.append(edgeLayer, labelLayer, nodeLayer);
  const bounds = { x0: Infinity, y0: 0, x1: -Infinity, y1: -Infinity };
  const grow = (x0, y0, x1, y1) => {
    bounds.x0 = Math.min(bounds.x0, x0); bounds.y0 = Math.min(bounds.y0, y0);
    bounds.x1 = Math.max(bounds.x1, x1); bounds.y1 = Math.max(bounds.y1, y1);
  };

  const drawEdge = (e, { arrow = true, label = true, isTaken = taken.has(`${e.from}\u0000${e.to}`) } = {}) => {
    const cls = ['edge', e.kind, e.admin && 'admin', e.observed && 'observed', isTaken && 'taken'].filter(Boolean).join(' ');
    edgeLayer.append(el('path', { d: e.d, class: cls, 'marker-end': arrow ? `url(#${id}-${isTaken ? 'taken' : 'arrow'})` : null }));
    for (const [, px, py] of e.d.matchAll(/(-?[\d.]+),(-?[\d.]+)/g)) grow(+px, +py, +px, +py);
    if (!label) return;
    const w = textWidth(e.text, LABEL_FONT) + 8;
    const left = e.anchor === 'start' ? e.at.x : e.at.x - w / 2;
    labelLayer.append(el('g', { class: cls.replace('edge', 'edge-label') },
      el('rect', { x: left, y: e.at.y - 9, width: w, height: 18, rx: 4 }),
      el('text', { x: left + w / 2, y: e.at.y + 4, 'text-anchor': 'middle' }, e.text)));
    grow(left, e.at.y - 9, left + w, e.at.y + 9);
  };
  for (const e of edges) drawEdge(e, { arrow: e.bundled !== 'in', label: !e.bundled });
  for (const b of bundles) drawEdge(b, { arrow: b.arrow, isTaken: b.members.some((e) => taken.has(`${e.from}\u0000${e.to}`)) });

  for (const n of nodes) {
    const s = n.state;
    const cls = ['state-node', s.terminal && 'terminal', s.terminal && `status-${s.status}`,
      s.name === version.initial_state && 'initial', visited.has(s.name) && 'visited', s.name === current && 'current']
      .filter(Boolean).join(' ');
    const g = el('g', { class: cls, 'data-state': s.name, 'data-testid': 'state-node', transform: `translate(${n.x},${n.y})` },
      el('title', {}, s.terminal ? `${s.name} (terminal: ${s.status})\n${s.description}` : `${s.name}\n${s.description}`),
      el('rect', { width: n.w, height: NODE_H, rx: 10 }),
      el('text', { x: n.w / 2, y: NODE_H / 2 + 5, 'text-anchor': 'middle' }, s.name));
    if (s.terminal) g.append(el('rect', { class: 'inner', x: 3, y: 3, width: n.w - 6, height: NODE_H - 6, rx: 8 }));
    const count = counts.get(s.name);
    if (count) {
      const text = String(count);
      const w = Math.max(22, textWidth(text, LABEL_FONT) + 12);
      g.append(el('g', { class: 'count', transform: `translate(${n.w - w / 2},-8)` },
        el('title', {}, `${text} instance(s) in ${s.name}`),
        el('rect', { x: -w / 2, y: -10, width: w, height: 20, rx: 10 }),
        el('text', { y: 4, 'text-anchor': 'middle' }, text)));
    }
    if (s.name === version.initial_state) {
      const cx = n.x + n.w / 2;
      nodeLayer.append(el('circle', { class: 'start', cx, cy: n.y - 24, r: 5 }),
        el('path', { class: 'edge', d: `M${cx},${n.y - 19} L${cx},${n.y}`, 'marker-end': `url(#${id}-arrow)` }));
    }
    nodeLayer.append(g);
    grow(n.x, n.y - 30, n.x + n.w + 14, n.y + NODE_H);
  }

  const [x0, y0] = [bounds.x0 - PAD, bounds.y0 - PAD / 2];
  const [w, h] = [bounds.x1 - bounds.x0 + 2 * PAD, bounds.y1 - bounds.y0 + PAD * 1.5];
  svg.setAttribute('viewBox', `${x0} ${y0} ${w} ${h}`);
  svg.setAttribute('width', w);
  svg.setAttribute('height', h);
  return svg;
}
