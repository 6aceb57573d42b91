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
    if (form.email.value) body.email = form.email.value;
    const user = await api("POST", "/v1/users", body);
    output(`User ${user.name} (${user.id}) created. Their first API key (shown once):`, user.api_key.secret);
    form.reset();
  });

  const limitsForm = document.getElementById("set-limits");
  const number = (input) => (input.value === "" ? null : Number(input.value));
  const showLimits = async () => {
    const limits = await api("GET", `/v1/users/${encodeURIComponent(limitsForm.user.value)}/limits`);
    limitsForm.max_queued_jobs.value = limits.own.max_queued_jobs ?? "";
    limitsForm.max_running_jobs.value = limits.own.max_running_jobs ?? "";
  };
  limitsForm.user.addEventListener("change", () => showLimits().catch((err) => ClinAI.showError(limitsForm, err)));
  ClinAI.onSubmit(limitsForm, async (form) => {
    const limits = await api("PUT", `/v1/users/${encodeURIComponent(form.user.value)}/limits`, {
      max_queued_jobs: number(form.max_queued_jobs),
      max_running_jobs: number(form.max_running_jobs),
    });
    output("Limits set; in force now:", JSON.stringify(limits.in_force));
  });
  if (limitsForm.user.value) showLimits().catch((err) => ClinAI.showError(limitsForm, err));

  ClinAI.onSubmit(document.getElementById("set-password"), async (form) => {
    const reply = await api("PUT", `/v1/users/${encodeURIComponent(form.user.value)}/password`, { password: form.password.value });
    output("Password set.", `${reply.sessions_ended} session(s) of theirs ended.`);
    form.password.value = "";
  });
})();
