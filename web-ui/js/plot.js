// A small SVG line chart: a time axis (live rates, percentiles over time)
// or a log-scaled percentile axis (HdrHistogram percentile distribution,
// x = 1/(1-percentile), labelled 90%, 99%, 99.9% …). No dependencies.

import { h, clock } from "./fmt.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text != null) el.textContent = text;
  return el;
}

/** A "nice" number >= v: 1, 2, 2.5 or 5 times a power of ten. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function linearTicks(max, n = 4) {
  const step = niceCeil(max / n);
  const top = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  return { top, ticks };
}

/** "99.9%" for x = 1/(1-p) = 1000. */
export function percentileLabel(x) {
  if (x <= 1) return "0%";
  const p = 100 * (1 - 1 / x);
  const digits = Math.max(0, Math.round(Math.log10(x)) - 2);
  return `${p.toFixed(digits)}%`;
}

/** x coordinate of a percentile (0..1) on the percentile axis. */
export const percentileX = (p) => 1 / (1 - p);

/**
 * new Plot(container, {kind: "time" | "percentile", yFormat, label,
 *   height, windowMs}).update([{name, points: [[x, y|null], …]}, …])
 */
export class Plot {
  constructor(container, opts) {
    this.opts = { kind: "time", height: 200, windowMs: 300_000, yFormat: String, ...opts };
    this.series = [];
    this.root = h("figure", { class: "plot" });
    this.svgWrap = h("div", { class: "plot-area" });
    this.legend = h("figcaption", { class: "legend" });
    this.root.append(this.svgWrap, this.legend);
    container.append(this.root);
    this.hover = null;
    new ResizeObserver(() => this.render()).observe(this.svgWrap);
  }

  /** Switches the value axis between linear and logarithmic. */
  setLog(on) {
    this.opts.yLog = on;
    this.render();
  }

  update(series, now = Date.now()) {
    this.series = series;
    this.now = now;
    this.render();
  }

  render() {
    const width = this.svgWrap.clientWidth;
    if (!width) return;
    const { kind, height, yFormat } = this.opts;
    const m = { l: 62, r: 14, t: 10, b: 26 };
    const W = width - m.l - m.r;
    const H = height - m.t - m.b;

    // X domain.
    let x0;
    let x1;
    let xs;
    if (kind === "time") {
      x1 = this.now ?? Date.now();
      // The window grows with the data (from one minute) up to windowMs.
      let first = x1;
      for (const se of this.series) if (se.points.length && se.points[0][0] < first) first = se.points[0][0];
      x0 = x1 - Math.min(this.opts.windowMs, Math.max(60_000, x1 - first));
      xs = (x) => m.l + ((x - x0) / (x1 - x0)) * W;
    } else {
      let xmax = 100;
      for (const se of this.series) for (const [x] of se.points) if (x > xmax) xmax = x;
      x0 = 0;
      x1 = Math.ceil(Math.log10(xmax) - 1e-9);
      xs = (x) => m.l + (Math.log10(Math.max(1, x)) / x1) * W;
    }
    // Y domain: linear from 0, or (yLog) whole decades around the data.
    let ymax = 0;
    let ymin = Infinity;
    for (const se of this.series)
      for (const [x, y] of se.points) {
        if (y == null || (kind === "time" && x < x0)) continue;
        if (y > ymax) ymax = y;
        if (y > 0 && y < ymin) ymin = y;
      }
    const log = this.opts.yLog && ymax > 0;
    let ys;
    let ticks;
    let visible = (y) => y != null;
    if (log) {
      const d0 = Math.floor(Math.log10(ymin));
      const d1 = Math.max(d0 + 1, Math.ceil(Math.log10(ymax) - 1e-9));
      ys = (y) => m.t + H - ((Math.log10(y) - d0) / (d1 - d0)) * H;
      ticks = [];
      for (let d = d0; d <= d1; d++) {
        ticks.push(10 ** d);
        if (d1 - d0 <= 2 && d < d1) ticks.push(2 * 10 ** d, 5 * 10 ** d);
      }
      visible = (y) => y != null && y > 0;
    } else {
      const lin = linearTicks(ymax > 0 ? ymax * 1.05 : 1);
      ticks = lin.ticks;
      ys = (y) => m.t + H - (y / lin.top) * H;
    }

    const svg = s("svg", {
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": this.ariaLabel(),
    });
    // Grid and axes.
    const grid = s("g", { class: "grid" });
    for (const t of ticks) {
      grid.append(s("line", { x1: m.l, x2: m.l + W, y1: ys(t), y2: ys(t) }));
      grid.append(s("text", { x: m.l - 6, y: ys(t) + 4, "text-anchor": "end", class: "tick" }, yFormat(t)));
    }
    if (kind === "time") {
      const span = (x1 - x0) / 1000;
      const most = Math.max(2, Math.min(6, Math.floor(W / 80)));
      const step = [10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((st) => span / st <= most) ?? 3600;
      for (let t = Math.ceil(x0 / 1000 / step) * step; t * 1000 <= x1; t += step) {
        const x = xs(t * 1000);
        grid.append(s("line", { x1: x, x2: x, y1: m.t, y2: m.t + H, class: "v" }));
        grid.append(
          s("text", { x, y: height - 8, "text-anchor": "middle", class: "tick" }, clock(new Date(t * 1000)).slice(0, step >= 60 ? 5 : 8)),
        );
      }
    } else {
      const every = W / Math.max(1, x1) < 56 ? 2 : 1;
      for (let d = 0; d <= x1; d++) {
        const x = xs(10 ** d);
        grid.append(s("line", { x1: x, x2: x, y1: m.t, y2: m.t + H, class: "v" }));
        if (d % every === 0) {
          const anchor = d === 0 ? "start" : d === x1 ? "end" : "middle";
          grid.append(s("text", { x, y: height - 8, "text-anchor": anchor, class: "tick" }, percentileLabel(10 ** d)));
        }
      }
    }
    grid.append(s("line", { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: "axis" }));
    svg.append(grid);

    // Series.
    this.series.forEach((se, i) => {
      let d = "";
      let pen = false;
      for (const [x, y] of se.points) {
        if (!visible(y) || (kind === "time" && x < x0)) {
          pen = false;
          continue;
        }
        d += `${pen ? "L" : "M"}${xs(x).toFixed(1)},${ys(y).toFixed(1)}`;
        pen = true;
      }
      if (d) svg.append(s("path", { d, class: `line c${(se.color ?? i) % 8}` }));
    });

    // Hover read-out (time charts): the values at the nearest sample.
    if (kind === "time") {
      const overlay = s("rect", { x: m.l, y: m.t, width: W, height: H, class: "overlay" });
      const cursor = s("line", { y1: m.t, y2: m.t + H, class: "cursor", visibility: "hidden" });
      overlay.addEventListener("mousemove", (ev) => {
        const r = svg.getBoundingClientRect();
        const px = ((ev.clientX - r.left) / r.width) * width;
        const x = x0 + ((px - m.l) / W) * (x1 - x0);
        cursor.setAttribute("x1", px);
        cursor.setAttribute("x2", px);
        cursor.setAttribute("visibility", "visible");
        this.hover = x;
        this.renderLegend();
      });
      overlay.addEventListener("mouseleave", () => {
        cursor.setAttribute("visibility", "hidden");
        this.hover = null;
        this.renderLegend();
      });
      svg.append(cursor, overlay);
    }
    this.svgWrap.replaceChildren(svg);
    this.renderLegend();
  }

  /** Latest (or hovered) value of a series. */
  valueOf(se) {
    const pts = se.points;
    if (!pts.length) return null;
    if (this.hover == null || this.opts.kind !== "time") {
      for (let i = pts.length - 1; i >= 0; i--) if (pts[i][1] != null) return pts[i][1];
      return null;
    }
    let best = null;
    for (const p of pts) if (best == null || Math.abs(p[0] - this.hover) < Math.abs(best[0] - this.hover)) best = p;
    return best ? best[1] : null;
  }

  renderLegend() {
    const { yFormat, kind } = this.opts;
    const items = this.series.map((se, i) => {
      const v = kind === "time" ? this.valueOf(se) : se.summary;
      return h("span", { class: "item" }, [
        h("i", { class: `swatch c${(se.color ?? i) % 8}`, "aria-hidden": "true" }),
        h("span", { class: "name" }, se.name),
        v != null ? h("b", {}, typeof v === "number" ? yFormat(v) : v) : null,
      ]);
    });
    if (this.hover != null) items.unshift(h("span", { class: "item when" }, clock(new Date(this.hover))));
    if (!this.series.length) items.push(h("span", { class: "item muted" }, this.opts.empty ?? "no data yet"));
    this.legend.replaceChildren(...items);
  }

  ariaLabel() {
    const { label, yFormat, kind } = this.opts;
    const parts = this.series.map((se) => {
      const v = kind === "time" ? this.valueOf(se) : se.summary;
      return `${se.name}: ${v == null ? "no data" : typeof v === "number" ? yFormat(v) : v}`;
    });
    return `${label}. ${parts.join("; ")}`;
  }
}
