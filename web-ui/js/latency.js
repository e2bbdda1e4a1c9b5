// Latency: the HdrHistogram percentile distributions (x = 1/(1-p) on a log
// axis, as HdrHistogram's plotter draws them) per direction and per peer,
// and p50 / p99 / p99.9 per second, computed from the difference between
// successive fetches of each histogram's buckets.

import { get, request, ApiError } from "./api.js";
import { h, $, ns, int, clock } from "./fmt.js";
import { Plot, percentileX } from "./plot.js";

const HISTORY_MS = 300_000;

/** Value at quantile q of buckets [{value_ns, count}] sorted by value. */
export function quantile(buckets, total, q) {
  if (!total) return null;
  const want = Math.max(1, Math.ceil(q * total));
  let cum = 0;
  for (const b of buckets) {
    cum += b.count;
    if (cum >= want) return b.value_ns;
  }
  return buckets.length ? buckets[buckets.length - 1].value_ns : null;
}

/** Step curve of the percentile distribution: [[1/(1-p), value], …]. */
export function distribution(buckets) {
  const total = buckets.reduce((a, b) => a + b.count, 0);
  if (!total) return [];
  const capX = 2 * total;
  const x = (p) => Math.min(capX, p >= 1 ? capX : percentileX(p));
  const pts = [];
  let cum = 0;
  for (const b of buckets) {
    const p0 = cum / total;
    cum += b.count;
    pts.push([x(p0), b.value_ns], [x(cum / total), b.value_ns]);
  }
  return pts;
}

export class Latency {
  constructor({ withToken }) {
    this.withToken = withToken;
    this.hists = new Map(); // key -> {name, since, buckets, summary}
    this.history = new Map(); // key -> [{t, p50, p99, p999}]
    this.report = null;
  }

  setup() {
    this.dirPlot = new Plot($("#chart-dist-dir"), { kind: "percentile", yFormat: ns, label: "Latency by percentile, per direction", height: 230, empty: "no packets yet" });
    this.peerPlot = new Plot($("#chart-dist-peer"), { kind: "percentile", yFormat: ns, label: "Latency by percentile, per peer", height: 230, empty: "no packets to or from peers yet" });
    this.timePlot = new Plot($("#chart-lat-time"), { kind: "time", yFormat: ns, label: "Latency percentiles per second", windowMs: HISTORY_MS, height: 200 });
    $("#lat-series").addEventListener("change", () => this.render());
    const log = $("#lat-log");
    const applyLog = () => [this.dirPlot, this.peerPlot, this.timePlot].forEach((p) => p.setLog(log.checked));
    log.addEventListener("change", applyLog);
    applyLog();
    $("#latency-reset").addEventListener("click", async () => {
      try {
        await this.withToken(() => request("POST", "/api/v1/latency/reset"));
        this.hists.clear();
        this.history.clear();
        $("#latency-since").textContent = "histograms reset";
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) $("#latency-since").textContent = `reset failed: ${e.message}`;
      }
    });
  }

  /** Fetches every non-empty histogram and records the last second's percentiles. */
  async poll(report, peers) {
    this.report = report;
    const sel = [["total", "all packets", ""]];
    for (const d of report.directions) if (d.summary.count) sel.push([`direction=${d.direction}`, d.direction, `?direction=${d.direction}`]);
    for (const p of report.peers) {
      if (p.summary.count && p.underlay_ip) sel.push([`peer=${p.underlay_ip}`, `${p.name ?? "?"} ${p.underlay_ip}`, `?peer=${p.underlay_ip}`]);
    }
    const now = Date.now();
    const got = await Promise.allSettled(sel.map(([, , q]) => get(`/api/v1/latency/histogram${q}`)));
    got.forEach((res, i) => {
      if (res.status !== "fulfilled") return;
      const [key, name] = sel[i];
      const hist = res.value;
      const prev = this.hists.get(key);
      this.hists.set(key, { name, since: hist.since, buckets: hist.buckets, summary: hist.summary });
      if (!prev) return;
      // The last interval: this fetch minus the previous one (after a reset,
      // everything since the reset).
      const before = new Map(prev.since === hist.since ? prev.buckets.map((b) => [b.value_ns, b.count]) : []);
      const delta = [];
      let total = 0;
      for (const b of hist.buckets) {
        const c = b.count - (before.get(b.value_ns) ?? 0);
        if (c > 0) {
          delta.push({ value_ns: b.value_ns, count: c });
          total += c;
        }
      }
      const hs = this.history.get(key) ?? [];
      hs.push(total ? { t: now, n: total, p50: quantile(delta, total, 0.5), p99: quantile(delta, total, 0.99), p999: quantile(delta, total, 0.999) } : { t: now, n: 0, p50: null, p99: null, p999: null });
      while (hs.length && hs[0].t < now - HISTORY_MS - 5000) hs.shift();
      this.history.set(key, hs);
    });
    // Keys no longer reported (reset, or a peer gone) stop being drawn.
    for (const key of this.hists.keys()) if (!sel.some(([k]) => k === key)) this.hists.delete(key);
    this.syncSelect(sel);
  }

  syncSelect(sel) {
    const s = $("#lat-series");
    const have = [...s.options].map((o) => o.value).join("|");
    const want = sel.map(([k]) => k).join("|");
    if (have === want) return;
    const cur = s.value;
    s.replaceChildren(...sel.map(([k, name]) => h("option", { value: k }, k === "total" ? name : k.startsWith("peer=") ? `peer ${name}` : name)));
    s.value = sel.some(([k]) => k === cur) ? cur : "total";
  }

  /** The last second's percentiles of a series, or null without packets. */
  lastInterval(key) {
    const hs = this.history.get(key);
    const last = hs?.[hs.length - 1];
    return last && last.n && Date.now() - last.t < 3000 ? last : null;
  }

  render() {
    const r = this.report;
    if (!r) return;
    $("#latency-metric").textContent = `Measured: ${r.metric}.`;
    $("#latency-since").textContent = `accumulating since ${clock(new Date(r.since * 1000))}`;
    const curves = (prefix) =>
      [...this.hists.entries()]
        .filter(([k]) => k.startsWith(prefix))
        .map(([k, v]) => ({
          name: v.name,
          color: colorOf(k),
          points: distribution(v.buckets),
          summary: `p99 ${ns(v.summary.p99_ns)} · max ${ns(v.summary.max_ns)}`,
        }));
    this.dirPlot.update(curves("direction="));
    this.peerPlot.update(curves("peer="));
    const key = $("#lat-series").value || "total";
    const hs = this.history.get(key) ?? [];
    this.timePlot.update(
      [
        { name: "p50", color: 0, points: hs.map((p) => [p.t, p.p50]) },
        { name: "p99", color: 1, points: hs.map((p) => [p.t, p.p99]) },
        { name: "p99.9", color: 3, points: hs.map((p) => [p.t, p.p999]) },
      ],
      Date.now(),
    );
    const rows = [["all packets", r.total, "total"]];
    for (const d of r.directions) rows.push([d.direction, d.summary, `direction=${d.direction}`]);
    for (const p of r.peers) rows.push([`peer ${p.name ?? "?"} ${p.underlay_ip ?? `slot ${p.slot}`}`, p.summary, `peer=${p.underlay_ip}`]);
    $("#latency-table tbody").replaceChildren(
      ...rows.map(([name, s, key]) =>
        h("tr", { class: s.count ? "" : "zero", dataset: { series: key, count: s.count, p99: s.p99_ns } }, [
          h("th", { scope: "row" }, [h("i", { class: `swatch c${colorOf(key) % 8}`, "aria-hidden": "true" }), name]),
          h("td", { class: "num" }, int(s.count)),
          ...[s.min_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.p99_9_ns, s.p99_99_ns, s.max_ns].map((v) => h("td", { class: "num" }, s.count ? ns(v) : "–")),
        ]),
      ),
    );
  }
}

/** A stable colour per series key. */
const COLORS = new Map([
  ["total", 7],
  ["direction=decap", 0],
  ["direction=encap", 1],
  ["direction=local", 2],
  ["direction=transit", 3],
  ["direction=none", 6],
]);
let nextPeerColor = 0;
function colorOf(key) {
  if (!COLORS.has(key)) COLORS.set(key, [0, 1, 2, 3, 4, 5][nextPeerColor++ % 6]);
  return COLORS.get(key);
}
