// ClinAI dashboard: what every page's script shares. Our own code, no library.
// Everything from users or models is put in the page as text (textContent), never as HTML.
"use strict";

const ClinAI = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function problem(response) {
    try {
      const body = await response.json();
      return new ApiError(response.status, body.detail || body.title || response.statusText);
    } catch {
      return new ApiError(response.status, `${response.status} ${response.statusText}`);
    }
  }

  // The JSON API with this page's session: the cookie goes by itself, the CSRF token
  // goes in X-CSRF-Token. `body`: an object (sent as JSON) or FormData.
  async function api(method, path, body) {
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, {
      method, headers, body: payload, credentials: "same-origin",
    });
    if (!response.ok) throw await problem(response);
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    return type.includes("json") ? response.json() : response.text();
  }

  // Once the read models have the command's event, go to `url`.
  async function after(seq, probe, url) {
    try {
      await api("GET", `${probe}${probe.includes("?") ? "&" : "?"}after_seq=${seq}`);
    } finally {
      window.location.assign(url);
    }
  }

  // An element with attributes and children (strings become text nodes).
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const MARKS = {
    uploaded: "○", building: "◐", ready: "✓", failed: "✗",
    queued: "○", running: "◐", succeeded: "✓", canceled: "⊘", retrying: "↻",
  };

  // A status as a symbol and a word (never colour alone).
  function status(value) {
    return el("span", { class: `status status-${value}` },
      el("span", { "aria-hidden": "true", text: MARKS[value] ?? "·" }), ` ${value}`);
  }

  // A form's error line: shows `err`'s message, or clears it.
  function showError(form, err) {
    const line = form.querySelector("[data-error]");
    if (line) line.textContent = err ? err.message : "";
  }

  // Submit a form through `action(form)`, with its button disabled meanwhile.
  function onSubmit(form, action) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
      showError(form, null);
      try {
        await action(form);
      } catch (err) {
        showError(form, err);
      } finally {
        if (button) button.disabled = false;
      }
    });
  }

  return { api, after, el, status, showError, onSubmit, ApiError };
})();
