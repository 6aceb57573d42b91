"use strict";
(() => {
  const form = document.getElementById("model-settings");
  if (!form) return;
  const path = `/v1/models/${encodeURIComponent(form.dataset.model)}`;
  ClinAI.onSubmit(form, async () => {
    const model = await ClinAI.api("PATCH", path, { visibility: form.visibility.value });
    document.getElementById("visibility").textContent = model.visibility;
  });
  document.getElementById("delete-model").addEventListener("click", async () => {
    if (!window.confirm("Delete this model? Its versions can no longer be run.")) return;
    try {
      const deleted = await ClinAI.api("DELETE", path);
      await ClinAI.after(deleted.seq, "/v1/models", "/models");
    } catch (err) {
      ClinAI.showError(form, err);
    }
  });
})();
(() => {
  const box = document.getElementById("upload");
  if (!box) return;
  const drop = document.getElementById("drop");
  const input = document.getElementById("package");
  const bar = document.getElementById("upload-progress");
  const line = document.getElementById("upload-status");
  const modelId = box.dataset.model;

  // XMLHttpRequest, not fetch: only it reports upload progress.
  function upload(file) {
    const data = new FormData();
    data.append("package", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/models/${encodeURIComponent(modelId)}/versions`);
    xhr.setRequestHeader("X-CSRF-Token", document.querySelector('meta[name="csrf-token"]').content);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false;
    bar.value = 0;
    line.textContent = `Uploading ${file.name}…`;
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) {
        bar.value = Math.round((event.loaded / event.total) * 100);
        line.textContent = `Uploading ${file.name}: ${bar.value} %`;
      }
    });
    xhr.addEventListener("load", async () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) {
        bar.value = 100;
        line.textContent = `Uploaded as version ${body.number}; opening it…`;
        await ClinAI.after(body.seq, `/v1/versions/${body.id}`, `/versions/${body.id}`);
      } else {
        line.textContent = `Upload refused: ${body.detail || xhr.statusText}`;
      }
    });
    xhr.addEventListener("error", () => { line.textContent = "The upload failed: network error."; });
    xhr.send(data);
  }

  input.addEventListener("change", () => { if (input.files.length) upload(input.files[0]); });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
})();
