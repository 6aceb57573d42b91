// A version's input schema (GET /v1/versions/{id}/schema): described in a table, and
// turned into form fields for the run page.
"use strict";
const Schema = (() => {
  const { el } = ClinAI;

  const isFile = (prop) => prop["x-clinai-file"] === true;

  function typeOf(prop) {
    if (isFile(prop)) return prop.type === "array" ? "files" : "file";
    if (prop.enum) return "one of";
    if (Array.isArray(prop.type)) return prop.type.join(" | ");
    if (prop.anyOf) return prop.anyOf.map((p) => p.type || "?").join(" | ");
    return prop.type || "any";
  }

  function constraints(prop) {
    const out = [];
    const add = (key, label) => { if (prop[key] !== undefined) out.push(`${label} ${prop[key]}`); };
    add("minimum", "≥"); add("exclusiveMinimum", ">"); add("maximum", "≤"); add("exclusiveMaximum", "<");
    add("minLength", "length ≥"); add("maxLength", "length ≤"); add("pattern", "matches");
    if (prop.enum) out.push(prop.enum.map((v) => JSON.stringify(v)).join(", "));
    if (prop.default !== undefined) out.push(`default ${JSON.stringify(prop.default)}`);
    return out.join("; ");
  }

  function table(schema) {
    const required = new Set(schema.required || []);
    const body = el("tbody");
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      body.append(el("tr", {},
        el("td", {}, el("code", { text: name })),
        el("td", { text: typeOf(prop) }),
        el("td", { text: required.has(name) ? "yes" : "no" }),
        el("td", { text: constraints(prop) }),
        el("td", { text: prop.description || "" })));
    }
    const head = el("thead", {}, el("tr", {}, ...["Input", "Type", "Required", "Constraints", "Description"]
      .map((h) => el("th", { scope: "col", text: h }))));
    return el("div", { class: "table-wrap" }, el("table", { id: "schema-table" }, head, body));
  }

  // A labelled field for one input; `preview` shows a chosen image.
  function field(name, prop, required) {
    const id = `input-${name}`;
    const help = [prop.description, constraints(prop)].filter(Boolean).join(" · ");
    const label = el("label", { for: id }, name, required ? " (required)" : "");
    const attrs = { id, name, required: required && !("default" in prop), "aria-describedby": `${id}-help` };
    let control;
    let preview = null;
    if (isFile(prop)) {
      control = el("input", { ...attrs, type: "file", multiple: prop.type === "array" });
      preview = el("div", { class: "preview", id: `${id}-preview` });
      control.addEventListener("change", () => {
        preview.replaceChildren();
        for (const file of control.files) {
          if (file.type.startsWith("image/")) {
            const img = el("img", { alt: `Preview of ${file.name}` });
            img.src = URL.createObjectURL(file);
            preview.append(img);
          } else {
            preview.append(el("p", { text: `${file.name} (${file.size} bytes)` }));
          }
        }
      });
    } else if (prop.enum) {
      control = el("select", attrs, ...prop.enum.map((v) =>
        el("option", { value: String(v), selected: v === prop.default, text: String(v) })));
    } else if (prop.type === "boolean") {
      control = el("input", { ...attrs, type: "checkbox", checked: prop.default === true, required: false });
    } else if (prop.type === "integer" || prop.type === "number") {
      control = el("input", {
        ...attrs, type: "number", step: prop.type === "integer" ? "1" : "any",
        min: prop.minimum, max: prop.maximum,
        value: prop.default !== undefined ? String(prop.default) : null,
      });
    } else if (prop.type === "object" || prop.type === "array") {
      control = el("textarea", { ...attrs, rows: 3, placeholder: "JSON" });
    } else {
      control = el("input", {
        ...attrs, type: "text", minlength: prop.minLength, maxlength: prop.maxLength,
        pattern: prop.pattern, value: typeof prop.default === "string" ? prop.default : null,
      });
    }
    control.dataset.kind = isFile(prop) ? "file" : (prop.type === "boolean" ? "boolean" : "value");
    return el("div", { class: "field" }, label, control, el("small", { id: `${id}-help`, text: help }), preview);
  }

  return { table, field };
})();
