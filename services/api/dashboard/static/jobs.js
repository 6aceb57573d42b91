"use strict";
for (const button of document.querySelectorAll("button.cancel")) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    const cell = button.closest("tr").querySelector(".job-status");
    try {
      const job = await ClinAI.api("POST", `/v1/jobs/${encodeURIComponent(button.dataset.job)}/cancel`);
      cell.replaceChildren(ClinAI.status(job.cancel_requested && job.status === "running" ? "running" : job.status));
      if (job.status !== "running") button.remove();
      else button.textContent = "Cancel requested";
    } catch (err) {
      button.disabled = false;
      cell.textContent = err.message;
    }
  });
}
