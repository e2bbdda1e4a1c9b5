// Browser tests of the Overpass dashboard in a real headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core; no browser is ever
// downloaded), against a running gateway with live traffic.
//
// Environment:
//   OVERPASS_URL          the gateway's API base, e.g. http://127.0.0.1:9180
//   OVERPASS_TOKEN        its bearer token
//   OVERPASS_SCREENSHOTS  folder for the screenshots (default: ../target/screenshots)
//   OVERPASS_DOCS_SCREENSHOT  where to copy the overview screenshot (optional)
//   CHROMIUM              browser binary (default /usr/bin/chromium)
//
// Run by gateway/tests/dashboard.rs, which builds the network-namespace
// test bed, starts the gateway and the traffic, then runs
// `node --test web-ui/tests/`.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const URL_BASE = process.env.OVERPASS_URL;
const TOKEN = process.env.OVERPASS_TOKEN;
const HERE = dirname(fileURLToPath(import.meta.url));
const SHOTS = process.env.OVERPASS_SCREENSHOTS ?? join(HERE, "../../target/screenshots");
if (!URL_BASE || !TOKEN) {
  throw new Error("set OVERPASS_URL and OVERPASS_TOKEN (gateway/tests/dashboard.rs does)");
}

// Without the background-networking flags Chromium tries to reach Google's
// services, which this closed network does not have.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

let context;
let page;
let profile;
/** Console errors and uncaught exceptions, with the phase they happened in. */
const problems = [];
let phase = "load";

/** The API, straight (not through the page). */
async function api(method, path, { body, ifMatch, auth = false } = {}) {
  const headers = { Accept: "application/json" };
  if (auth) headers.Authorization = `Bearer ${TOKEN}`;
  if (body) headers["Content-Type"] = "application/json";
  if (ifMatch != null) headers["If-Match"] = `"${ifMatch}"`;
  const r = await fetch(URL_BASE + path, { method, headers, body: body && JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}
const routeSet = async () => (await api("GET", "/api/v1/routes")).body;

async function until(what, f, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

/** A fresh load of the page at a view (a hash change alone would not reload it). */
async function load(view = "overview") {
  await page.goto("about:blank");
  const resp = await page.goto(`${URL_BASE}/#${view}`);
  return resp;
}

/** Waits for the route form to close; if it does not, fails with what the form says. */
async function formClosed() {
  try {
    await page.locator("#route-dialog").waitFor({ state: "hidden", timeout: 10000 });
  } catch {
    const said = await page.$$eval("#route-form .form-error:not([hidden]), #route-form .field-error:not([hidden])", (els) =>
      els.map((e) => `${e.id}: ${e.textContent}`),
    );
    await page.screenshot({ path: join(SHOTS, "failure-route-form.png") });
    await page.keyboard.press("Escape");
    throw new Error(`the route form stayed open: ${said.join("; ") || "(no message)"}`);
  }
}

const num = async (sel) => Number(await page.locator(sel).first().getAttribute("data-value"));

async function shot(name, { width = 1280, height = 800, scheme = "light", view = "overview", fullPage = false } = {}) {
  await page.setViewportSize({ width, height });
  await page.emulateMedia({ colorScheme: scheme });
  await page.click(`.tabs a[data-view="${view}"]`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(1200);
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), "overpass-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
    colorScheme: "light",
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") problems.push({ phase, text: m.text() });
  });
  page.on("pageerror", (e) => problems.push({ phase, text: `uncaught: ${e.message}` }));
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("the page loads without console errors and shows live traffic", async () => {
  phase = "load";
  const resp = await page.goto(`${URL_BASE}/`);
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()["content-security-policy"], /default-src 'self'/);
  await until("the live indicator", async () => (await page.locator("#live").textContent()).startsWith("live"));
  // Rates come from counter deltas: two polls with traffic between them.
  await until("a non-zero encap rate", async () => (await num("#rate-encap-pps")) > 0);
  await until("a non-zero decap rate", async () => (await num("#rate-decap-pps")) > 0);
  assert.ok((await num("#rate-out-bps")) > 0, "outbound bit rate");
  assert.ok((await num("#rate-in-bps")) > 0, "inbound bit rate");
  // Interfaces, workers, version, uptime.
  const ifs = (await api("GET", "/api/v1/interfaces")).body;
  await until("the interface table", async () => (await page.locator("#ifaces tbody tr").count()) === ifs.interfaces.length);
  const ifText = await page.locator("#ifaces").textContent();
  for (const i of ifs.interfaces) {
    assert.ok(ifText.includes(i.name) && ifText.includes(i.xdp_mode), `${i.name} ${i.xdp_mode} in ${ifText}`);
    for (const s of i.sockets) assert.ok(ifText.includes(`q${s.queue} ${s.xsk_mode}`), ifText);
  }
  const workers = await page.locator("#workers").textContent();
  for (const w of ifs.workers) assert.ok(workers.includes(`worker ${w.worker} → core ${w.core}`), workers);
  const spec = (await api("GET", "/api/v1/openapi.json")).body;
  assert.equal(await page.locator("#fact-version").textContent(), spec.info.version);
  assert.equal(await page.locator("#fact-mode").textContent(), "dataplane");
  assert.match(await page.locator("#fact-uptime").textContent(), /^\d+[smhd]/);
  // The rate chart has drawn lines.
  assert.ok((await page.locator("#chart-pps path.line").count()) >= 2);
  await page.waitForTimeout(1500);
  assert.deepEqual(problems, [], "console errors while loading");
});

/** The table as the page shows it: prefix -> [name, target]. */
async function tableRows() {
  return page.$$eval("#routes-table tbody tr[data-prefix]", (trs) =>
    trs.map((tr) => [tr.dataset.prefix, tr.cells[2].textContent, tr.cells[3].textContent]),
  );
}
const apiRows = (set) => set.routes.map((r) => [r.prefix, r.node ? r.node.name : r.pod.name, r.node ? r.node.underlay_ip : r.pod.interface]);
const byPrefix = (a, b) => a[0].localeCompare(b[0]);

test("the route table equals the API's, and search and sort work", async () => {
  phase = "routes";
  await page.goto(`${URL_BASE}/#routes`);
  const set = await routeSet();
  await until("the route rows", async () => (await page.locator("#routes-table tbody tr[data-prefix]").count()) === set.routes.length);
  assert.deepEqual((await tableRows()).sort(byPrefix), apiRows(set).sort(byPrefix));
  assert.match(await page.locator("#route-count").textContent(), new RegExp(`generation ${set.generation}`));
  // Sort by prefix: ascending by default; clicking flips it.
  const prefixes = async () => (await tableRows()).map((r) => r[0]);
  const asc = await prefixes();
  await page.locator('#routes-table th[data-sort="prefix"] button').click();
  assert.equal(await page.locator('#routes-table th[data-sort="prefix"]').getAttribute("aria-sort"), "descending");
  assert.deepEqual(await prefixes(), [...asc].reverse());
  await page.locator('#routes-table th[data-sort="prefix"] button').click();
  // Search by text, and by an address inside a prefix.
  const node = set.routes.find((r) => r.node).node;
  await page.fill("#route-filter", node.name);
  for (const r of await tableRows()) assert.ok(r.join(" ").includes(node.name), r.join(" "));
  const inside = set.routes.find((r) => r.prefix.endsWith("/24") && r.node);
  const addr = inside.prefix.replace(/\.0\/24$/, ".77");
  await page.fill("#route-filter", addr);
  assert.ok((await prefixes()).includes(inside.prefix), `${addr} is in ${inside.prefix}`);
  await page.fill("#route-filter", "");
  assert.equal((await tableRows()).length, set.routes.length);
  assert.deepEqual(problems, [], "console errors on the routes view");
});

/** A node route that the test bed's gateway accepts: a new prefix to an existing node. */
async function template() {
  const set = await routeSet();
  return set.routes.find((r) => r.node && r.node.encap === "vxlan").node;
}

async function fillNode(prefix, n, extra = {}) {
  await page.fill("#f-prefix", prefix);
  await page.fill("#f-node-name", n.name);
  await page.fill("#f-node-underlay_ip", n.underlay_ip);
  await page.selectOption("#f-node-encap", n.encap);
  await page.fill("#f-node-vni", String(extra.vni ?? n.vni));
  await page.fill("#f-node-port", String(n.port));
  await page.fill("#f-node-vtep_mac", n.vtep_mac ?? "");
}

const NEW = "10.250.0.0/24";
const OTHER = "10.250.2.0/24";

/** A node no route uses yet, on the test bed's underlay (its settings can change freely). */
async function freshNode() {
  const n = await template();
  return { ...n, name: "ui-node", underlay_ip: n.underlay_ip.replace(/\.\d+$/, ".99"), vtep_mac: "02:00:00:00:99:01" };
}

test("adding a route in the form (token asked once) makes it appear in the API", async () => {
  phase = "mutations";
  const n = await freshNode();
  const before = await routeSet();
  assert.ok(!before.routes.some((r) => r.prefix === NEW));
  await page.goto(`${URL_BASE}/#routes`);
  await page.evaluate(() => sessionStorage.clear());
  await page.reload();
  await until("the route rows", async () => (await page.locator("#routes-table tbody tr[data-prefix]").count()) === before.routes.length);
  await page.click("#route-add");
  // No token yet: the token dialog comes first.
  await page.locator("#token-dialog").waitFor({ state: "visible" });
  await page.fill("#token-input", TOKEN);
  await page.click("#token-save");
  await page.locator("#route-dialog").waitFor({ state: "visible" });
  await fillNode(NEW, n);
  await page.click("#route-submit");
  await formClosed();
  const after = await routeSet();
  const added = after.routes.find((r) => r.prefix === NEW);
  assert.ok(added, "the new route is in the API");
  assert.equal(added.node.underlay_ip, n.underlay_ip);
  assert.equal(added.node.vtep_mac, n.vtep_mac);
  assert.equal(after.generation, before.generation + 1);
  await until("the new row", async () => (await page.locator(`#routes-table tr[data-prefix="${NEW}"]`).count()) === 1);
  assert.match(await page.locator("#route-status").textContent(), /Added 10\.250\.0\.0\/24/);
  // The token is in sessionStorage, never in the URL.
  assert.equal(await page.evaluate(() => sessionStorage.getItem("overpass.token")), TOKEN);
  assert.ok(!page.url().includes(TOKEN));
  assert.equal(await page.locator("#token-button").textContent(), "Token set");
});

test("a bad CIDR (or VNI) shows the API's error beside the field and changes nothing", async () => {
  phase = "mutations";
  const n = await template();
  const before = await routeSet();
  await page.click("#route-add");
  await page.locator("#route-dialog").waitFor({ state: "visible" });
  await fillNode("10.250.1.0/33", n);
  await page.click("#route-submit");
  const err = page.locator("#err-prefix");
  await err.waitFor({ state: "visible" });
  assert.ok((await err.textContent()).length > 5, await err.textContent());
  assert.equal(await page.locator("#f-prefix").getAttribute("aria-invalid"), "true");
  assert.ok(await page.locator("#route-dialog").isVisible(), "the form stays open");
  assert.deepEqual(await routeSet(), before, "the API is unchanged");
  // Host bits set: the API's own words, beside the prefix.
  await page.fill("#f-prefix", "10.250.1.1/24");
  await page.click("#route-submit");
  await until("the host-bits message", async () => /host bits|10\.250\.1\.0\/24/.test(await err.textContent()));
  // A VNI beyond 24 bits: a semantic (422) error, beside the VNI.
  await page.fill("#f-prefix", "10.250.1.0/24");
  await page.fill("#f-node-vni", "16777216");
  await page.click("#route-submit");
  const vniErr = page.locator("#err-node-vni");
  await vniErr.waitFor({ state: "visible" });
  assert.ok(await err.isHidden(), "the fixed prefix error is cleared");
  await page.screenshot({ path: join(SHOTS, "route-form-error-1280-light.png") });
  assert.deepEqual(await routeSet(), before, "the API is unchanged");
  await page.click("#route-cancel");
});

test("a stale generation (412) is explained, the table reloaded, and a resubmit applies", async () => {
  phase = "mutations";
  const n = await template();
  await page.locator(`#routes-table tr[data-prefix="${NEW}"] button:has-text("Edit")`).click();
  await page.locator("#route-dialog").waitFor({ state: "visible" });
  assert.equal(await page.locator("#f-prefix").inputValue(), NEW);
  // Someone else changes the set meanwhile.
  const other = await api("POST", "/api/v1/routes", { auth: true, body: { prefix: OTHER, node: n } });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  await page.fill("#f-node-mtu", "1400");
  await page.click("#route-submit");
  const fe = page.locator("#route-form-error");
  await until("the 412 explanation", async () => /changed while you were editing/.test(await fe.textContent()));
  const set = await routeSet();
  assert.equal(set.routes.find((r) => r.prefix === NEW).node.mtu, undefined, "not applied");
  await until("the reloaded table", async () => (await page.locator(`#routes-table tr[data-prefix="${OTHER}"]`).count()) === 1);
  assert.match(await fe.textContent(), new RegExp(`it is now ${set.generation}`));
  // Submitting again applies it on top of the new generation.
  await page.click("#route-submit");
  await formClosed();
  assert.equal((await routeSet()).routes.find((r) => r.prefix === NEW).node.mtu, 1400);
});

test("deleting a route through the confirmation removes it from the API", async () => {
  phase = "mutations";
  for (const prefix of [NEW, OTHER]) {
    await until("the row", async () => (await page.locator(`#routes-table tr[data-prefix="${prefix}"]`).count()) === 1);
    await page.locator(`#routes-table tr[data-prefix="${prefix}"] button:has-text("Delete")`).click();
    await page.locator("#confirm-dialog").waitFor({ state: "visible" });
    await page.click("#confirm-ok");
    await until(`${prefix} gone from the API`, async () => !(await routeSet()).routes.some((r) => r.prefix === prefix));
    await until(`${prefix} gone from the table`, async () => (await page.locator(`#routes-table tr[data-prefix="${prefix}"]`).count()) === 0);
  }
  const set = await routeSet();
  assert.deepEqual((await tableRows()).sort(byPrefix), apiRows(set).sort(byPrefix));
  // Only the refused requests of the tests above may have logged anything.
  const unexpected = problems.filter((p) => !/status of (400|412|422)/.test(p.text));
  assert.deepEqual(unexpected, [], "unexpected console errors while editing");
});

test("peers show encap, MTU, traffic and last seen; drops list every reason", async () => {
  phase = "peers";
  const before = problems.length;
  await page.goto(`${URL_BASE}/#peers`);
  const peers = (await api("GET", "/api/v1/peers")).body.peers;
  await until("the peer rows", async () => (await page.locator("#peers-table tbody tr[data-peer]").count()) === peers.length);
  const busy = peers.find((p) => p.counters.tx_packets > 0);
  const row = page.locator(`#peers-table tr[data-peer="${busy.underlay_ip}"]`);
  await until("a non-zero peer rate and a last-seen time", async () => {
    const rate = Number(await row.locator("td[data-value]").last().getAttribute("data-value"));
    return rate > 0 && /ago|just now/.test(await row.textContent());
  });
  const text = await row.textContent();
  assert.ok(text.includes(busy.name) && text.includes(String(busy.mtu)) && text.includes("VXLAN"), text);

  await page.goto(`${URL_BASE}/#drops`);
  const c = (await api("GET", "/api/v1/counters")).body;
  await until("the drop rows", async () => (await page.locator("#drops-table tbody tr").count()) === c.drops.length);
  const zero = page.locator("#drops-table tbody tr.zero");
  const zeros = c.drops.filter((d) => d.value === 0).length;
  assert.ok(Math.abs((await zero.count()) - zeros) <= 1, "zero rows are dimmed, not hidden");
  // The traffic includes packets to an unrouted address: that reason is counted, bright, with a rate.
  await until("no_route drops on the page", async () => {
    const row = page.locator('#drops-table tr[data-name="no_route"]');
    return Number(await row.getAttribute("data-value")) > 0 && !(await row.getAttribute("class"))?.includes("zero");
  });
  const lit = page.locator('#drops-table tr[data-name="no_route"] th');
  assert.equal(await lit.evaluate((el) => getComputedStyle(el).opacity), "1");
  if (zeros) {
    assert.ok(await zero.first().isVisible());
    const opacity = await zero.first().locator("th").evaluate((el) => getComputedStyle(el).opacity);
    assert.ok(Number(opacity) < 1, `dimmed: opacity ${opacity}`);
  }
  assert.deepEqual(problems.slice(before), []);
});

test("the latency view shows the distribution and percentiles over time from the traffic", async () => {
  phase = "latency";
  const before = problems.length;
  await page.goto(`${URL_BASE}/#latency`);
  await until("a non-empty histogram in the table", async () => Number(await page.locator('#latency-table tr[data-series="total"]').getAttribute("data-count")) > 0);
  assert.ok(Number(await page.locator('#latency-table tr[data-series="total"]').getAttribute("data-p99")) > 0);
  await until("distribution curves per direction", async () => (await page.locator("#chart-dist-dir path.line").count()) >= 1);
  await until("distribution curves per peer", async () => (await page.locator("#chart-dist-peer path.line").count()) >= 1);
  // The percentile axis is HdrHistogram's: 90%, 99%, 99.9% … ticks.
  const ticks = await page.locator("#chart-dist-dir .tick").allTextContents();
  assert.ok(ticks.includes("90%") && ticks.includes("99%"), ticks.join(" "));
  await until("p50/p99/p99.9 over time", async () => (await page.locator("#chart-lat-time path.line").count()) === 3, 20000);
  // The chart's values are non-zero (the legend carries the latest ones).
  const legend = await page.locator("#chart-lat-time .legend").textContent();
  assert.match(legend, /p99[^.]*\d+(\.\d+)? (ns|µs|ms)/, legend);
  await page.click('.tabs a[data-view="overview"]');
  await until("a non-zero p99 on the overview card", async () => (await num("#kpi-p99")) > 0);
  assert.deepEqual(problems.slice(before), []);
});

test("keyboard: visible focus, labelled controls, dialogs close with Escape", async () => {
  phase = "keyboard";
  const before = problems.length;
  await page.setViewportSize({ width: 1280, height: 800 });
  await load("routes");
  await page.waitForSelector("#routes-table tbody tr[data-prefix]");
  // Every control has an accessible name.
  const unlabelled = await page.$$eval("input, select, button, a[href], [tabindex='0']", (els) =>
    els
      .filter((el) => !el.closest("[hidden]") && el.type !== "hidden")
      .filter((el) => {
        const named = el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || (el.labels && el.labels.length) || el.textContent.trim();
        return !named;
      })
      .map((el) => el.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unlabelled, []);
  // Tab order starts with the skip link, then the header and the tabs; focus is visible.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  const order = [];
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press("Tab");
    order.push(
      await page.evaluate(() => {
        const el = document.activeElement;
        const st = getComputedStyle(el);
        return { text: (el.getAttribute("aria-label") || el.textContent).trim().slice(0, 40), outline: st.outlineStyle, width: st.outlineWidth };
      }),
    );
  }
  for (const o of order) assert.ok(o.outline !== "none" && o.width !== "0px", `focus visible on ${o.text}: ${o.outline} ${o.width}`);
  const names = order.map((o) => o.text);
  const tabs = names.indexOf("Overview");
  assert.ok(tabs > 0 && names[tabs + 1] === "Routes", names.join(" | "));
  // The add form opens from the keyboard, focuses its first field, and Escape closes it.
  await page.focus("#route-add");
  await page.keyboard.press("Enter");
  await page.locator("#route-dialog").waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-prefix");
  await page.keyboard.press("Escape");
  await page.locator("#route-dialog").waitFor({ state: "hidden" });
  assert.deepEqual(problems.slice(before), []);
});

test("screenshots: 1280x800 light and dark, and a 390 px wide screen", async () => {
  phase = "screenshots";
  const before = problems.length;
  // One page left open for a while, as on an operator's second screen, so
  // the live charts have a history; then each view, scheme and width.
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.emulateMedia({ colorScheme: "light" });
  await load("overview");
  await page.waitForTimeout(Number(process.env.OVERPASS_SCREENSHOT_WARMUP_MS ?? 25000));
  const overview = await shot("overview-1280-light");
  await shot("overview-1280-dark", { scheme: "dark" });
  await shot("overview-390-light", { width: 390, height: 844, fullPage: true });
  await shot("overview-390-dark", { width: 390, height: 844, scheme: "dark" });
  await shot("latency-1280-light", { view: "latency" });
  await shot("latency-1280-dark", { view: "latency", scheme: "dark" });
  await shot("latency-390-dark", { view: "latency", width: 390, height: 844, scheme: "dark", fullPage: true });
  await shot("routes-1280-light", { view: "routes" });
  await shot("routes-390-light", { view: "routes", width: 390, height: 844 });
  await shot("peers-1280-dark", { view: "peers", scheme: "dark" });
  await shot("drops-1280-light", { view: "drops" });
  // Nothing wider than the narrow screen but the tables' own scroll areas.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const view of ["overview", "routes", "peers", "drops", "latency"]) {
    await page.click(`.tabs a[data-view="${view}"]`);
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `${view} scrolls sideways by ${overflow} px at 390 px`);
  }
  if (process.env.OVERPASS_DOCS_SCREENSHOT) copyFileSync(overview, process.env.OVERPASS_DOCS_SCREENSHOT);
  assert.deepEqual(problems.slice(before), []);
});
