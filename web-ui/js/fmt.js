// Number, rate, duration and time formatting, and a tiny DOM helper.

const SI = [
  [1e12, "T"],
  [1e9, "G"],
  [1e6, "M"],
  [1e3, "k"],
];

/** 1234567 -> "1.23 M" (3 significant digits); small numbers as is. */
export function si(v, unit = "") {
  if (v == null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  for (const [m, p] of SI) {
    if (a >= m) return `${trim3(v / m)} ${p}${unit}`;
  }
  return `${trim3(v)}${unit ? " " + unit : ""}`;
}

function trim3(x) {
  const a = Math.abs(x);
  if (a === 0) return "0";
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(2);
}

/** Integer with thin-space thousands separators. */
export function int(v) {
  if (v == null) return "–";
  return Math.round(v).toLocaleString("en-US").replace(/,/g, "\u202f");
}

export const pps = (v) => si(v, "pkt/s");
export const bps = (v) => si(v, "bit/s");

export function bytes(v) {
  if (v == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : trim3(v)} ${units[i]}`;
}

/** Nanoseconds -> "850 ns", "12.3 µs", "1.20 ms". */
export function ns(v) {
  if (v == null || !Number.isFinite(v)) return "–";
  if (v >= 1e9) return `${trim3(v / 1e9)} s`;
  if (v >= 1e6) return `${trim3(v / 1e6)} ms`;
  if (v >= 1e3) return `${trim3(v / 1e3)} µs`;
  return `${Math.round(v)} ns`;
}

/** Seconds -> "3d 4h", "2h 05m", "4m 09s", "12s". */
export function duration(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const p = (n) => String(n).padStart(2, "0");
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${p(m)}m`;
  if (m) return `${m}m ${p(sec)}s`;
  return `${sec}s`;
}

/** Milliseconds ago -> "just now", "12 s ago", "3 min ago". */
export function ago(ms) {
  if (ms == null) return "never";
  const s = ms / 1000;
  if (s < 2) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** Clock time of a Date as HH:MM:SS. */
export function clock(d) {
  return d.toTimeString().slice(0, 8);
}

/**
 * h("tr", {class: "x"}, [h("td", {}, "text")]): creates an element.
 * Attributes starting with "on" are listeners; `text` children become text
 * nodes (never HTML), so API data cannot inject markup.
 */
export function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of [].concat(children)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
