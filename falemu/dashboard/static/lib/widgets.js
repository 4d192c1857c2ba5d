// The Playground form: one component per widget of lib/schema.js.
import { html, useState } from "../vendor/preact-htm.mjs";
import { bounds, fields, initial } from "./schema.js";

export function Form({ doc, schema, value, onChange, uploads }) {
  const { main, more } = fields(doc, schema);
  const set = (name, v) => {
    const next = { ...value };
    if (v === undefined || v === "") delete next[name];
    else next[name] = v;
    onChange(next);
  };
  const render = (f) => html`<${Field} key=${f.name} doc=${doc} field=${f} value=${value[f.name]}
    onChange=${(v) => set(f.name, v)} uploads=${uploads} />`;
  return html`<div class="form">
    ${main.map(render)}
    ${more.length ? html`<details class="more"><summary>Additional settings (${more.length})</summary>${more.map(render)}</details>` : null}
  </div>`;
}

function Field({ doc, field, value, onChange, uploads }) {
  const s = field.schema;
  const type = s.type === "array" ? `${(s.items && s.items.type) || "any"}[]` : s.type || (s.enum ? "enum" : "");
  return html`<div class="field" data-field=${field.name} data-widget=${field.widget}>
    <label>
      ${field.title}${field.required ? html`<span class="req">*</span>` : null}
      <span class="type">${type}</span>
      ${field.frozen ? html`<span class="badge muted">API only</span>` : null}
    </label>
    <${Widget} doc=${doc} field=${field} value=${value} onChange=${onChange} uploads=${uploads} />
    ${field.hint ? html`<div class="hint">${field.hint}</div>` : null}
  </div>`;
}

function Widget({ doc, field, value, onChange, uploads }) {
  const s = field.schema;
  const name = field.name;
  const disabled = field.frozen;
  const num = (text) => (text === "" ? undefined : s.type === "integer" ? parseInt(text, 10) : parseFloat(text));
  switch (field.widget) {
    case "textarea":
      return html`<textarea name=${name} rows="3" disabled=${disabled} placeholder=${placeholder(s)}
        value=${value ?? ""} onInput=${(e) => onChange(e.target.value)} />`;
    case "toggle":
      return html`<label class="toggle"><input type="checkbox" name=${name} disabled=${disabled} checked=${!!value}
        onChange=${(e) => onChange(e.target.checked)} /><span></span></label>`;
    case "select":
      return html`<select name=${name} disabled=${disabled} value=${value ?? ""} onChange=${(e) => {
        const raw = e.target.value;
        const found = s.enum.find((x) => String(x) === raw);
        onChange(raw === "" ? undefined : found);
      }}>
        ${field.required && value !== undefined ? null : html`<option value="">—</option>`}
        ${s.enum.map((x) => html`<option value=${String(x)}>${String(x)}</option>`)}
      </select>`;
    case "preset":
      return html`<div>
        <select onChange=${(e) => e.target.value && onChange(e.target.value)}>
          <option value="">presets…</option>${s.examples.map((x) => html`<option value=${x}>${x}</option>`)}
        </select>
        <input type="text" name=${name} value=${value ?? ""} onInput=${(e) => onChange(e.target.value)} />
      </div>`;
    case "slider": {
      const b = bounds(s);
      const current = value ?? s.default ?? b.min;
      return html`<div class="slider">
        <input type="range" min=${b.min} max=${b.max} step=${b.step} value=${current} disabled=${disabled}
          onInput=${(e) => onChange(num(e.target.value))} />
        <input type="number" name=${name} min=${b.min} max=${b.max} step=${b.step} value=${value ?? ""}
          disabled=${disabled} onInput=${(e) => onChange(num(e.target.value))} />
      </div>`;
    }
    case "seed":
      return html`<div class="row">
        <input type="number" name=${name} value=${value ?? ""} placeholder="random" disabled=${disabled}
          onInput=${(e) => onChange(num(e.target.value))} />
        <button type="button" class="fixed" title="randomize" onClick=${() => onChange(Math.floor(Math.random() * 2 ** 31))}>randomize</button>
      </div>`;
    case "number": {
      const b = bounds(s);
      return html`<input type="number" name=${name} min=${b.min} max=${b.max} step=${b.step} disabled=${disabled}
        placeholder=${placeholder(s)} value=${value ?? ""} onInput=${(e) => onChange(num(e.target.value))} />`;
    }
    case "checkboxes": {
      const chosen = new Set(value || []);
      return html`<div class="checks">${s.items.enum.map((x) => html`<label>
        <input type="checkbox" checked=${chosen.has(x)} onChange=${(e) => {
          const next = new Set(chosen);
          e.target.checked ? next.add(x) : next.delete(x);
          onChange(s.items.enum.filter((y) => next.has(y)));
        }} />${String(x)}</label>`)}</div>`;
    }
    case "image": case "video": case "audio": case "file":
      return html`<${Upload} name=${name} kind=${field.widget} value=${value} onChange=${onChange} uploads=${uploads} />`;
    case "images": case "files":
      return html`<${ListOf} value=${value} onChange=${onChange} make=${() => ""}
        item=${(v, set) => html`<${Upload} name=${name} kind=${field.widget === "images" ? "image" : "file"} value=${v} onChange=${set} uploads=${uploads} />`} />`;
    case "object":
      return html`<fieldset><${Form} doc=${doc} schema=${s} value=${value || {}} onChange=${onChange} uploads=${uploads} /></fieldset>`;
    case "objects": {
      const itemField = { name: `${name}[]`, schema: s.items, widget: "object", required: true };
      return html`<${ListOf} value=${value} onChange=${onChange} make=${() => initial(doc, itemField) || {}}
        item=${(v, set) => html`<fieldset><${Form} doc=${doc} schema=${s.items} value=${v || {}} onChange=${set} uploads=${uploads} /></fieldset>`} />`;
    }
    case "list": {
      const items = s.items || {};
      const isNum = items.type === "integer" || items.type === "number";
      return html`<${ListOf} value=${value} onChange=${onChange} make=${() => (isNum ? 0 : "")}
        item=${(v, set) => html`<input type=${isNum ? "number" : "text"} value=${v ?? ""}
          onInput=${(e) => set(isNum ? (items.type === "integer" ? parseInt(e.target.value, 10) : parseFloat(e.target.value)) : e.target.value)} />`} />`;
    }
    case "const":
      return html`<input type="text" value=${JSON.stringify(s.const)} disabled />`;
    case "json":
      return html`<${JsonInput} name=${name} value=${value} onChange=${onChange} />`;
    default:
      return html`<input type="text" name=${name} disabled=${disabled} placeholder=${placeholder(s)}
        minlength=${s.minLength} maxlength=${s.maxLength} value=${value ?? ""} onInput=${(e) => onChange(e.target.value)} />`;
  }
}

function placeholder(s) {
  if (Array.isArray(s.examples) && s.examples.length) return String(s.examples[0]);
  if (s.example !== undefined) return String(s.example);
  return "";
}

function ListOf({ value, onChange, make, item }) {
  const items = Array.isArray(value) ? value : [];
  const setAt = (i, v) => onChange(items.map((x, j) => (j === i ? v : x)));
  return html`<div>
    ${items.map((v, i) => html`<div class="list-item">${item(v, (nv) => setAt(i, nv))}
      <button type="button" class="fixed" title="remove" onClick=${() => onChange(items.filter((_, j) => j !== i))}>✕</button></div>`)}
    <button type="button" onClick=${() => onChange([...items, make()])}>+ add</button>
  </div>`;
}

function JsonInput({ name, value, onChange }) {
  const [text, setText] = useState(value === undefined ? "" : JSON.stringify(value, null, 2));
  const [bad, setBad] = useState(false);
  return html`<div><textarea name=${name} rows="4" class="mono" value=${text} onInput=${(e) => {
    setText(e.target.value);
    if (!e.target.value.trim()) { setBad(false); onChange(undefined); return; }
    try { onChange(JSON.parse(e.target.value)); setBad(false); } catch (_) { setBad(true); }
  }} />${bad ? html`<div class="hint pill-err">not valid JSON yet</div>` : null}</div>`;
}

// A file input: drop, paste, pick or a URL. With the local CDN the bytes are uploaded there and the
// field gets its URL (as @fal-ai/client does); without it the field gets a data URI.
function Upload({ name, kind, value, onChange, uploads }) {
  const [over, setOver] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const accept = { image: "image/*", video: "video/*", audio: "audio/*" }[kind] || "";
  const take = async (file) => {
    if (!file) return;
    setBusy(true); setError("");
    try { onChange(await toUrl(file, uploads)); } catch (e) { setError(String(e.message || e)); }
    setBusy(false);
  };
  const isData = typeof value === "string" && value.startsWith("data:");
  return html`<div class=${"drop" + (over ? " over" : "")}
      onDragOver=${(e) => { e.preventDefault(); setOver(true); }} onDragLeave=${() => setOver(false)}
      onDrop=${(e) => { e.preventDefault(); setOver(false); take(e.dataTransfer.files[0]); }}
      onPaste=${(e) => { const f = [...(e.clipboardData.files || [])][0]; if (f) { e.preventDefault(); take(f); } }}>
    <input type="url" name=${name} placeholder="https://… or drop, paste or pick a file" value=${isData ? "" : value ?? ""}
      onInput=${(e) => onChange(e.target.value || undefined)} />
    <div class="row" style="margin-top:8px">
      <input type="file" accept=${accept} data-upload=${name} onChange=${(e) => take(e.target.files[0])} />
      ${busy ? html`<span class="fixed muted">uploading…</span>` : null}
    </div>
    ${isData ? html`<div class="hint">file attached (${Math.round(value.length / 1.37 / 1024)} KiB, sent inline as a data URI)</div>` : null}
    ${value && kind === "image" ? html`<img class="preview" src=${value} alt="input preview" />` : null}
    ${error ? html`<div class="hint pill-err">${error}</div>` : null}
  </div>`;
}

async function toUrl(file, uploads) {
  if (uploads && uploads.uploads === "cdn" && uploads.upload_url) {
    // The dashboard puts it on the local CDN server-side (the CDN wants a key; the page has none).
    const url = `${uploads.upload_url}?file_name=${encodeURIComponent(file.name || "upload")}`;
    const resp = await fetch(url, { method: "POST", headers: { "content-type": file.type || "application/octet-stream" }, body: file });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.detail || `the local CDN refused the upload (${resp.status})`);
    return body.file_url;
  }
  const max = (uploads && uploads.max_data_uri_bytes) || 16 * 1024 * 1024;
  if (file.size > max) throw new Error(`file too large to send inline (${file.size} bytes)`);
  return await new Promise((ok, fail) => {
    const reader = new FileReader();
    reader.onload = () => ok(reader.result);
    reader.onerror = () => fail(reader.error);
    reader.readAsDataURL(file);
  });
}
