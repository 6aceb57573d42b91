"use strict";
(() => {
  const { api } = ClinAI;
  const output = (label, value) => {
    document.getElementById("admin-output-label").textContent = label;
    document.getElementById("admin-output-value").textContent = value;
    document.getElementById("admin-output").hidden = false;
  };

  for (const button of document.querySelectorAll("button.invite")) {
    button.addEventListener("click", async () => {
      try {
        const invitation = await api("POST", `/v1/users/${encodeURIComponent(button.dataset.user)}/invitations`, {});
        output(`Invitation link (shown once; works once, until ${invitation.expires_at}):`, invitation.url);
      } catch (err) {
        output("Could not make an invitation:", err.message);
      }
    });
  }

  ClinAI.onSubmit(document.getElementById("create-user"), async (form) => {
    const body = { name: form.name.value, is_admin: form.is_admin.checked };
    if (form.password.value) body.password = form.password.value;
    const user = await api("POST", "/v1/users", body);
    output(`User ${user.name} (${user.id}) created. Their first API key (shown once):`, user.api_key.secret);
    form.reset();
  });

  ClinAI.onSubmit(document.getElementById("set-password"), async (form) => {
    const reply = await api("PUT", `/v1/users/${encodeURIComponent(form.user.value)}/password`, { password: form.password.value });
    output("Password set.", `${reply.sessions_ended} session(s) of theirs ended.`);
    form.password.value = "";
  });
})();
