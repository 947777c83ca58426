/* llm4rec web: the operator dashboard (dashboard.html). Needs a key with the admin scope.
 *
 * Sections (one shown at a time, chosen by the URL hash so they can be linked): Live (refreshed every 5 s while
 * shown), Online evaluation, Experiments, Catalogue, Models, Offline reports. Every number comes from the JSON
 * API (/v1/admin/... and the public /v1 routes); every chart is drawn here by charts.js.
 */
"use strict";

(() => {
  const SECTIONS = ["live", "online", "experiments", "catalogue", "models", "reports"];
  const POLICIES = ["greedy", "thompson", "epsilon-greedy", "ucb1", "uniform"];
  const LIVE_SECONDS = 5;

  const $ = Api.byId;
  const el = Api.element;
  const fmt = (v, digits) => (typeof v === "number" && isFinite(v) ? v.toFixed(digits === undefined ? 3 : digits) : "\u2013");
  const interval = (lo, hi, digits) => (typeof lo === "number" && typeof hi === "number" ?
    "[" + fmt(lo, digits) + ", " + fmt(hi, digits) + "]" : "\u2013");
  /** A time for people: unix seconds or an ISO 8601 string. */
  const when = (t) => {
    if (typeof t === "number" && t > 0) return new Date(t * 1000).toLocaleString();
    if (typeof t === "string" && t) {
      const d = new Date(t);
      return isNaN(d.getTime()) ? t : d.toLocaleString();
    }
    return "\u2013";
  };
  const num = (v) => (typeof v === "number" ? v.toLocaleString() : "\u2013");

  /** Each arm's share of the users as a percentage (shares are relative weights). */
  function percent(arms, arm) {
    const total = (arms || []).reduce((t, a) => t + (a.share || 0), 0);
    return total > 0 ? Math.round(100 * (arm.share || 0) / total) + "%" : "\u2013";
  }

  function cell(tr, text, cls) {
    return el("td", cls ? {class: cls} : {}, tr, text);
  }

  function showError(err) {
    Api.showError($("error"), err);
    if (err && err.status === 401) showKeyForm();
  }

  /** Run an async action; its error goes to `where` (an alert beside the form that asked), else to the page's
   *  alert. Returns its value, or undefined after an error. */
  async function guard(fn, where) {
    try {
      const out = await fn();
      if (where) Api.showError(where, null);
      return out;
    } catch (e) {
      if (where && e.status !== 401) Api.showError(where, e);
      else showError(e);
      return undefined;
    }
  }

  // ------------------------------------------------------------------ tabs
  const state = {section: "live", liveTimer: null, models: null, experiment: null, loaded: {}};

  function currentSection() {
    const h = window.location.hash.replace(/^#/, "");
    return SECTIONS.indexOf(h) >= 0 ? h : "live";
  }

  function showSection(name, focus) {
    state.section = name;
    SECTIONS.forEach((s) => {
      $(s).hidden = s !== name;
      const tab = document.querySelector('.tabs a[data-tab="' + s + '"]');
      if (s === name) tab.setAttribute("aria-current", "true");
      else tab.removeAttribute("aria-current");
    });
    if (focus) $(name + "-heading").setAttribute("tabindex", "-1");
    if (focus) $(name + "-heading").focus();
    load(name);
    scheduleLive();
  }

  function load(name) {
    if (name === "live") return refreshLive();
    if (name === "online") return refreshOnline();
    if (name === "experiments") return refreshExperiments();
    if (name === "models") return refreshModels();
    if (name === "reports") return refreshReports();
    if (name === "catalogue") return suggestItems();
    return null;
  }

  // ------------------------------------------------------------------ Live
  function scheduleLive() {
    clearInterval(state.liveTimer);
    state.liveTimer = null;
    if (state.section === "live" && $("live-auto").checked) {
      state.liveTimer = setInterval(() => {
        if (!document.hidden) refreshLive();
      }, LIVE_SECONDS * 1000);
    }
  }

  let liveBusy = false;
  async function refreshLive() {
    if (liveBusy) return;
    liveBusy = true;
    try {
      const live = await Api.get("/v1/admin/live" + Api.qs({minutes: 60}));
      renderLive(live);
      showError(null);
    } catch (e) {
      showError(e);
    } finally {
      liveBusy = false;
    }
  }

  function renderLive(live) {
    const lm = live.last_minute || {};
    $("tile-rps").textContent = fmt(lm.requests_per_s, 2);
    $("tile-eps").textContent = fmt(lm.events_per_s, 2);
    $("tile-errors").textContent = num(lm.errors);
    $("tile-items").textContent = num(live.n_items);
    $("tile-version").textContent = live.model_version || "\u2013";
    $("live-updated").textContent = "updated " + new Date((live.now || Date.now() / 1000) * 1000).toLocaleTimeString();
    const bucket = live.bucket_seconds || 10;
    const series = (live.series || []).slice().sort((a, b) => a.t - b.t);
    const now = live.now || Date.now() / 1000;
    const start = now - 3600;
    const routes = live.routes && live.routes.length ? live.routes : Array.from(new Set(
      [].concat.apply([], series.map((s) => Object.keys(s.requests || {})))));
    // counts: buckets with no traffic are omitted by the API; they are zeros
    const byT = new Map(series.map((s) => [s.t, s]));
    const ticks = [];
    if (series.length) {
      for (let t = Math.floor(Math.max(start, series[0].t) / bucket) * bucket; t <= now; t += bucket) ticks.push(t);
    }
    const countSeries = (name, get) => ({name: name, points: ticks.map((t) => {
      const s = byT.get(t);
      return {x: t, y: s ? get(s) / bucket : 0};
    })});
    const axis = {x: "time", xMin: start, xMax: now, yMin: 0, xLabel: "time"};
    Charts.line($("chart-requests"), Object.assign({}, axis, {
      title: "Requests per second, per route", yLabel: "requests/s",
      series: routes.map((r) => countSeries(r, (s) => (s.requests || {})[r] || 0))}));
    Charts.line($("chart-events"), Object.assign({}, axis, {
      title: "Feedback events and errors per second", yLabel: "per second",
      series: [countSeries("events", (s) => s.events || 0), countSeries("errors (4xx, 5xx)", (s) => s.errors || 0)]}));
    const latency = (key) => routes.map((r) => ({name: r, points: series.filter((s) => s[key] && r in s[key])
      .map((s) => ({x: s.t, y: s[key][r]}))}));
    Charts.line($("chart-p50"), Object.assign({}, axis, {title: "Median latency (p50) per route", yLabel: "ms",
                                                           series: latency("p50_ms")}));
    Charts.line($("chart-p99"), Object.assign({}, axis, {title: "Tail latency (p99) per route", yLabel: "ms",
                                                           series: latency("p99_ms")}));
    const tbody = $("live-routes").querySelector("tbody");
    tbody.textContent = "";
    routes.forEach((r) => {
      const tr = el("tr", {"data-route": r}, tbody);
      cell(tr, r);
      cell(tr, num(series.reduce((n, s) => n + ((s.requests || {})[r] || 0), 0)), "num");
      cell(tr, fmt((lm.p50_ms || {})[r], 1), "num");
      cell(tr, fmt((lm.p99_ms || {})[r], 1), "num");
    });
    if (!routes.length) el("td", {colspan: 4, class: "muted"}, el("tr", {}, tbody), "No requests in the last hour.");
  }

  // ------------------------------------------------------------------ Online
  async function refreshOnline() {
    const bucket = parseInt($("online-bucket").value, 10);
    const span = parseInt($("online-window").value, 10);
    const since = span > 0 ? Math.floor(Date.now() / 1000 - span) : null;
    const online = await guard(() => Api.get("/v1/admin/online" + Api.qs({bucket: bucket, since: since})));
    if (online) renderOnline(online);
  }

  function seriesName(r) {
    return (r.model_version || "?") + " \u00b7 " + (r.policy || "?") + (r.arm ? " \u00b7 arm " + r.arm : "");
  }

  function renderOnline(online) {
    const groups = new Map();
    (online.series || []).forEach((r) => {
      const name = seriesName(r);
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(r);
    });
    const names = Array.from(groups.keys()).sort();
    const bucket = online.bucket_seconds || 300;
    Charts.line($("chart-ctr"), {
      title: "CTR per model version and policy (95% intervals)", x: "time", xLabel: "time", xPad: bucket,
      yLabel: "CTR", yMin: 0, emptyText: "No slates shown in this window.",
      series: names.map((n) => ({name: n, points: groups.get(n).map((r) => ({
        x: r.t + bucket / 2, y: r.ctr, lo: r.ctr_low, hi: r.ctr_high}))}))});
    const withPurchases = names.filter((n) => groups.get(n).some((r) => r.purchases > 0));
    if (withPurchases.length) {
      Charts.line($("chart-conversion"), {
        title: "Conversion (purchases per shown item, 95% intervals)", x: "time", xLabel: "time", xPad: bucket,
        yLabel: "conversion", yMin: 0,
        series: withPurchases.map((n) => ({name: n, points: groups.get(n).map((r) => ({
          x: r.t + bucket / 2, y: r.conversion, lo: r.conversion_low, hi: r.conversion_high}))}))});
    } else {
      $("chart-conversion").textContent = "";
      el("p", {class: "muted"}, $("chart-conversion"), "Conversion appears here once purchase events arrive.");
    }
    const tbody = $("online-totals").querySelector("tbody");
    tbody.textContent = "";
    (online.totals || []).forEach((r) => {
      const tr = el("tr", {}, tbody);
      cell(tr, r.model_version);
      cell(tr, r.policy);
      cell(tr, r.arm || "\u2013");
      cell(tr, num(r.shown), "num");
      cell(tr, num(r.clicks), "num");
      cell(tr, fmt(r.ctr, 4), "num");
      cell(tr, interval(r.ctr_low, r.ctr_high, 4));
      cell(tr, num(r.purchases), "num");
      cell(tr, r.purchases > 0 ? fmt(r.conversion, 4) : "\u2013", "num");
      cell(tr, r.purchases > 0 ? interval(r.conversion_low, r.conversion_high, 4) : "\u2013");
    });
    if (!(online.totals || []).length) el("td", {colspan: 10, class: "muted"}, el("tr", {}, tbody), "No slates yet.");
  }

  // ------------------------------------------------------------------ Experiments
  function fillPolicySelects() {
    document.querySelectorAll(".policy-select").forEach((sel) => {
      if (sel.options.length) return;
      el("option", {value: ""}, sel, "service default");
      POLICIES.forEach((p) => el("option", {value: p}, sel, p));
    });
  }

  function fillVersionSelects(models) {
    document.querySelectorAll(".version-select").forEach((sel) => {
      const chosen = sel.value;
      sel.textContent = "";
      el("option", {value: ""}, sel, "the serving version");
      ((models && models.versions) || []).forEach((v) => el("option", {value: v.version}, sel, v.version +
        (v.model ? " (" + v.model + ")" : "")));
      sel.value = chosen;
      if (sel.value !== chosen) sel.value = "";
    });
  }

  async function refreshExperiments() {
    fillPolicySelects();
    if (!state.models) {
      state.models = await guard(() => Api.get("/v1/admin/models"));
    }
    fillVersionSelects(state.models);
    const out = await guard(() => Api.get("/v1/admin/experiments"));
    if (!out) return;
    const tbody = $("experiment-list").querySelector("tbody");
    tbody.textContent = "";
    const list = (out.experiments || []).slice().sort((a, b) => (b.started || 0) - (a.started || 0));
    list.forEach((x) => {
      const tr = el("tr", {"data-experiment": x.name}, tbody);
      cell(tr, x.name);
      cell(tr, (x.arms || []).map((a) => a.name + " (" + [a.policy, a.model_version].filter(Boolean).join(", ") +
        (a.policy || a.model_version ? "; " : "") + percent(x.arms, a) + ")").join(" vs "));
      cell(tr, when(x.started));
      cell(tr, x.active ? "running" : "stopped " + when(x.stopped));
      const td = cell(tr, "");
      const view = el("button", {type: "button", class: "secondary", "data-testid": "experiment-readout"}, td,
                      "Readout");
      view.addEventListener("click", () => openReadout(x.name, true));
    });
    if (!list.length) el("td", {colspan: 5, class: "muted"}, el("tr", {}, tbody), "No experiments yet.");
    if (state.experiment) openReadout(state.experiment, false);
  }

  async function startExperiment(ev) {
    ev.preventDefault();
    const arms = [0, 1].map((i) => {
      const arm = {name: $("arm" + i + "-name").value.trim(), share: parseFloat($("arm" + i + "-share").value)};
      const policy = $("arm" + i + "-policy").value;
      const version = $("arm" + i + "-version").value;
      if (policy) arm.policy = policy;
      if (version) arm.model_version = version;
      return arm;
    });
    const name = $("exp-name").value.trim();
    const made = await guard(() => Api.post("/v1/admin/experiments", {name: name, arms: arms}), $("exp-error"));
    if (!made) return;
    showError(null);
    state.experiment = made.name || name;
    await refreshExperiments();
  }

  async function openReadout(name, focus) {
    state.experiment = name;
    const r = await guard(() => Api.get("/v1/admin/experiments/" + Api.seg(name)));
    if (!r) return;
    renderReadout(r);
    if (focus) $("readout-heading").focus();
  }

  function renderReadout(r) {
    const box = $("readout");
    box.hidden = false;
    box.setAttribute("data-experiment", r.name);
    $("readout-heading").setAttribute("tabindex", "-1");
    $("readout-heading").textContent = "Readout: " + r.name + (r.active ? " (running)" : " (stopped)");
    $("readout-stop").hidden = !r.active;
    const t = r.test || {};
    const p = $("readout-test");
    p.textContent = "";
    if (t.method) {
      const arms = r.arms || [];
      const a = arms[0] ? arms[0].name : "A";
      const b = arms[1] ? arms[1].name : "B";
      el("span", {class: "verdict " + (t.significant ? "yes" : "no"), "data-testid": "readout-verdict"}, p,
         t.significant ? "Significant difference" : "No significant difference");
      p.appendChild(document.createTextNode(" (" + t.method + ": z = " + fmt(t.z, 2) + ", p = " +
        (typeof t.p_value === "number" ? t.p_value.toPrecision(2) : "\u2013") + "; CTR lift of " + b + " over " + a +
        " " + (typeof t.lift === "number" && isFinite(t.lift) ? (t.lift >= 0 ? "+" : "") + (t.lift * 100).toFixed(1) +
        "%" : "\u2013") + ")"));
    } else {
      p.textContent = "No test yet: it needs shown slates in both arms.";
    }
    Charts.bars($("chart-readout"), {
      title: "CTR per arm (95% intervals)", yLabel: "CTR", yMin: 0,
      groups: (r.arms || []).map((a) => a.name),
      series: [{name: "CTR", values: (r.arms || []).map((a) => ({y: a.ctr, lo: a.ctr_low, hi: a.ctr_high}))}],
      emptyText: "No slates shown yet."});
    const tbody = $("readout-arms").querySelector("tbody");
    tbody.textContent = "";
    (r.arms || []).forEach((a) => {
      const tr = el("tr", {"data-arm": a.name}, tbody);
      cell(tr, a.name);
      cell(tr, a.policy || "default");
      cell(tr, a.model_version || "serving");
      cell(tr, percent(r.arms, a), "num");
      cell(tr, num(a.slates), "num");
      cell(tr, num(a.shown), "num");
      cell(tr, num(a.clicks), "num");
      cell(tr, fmt(a.ctr, 4), "num");
      cell(tr, interval(a.ctr_low, a.ctr_high, 4));
    });
    const ope = $("readout-ope").querySelector("tbody");
    ope.textContent = "";
    (r.off_policy || []).forEach((o) => {
      const tr = el("tr", {"data-target": o.target_arm}, ope);
      cell(tr, o.target_arm);
      cell(tr, o.logging_arm);
      cell(tr, o.estimator);
      cell(tr, fmt(o.value, 4), "num");
      cell(tr, interval(o.low, o.high, 4));
      cell(tr, num(o.n), "num");
      cell(tr, fmt(o.online_value, 4), "num");
      cell(tr, o.note || (o.supported === false ? "not supported" : ""));
    });
    if (!(r.off_policy || []).length) el("td", {colspan: 8, class: "muted"}, el("tr", {}, ope),
                                          "No off-policy estimate yet.");
  }

  async function stopExperiment() {
    if (!state.experiment) return;
    const out = await guard(() => Api.post("/v1/admin/experiments/" + Api.seg(state.experiment) + "/stop", {}));
    if (out) await refreshExperiments();
  }

  // ------------------------------------------------------------------ Catalogue
  let itemTimer = null;
  function suggestItems() {
    clearTimeout(itemTimer);
    itemTimer = setTimeout(async () => {
      const out = await guard(() => Api.get("/v1/items" + Api.qs({q: $("item-id").value.trim(), limit: 20})));
      if (!out) return;
      const list = $("item-options");
      list.textContent = "";
      (out.items || []).forEach((i) => el("option", {value: i.item, label: i.label || i.item}, list));
    }, 150);
  }

  async function loadItem() {
    const id = $("item-id").value.trim();
    if (!id) return;
    // list first, so that a new id is not a 404 (which browsers log as an error)
    const found = await guard(() => Api.get("/v1/items" + Api.qs({q: id, limit: 200})));
    if (!found) return;
    const list = found.items || [];
    if (list.length < 200 && !list.some((i) => i.item === id)) {
      showResult("No item " + id + " yet: saving creates it.");
      ["item-title", "item-categories", "item-description", "item-more"].forEach((f) => { $(f).value = ""; });
      return;
    }
    const info = await guard(() => Api.get("/v1/items/" + Api.seg(id)));
    if (!info) return;
    const fields = info.fields || {};
    $("item-title").value = fields.title || info.label || "";
    $("item-categories").value = fields.categories || "";
    $("item-description").value = fields.description || "";
    $("item-more").value = Object.keys(fields).filter((k) => ["title", "categories", "description"].indexOf(k) < 0)
      .map((k) => k + ": " + fields[k]).join("\n");
    showResult("Loaded " + id + " (" + num(info.n_interactions) + " interactions).");
    await showPlacement(id);
  }

  function showResult(text) {
    $("item-result").textContent = text;
    $("item-result").hidden = !text;
  }

  async function saveItem(ev) {
    ev.preventDefault();
    const id = $("item-id").value.trim();
    const fields = {};
    [["title", "item-title"], ["categories", "item-categories"], ["description", "item-description"]].forEach((f) => {
      const v = $(f[1]).value.trim();
      if (v) fields[f[0]] = v;
    });
    const bad = [];
    $("item-more").value.split("\n").forEach((line) => {
      if (!line.trim()) return;
      const at = line.indexOf(":");
      const name = at > 0 ? line.slice(0, at).trim() : "";
      if (!name) bad.push(line.trim());
      else fields[name] = line.slice(at + 1).trim();
    });
    if (bad.length) {
      Api.showError($("item-error"), new Api.ApiError(0, "a line of other fields has no 'name:'", "one 'name: value' "
        + "per line, e.g. year: 2024 (got " + JSON.stringify(bad[0]) + ")"));
      return;
    }
    const out = await guard(() => Api.put("/v1/items/" + Api.seg(id), {fields: fields}), $("item-error"));
    if (!out) return;
    showError(null);
    showResult((out.created ? "Added " : "Updated ") + out.item + ": the catalogue now has " + num(out.n_items) +
               " items (model " + out.model_version + ").");
    await showPlacement(id);
  }

  async function showPlacement(id) {
    const [similar, audience] = await Promise.all([
      guard(() => Api.get("/v1/items/" + Api.seg(id) + "/similar" + Api.qs({k: 10}))),
      guard(() => Api.get("/v1/admin/items/" + Api.seg(id) + "/audience" + Api.qs({k: 10, limit: 20})),
            $("item-error")),
    ]);
    const ol = $("item-neighbours");
    ol.textContent = "";
    ((similar && similar.items) || []).forEach((s) => {
      const li = el("li", {"data-item": s.item, "data-testid": "neighbour"}, ol, (s.label || s.item) + " ");
      el("span", {class: "muted"}, li, "(" + s.item + ", " + fmt(s.score, 3) + ")");
    });
    const tbody = $("item-audience").querySelector("tbody");
    tbody.textContent = "";
    const users = (audience && audience.users) || [];
    users.forEach((u) => {
      const tr = el("tr", {"data-user": u.user}, tbody);
      const td = cell(tr, "");
      el("a", {href: "/?user=" + encodeURIComponent(u.user), "data-testid": "audience-user"}, td, u.user);
      cell(tr, String(u.rank + 1), "num");
    });
    if (!users.length) el("td", {colspan: 2, class: "muted"}, el("tr", {}, tbody), "Nobody's top 10 yet.");
    const limit = 20;
    $("audience-note").textContent = audience ? (users.length >= limit ? "At least " : "") + users.length + " of the " +
      num(audience.scanned) + " users scanned have it in their top " + audience.k +
      (users.length >= limit ? " (the first " + limit + " shown, best rank first)." : ".") : "";
  }

  // ------------------------------------------------------------------ Models
  async function refreshModels() {
    const m = await guard(() => Api.get("/v1/admin/models"));
    if (m) renderModels(m);
    return m;
  }

  function metricText(metrics) {
    if (!metrics) return "\u2013";
    return Object.keys(metrics).map((k) => k + " " + (typeof metrics[k] === "number" ? metrics[k].toFixed(4) :
                                                      String(metrics[k]))).join(", ");
  }

  function renderModels(m) {
    state.models = m;
    $("models-serving").textContent = "Serving " + (m.serving || "\u2013") + (m.registry ? " \u00b7 registry current " +
      (m.current || "\u2013") : " \u00b7 a single bundle (no registry)") + (m.reload_failures ? " \u00b7 " +
      m.reload_failures + " refused reload" + (m.reload_failures === 1 ? "" : "s") : "");
    $("models-serving").setAttribute("data-serving", m.serving || "");
    const refused = $("models-refused");
    refused.hidden = !m.last_reload_error;
    refused.textContent = m.last_reload_error ? "Last refused version: " + m.last_reload_error : "";
    $("publish-form").querySelectorAll("button, input").forEach((b) => { b.disabled = !m.registry; });
    const tbody = $("model-versions").querySelector("tbody");
    tbody.textContent = "";
    const versions = (m.versions || []).slice().sort((a, b) => (a.version < b.version ? 1 : -1));
    versions.forEach((v) => {
      const tr = el("tr", {"data-version": v.version, class: v.serving ? "current" : ""}, tbody);
      cell(tr, v.version);
      const st = cell(tr, "");
      if (v.serving) el("span", {class: "badge ok"}, st, "serving");
      if (v.current) el("span", {class: "badge"}, st, "current");
      if (v.stage) el("span", {class: "badge"}, st, v.stage);
      cell(tr, v.model || "\u2013");
      cell(tr, when(v.published || v.created));
      cell(tr, num(v.n_items), "num");
      cell(tr, num(v.n_users), "num");
      cell(tr, metricText(v.metrics) + (v.protocol ? " (" + v.protocol + ")" : ""));
      const prov = cell(tr, "");
      if (v.provenance && Object.keys(v.provenance).length) {
        const d = el("details", {}, prov);
        el("summary", {}, d, "show");
        el("pre", {class: "json"}, d, JSON.stringify(v.provenance, null, 2));
      } else {
        prov.textContent = "\u2013";
      }
      const act = cell(tr, "");
      if (m.registry && !v.current) {
        const b = el("button", {type: "button", class: "secondary", "data-testid": "activate",
                                "aria-label": "Activate " + v.version}, act, "Activate");
        b.addEventListener("click", () => switchModel("/v1/admin/models/" + Api.seg(v.version) + "/activate", v.version));
      }
    });
    fillVersionSelects(m);
  }

  function status(text) {
    $("models-status").textContent = text;
    $("models-status").hidden = !text;
  }

  /** POST a switch, then poll until the service serves the registry's current version (or 20 s pass). */
  async function switchModel(path, target) {
    status("Switching" + (target ? " to " + target : "") + "\u2026");
    const out = await guard(() => Api.post(path, {}));
    if (!out) { status(""); return; }
    showError(null);
    const want = out.current || target;
    const deadline = Date.now() + 20000;
    let m = null;
    while (Date.now() < deadline) {
      m = await refreshModels();
      if (!m || m.serving === want) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    if (m && m.serving === want) status("Now serving " + want + ".");
    else if (m && m.last_reload_error) status("The service kept " + m.serving + ": " + want + " was refused.");
    else status("Registry current is " + want + "; the service has not switched yet.");
  }

  async function publish(ev) {
    ev.preventDefault();
    const bundle = $("bundle-path").value.trim();
    status("Publishing\u2026");
    let out;
    try {
      out = await Api.post("/v1/admin/models", {bundle: bundle});
    } catch (e) {
      status("");
      const refused = $("models-refused");
      refused.textContent = "Refused: " + Api.describe(e);
      refused.hidden = false;
      return;
    }
    $("models-refused").hidden = true;
    await awaitServing(out.version);
  }

  async function awaitServing(version) {
    status("Published " + version + "; waiting for the service to load it\u2026");
    const deadline = Date.now() + 20000;
    let m = null;
    while (Date.now() < deadline) {
      m = await refreshModels();
      if (!m || m.serving === version) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    status(m && m.serving === version ? "Published and now serving " + version + "." :
           "Published " + version + "; the service serves " + (m ? m.serving : "?") + ".");
  }

  // ------------------------------------------------------------------ Reports
  async function refreshReports() {
    const out = await guard(() => Api.get("/v1/admin/reports"));
    if (!out) return;
    const tbody = $("report-list").querySelector("tbody");
    tbody.textContent = "";
    (out.reports || []).forEach((r) => {
      const tr = el("tr", {"data-report": r.name}, tbody);
      const td = cell(tr, "");
      const b = el("button", {type: "button", class: "link", "data-testid": "report-open"}, td, r.name);
      b.addEventListener("click", () => openReport(r.name));
      cell(tr, r.kind);
      cell(tr, when(r.modified));
    });
    if (!(out.reports || []).length) el("td", {colspan: 3, class: "muted"}, el("tr", {}, tbody),
                                        "No result files in the reports directory.");
  }

  async function openReport(name) {
    const r = await guard(() => Api.get("/v1/admin/reports/" + Api.seg(name)));
    if (!r) return;
    const view = $("report-view");
    view.hidden = false;
    view.setAttribute("data-kind", r.kind);
    view.setAttribute("data-report", r.name);
    $("report-heading").textContent = r.name + " (" + r.kind + ")";
    $("report-charts").textContent = "";
    $("report-table").textContent = "";
    $("report-summary").textContent = "";
    $("report-json").textContent = JSON.stringify(r.data, null, 2);
    const render = {evaluate: reportEvaluate, compare: reportCompare, simulate: reportSimulate, ope: reportOpe,
                    training: reportTraining}[r.kind];
    if (render) render(r.data);
    else $("report-summary").textContent = "A JSON file of no known kind: its content is below.";
    $("report-heading").setAttribute("tabindex", "-1");
    $("report-heading").focus();
  }

  function chartBox(id) {
    return el("div", {class: "chart-box", "data-testid": "report-chart", id: id}, $("report-charts"));
  }

  function table(head, rows) {
    const t = el("table", {}, $("report-table"));
    const tr = el("tr", {}, el("thead", {}, t));
    head.forEach((h, i) => el("th", {scope: "col", class: i ? "num" : ""}, tr, h));
    const tb = el("tbody", {}, t);
    rows.forEach((r) => {
      const row = el("tr", {}, tb);
      r.forEach((v, i) => cell(row, v, i ? "num" : ""));
    });
    return t;
  }

  function evalSummary(d) {
    return [d.dataset, d.protocol, d.ranking ? d.ranking + " ranking" : null, d.stage ? "stage " + d.stage : null,
            d.seed !== undefined ? "seed " + d.seed : null,
            d.n_users_evaluated !== undefined ? num(d.n_users_evaluated) + " users" : null]
      .filter((x) => x !== null && x !== undefined).join(" \u00b7 ");
  }

  function reportEvaluate(d) {
    $("report-summary").textContent = (d.model || "model") + " \u00b7 " + evalSummary(d);
    const ci = d.intervals_95 || {};
    const main = Object.keys(d.metrics || {});
    const extra = d.extra_metrics || {};
    const boxes = [chartBox("report-metrics")].concat(Object.keys(extra).length ? [chartBox("report-extra")] : []);
    Charts.bars(boxes[0], {
      title: "Ranking metrics" + (Object.keys(ci).length ? " (95% intervals)" : ""), yLabel: "value", yMin: 0,
      groups: main, series: [{name: d.model || "model", values: main.map((m) => ({
        y: d.metrics[m], lo: ci[m] ? ci[m][0] : null, hi: ci[m] ? ci[m][1] : null}))}]});
    if (boxes.length > 1) {
      Charts.bars(boxes[1], {title: "Beyond accuracy", yLabel: "value", yMin: 0,
        groups: Object.keys(extra), series: [{name: d.model || "model", values: Object.keys(extra).map((m) => ({
          y: extra[m]}))}]});
    }
    table(["metric", "value", "95% interval"], main.map((m) => [m, fmt(d.metrics[m], 4),
      ci[m] ? interval(ci[m][0], ci[m][1], 4) : "\u2013"]).concat(Object.keys(extra).map((m) => [m,
      fmt(extra[m], 4), "\u2013"])).concat([["fit seconds", fmt(d.fit_seconds, 2), ""],
      ["eval seconds", fmt(d.eval_seconds, 2), ""]]));
  }

  function reportCompare(list) {
    const first = list[0] || {};
    const chosen = list.find((r) => r.chosen_on_valid);
    $("report-summary").textContent = list.length + " models \u00b7 " + evalSummary(first) +
      (chosen ? " \u00b7 chosen on the validation stage: " + chosen.model : "");
    const metrics = Object.keys(first.metrics || {});
    Charts.bars(chartBox("report-compare"), {
      title: "Test-stage metrics per model (95% bootstrap intervals over users)", yLabel: "value", yMin: 0,
      groups: metrics, series: list.map((r) => ({name: r.model + (r.chosen_on_valid ? " (chosen)" : ""),
        values: metrics.map((m) => {
          const ci = (r.intervals_95 || {})[m];
          return {y: (r.metrics || {})[m], lo: ci ? ci[0] : null, hi: ci ? ci[1] : null};
        })}))});
    table(["model"].concat(metrics).concat(["fit s"]), list.map((r) => [r.model + (r.chosen_on_valid ? " (chosen)" : "")]
      .concat(metrics.map((m) => {
        const ci = (r.intervals_95 || {})[m];
        return fmt((r.metrics || {})[m], 4) + (ci ? " " + interval(ci[0], ci[1], 3) : "");
      })).concat([fmt(r.fit_seconds, 2)])));
  }

  function reportSimulate(d) {
    const names = Object.keys(d.policies || {});
    const sim = d.simulator || {};
    $("report-summary").textContent = names.length + " policies \u00b7 " + num(d.episodes) + " episodes of " +
      num(sim.session_length) + " slates of " + num(d.slate_size || sim.slate_size) + " \u00b7 " +
      (d.seeds || []).length + " seeds (95% intervals over seeds) \u00b7 user model " + (d.model || "?") +
      (d.comparisons && d.comparisons.best_policy ? " \u00b7 best: " + d.comparisons.best_policy : "");
    const curve = (key) => names.map((n) => {
      const c = ((d.policies[n].curves || {})[key]) || {};
      return {name: n, points: (c.mean || []).map((y, i) => ({x: i + 1, y: y, lo: (c.ci_low || [])[i],
                                                                hi: (c.ci_high || [])[i]}))};
    });
    const boxes = [chartBox("report-reward"), chartBox("report-regret")];
    Charts.line(boxes[0], {title: "Cumulative reward (learning curve)", xLabel: "episode",
      yLabel: "cumulative clicks", series: curve("cumulative_reward"), integerX: true});
    Charts.line(boxes[1], {title: "Cumulative regret against the oracle", xLabel: "episode",
      yLabel: "cumulative regret", series: curve("cumulative_regret"), integerX: true});
    const metric = (p, key) => (p[key] ? fmt(p[key].mean, 3) + " " + interval(p[key].ci_low, p[key].ci_high, 3) : "\u2013");
    table(["policy", "reward / episode", "CTR", "regret / episode", "session length"], names.map((n) => {
      const p = d.policies[n];
      return [n, metric(p, "reward_per_episode"), metric(p, "ctr"), metric(p, "regret_per_episode"),
              metric(p, "session_length")];
    }));
  }

  function reportOpe(d) {
    const names = Object.keys(d.estimates || {});
    $("report-summary").textContent = "policy " + d.policy + " \u00b7 " + num(d.n_rounds) + " logged rounds" +
      (typeof d.on_policy_value === "number" ? " \u00b7 on-policy truth " + fmt(d.on_policy_value, 4) : "");
    const series = [{name: "estimate", values: names.map((n) => ({y: d.estimates[n].value, lo: d.estimates[n].ci_low,
                                                                  hi: d.estimates[n].ci_high}))}];
    if (typeof d.on_policy_value === "number") {
      series.push({name: "on-policy truth", values: names.map(() => ({y: d.on_policy_value}))});
    }
    Charts.bars(chartBox("report-ope"), {title: "Estimated reward per impression (95% bootstrap intervals)",
      yLabel: "reward", yMin: 0, groups: names, series: series});
    table(["estimator", "estimate", "95% interval"].concat(typeof d.on_policy_value === "number" ? ["rel. error"] : []),
      names.map((n) => {
        const e = d.estimates[n];
        const row = [n, fmt(e.value, 5), interval(e.ci_low, e.ci_high, 5)];
        if (typeof d.on_policy_value === "number" && d.on_policy_value) {
          row.push(fmt(100 * Math.abs(e.value - d.on_policy_value) / Math.abs(d.on_policy_value), 1) + "%");
        }
        return row;
      }));
  }

  function reportTraining(d) {
    const h = d.history || [];
    $("report-summary").textContent = num(d.epochs_run) + " epochs" + (d.monitor ? " \u00b7 best " + d.monitor + " " +
      fmt(d.best_value, 4) + " at epoch " + d.best_epoch : "") + " \u00b7 " + fmt(d.seconds, 1) + " s";
    const keys = Object.keys(h[0] || {}).filter((k) => k !== "epoch" && k !== "loss" && k !== "seconds");
    const boxes = [chartBox("report-loss")].concat(keys.length ? [chartBox("report-valid")] : []);
    Charts.line(boxes[0], {title: "Training loss per epoch", xLabel: "epoch", yLabel: "loss",
      integerX: true, series: [{name: "loss", points: h.map((r) => ({x: r.epoch, y: r.loss}))}]});
    if (keys.length) {
      Charts.line(boxes[1], {title: "Validation per epoch", xLabel: "epoch", yLabel: "value",
        integerX: true, series: keys.map((k) => ({name: k, points: h.map((r) => ({x: r.epoch, y: r[k]}))}))});
    }
    table(["epoch", "loss"].concat(keys), h.map((r) => [String(r.epoch), fmt(r.loss, 4)].concat(keys.map((k) => fmt(r[k], 4)))));
  }

  // ------------------------------------------------------------------ key and start
  function showKeyForm() {
    $("key-panel").hidden = false;
    $("dash-app").hidden = true;
    $("forget-key").hidden = true;
    clearInterval(state.liveTimer);
    $("key-input").focus();
  }

  async function start() {
    if (!Api.key()) {
      showKeyForm();
      return;
    }
    let me;
    try {
      me = await Api.get("/v1/me");
    } catch (e) {
      showError(e);
      return;
    }
    if ((me.scopes || []).indexOf("admin") < 0) {
      showError(new Api.ApiError(403, "the key '" + (me.name || me.key_id) + "' lacks the admin scope",
                                 "a key made with --scopes admin"));
      showKeyForm();
      return;
    }
    showError(null);
    $("key-panel").hidden = true;
    $("dash-app").hidden = false;
    $("forget-key").hidden = false;
    showSection(currentSection(), false);
  }

  function bind() {
    Api.bindKeyForm($("key-form"), $("key-input"), start);
    $("forget-key").addEventListener("click", () => {
      Api.setKey("");
      showKeyForm();
    });
    window.addEventListener("hashchange", () => showSection(currentSection(), true));
    $("live-auto").addEventListener("change", scheduleLive);
    $("live-refresh").addEventListener("click", refreshLive);
    $("online-form").addEventListener("submit", (ev) => { ev.preventDefault(); refreshOnline(); });
    $("experiment-form").addEventListener("submit", startExperiment);
    $("readout-refresh").addEventListener("click", () => state.experiment && openReadout(state.experiment, false));
    $("readout-stop").addEventListener("click", stopExperiment);
    $("item-form").addEventListener("submit", saveItem);
    $("item-load").addEventListener("click", loadItem);
    $("item-id").addEventListener("input", suggestItems);
    $("publish-form").addEventListener("submit", publish);
    $("rollback").addEventListener("click", () => switchModel("/v1/admin/models/rollback", null));
    $("reports-refresh").addEventListener("click", refreshReports);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.section === "live") refreshLive();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    Api.takeKeyFromUrl();
    Api.bindAlert();
    bind();
    start();
  });
})();
