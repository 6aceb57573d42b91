"use strict";
(() => {
  const box = document.getElementById("version");
  const id = box.dataset.version;
  const log = document.getElementById("build-log");
  const statusBox = document.getElementById("version-status");
  const failure = document.getElementById("failure");
  const runLink = document.getElementById("run-link");

  const setStatus = (value) => statusBox.replaceChildren(ClinAI.status(value));

  // The build's events from the first, live: the log fills as the builder writes it.
  const source = new EventSource(`/v1/versions/${encodeURIComponent(id)}/events`);
  const on = (type, handler) => source.addEventListener(type, (event) => handler(JSON.parse(event.data)));
  on("BuildStarted", () => { log.textContent = ""; setStatus("building"); });
  on("BuildLogAppended", (event) => {
    log.append(document.createTextNode(event.text));
    log.scrollTop = log.scrollHeight;
  });
  on("VersionBuilt", async (event) => {
    source.close();
    // Ready once the read models have it too: a job submitted then is accepted.
    await ClinAI.api("GET", `/v1/versions/${encodeURIComponent(id)}?after_seq=${event.seq}`).catch(() => null);
    setStatus("ready");
    document.getElementById("build-time").textContent = `; built in ${event.duration_s.toFixed(1)} s`;
    runLink.hidden = false;
  });
  on("BuildFailed", (event) => {
    setStatus("failed");
    failure.textContent = event.reason;
    failure.hidden = false;
    source.close();
  });

  ClinAI.api("GET", `/v1/versions/${encodeURIComponent(id)}/schema`)
    .then((schema) => document.getElementById("schema").replaceChildren(Schema.table(schema)))
    .catch((err) => { document.getElementById("schema").textContent = err.message; });
})();
