"use strict";
(() => {
  const { api, el } = ClinAI;
  const rows = document.querySelector("#keys tbody");

  function revokeButton(id, name) {
    const button = el("button", { type: "button", class: "revoke", "data-key": id, "aria-label": `Revoke key ${name}`, text: "Revoke" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      const row = button.closest("tr");
      try {
        await api("DELETE", `/v1/api-keys/${encodeURIComponent(id)}`);
        row.cells[3].textContent = "✗ revoked";
        button.remove();
      } catch (err) {
        button.disabled = false;
        row.cells[3].textContent = err.message;
      }
    });
    return button;
  }

  for (const button of document.querySelectorAll("button.revoke")) {
    const row = button.closest("tr");
    button.replaceWith(revokeButton(button.dataset.key, row.cells[0].textContent));
  }

  ClinAI.onSubmit(document.getElementById("create-key"), async (form) => {
    const key = await api("POST", "/v1/api-keys", { name: form.name.value });
    document.getElementById("secret").textContent = key.secret;
    document.getElementById("new-secret").hidden = false;
    rows.prepend(el("tr", { "data-key": key.id },
      el("td", { text: key.name }), el("td", {}, el("code", { text: `${key.secret.slice(0, 14)}…` })),
      el("td", { text: "just now" }), el("td", { text: "✓ active" }),
      el("td", {}, revokeButton(key.id, key.name))));
  });
})();
