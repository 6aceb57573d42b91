"use strict";
(() => {
  const { api, el } = ClinAI;
  const output = (label, value) => {
    document.getElementById("webhook-output-label").textContent = label;
    document.getElementById("webhook-output-value").textContent = value;
    document.getElementById("webhook-output").hidden = false;
  };
  const path = (id) => `/v1/webhooks/${encodeURIComponent(id)}`;

  async function showDeliveries(section) {
    const id = section.dataset.webhook;
    const box = section.querySelector(".deliveries-list");
    const { items } = await api("GET", `${path(id)}/deliveries?limit=20`);
    if (!items.length) { box.replaceChildren(el("p", { text: "No deliveries yet." })); return; }
    const rows = items.map((d) => {
      const last = d.attempts[d.attempts.length - 1];
      const redeliver = el("button", { type: "button", text: "Redeliver", "aria-label": `Redeliver ${d.event_type} ${d.id}` });
      redeliver.addEventListener("click", async () => {
        redeliver.disabled = true;
        await api("POST", `${path(id)}/deliveries/${encodeURIComponent(d.id)}/redeliver`);
        redeliver.textContent = "Queued";
      });
      return el("tr", { "data-delivery": d.id },
        el("td", { text: d.event_type }),
        el("td", {}, ClinAI.status(d.status)),
        el("td", { text: String(d.attempts.length) }),
        el("td", { text: last?.status_code ? String(last.status_code) : (last?.error || "–") }),
        el("td", { text: last ? `${Math.round(last.latency_ms)} ms` : "–" }),
        el("td", { text: d.created_at.slice(0, 19).replace("T", " ") }),
        el("td", {}, redeliver));
    });
    const head = el("tr", {}, ...["Event", "Status", "Attempts", "Last answer", "Latency", "Queued", ""]
      .map((h) => el("th", { scope: "col", text: h })));
    box.replaceChildren(el("table", { class: "deliveries" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  for (const section of document.querySelectorAll("section.hook")) {
    const id = section.dataset.webhook;
    const act = (selector, action) => {
      const button = section.querySelector(selector);
      button?.addEventListener("click", async () => {
        button.disabled = true;
        try { await action(); } catch (err) { output("That did not work:", err.message); }
        button.disabled = false;
      });
    };
    act("button.deliveries", () => showDeliveries(section));
    act("button.rotate", async () => {
      const rotated = await api("POST", `${path(id)}/rotate-secret`);
      output(`New secret (shown once; the old one stays valid until ${rotated.previous_valid_until}):`, rotated.secret);
    });
    act("button.enable", async () => { await api("POST", `${path(id)}/enable`); output("Re-enabled.", id); });
    act("button.delete", async () => { await api("DELETE", path(id)); section.remove(); });
  }

  ClinAI.onSubmit(document.getElementById("create-webhook"), async (form) => {
    const hook = await api("POST", "/v1/webhooks", {
      url: form.url.value,
      events: form.events.value.split(",").map((e) => e.trim()).filter(Boolean),
      description: form.description.value,
    });
    output(`Webhook ${hook.id} created. Its signing secret (shown once; reload the page to see it listed):`, hook.secret);
    form.reset();
  });
})();
