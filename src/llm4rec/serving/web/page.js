/* llm4rec web: the recommendation page (index.html).
 *
 * One user at a time (a known id, or an anonymous "anon-<hex>" id kept in localStorage): their history, their
 * top-k with scores, propensities and explanations, optionally fused with a free-text query. Opening an item
 * (a click), liking or dismissing it posts a feedback event about the slate it was shown in, then the list and
 * the history are fetched again and updated in place: the rows are fixed-height and reused, so nothing moves
 * but their content. Uses only the public /v1 API (and /v1/me to know whether to link the dashboard).
 */
"use strict";

(() => {
  const ANON_STORAGE = "llm4rec.anon";
  const USER_STORAGE = "llm4rec.user";
  const HISTORY_SHOWN = 50;

  const $ = Api.byId;
  const el = Api.element;

  const state = {
    user: "",
    query: "",          // the submitted query ("" = history alone)
    slate: null,        // the last recommendations response
    seq: 0,             // request sequence: a late answer to an old request is dropped
    renders: 0,
    itemSeq: 0,
    openItem: null,
  };

  // ------------------------------------------------------------------ users
  function anonId(fresh) {
    let id = localStorage.getItem(ANON_STORAGE);
    if (fresh || !id) {
      id = "anon-" + Api.randomHex(8);
      localStorage.setItem(ANON_STORAGE, id);
    }
    return id;
  }

  function initialUser() {
    const url = new URL(window.location.href);
    return (url.searchParams.get("user") || "").trim() || localStorage.getItem(USER_STORAGE) || anonId(false);
  }

  function setUser(user) {
    state.user = user;
    localStorage.setItem(USER_STORAGE, user);
    const url = new URL(window.location.href);
    url.searchParams.set("user", user);
    window.history.replaceState(window.history.state, "", url.pathname + "?" + url.searchParams.toString() + url.hash);
    $("current-user").textContent = user;
    $("recs-user").textContent = user;
    $("user-input").value = "";
    refresh();
  }

  let userTimer = null;
  let userAbort = null;
  function suggestUsers() {
    clearTimeout(userTimer);
    userTimer = setTimeout(async () => {
      if (userAbort) userAbort.abort();
      userAbort = new AbortController();
      const prefix = $("user-input").value.trim();
      try {
        const out = await Api.get("/v1/users" + Api.qs({prefix: prefix, limit: 20}), {signal: userAbort.signal});
        const list = $("user-options");
        list.textContent = "";
        (out.users || []).forEach((u) => el("option", {value: u}, list));
      } catch (e) {
        if (e.name !== "AbortError") showError(e);
      }
    }, 150);
  }

  // ------------------------------------------------------------------ errors
  function showError(err) {
    Api.showError($("error"), err);
    if (err && err.status === 401) showKeyForm();
  }

  // ------------------------------------------------------------------ recommendations
  function k() {
    return parseInt($("k").value, 10) || 10;
  }

  async function fetchSlate() {
    const policy = $("policy").value || null;
    if (state.query) {
      return Api.post("/v1/recommendations", {user: state.user, query: state.query, k: k(), policy: policy,
                                               explain: true});
    }
    return Api.get("/v1/users/" + Api.seg(state.user) + "/recommendations" +
                   Api.qs({k: k(), policy: policy, explain: "true"}));
  }

  async function refresh() {
    const seq = ++state.seq;
    const list = $("recs");
    list.setAttribute("aria-busy", "true");
    try {
      const [slate, history] = await Promise.all([fetchSlate(), Api.get("/v1/users/" + Api.seg(state.user) +
                                                                         "/history")]);
      if (seq !== state.seq) return;
      showError(null);
      renderSlate(slate);
      renderHistory(history);
    } catch (e) {
      if (seq === state.seq) showError(e);
    } finally {
      if (seq === state.seq) list.setAttribute("aria-busy", "false");
    }
  }

  /** The list keeps max(k, shown) rows; a row is reused in place (fixed height), so the page never moves. */
  function ensureRows(n) {
    const list = $("recs");
    while (list.children.length < n) list.appendChild(makeRow());
    while (list.children.length > n) list.removeChild(list.lastChild);
  }

  function makeRow() {
    const li = el("li", {class: "rec placeholder", "data-testid": "rec-empty"});
    el("span", {class: "rank", "aria-hidden": "true"}, li);
    const main = el("div", {class: "rec-main"}, li);
    const open = el("button", {type: "button", class: "title", "data-testid": "rec-open"}, main);
    open.addEventListener("click", () => onRowAction(li, "click"));
    el("span", {class: "nums", "data-testid": "rec-nums"}, main);
    el("p", {class: "why", "data-testid": "rec-why"}, main);
    const actions = el("div", {class: "actions"}, li);
    const like = el("button", {type: "button", class: "like", "data-testid": "rec-like"}, actions, "\u2665 Like");
    like.addEventListener("click", () => onRowAction(li, "like"));
    const dismiss = el("button", {type: "button", class: "dismiss", "data-testid": "rec-dismiss"}, actions,
                       "\u2715 Dismiss");
    dismiss.addEventListener("click", () => onRowAction(li, "dismiss"));
    return li;
  }

  function fillRow(li, rec, slate) {
    li.className = "rec";
    li.removeAttribute("aria-hidden");
    li.setAttribute("data-testid", "rec-item");
    li.setAttribute("data-item", rec.item);
    li.setAttribute("data-position", rec.position);
    li.setAttribute("data-recommendation-id", slate.recommendation_id);
    li.querySelector(".rank").textContent = String(rec.position + 1);
    const open = li.querySelector(".title");
    open.textContent = rec.label || rec.item;
    open.title = "Open " + (rec.label || rec.item) + " (counts as a click)";
    open.disabled = false;
    li.querySelector(".nums").textContent = "score " + rec.score.toFixed(3) + " \u00b7 propensity " +
      rec.propensity.toFixed(2) + " \u00b7 id " + rec.item;
    const like = li.querySelector(".like");
    like.setAttribute("aria-label", "Like " + (rec.label || rec.item));
    like.disabled = false;
    const dismiss = li.querySelector(".dismiss");
    dismiss.setAttribute("aria-label", "Dismiss " + (rec.label || rec.item));
    dismiss.disabled = false;
    renderWhy(li.querySelector(".why"), rec.explanation);
  }

  function clearRow(li) {
    li.className = "rec placeholder";
    li.setAttribute("aria-hidden", "true");
    li.setAttribute("data-testid", "rec-empty");
    ["data-item", "data-position", "data-recommendation-id"].forEach((a) => li.removeAttribute(a));
    li.querySelector(".rank").textContent = "";
    li.querySelector(".title").textContent = "";
    li.querySelector(".nums").textContent = "";
    li.querySelector(".why").textContent = "";
    li.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  }

  function renderWhy(p, explanation) {
    p.textContent = "";
    p.removeAttribute("title");
    if (!explanation) {
      el("span", {class: "muted"}, p, "popular with everyone (no history to explain from)");
      return;
    }
    if (explanation.text) p.title = explanation.text;
    const words = (explanation.query_words || []).filter((w) => w.weight > 0)
      .sort((a, b) => b.weight - a.weight).slice(0, 4);
    if (words.length) {
      el("span", {class: "why-label"}, p, "query: ");
      words.forEach((w) => el("mark", {class: "qword", "data-testid": "query-word",
                                       title: "weight " + w.weight.toFixed(3)}, p, w.word));
      p.appendChild(document.createTextNode(" "));
    }
    const because = (explanation.because || []).slice(0, 3);
    if (because.length) {
      el("span", {class: "why-label"}, p, "because of ");
      because.forEach((b, i) => {
        if (i) p.appendChild(document.createTextNode(", "));
        el("span", {class: "because", "data-testid": "because", "data-item": b.item,
                    title: "weight " + Number(b.weight).toFixed(3)}, p, b.label || b.item);
      });
    }
    if (!words.length && !because.length) el("span", {class: "muted"}, p, explanation.text || "");
  }

  function renderSlate(slate) {
    state.slate = slate;
    const items = slate.items || [];
    ensureRows(Math.max(k(), items.length));
    const list = $("recs");
    Array.from(list.children).forEach((li, i) => {
      if (i < items.length) fillRow(li, items[i], slate);
      else clearRow(li);
    });
    list.setAttribute("data-recommendation-id", slate.recommendation_id);
    list.setAttribute("data-render", String(++state.renders));
    list.setAttribute("data-query", state.query);
    const parts = ["model " + slate.model_version, "policy " + slate.policy];
    if (slate.experiment) parts.push("experiment " + slate.experiment + (slate.arm ? " (arm " + slate.arm + ")" : ""));
    if (state.query) parts.push("query \u201c" + state.query + "\u201d fused with the history");
    else parts.push("from the history alone");
    if (slate.fallback) parts.push("not personalised yet: popular items");
    $("recs-meta").textContent = parts.join(" \u00b7 ");
  }

  function renderHistory(history) {
    const ol = $("history");
    ol.textContent = "";
    const items = history.items || [];
    const shown = items.slice(-HISTORY_SHOWN).reverse();  // newest first
    shown.forEach((h) => {
      const li = el("li", {"data-testid": "history-item", "data-item": h.item}, ol);
      const b = el("button", {type: "button", class: "link"}, li, h.label || h.item);
      b.addEventListener("click", () => openItem(h.item));
      const how = h.source === "feedback" ? (h.type || "feedback") : "before (fit)";
      el("span", {class: "muted"}, li, " \u00b7 " + how);
    });
    $("history-count").textContent = items.length ? "(" + items.length + (items.length > HISTORY_SHOWN ?
      ", newest " + HISTORY_SHOWN + " shown" : "") + ")" : "";
    $("history-empty").hidden = items.length > 0;
    const known = $("user-known");
    known.textContent = history.known ? "known user" : "new user";
    known.className = "badge " + (history.known ? "ok" : "");
    const dismissed = history.dismissed || [];
    $("dismissed-line").hidden = !dismissed.length;
    $("dismissed-line").textContent = dismissed.length ? "Dismissed: " + dismissed.length + " item" +
      (dismissed.length === 1 ? "" : "s") + " (hidden from the list)" : "";
  }

  // ------------------------------------------------------------------ feedback
  async function onRowAction(li, type) {
    const item = li.getAttribute("data-item");
    if (!item || !state.slate) return;
    const position = parseInt(li.getAttribute("data-position"), 10);
    const event = {event_id: Api.randomHex(16), type: type, user: state.user, item: item,
                   timestamp: Date.now() / 1000, recommendation_id: li.getAttribute("data-recommendation-id"),
                   position: position};
    li.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      await Api.post("/v1/feedback", {events: [event]});
      if (type === "click" || state.openItem === item) openItem(item);  // after the event: it counts there too
      await refresh();
    } catch (e) {
      showError(e);
      li.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  }

  // ------------------------------------------------------------------ item details
  async function openItem(item) {
    const seq = ++state.itemSeq;
    state.openItem = item;
    try {
      const [info, similar] = await Promise.all([
        Api.get("/v1/items/" + Api.seg(item)),
        Api.get("/v1/items/" + Api.seg(item) + "/similar" + Api.qs({k: 8})),
      ]);
      if (seq !== state.itemSeq) return;
      renderItem(info, similar);
    } catch (e) {
      if (seq === state.itemSeq) showError(e);
    }
  }

  function renderItem(info, similar) {
    $("item-hint").hidden = true;
    $("item-body").hidden = false;
    const panel = $("item-panel");
    panel.setAttribute("data-item", info.item);
    $("item-heading").textContent = info.label || info.item;
    $("item-id").textContent = info.item;
    $("item-count").textContent = info.n_interactions + " interaction" + (info.n_interactions === 1 ? "" : "s");
    $("item-text").textContent = info.text || "(no text)";
    const dl = $("item-fields");
    dl.textContent = "";
    Object.keys(info.fields || {}).forEach((name) => {
      const v = info.fields[name];
      if (v === null || v === undefined || v === "") return;
      el("dt", {}, dl, name);
      el("dd", {}, dl, typeof v === "object" ? JSON.stringify(v) : v);
    });
    const ol = $("item-similar");
    ol.textContent = "";
    (similar.items || []).forEach((s) => {
      const li = el("li", {"data-testid": "similar-item", "data-item": s.item}, ol);
      const b = el("button", {type: "button", class: "link"}, li, s.label || s.item);
      b.addEventListener("click", () => openItem(s.item));
      el("span", {class: "muted"}, li, " " + s.score.toFixed(3));
    });
    const ul = $("item-users");
    ul.textContent = "";
    (info.users || []).forEach((u) => {
      const li = el("li", {}, ul);
      const b = el("button", {type: "button", class: "chip", "data-testid": "item-user",
                              title: "See recommendations for " + u}, li, u);
      b.addEventListener("click", () => setUser(u));
    });
    if (!(info.users || []).length) el("li", {class: "muted"}, ul, "nobody yet");
  }

  // ------------------------------------------------------------------ key and start
  function showKeyForm() {
    $("key-panel").hidden = false;
    $("app").hidden = true;
    $("forget-key").hidden = true;
    $("key-input").focus();
  }

  async function start() {
    if (!Api.key()) {
      showKeyForm();
      return;
    }
    $("key-panel").hidden = true;
    $("app").hidden = false;
    $("forget-key").hidden = false;
    ensureRows(k());
    try {
      const me = await Api.get("/v1/me");
      $("dashboard-link").hidden = (me.scopes || []).indexOf("admin") < 0;
    } catch (e) {
      showError(e);
      if (e.status === 401) return;
    }
    setUser(initialUser());
  }

  function bind() {
    Api.bindKeyForm($("key-form"), $("key-input"), () => {
      showError(null);
      start();
    });
    $("forget-key").addEventListener("click", () => {
      Api.setKey("");
      showKeyForm();
    });
    $("user-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const u = $("user-input").value.trim();
      if (u) setUser(u);
    });
    $("user-input").addEventListener("input", suggestUsers);
    $("user-input").addEventListener("focus", suggestUsers, {once: true});
    $("anon-button").addEventListener("click", () => setUser(anonId(true)));
    $("query-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.query = $("query").value.trim();
      refresh();
    });
    $("query-clear").addEventListener("click", () => {
      $("query").value = "";
      state.query = "";
      refresh();
    });
    $("policy").addEventListener("change", refresh);
    $("k").addEventListener("change", refresh);
  }

  document.addEventListener("DOMContentLoaded", () => {
    Api.takeKeyFromUrl();
    Api.bindAlert();
    bind();
    start();
  });
})();
