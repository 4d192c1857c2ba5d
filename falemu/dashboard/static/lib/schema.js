// From an app's OpenAPI document to Playground fields, by fal's mapping (fal docs: "Playground UI
// Mapping", "UI Metadata", "Field Grouping"). Pure functions: tests/js/schema.test.mjs runs them in node.

export function resolve(doc, schema, depth = 0) {
  if (!schema || typeof schema !== "object" || depth > 20) return schema || {};
  if (schema.$ref) {
    const parts = schema.$ref.replace(/^#\//, "").split("/");
    let target = doc;
    for (const p of parts) target = target ? target[p] : undefined;
    const { $ref, ...rest } = schema;
    return resolve(doc, { ...(target || {}), ...rest }, depth + 1);
  }
  if (Array.isArray(schema.allOf) && schema.allOf.length === 1) {
    const { allOf, ...rest } = schema;
    return resolve(doc, { ...resolve(doc, allOf[0], depth + 1), ...rest }, depth + 1);
  }
  for (const key of ["anyOf", "oneOf"]) {
    if (Array.isArray(schema[key])) {
      const options = schema[key].filter((s) => !(s && s.type === "null"));
      if (options.length === 1) {
        const { [key]: _, ...rest } = schema;
        return { ...resolve(doc, options[0], depth + 1), ...rest, nullable: true };
      }
    }
  }
  return schema;
}

// Endpoints of the document, in x-fal-order-paths order when given: [{path, method, operation}].
export function endpoints(doc) {
  const paths = doc && doc.paths ? doc.paths : {};
  const order = Array.isArray(doc && doc["x-fal-order-paths"]) ? doc["x-fal-order-paths"] : Object.keys(paths);
  const seen = new Set();
  const out = [];
  for (const path of [...order, ...Object.keys(paths)]) {
    if (seen.has(path) || !paths[path]) continue;
    seen.add(path);
    if (path === "/health" || path === "/openapi.json" || path.endsWith("/cancel")) continue;
    for (const method of ["post", "put", "patch", "get", "delete"]) {
      const op = paths[path][method];
      if (op) out.push({ path, method: method.toUpperCase(), operation: op });
    }
  }
  // POST first: what the Playground runs through the queue.
  out.sort((a, b) => (a.method === "POST" ? 0 : 1) - (b.method === "POST" ? 0 : 1));
  return out;
}

export function inputSchema(doc, operation) {
  const content = operation && operation.requestBody && operation.requestBody.content;
  if (!content) return null;
  const media = content["application/json"] || Object.values(content)[0];
  return media && media.schema ? resolve(doc, media.schema) : null;
}

export function isStreaming(doc, operation, path) {
  if (/\/stream$/.test(path || "")) return true;
  const responses = (operation && operation.responses) || {};
  return Object.values(responses).some((r) => r && r.content && r.content["text/event-stream"]);
}

const MEDIA_SUFFIX = [
  [/(^|_)mask_(image_)?url$/, "image"],
  [/(^|_)face_image_url$/, "image"],
  [/(^|_)image_urls$/, "images"],
  [/(^|_|^)image_url$/, "image"],
  [/(^|_)video_urls$/, "files"],
  [/(^|_|^)video_url$/, "video"],
  [/(^|_)audio_urls$/, "files"],
  [/(^|_|^)audio_url$/, "audio"],
  [/(^|_|^)(file|model|data|archive)_url$/, "file"],
];

// The widget of one property: fal's table, with ui.field first.
export function widgetFor(name, schema) {
  const ui = schema.ui || {};
  const lower = (name || "").toLowerCase();
  if (ui.field) {
    const f = String(ui.field);
    if (f === "textarea") return "textarea";
    if (f === "seed") return "seed";
    if (["image", "video", "audio", "file"].includes(f)) return schema.type === "array" ? "files" : f;
    return fieldByType(lower, schema);
  }
  if (schema.type === "string" || (!schema.type && !schema.enum && !schema.properties)) {
    for (const [re, widget] of MEDIA_SUFFIX) if (re.test(lower) && !widget.endsWith("s")) return widget;
  }
  if (schema.type === "array") {
    for (const [re, widget] of MEDIA_SUFFIX) if (re.test(lower) && widget.endsWith("s")) return widget;
  }
  return fieldByType(lower, schema);
}

function fieldByType(lower, schema) {
  if (Array.isArray(schema.enum)) return "select";
  if (schema.const !== undefined) return "const";
  const type = schema.type;
  if (type === "boolean") return "toggle";
  if (type === "integer" || type === "number") {
    if (/seed$/.test(lower)) return "seed";
    if (bounds(schema).both) return "slider";
    return "number";
  }
  if (type === "string") {
    if (lower === "prompt" || /_prompt$/.test(lower)) return "textarea";
    if (/model_name$/.test(lower) && Array.isArray(schema.examples)) return "preset";
    if (schema.format === "uri" || schema.format === "binary") return "file";
    return "text";
  }
  if (type === "array") {
    const items = schema.items || {};
    if (Array.isArray(items.enum)) return "checkboxes";
    if (items.type === "object" || items.properties) return "objects";
    return "list";
  }
  if (type === "object" || schema.properties) return schema.properties ? "object" : "json";
  return "json";
}

export function bounds(schema) {
  const min = schema.minimum ?? (schema.exclusiveMinimum !== undefined && typeof schema.exclusiveMinimum === "number" ? schema.exclusiveMinimum : undefined);
  const max = schema.maximum ?? (schema.exclusiveMaximum !== undefined && typeof schema.exclusiveMaximum === "number" ? schema.exclusiveMaximum : undefined);
  const step = schema.multipleOf ?? (schema.type === "integer" ? 1 : (min !== undefined && max !== undefined ? (max - min) / 100 : "any"));
  return { min, max, step, both: min !== undefined && max !== undefined };
}

// The fields of an object schema: ordered (x-fal-order-properties), hidden ones out, each with its
// widget, and split into the main form (required or ui.important, or optional without a default)
// and "Additional settings" (optional with a default).
export function fields(doc, schema) {
  const s = resolve(doc, schema);
  const props = s.properties || {};
  const required = new Set(s.required || []);
  const order = Array.isArray(s["x-fal-order-properties"]) ? s["x-fal-order-properties"] : Object.keys(props);
  const names = [...order.filter((n) => n in props), ...Object.keys(props).filter((n) => !order.includes(n))];
  const main = [];
  const more = [];
  for (const name of names) {
    const prop = resolve(doc, props[name]);
    const ui = prop.ui || {};
    if (ui.hidden) continue;
    const field = {
      name,
      schema: prop,
      widget: widgetFor(name, prop),
      required: required.has(name),
      important: !!ui.important,
      frozen: !!ui.frozen,
      title: prop.title || name,
      hint: ui.hint || prop.description || "",
    };
    if (field.required || field.important || prop.default === undefined) main.push(field);
    else more.push(field);
  }
  return { main, more };
}

// The starting value of a field: its default, else (when required) its first example, else nothing.
export function initial(doc, field) {
  const s = field.schema;
  if (s.default !== undefined) return clone(s.default);
  if (Array.isArray(s.examples) && s.examples.length && field.required) return clone(s.examples[0]);
  if (s.example !== undefined && field.required) return clone(s.example);
  if (field.widget === "object") {
    const value = {};
    const { main, more } = fields(doc, s);
    for (const f of [...main, ...more]) {
      const v = initial(doc, f);
      if (v !== undefined) value[f.name] = v;
    }
    return value;
  }
  if (field.required && field.widget === "toggle") return false;
  return undefined;
}

export function initialValues(doc, schema) {
  const value = {};
  if (!schema) return value;
  const { main, more } = fields(doc, schema);
  for (const f of [...main, ...more]) {
    const v = initial(doc, f);
    if (v !== undefined) value[f.name] = v;
  }
  return value;
}

function clone(v) { return v === undefined ? v : JSON.parse(JSON.stringify(v)); }

// Output rendering by fal's rule: an object with url and content_type is media.
export function isMedia(v) {
  return !!v && typeof v === "object" && !Array.isArray(v) && typeof v.url === "string" && typeof v.content_type === "string";
}

export function mediaKind(v) {
  const t = (v.content_type || "").toLowerCase();
  if (t.startsWith("image/")) return "image";
  if (t.startsWith("video/")) return "video";
  if (t.startsWith("audio/")) return "audio";
  return "file";
}

// Split an output object into media sections (in key order) and the rest (shown as JSON).
export function outputSections(output) {
  if (!output || typeof output !== "object" || Array.isArray(output)) return { media: [], rest: output };
  const media = [];
  const rest = {};
  for (const [key, value] of Object.entries(output)) {
    if (isMedia(value)) media.push({ key, items: [value] });
    else if (Array.isArray(value) && value.length && value.every(isMedia)) media.push({ key, items: value });
    else rest[key] = value;
  }
  return { media, rest: Object.keys(rest).length ? rest : null };
}
