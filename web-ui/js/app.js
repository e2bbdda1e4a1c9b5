// The Overpass dashboard: polls the gateway's API every second and renders
// the overview, peers, drops and latency views; routes.js owns the route
// table and its editing. Rates are computed here from counter deltas.

import { get, request, token, onTokenChange, ApiError } from "./api.js";
import { h, $, $$, si, int, pps, bps, bytes, ns, duration, ago, clock } from "./fmt.js";
import { Plot } from "./plot.js";
import { Routes } from "./routes.js";
import { Latency } from "./latency.js";

const TICK_MS = 1000;
const HISTORY_MS = 300_000;
const VIEWS = ["overview", "routes", "peers", "drops", "latency"];

const state = {
  view: "overview",
  counters: null,
  peers: null,
  latency: null,
  prev: null, // {t, counters, peers} of the previous poll
  rates: {}, // name -> per second
  history: [], // [{t, decap, encap, local, transit, inBps, outBps, drops}]
  lastSeen: new Map(), // underlay ip -> {rx, at (ms) | null, seenBefore}
  peerRates: new Map(), // underlay ip -> {rx, tx, drops} per second
  uptimeBase: null, // {uptime s, at ms}
  generation: null,
  okSince: null,
};

// ---------------------------------------------------------------- header

function setLive(ok, text) {
  const el = $("#live");
  el.classList.toggle("bad", !ok);
  el.querySelector("span").textContent = text;
}

function banner(text) {
  const b = $("#banner");
  b.hidden = !text;
  b.textContent = text || "";
}

function renderTokenButton(has) {
  const b = $("#token-button");
  b.textContent = has ? "Token set" : "Set API token";
  b.classList.toggle("on", has);
  b.setAttribute("aria-label", has ? "API token set for this session: change or forget it" : "Set the API token (needed for changes)");
}

// ---------------------------------------------------------------- token dialog

let tokenWaiters = [];

/** Opens the token dialog; resolves true once a token is set, false if cancelled. */
export function askToken(reason) {
  const d = $("#token-dialog");
  const err = $("#token-error");
  err.hidden = !reason;
  err.textContent = reason || "";
  $("#token-input").value = "";
  $("#token-input").setAttribute("aria-invalid", reason ? "true" : "false");
  if (!d.open) d.showModal();
  $("#token-input").focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function closeToken(result) {
  $("#token-dialog").close();
  const w = tokenWaiters;
  tokenWaiters = [];
  w.forEach((f) => f(result));
}

function setupTokenDialog() {
  $("#token-button").addEventListener("click", () => askToken());
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("#token-input").value.trim();
    if (!v) {
      const err = $("#token-error");
      err.hidden = false;
      err.textContent = "Enter the token, or cancel.";
      $("#token-input").setAttribute("aria-invalid", "true");
      return;
    }
    token.set(v);
    closeToken(true);
  });
  $("#token-cancel").addEventListener("click", () => closeToken(false));
  $("#token-forget").addEventListener("click", () => {
    token.set("");
    closeToken(false);
  });
  $("#token-dialog").addEventListener("cancel", () => closeToken(false));
  onTokenChange(renderTokenButton);
  renderTokenButton(!!token.get());
}

/** Resolves true once a token is set (asking for it if none is). */
export async function ensureToken() {
  return !!token.get() || askToken();
}

/**
 * Runs a mutation; on 401/403 asks for the token (once) and retries.
 * Other errors are thrown to the caller.
 */
export async function withToken(fn) {
  if (!token.get() && !(await askToken())) throw new ApiError(401, "authorization", "no token given");
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      if (await askToken(`The gateway refused the token: ${e.message}`)) return fn();
    }
    throw e;
  }
}

// ---------------------------------------------------------------- navigation

function showView(name) {
  if (!VIEWS.includes(name)) name = "overview";
  state.view = name;
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== name;
  for (const a of $$(".tabs a")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Overpass gateway`;
  if (name === "routes") routes.load();
  renderAll();
}

// ---------------------------------------------------------------- polling

const byName = (list) => Object.fromEntries(list.map((c) => [c.name, c.value]));

async function poll() {
  const t = performance.now();
  let counters;
  let peers;
  let latency;
  try {
    [counters, peers, latency] = await Promise.all([get("/api/v1/counters"), get("/api/v1/peers"), get("/api/v1/latency")]);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setLive(false, "token needed to read");
      banner("This gateway requires the API token for reads (api.read_requires_token). Set it with the button at the top right.");
    } else {
      setLive(false, `disconnected · ${e.message}`);
    }
    return;
  }
  banner("");
  state.counters = counters;
  state.peers = peers;
  state.latency = latency;
  const cur = { t, ev: byName(counters.events), dr: byName(counters.drops), xdp: byName(counters.xdp), total: counters.total_drops, peers };
  computeRates(state.prev, cur);
  state.prev = cur;
  if (peers.generation !== state.generation) {
    state.generation = peers.generation;
    $("#fact-generation").textContent = `generation ${peers.generation}`;
    routes.generationSeen(peers.generation);
  }
  await lat.poll(latency, peers, state.view === "latency");
  setLive(true, `live · ${clock(new Date())}`);
  renderAll();
}

function computeRates(prev, cur) {
  const now = Date.now();
  for (const p of cur.peers.peers) {
    const seen = state.lastSeen.get(p.underlay_ip);
    if (!seen) state.lastSeen.set(p.underlay_ip, { rx: p.counters.rx_packets, at: null, before: p.counters.rx_packets > 0 });
    else if (p.counters.rx_packets !== seen.rx) {
      seen.rx = p.counters.rx_packets;
      seen.at = now;
    }
  }
  if (!prev) return;
  const dt = (cur.t - prev.t) / 1000;
  if (dt <= 0) return;
  const d = (a, b) => Math.max(0, (a ?? 0) - (b ?? 0)) / dt;
  const r = {};
  for (const k of Object.keys(cur.ev)) r[`ev.${k}`] = d(cur.ev[k], prev.ev[k]);
  for (const k of Object.keys(cur.dr)) r[`drop.${k}`] = d(cur.dr[k], prev.dr[k]);
  for (const k of Object.keys(cur.xdp)) r[`xdp.${k}`] = d(cur.xdp[k], prev.xdp[k]);
  r.drops = d(cur.total, prev.total);
  const prevPeers = new Map(prev.peers.peers.map((p) => [p.underlay_ip, p.counters]));
  let inB = 0;
  let outB = 0;
  for (const p of cur.peers.peers) {
    const pc = prevPeers.get(p.underlay_ip);
    if (!pc) continue;
    const pr = {
      rx: d(p.counters.rx_packets, pc.rx_packets),
      tx: d(p.counters.tx_packets, pc.tx_packets),
      rxB: d(p.counters.rx_bytes, pc.rx_bytes) * 8,
      txB: d(p.counters.tx_bytes, pc.tx_bytes) * 8,
      drops: d(p.counters.drops, pc.drops),
    };
    state.peerRates.set(p.underlay_ip, pr);
    inB += pr.rxB;
    outB += pr.txB;
  }
  r.inBps = inB;
  r.outBps = outB;
  state.rates = r;
  state.history.push({
    t: now,
    decap: r["ev.decap_to_pod"],
    encap: r["ev.encap_to_peer"],
    local: r["ev.pod_to_pod"],
    transit: r["ev.transit"],
    inBps: inB,
    outBps: outB,
  });
  while (state.history.length && state.history[0].t < now - HISTORY_MS - 5000) state.history.shift();
}

// ---------------------------------------------------------------- rendering

function setValue(id, value, text) {
  const el = $(id);
  el.dataset.value = String(value ?? 0);
  el.textContent = text;
}

let ppsPlot;
let bpsPlot;

function renderOverview() {
  const r = state.rates;
  setValue("#rate-decap-pps", r["ev.decap_to_pod"], pps(r["ev.decap_to_pod"]));
  setValue("#rate-in-bps", r.inBps, `${bps(r.inBps)} in from peers`);
  setValue("#rate-encap-pps", r["ev.encap_to_peer"], pps(r["ev.encap_to_peer"]));
  setValue("#rate-out-bps", r.outBps, `${bps(r.outBps)} out to peers`);
  setValue("#rate-local-pps", r["ev.pod_to_pod"], pps(r["ev.pod_to_pod"]));
  setValue("#rate-transit-pps", r["ev.transit"], `${pps(r["ev.transit"])} transit`);
  setValue("#rate-drops", r.drops, si(r.drops, "/s"));
  $("#rate-drops").classList.toggle("warn", r.drops > 0);
  const c = state.counters;
  if (c) $("#total-drops").textContent = `${int(c.total_drops)} since start`;
  const li = lat.lastInterval("total");
  setValue("#kpi-p99", li?.p99 ?? 0, li ? `p99 ${ns(li.p99)}` : "–");
  $("#kpi-p50").textContent = li ? `p50 ${ns(li.p50)} · p99.9 ${ns(li.p999)}` : "no packets in the last second";

  const hist = state.history;
  const series = (key, name, color) => ({ name, color, points: hist.map((p) => [p.t, p[key]]) });
  const now = Date.now();
  ppsPlot.update(
    [series("decap", "decap", 0), series("encap", "encap", 1), series("local", "pod ↔ pod", 2), series("transit", "transit", 3)],
    now,
  );
  bpsPlot.update([series("inBps", "in from peers", 0), series("outBps", "out to peers", 1)], now);

  // Peers (compact).
  const peers = state.peers?.peers ?? [];
  $("#peers-mini tbody").replaceChildren(
    ...(peers.length
      ? peers.map((p) => {
          const pr = state.peerRates.get(p.underlay_ip) ?? {};
          return h("tr", {}, [
            h("td", {}, [h("b", {}, p.name), " ", h("span", { class: "muted" }, p.underlay_ip)]),
            h("td", { class: "num" }, pps(pr.rx)),
            h("td", { class: "num" }, pps(pr.tx)),
            h("td", { class: "seen" }, seenText(p.underlay_ip)),
          ]);
        })
      : [emptyRow(4, "no remote nodes in the route set")]),
  );
  $("#drops-mini-note").textContent = c && !c.total_drops ? "No frame dropped since start." : "";
  // Drops (top 6 by count, zero rows dimmed).
  const drops = [...(c?.drops ?? [])].sort((a, b) => b.value - a.value).slice(0, 6);
  $("#drops-mini tbody").replaceChildren(
    ...drops.map((dr) =>
      h("tr", { class: dr.value ? "" : "zero" }, [
        h("td", { title: dr.description }, dr.name),
        h("td", { class: "num" }, int(dr.value)),
        h("td", { class: "num" }, si(state.rates[`drop.${dr.name}`] ?? 0)),
      ]),
    ),
  );
}

function seenText(ip) {
  const s = state.lastSeen.get(ip);
  if (!s) return "–";
  if (s.at != null) return ago(Date.now() - s.at);
  return s.before ? "before page load" : "never";
}

const emptyRow = (cols, text) => h("tr", { class: "empty" }, [h("td", { colspan: cols }, text)]);

function renderPeers() {
  const peers = state.peers?.peers ?? [];
  $("#peer-count").textContent = `${peers.length} remote node${peers.length === 1 ? "" : "s"} · route set generation ${state.peers?.generation ?? "–"}`;
  $("#peers-table tbody").replaceChildren(
    ...(peers.length
      ? peers.map((p) => {
          const pr = state.peerRates.get(p.underlay_ip) ?? {};
          const c = p.counters;
          const traffic = (pkts, byts, rate, bits) => [
            h("span", { class: "rate" }, pps(rate)),
            h("span", { class: "muted" }, ` · ${bps(bits)}`),
            h("br"),
            h("span", { class: "muted small" }, `${int(pkts)} pkts · ${bytes(byts)}`),
          ];
          return h("tr", { dataset: { peer: p.underlay_ip } }, [
            h("th", { scope: "row" }, [p.name, h("br"), h("span", { class: "mono muted" }, p.underlay_ip)]),
            h("td", { class: "nowrap" }, p.encap === "ipip" ? "IP-in-IP" : ["VXLAN", h("br"), h("span", { class: "muted small" }, `VNI ${p.vni} · port ${p.port}`)]),
            h("td", { class: "num" }, p.mtu),
            h("td", { class: p.next_hop_mac ? "mono" : "warn" }, p.next_hop_mac ?? "unresolved"),
            h("td", { class: "num", dataset: { value: pr.rx ?? 0 } }, traffic(c.rx_packets, c.rx_bytes, pr.rx, pr.rxB)),
            h("td", { class: "num", dataset: { value: pr.tx ?? 0 } }, traffic(c.tx_packets, c.tx_bytes, pr.tx, pr.txB)),
            h("td", { class: `num ${c.drops ? "warn" : ""}` }, [int(c.drops), pr.drops ? h("span", { class: "muted" }, ` (${si(pr.drops)}/s)`) : null]),
            h("td", { class: "seen" }, seenText(p.underlay_ip)),
            h("td", { class: "mono small" }, p.prefixes.join(", ")),
          ]);
        })
      : [emptyRow(9, "The route set has no remote nodes.")]),
  );
}

function counterRows(list, prefix, { describe = false } = {}) {
  return list.map((c) => {
    const rate = state.rates[`${prefix}.${c.name}`] ?? 0;
    return h("tr", { class: c.value ? "" : "zero", dataset: { name: c.name, value: c.value } }, [
      h("th", { scope: "row", class: "mono" }, c.name),
      describe ? h("td", {}, c.description) : null,
      h("td", { class: "num" }, int(c.value)),
      h("td", { class: "num" }, `${si(rate)}/s`),
    ]);
  });
}

function renderDrops() {
  const c = state.counters;
  if (!c) return;
  const nonzero = c.drops.filter((d) => d.value).length;
  $("#drops-total").textContent = `${int(c.total_drops)} dropped since start · ${si(state.rates.drops ?? 0)}/s now · ${nonzero} of ${c.drops.length} reasons seen`;
  $("#drops-table tbody").replaceChildren(...counterRows(c.drops, "drop", { describe: true }));
  $("#events tbody").replaceChildren(...counterRows(c.events, "ev"));
  $("#xdp tbody").replaceChildren(...(c.xdp.length ? counterRows(c.xdp, "xdp") : [emptyRow(3, "no dataplane (api-only)")]));
}

function renderHeader() {
  const c = state.counters;
  const badge = $("#drops-badge");
  if (c) {
    const rate = state.rates.drops ?? 0;
    badge.hidden = !rate;
    badge.textContent = rate ? `${si(rate)}/s` : "";
    badge.title = "drops per second now";
  }
  if (state.uptimeBase) {
    const { uptime, at } = state.uptimeBase;
    $("#fact-uptime").textContent = duration(uptime + (Date.now() - at) / 1000);
  }
}

function renderAll() {
  renderHeader();
  if (state.view === "overview") renderOverview();
  else if (state.view === "peers") renderPeers();
  else if (state.view === "drops") renderDrops();
  else if (state.view === "latency") lat.render();
}

// ---------------------------------------------------------------- static facts

async function loadFacts() {
  try {
    const spec = await get("/api/v1/openapi.json");
    $("#fact-version").textContent = spec.info?.version ?? "–";
  } catch {
    /* shown as – */
  }
  try {
    const ifs = await get("/api/v1/interfaces");
    $("#fact-mode").textContent = ifs.mode;
    $("#ifaces tbody").replaceChildren(
      ...(ifs.interfaces.length
        ? ifs.interfaces.map((i) =>
            h("tr", {}, [
              h("th", { scope: "row", class: "mono" }, i.name),
              h("td", {}, i.role),
              h("td", {}, h("span", { class: `tag ${i.xdp_mode}` }, i.xdp_mode)),
              h(
                "td",
                {},
                i.sockets.length
                  ? i.sockets.map((s) => h("span", { class: `tag ${s.xsk_mode === "zero-copy" ? "native" : "generic"}`, title: `queue ${s.queue}: ${s.xsk_mode}` }, `q${s.queue} ${s.xsk_mode}`))
                  : "–",
              ),
            ]),
          )
        : [emptyRow(4, "no dataplane interfaces (api-only)")]),
    );
    $("#workers").replaceChildren(
      ...(ifs.workers.length ? ifs.workers.map((w) => h("li", { class: "tag" }, `worker ${w.worker} → core ${w.core}`)) : [h("li", { class: "muted" }, "no workers")]),
    );
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) console.warn("interfaces:", e.message);
  }
  try {
    const text = (await request("GET", "/metrics", { text: true })).body;
    const m = text.match(/^overpass_uptime_seconds ([0-9.e+]+)$/m);
    if (m) state.uptimeBase = { uptime: Number(m[1]), at: Date.now() };
  } catch {
    /* uptime shown as – */
  }
}

// ---------------------------------------------------------------- start

const routes = new Routes({ withToken, ensureToken, onGeneration: (g) => ($("#fact-generation").textContent = `generation ${g}`) });
const lat = new Latency({ withToken });

function start() {
  setupTokenDialog();
  ppsPlot = new Plot($("#chart-pps"), { kind: "time", yFormat: (v) => si(v), label: "Packets per second by direction", windowMs: HISTORY_MS, height: 190 });
  bpsPlot = new Plot($("#chart-bps"), { kind: "time", yFormat: (v) => si(v, "b/s"), label: "Underlay bits per second", windowMs: HISTORY_MS, height: 190 });
  routes.setup();
  lat.setup();
  window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
  onTokenChange(() => loadFacts());
  showView(location.hash.slice(1) || "overview");
  loadFacts();
  const loop = async () => {
    await poll();
    setTimeout(loop, TICK_MS);
  };
  loop();
  // Keep "uptime" and "last seen" ticking between polls.
  setInterval(renderHeader, 1000);
}

start();
