"use strict";
ClinAI.onSubmit(document.getElementById("create-model"), async (form) => {
  const model = await ClinAI.api("POST", "/v1/models", {
    name: form.name.value,
    description: form.description.value,
    visibility: form.visibility.value,
  });
  await ClinAI.after(model.seq, `/v1/models/${model.id}`, `/models/${model.id}`);
});
