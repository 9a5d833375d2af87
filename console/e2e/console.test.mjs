// End-to-end tests of the web console: headless Chromium (Debian's, driven by
// playwright-core) against a real server with the example definitions deployed.
//
//   BASE_URL=http://127.0.0.1:8080 API_KEY=<admin key> SCREENSHOTS=dir \
//   [CHROMIUM=/usr/bin/chromium] node console/e2e/console.test.mjs
//
// Prints one line per test (ok / FAILED) and exits non-zero when one fails. Every wait
// is bounded; nothing sleeps for a fixed time.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';

const BASE_URL = process.env.BASE_URL?.replace(/\/$/, '');
const API_KEY = process.env.API_KEY;
const SCREENSHOTS = process.env.SCREENSHOTS;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BASE_URL || !API_KEY || !SCREENSHOTS) {
  console.error('set BASE_URL, API_KEY and SCREENSHOTS');
  process.exit(2);
}
mkdirSync(SCREENSHOTS, { recursive: true });

const TIMEOUT = 10_000;
const DEFINITION = 'document-processing';

// ------------------------------------------------------------------ the API, directly

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${API_KEY}` };
  if (method === 'POST') headers['Idempotency-Key'] = randomUUID();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(BASE_URL + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT) });
  const data = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

const start = () => api(`/v1/definitions/${DEFINITION}/instances`, {
  method: 'POST', body: { input: { document_url: 's3://e2e/1.pdf' }, version: 1 } });
const act = (id, action) => api(`/v1/instances/${id}/actions/${action}`, { method: 'POST' });

// ------------------------------------------------------------------ the browser

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  timeout: 30_000,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const scriptErrors = [];

async function newPage(options) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (error) => scriptErrors.push(`${page.url()}: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of 40[49]/.test(message.text())) scriptErrors.push(`${page.url()}: ${message.text()}`);
  });
  return page;
}

const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);
const shot = (page, name) => page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });

// Opens a console page, entering the key when the form asks for it.
async function open(page, path) {
  await page.goto(BASE_URL + path);
  const form = byTestId(page, 'key-form');
  await page.waitForSelector('#main > :not(noscript):not(p.muted)');
  if (await form.isVisible()) {
    await byTestId(page, 'key-input').fill(API_KEY);
    await byTestId(page, 'key-submit').click();
  }
}

const nodeStates = (page) => byTestId(page, 'graph').locator('[data-testid="state-node"]')
  .evaluateAll((nodes) => nodes.map((n) => ({ state: n.dataset.state, text: n.querySelector('text').textContent })));

const currentNode = (page) => page.waitForFunction(
  () => document.querySelector('[data-testid="graph"] [data-testid="state-node"].current')?.dataset.state);

async function waitForState(page, state) {
  await page.waitForFunction((s) => document.querySelector('[data-testid="instance-state"]')?.textContent === s, state);
  assert.equal(await (await currentNode(page)).jsonValue(), state);
}

const timelineCount = (page) => byTestId(page, 'timeline-entry').count();

// ------------------------------------------------------------------ the tests

let failures = 0;
async function test(name, body) {
  const started = Date.now();
  const took = () => `(${((Date.now() - started) / 1000).toFixed(1)} s)`;
  try {
    await body();
    console.log(`ok      ${name} ${took()}`);
  } catch (error) {
    failures++;
    console.log(`FAILED  ${name} ${took()}\n        ${String(error.stack ?? error).split('\n').slice(0, 6).join('\n        ')}`);
  }
}

const page = await newPage({ viewport: { width: 1280, height: 900 } });
const followed = await start();
await act(followed.id, 'validate');

await test('(a) the key form, then home lists document-processing', async () => {
  await page.goto(`${BASE_URL}/console/`);
  await byTestId(page, 'key-form').waitFor();
  await byTestId(page, 'key-input').fill(API_KEY);
  await byTestId(page, 'key-submit').click();
  await byTestId(page, 'home').waitFor();
  await byTestId(page, `definition-${DEFINITION}`).waitFor();
  await shot(page, 'home');
});

for (const version of [1, 2]) {
  await test(`(b) the graph of ${DEFINITION} v${version} has a node for every state`, async () => {
    const manifest = await api(`/v1/definitions/${DEFINITION}/versions/${version}`);
    await open(page, `/console/definitions/${DEFINITION}/versions/${version}`);
    await byTestId(page, 'graph').waitFor();
    const nodes = await nodeStates(page);
    const expected = manifest.states.map((s) => s.name).sort();
    assert.deepEqual(nodes.map((n) => n.state).sort(), expected);
    for (const n of nodes) assert.equal(n.text, n.state);
    const terminal = await byTestId(page, 'graph').locator('.state-node.terminal').evaluateAll((ns) => ns.map((n) => n.dataset.state).sort());
    assert.deepEqual(terminal, manifest.states.filter((s) => s.terminal).map((s) => s.name).sort());
    if (version === 2) await byTestId(page, 'diff').waitFor();
    await shot(page, version === 2 ? 'version-v2-diff' : 'version-v1');
  });
}

await test('(c) an instance page shows its current state highlighted and its history', async () => {
  await open(page, `/console/instances/${followed.id}`);
  await waitForState(page, 'VALIDATING');
  const history = await api(`/v1/instances/${followed.id}/history`);
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="timeline-entry"]').length === n, history.items.length);
  assert.equal(await byTestId(page, 'instance-status').textContent(), 'running');
  const visited = await byTestId(page, 'graph').locator('.state-node.visited').evaluateAll((ns) => ns.map((n) => n.dataset.state).sort());
  assert.deepEqual(visited, ['UPLOADED', 'VALIDATING']);
  await byTestId(page, 'effects').waitFor();
  await shot(page, 'instance');
});

await test('(d) an action made through the API appears without a reload', async () => {
  await page.evaluate(() => { window.notReloaded = true; });
  const before = await timelineCount(page);
  await act(followed.id, 'format');
  await waitForState(page, 'FORMATTING');
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="timeline-entry"]').length === n, before + 1);
  assert.equal(await page.evaluate(() => window.notReloaded), true);
});

await test('(e) an admin cancel from the page lands in history with its reason', async () => {
  const reason = `e2e cancel ${randomUUID()}`;
  await byTestId(page, 'admin-cancel').click();
  await byTestId(page, 'confirm-reason').fill(reason);
  await byTestId(page, 'confirm-submit').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="instance-status"]')?.textContent === 'cancelled');
  await waitForState(page, 'CANCELLED');
  const history = await api(`/v1/instances/${followed.id}/history`);
  const last = history.items.at(-1);
  assert.equal(last.trigger.kind, 'admin');
  assert.equal(last.trigger.name, 'cancel');
  assert.equal(last.trigger.payload?.reason, reason);
  await shot(page, 'after-cancel');
});

await test('(f) a deep link reloaded shows the same page', async () => {
  const url = page.url();
  await page.reload();
  await waitForState(page, 'CANCELLED');
  assert.equal(page.url(), url);
  assert.equal(await timelineCount(page), (await api(`/v1/instances/${followed.id}/history`)).items.length);
});

await test('(g) the instances list filters by state', async () => {
  const waiting = await start();
  await open(page, '/console/instances');
  await byTestId(page, 'instances-table').waitFor();
  await byTestId(page, 'filter-definition').selectOption(DEFINITION);
  await byTestId(page, 'filter-state').fill('UPLOADED');
  await byTestId(page, 'filter-submit').click();
  await page.waitForURL(/state=UPLOADED/);
  await page.locator(`[data-testid="instances-table"] a[title="${waiting.id}"]`).waitFor();
  const states = await byTestId(page, 'instances-table').locator('tbody tr td:nth-child(3)').allTextContents();
  assert.ok(states.length > 0);
  assert.ok(states.every((s) => s === 'UPLOADED'), `states listed: ${states}`);
  assert.equal(await page.locator(`[data-testid="instances-table"] a[title="${followed.id}"]`).count(), 0);
  await shot(page, 'instances');
});

await test('(h) a phone renders the instance page without horizontal scrolling', async () => {
  const phone = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await open(phone, `/console/instances/${followed.id}`);
  await waitForState(phone, 'CANCELLED');
  const overflow = await phone.evaluate(() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]);
  assert.ok(overflow[0] <= overflow[2] && overflow[1] <= overflow[2], `scroll widths ${overflow[0]}/${overflow[1]} > ${overflow[2]}`);
  await shot(phone, 'phone');
});

await test('no script errors or policy violations on any page', async () => {
  assert.deepEqual(scriptErrors, []);
});

await browser.close();
process.exit(failures ? 1 : 0);
