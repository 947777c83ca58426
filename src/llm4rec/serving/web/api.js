/* llm4rec web: the API key and a fetch wrapper for the JSON API (no library, no network beyond this origin).
 *
 * The key lives in localStorage ("llm4rec.key"). A `?key=` URL parameter sets it and is then removed from
 * the address bar (history.replaceState), so it does not stay in the history or in a shared link.
 * Errors come back as {error: {status, message, expected}}: `Api.request` throws an ApiError carrying them and
 * `Api.showError` writes them into a status element (text only, never HTML).
 */
"use strict";

const Api = (() => {
  const KEY_STORAGE = "llm4rec.key";

  class ApiError extends Error {
    constructor(status, message, expected) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.expected = expected || null;
    }
  }

  function key() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  function setKey(value) {
    const v = (value || "").trim();
    if (v) localStorage.setItem(KEY_STORAGE, v);
    else localStorage.removeItem(KEY_STORAGE);
  }

  /** Move a `?key=` URL parameter into localStorage and drop it from the address bar. */
  function takeKeyFromUrl() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has("key")) return false;
    setKey(url.searchParams.get("key"));
    url.searchParams.delete("key");
    const search = url.searchParams.toString();
    window.history.replaceState(window.history.state, "", url.pathname + (search ? "?" + search : "") + url.hash);
    return true;
  }

  /** fetch with the key; resolves to the parsed JSON body, or throws ApiError (status 0: no answer). */
  async function request(method, path, body, options) {
    const opts = options || {};
    const headers = {Accept: "application/json"};
    const k = key();
    if (k) headers.Authorization = "Bearer " + k;
    const init = {method: method, headers: headers, cache: "no-store"};
    if (body !== undefined && body !== null) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (opts.signal) init.signal = opts.signal;
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(0, "the service did not answer (" + (e && e.message ? e.message : "network error") + ")",
        "a running llm4rec serve at this address");
    }
    let payload = null;
    const text = await response.text();
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch (e) {
        payload = null;
      }
    }
    if (!response.ok) {
      const err = payload && payload.error ? payload.error : {};
      throw new ApiError(response.status, err.message || ("HTTP " + response.status + " " + response.statusText),
        err.expected);
    }
    return payload;
  }

  const get = (path, options) => request("GET", path, null, options);
  const post = (path, body, options) => request("POST", path, body === undefined ? {} : body, options);
  const put = (path, body, options) => request("PUT", path, body, options);
  const del = (path, options) => request("DELETE", path, null, options);

  /** "a/b" -> "a%2Fb": an id as one path segment. */
  const seg = (id) => encodeURIComponent(String(id));

  /** Query string from an object, leaving out null/undefined/"" values. */
  function qs(params) {
    const u = new URLSearchParams();
    Object.keys(params).forEach((name) => {
      const v = params[name];
      if (v !== null && v !== undefined && v !== "") u.set(name, String(v));
    });
    const s = u.toString();
    return s ? "?" + s : "";
  }

  /** Text of an error for people: message, then what was expected. */
  function describe(err) {
    if (!err) return "";
    let text = err.message || String(err);
    if (err.status) text = err.status + ": " + text;
    if (err.expected && text.indexOf(err.expected) < 0) text += " (expected " + err.expected + ")";
    return text;
  }

  /** Show an error (or clear with null) in a status element, or in its [data-error-text] child; text only. */
  function showError(el, err) {
    if (!el) return;
    const target = el.querySelector("[data-error-text]") || el;
    if (!err) {
      target.textContent = "";
      el.hidden = true;
      return;
    }
    target.textContent = describe(err);
    el.hidden = false;
  }

  /** The page-level alert (#error): its Dismiss button hides it. */
  function bindAlert() {
    const el = document.getElementById("error");
    const close = document.getElementById("error-close");
    if (el && close) close.addEventListener("click", () => showError(el, null));
  }

  /** The element with this id. */
  const byId = (id) => document.getElementById(id);

  /** A new element with attributes and text (always as text, never parsed as HTML), appended to parent. */
  function element(name, attrs, parent, text) {
    const e = document.createElement(name);
    Object.keys(attrs || {}).forEach((k) => e.setAttribute(k, String(attrs[k])));
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }

  /** Random lowercase hex of n bytes (crypto.getRandomValues). */
  function randomHex(n) {
    const bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Wire a key form (input + submit): saves the key and calls onSaved. */
  function bindKeyForm(form, input, onSaved) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      setKey(input.value);
      input.value = "";
      onSaved();
    });
  }

  return {ApiError, key, setKey, takeKeyFromUrl, request, get, post, put, del, seg, qs, describe, showError,
          randomHex, bindKeyForm, bindAlert, byId, element};
})();
