// The route table: search, sort, and add / edit / delete through the API,
// every change carrying If-Match with the generation the table was loaded
// at. A 412 (someone else changed the set) is explained and the table
// reloaded; a refused route shows the API's message beside its field.

import { request, routePath, ApiError } from "./api.js";
import { h, $, $$ } from "./fmt.js";

/** "10.244.1.0/24" -> a sortable number (address * 64 + length). */
function prefixKey(p) {
  const [a, len] = p.split("/");
  const n = a.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
  return n * 64 + Number(len);
}

function ipToInt(s) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const o = m.slice(1).map(Number);
  if (o.some((x) => x > 255)) return null;
  return ((o[0] << 24) >>> 0) + (o[1] << 16) + (o[2] << 8) + o[3];
}

/** Whether the prefix contains the address. */
function contains(prefix, ip) {
  const [a, len] = prefix.split("/");
  const net = ipToInt(a);
  const l = Number(len);
  if (net == null) return false;
  const mask = l === 0 ? 0 : (~0 << (32 - l)) >>> 0;
  return ((ip & mask) >>> 0) === ((net & mask) >>> 0);
}

/** The flat view of a route that the table shows and sorts. */
function row(r, source) {
  const n = r.node;
  const p = r.pod;
  return {
    route: r,
    source: source || "",
    // A cluster datastore owns it: the API refuses to change it (409).
    owned: !!source && source !== "config" && source !== "api",
    prefix: r.prefix,
    kind: n ? "node" : "pod",
    name: n ? n.name : p?.name ?? "",
    target: n ? n.underlay_ip : p?.interface ?? "",
    encap: n ? n.encap : "",
    vni: n && n.encap !== "ipip" ? n.vni ?? 1 : null,
    port: n && n.encap !== "ipip" ? n.port ?? 8472 : null,
    mac: n ? n.vtep_mac ?? "" : p?.mac ?? "",
    mtu: n ? n.mtu ?? null : null,
  };
}

const FIELDS = ["prefix", "node.name", "node.underlay_ip", "node.encap", "node.vni", "node.port", "node.vtep_mac", "node.mtu", "pod.name", "pod.interface", "pod.mac"];
const fieldId = (f) => `err-${f.replace(/\./g, "-")}`;

export class Routes {
  constructor({ withToken, ensureToken, onGeneration }) {
    this.withToken = withToken;
    this.ensureToken = ensureToken;
    this.onGeneration = onGeneration;
    this.routes = [];
    this.generation = null;
    this.sort = { key: "prefix", dir: 1 };
    this.filter = "";
    this.editing = null; // prefix being edited, or null when adding
    this.loading = null;
  }

  setup() {
    $("#route-filter").addEventListener("input", (e) => {
      this.filter = e.target.value.trim().toLowerCase();
      this.render();
    });
    for (const th of $$("#routes-table th[data-sort]")) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.sort;
        this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
        this.render();
      });
    }
    $("#route-add").addEventListener("click", () => this.openForm(null));
    $("#route-cancel").addEventListener("click", () => $("#route-dialog").close());
    $("#route-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    for (const r of $$('#route-form input[name="kind"]')) r.addEventListener("change", () => this.syncKind());
    $("#f-node-encap").addEventListener("change", () => this.syncKind());
    // An error element after every field, referenced by aria-describedby.
    for (const f of FIELDS) {
      const label = $(`#route-form [data-field="${f}"]`);
      const input = label.querySelector("input, select");
      const wrap = h("div", { class: "fieldwrap", dataset: { kind: label.dataset.kind ?? "", encap: label.dataset.encap ?? "" } });
      label.replaceWith(wrap);
      const err = h("p", { class: "field-error", id: fieldId(f), hidden: true });
      wrap.append(label, err);
      input.setAttribute("aria-describedby", err.id);
      if (label.classList.contains("wide")) wrap.classList.add("wide");
    }
  }

  /** Called by the poller with the route set's current generation. */
  generationSeen(g) {
    if (this.generation != null && g !== this.generation && !$("#route-dialog").open) this.load();
  }

  async load() {
    if (this.loading) return this.loading;
    this.loading = (async () => {
      try {
        const set = (await request("GET", "/api/v1/routes")).body;
        this.routes = set.routes;
        this.sources = set.sources || [];
        this.generation = set.generation;
        this.onGeneration(set.generation);
        this.render();
      } catch (e) {
        this.status(`Could not load the routes: ${e.message}`, "bad");
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  status(text, kind = "") {
    const s = $("#route-status");
    s.hidden = !text;
    s.textContent = text || "";
    s.className = `notice ${kind}`;
  }

  render() {
    const q = this.filter;
    const ip = ipToInt(q);
    let rows = this.routes.map((r, i) => row(r, (this.sources || [])[i]));
    if (q) {
      rows = rows.filter((r) => (ip != null && contains(r.prefix, ip)) || [r.prefix, r.kind, r.name, r.target, r.encap, r.mac, r.vni, r.port, r.mtu, r.source].join(" ").toLowerCase().includes(q));
    }
    const { key, dir } = this.sort;
    const val = (r) => (key === "prefix" ? prefixKey(r.prefix) : key === "target" ? ipToInt(r.target) ?? r.target : r[key] ?? "");
    rows.sort((a, b) => {
      const x = val(a);
      const y = val(b);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return c * dir || prefixKey(a.prefix) - prefixKey(b.prefix);
    });
    for (const th of $$("#routes-table th[data-sort]")) {
      if (th.dataset.sort === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    $("#route-count").textContent = `${rows.length === this.routes.length ? "" : `${rows.length} of `}${this.routes.length} routes · generation ${this.generation ?? "–"}`;
    $("#routes-table tbody").replaceChildren(
      ...(rows.length
        ? rows.map((r) =>
            h("tr", { dataset: { prefix: r.prefix } }, [
              h("th", { scope: "row", class: "mono" }, r.prefix),
              h("td", { "data-label": "Kind" }, h("span", { class: `tag ${r.kind}` }, r.kind)),
              h("td", { "data-label": "Name" }, r.name),
              h("td", { class: "mono", "data-label": r.kind === "node" ? "Underlay IP" : "Interface" }, r.target),
              h("td", { "data-label": "Encap", class: r.encap ? "" : "na" }, r.encap === "ipip" ? "IP-in-IP" : r.encap === "vxlan" ? "VXLAN" : "–"),
              h("td", { class: `num ${r.vni == null ? "na" : ""}`, "data-label": "VNI" }, r.vni ?? "–"),
              h("td", { class: `num ${r.port == null ? "na" : ""}`, "data-label": "Port" }, r.port ?? "–"),
              h("td", { class: `mono ${r.mac ? "" : "na"}`, "data-label": r.kind === "node" ? "VTEP MAC" : "Pod MAC" }, r.mac || "–"),
              h("td", { class: `num ${r.kind === "node" ? "" : "na"}`, "data-label": "MTU" }, r.mtu ?? (r.kind === "node" ? "auto" : "–")),
              h("td", { "data-label": "Source" }, r.source || "–"),
              r.owned
                ? h("td", { class: "row-actions muted" }, "from the datastore")
                : h("td", { class: "row-actions" }, [
                h("button", { type: "button", class: "btn small ghost", "aria-label": `Edit route ${r.prefix}`, onclick: () => this.openForm(r.route) }, "Edit"),
                h("button", { type: "button", class: "btn small ghost danger", "aria-label": `Delete route ${r.prefix}`, onclick: () => this.confirmDelete(r.route) }, "Delete"),
              ]),
            ]),
          )
        : [h("tr", { class: "empty" }, [h("td", { colspan: 11 }, this.routes.length ? "No route matches the filter." : "The route set is empty.")])]),
    );
  }

  // ------------------------------------------------------------ the form

  syncKind() {
    const kind = $('#route-form input[name="kind"]:checked').value;
    const encap = $("#f-node-encap").value;
    for (const w of $$("#route-form .fieldwrap")) {
      const hide = (w.dataset.kind && w.dataset.kind !== kind) || (w.dataset.encap && w.dataset.encap !== encap);
      w.hidden = !!hide;
      for (const i of w.querySelectorAll("input, select")) i.disabled = !!hide;
    }
  }

  clearErrors() {
    for (const f of FIELDS) this.fieldError(f, "");
    const fe = $("#route-form-error");
    fe.hidden = true;
    fe.textContent = "";
  }

  fieldError(field, message) {
    const err = $(`#${fieldId(field)}`);
    const input = $(`#route-form [name="${field}"]`);
    err.hidden = !message;
    err.textContent = message;
    input.setAttribute("aria-invalid", message ? "true" : "false");
  }

  formError(message) {
    const fe = $("#route-form-error");
    fe.hidden = !message;
    fe.textContent = message;
  }

  /** Changes need the token: ask for it before the form, not after. */
  async openForm(route) {
    if (!(await this.ensureToken())) return;
    this.editing = route ? route.prefix : null;
    const f = $("#route-form");
    f.reset();
    this.clearErrors();
    const set = (name, v) => (f.elements[name].value = v ?? "");
    if (route) {
      $(`#route-form input[name="kind"][value="${route.node ? "node" : "pod"}"]`).checked = true;
      set("prefix", route.prefix);
      if (route.node) {
        const n = route.node;
        set("node.name", n.name);
        set("node.underlay_ip", n.underlay_ip);
        set("node.encap", n.encap ?? "vxlan");
        set("node.vni", n.vni);
        set("node.port", n.port);
        set("node.vtep_mac", n.vtep_mac);
        set("node.mtu", n.mtu);
      } else if (route.pod) {
        set("pod.name", route.pod.name);
        set("pod.interface", route.pod.interface);
        set("pod.mac", route.pod.mac);
      }
    }
    // The prefix is the route's identity: editing changes where it leads.
    f.elements.prefix.readOnly = !!route;
    $("#h-route-form").textContent = route ? `Edit route ${route.prefix}` : "Add route";
    $("#route-submit").textContent = route ? "Save changes" : "Add route";
    this.syncKind();
    this.showGeneration();
    $("#route-dialog").showModal();
    (route ? f.elements["node.name"].disabled ? f.elements["pod.name"] : f.elements["node.name"] : f.elements.prefix).focus();
  }

  showGeneration() {
    $("#route-form-generation").textContent = `Applies only if the route set is still at generation ${this.generation} (If-Match).`;
  }

  /** The form as a RouteSpec; numbers that do not parse are sent as typed, for the API to name. */
  body() {
    const f = $("#route-form");
    const v = (n) => f.elements[n].value.trim();
    const num = (n) => (/^\d+$/.test(v(n)) ? Number(v(n)) : v(n));
    const route = { prefix: v("prefix") };
    if ($('#route-form input[name="kind"]:checked').value === "node") {
      const node = { name: v("node.name"), underlay_ip: v("node.underlay_ip"), encap: v("node.encap") };
      if (node.encap === "vxlan") {
        if (v("node.vni")) node.vni = num("node.vni");
        if (v("node.port")) node.port = num("node.port");
        if (v("node.vtep_mac")) node.vtep_mac = v("node.vtep_mac");
      }
      if (v("node.mtu")) node.mtu = num("node.mtu");
      route.node = node;
    } else {
      route.pod = { name: v("pod.name"), interface: v("pod.interface"), mac: v("pod.mac") };
    }
    return route;
  }

  async submit() {
    this.clearErrors();
    const body = this.body();
    const editing = this.editing;
    const submitBtn = $("#route-submit");
    submitBtn.disabled = true;
    try {
      const gen = this.generation;
      const r = await this.withToken(() =>
        editing
          ? request("PUT", routePath(editing), { body, ifMatch: gen })
          : request("POST", "/api/v1/routes", { body, ifMatch: gen }),
      );
      $("#route-dialog").close();
      this.status(`${editing ? "Saved" : "Added"} ${body.prefix} · generation ${r.body.generation}.`, "ok");
      await this.load();
      this.flash(body.prefix);
    } catch (e) {
      this.showError(e);
    } finally {
      submitBtn.disabled = false;
    }
  }

  /** Shows an API error: beside its field, or above the form. */
  showError(e) {
    if (!(e instanceof ApiError)) {
      this.formError(String(e));
      return;
    }
    if (e.status === 412) {
      const had = this.generation;
      this.load().then(() => {
        this.showGeneration();
        this.formError(
          `Not applied: the route set changed while you were editing (you loaded generation ${had}, it is now ${this.generation}). The table behind this form has been reloaded — check it, then submit again to apply your change on top of the new set.`,
        );
      });
      return;
    }
    if (e.status === 401 || e.status === 403) {
      this.formError(`Not applied: ${e.message}`);
      return;
    }
    const field = e.field.replace(/^routes\[\d+\]\./, "");
    if (FIELDS.includes(field) && !$(`#route-form [name="${field}"]`).disabled) {
      this.fieldError(field, e.message);
      $(`#route-form [name="${field}"]`).focus();
    } else if (field.startsWith("node") && $(`#route-form [name="node.name"]`).disabled) {
      this.formError(`${e.field}: ${e.message}`);
    } else {
      this.formError(`${e.field === "body" ? "" : `${e.field}: `}${e.message}`);
    }
  }

  flash(prefix) {
    const tr = $(`#routes-table tr[data-prefix="${CSS.escape(prefix)}"]`);
    if (tr) {
      tr.classList.add("flash");
      setTimeout(() => tr.classList.remove("flash"), 2500);
    }
  }

  async confirmDelete(route) {
    if (!(await this.ensureToken())) return;
    const d = $("#confirm-dialog");
    const r = row(route);
    $("#confirm-text").textContent = `${route.prefix} → ${r.kind} ${r.name} (${r.target}). Traffic to it will be dropped with no_route unless a shorter prefix covers it.`;
    d.returnValue = "";
    d.showModal();
    d.addEventListener(
      "close",
      async () => {
        if (d.returnValue !== "ok") return;
        const gen = this.generation;
        try {
          const res = await this.withToken(() => request("DELETE", routePath(route.prefix), { ifMatch: gen }));
          this.status(`Deleted ${route.prefix} · generation ${res.body.generation}.`, "ok");
        } catch (e) {
          if (e instanceof ApiError && e.status === 412) {
            await this.load();
            this.status(
              `Not deleted: the route set changed meanwhile (you loaded generation ${gen}, it is now ${this.generation}). The table has been reloaded; check the route and delete again.`,
              "bad",
            );
            return;
          }
          this.status(`Not deleted: ${e.message}`, "bad");
        }
        await this.load();
      },
      { once: true },
    );
  }
}
