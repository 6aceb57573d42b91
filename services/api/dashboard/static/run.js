"use strict";
(() => {
  const { api, el } = ClinAI;
  const form = document.getElementById("run-form");
  const versionId = form.dataset.version;
  const fields = document.getElementById("fields");
  const $ = (id) => document.getElementById(id);

  // "Run again": the fields hold the inputs of job `again` (as resolved at submission;
  // a legacy job's params). A browser cannot fill in a file: each file field says so.
  async function prefill(jobId) {
    const job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
    const values = job.inputs ?? { params: job.params };
    for (const control of fields.querySelectorAll("input, select, textarea")) {
      const value = values[control.name];
      if (control.dataset.kind === "file") {
        const had = value ?? job.input_filename;
        control.closest(".field").append(el("p", {
          class: "notice", "data-refill": control.name,
          text: `Choose the file again: a browser cannot fill in a file for you${had ? ` (the job had ${Array.isArray(had) ? had.join(", ") : had})` : ""}.`,
        }));
      } else if (value === undefined || value === null) {
        continue;
      } else if (control.dataset.kind === "boolean") {
        control.checked = value === true;
      } else {
        control.value = typeof value === "string" ? value : JSON.stringify(value);
      }
    }
    $("again").textContent = `The inputs of job ${jobId}, to run again.`;
    $("again").hidden = false;
  }

  api("GET", `/v1/versions/${encodeURIComponent(versionId)}/schema`).then((schema) => {
    const required = new Set(schema.required || []);
    fields.replaceChildren(...Object.entries(schema.properties || {})
      .map(([name, prop]) => Schema.field(name, prop, required.has(name))));
    const again = new URLSearchParams(window.location.search).get("again");
    if (again && /^job_[A-Za-z0-9_]+$/.test(again)) {
      prefill(again).catch((err) => {
        $("again").textContent = `The inputs of job ${again} could not be filled in: ${err.message}`;
        $("again").hidden = false;
      });
    }
  }).catch((err) => { fields.textContent = err.message; });

  function formData() {
    const data = new FormData();
    data.append("version", versionId);
    for (const control of fields.querySelectorAll("input, select, textarea")) {
      if (control.dataset.kind === "file") {
        for (const file of control.files) data.append(control.name, file, file.name);
      } else if (control.dataset.kind === "boolean") {
        data.append(control.name, control.checked ? "true" : "false");
      } else if (control.value !== "") {
        data.append(control.name, control.value);
      }
    }
    return data;
  }

  async function show(jobId, seq) {
    const after = seq === undefined ? "" : `?after_seq=${seq}`;  // read our own write
    const job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}${after}`);
    $("job-status").replaceChildren(ClinAI.status(job.status));
    if (job.error_kind) {
      $("job-error").textContent = `${job.error_kind}: ${job.error_message || ""}`;
      $("job-error").hidden = false;
    }
    $("job-result").textContent = job.result === null ? "(none)" : JSON.stringify(job.result, null, 2);
    $("job-outputs").replaceChildren(...job.outputs.map((output) => {
      const link = el("a", { href: output.url, download: output.name, text: output.name });
      if ((output.content_type || "").startsWith("image/")) {
        return el("figure", {}, el("img", { src: output.url, alt: output.name, class: "output" }),
          el("figcaption", {}, link));
      }
      return el("p", {}, link, ` (${output.size_bytes} bytes)`);
    }));
    if (["succeeded", "failed", "canceled"].includes(job.status)) {
      $("job-log").textContent = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}/log`) || "(nothing printed)";
    }
    return job;
  }

  // Watch the job live; once it has ended, show it whole.
  function watch(jobId, seq) {
    $("job").hidden = false;
    $("job-id").textContent = jobId;
    $("job-again").href = `?again=${encodeURIComponent(jobId)}`;
    $("job-error").hidden = true;
    $("job-result").textContent = "";
    $("job-outputs").replaceChildren();
    $("job-log").textContent = "";
    show(jobId, seq).then((job) => {
      if (["succeeded", "failed", "canceled"].includes(job.status)) return;
      const source = new EventSource(`/v1/jobs/${encodeURIComponent(jobId)}/events`);
      source.addEventListener("JobStarted", () => $("job-status").replaceChildren(ClinAI.status("running")));
      for (const type of ["JobSucceeded", "JobFailed", "JobCanceled"]) {
        source.addEventListener(type, (event) => {
          source.close();
          show(jobId, JSON.parse(event.data).seq);  // once the read models have the end
        });
      }
    }).catch((err) => { $("job-status").textContent = err.message; });
  }

  ClinAI.onSubmit(form, async () => {
    const job = await api("POST", "/v1/jobs", formData());
    window.history.replaceState(null, "", `#${job.id}`);
    watch(job.id, job.seq);
  });

  const shown = window.location.hash.slice(1);
  if (/^job_[A-Za-z0-9_]+$/.test(shown)) watch(shown);
})();
