// Outputs by fal's rules: objects with url + content_type are media (image galleries of two columns,
// the first spanning when the count is odd; video and audio players; other files as links); the rest
// as raw JSON.
import { html, useState } from "../vendor/preact-htm.mjs";
import { mediaKind, outputSections } from "./schema.js";

export function Output({ body }) {
  const [raw, setRaw] = useState(false);
  if (!body) return html`<div class="muted">no output kept</div>`;
  const value = body.json !== undefined && body.json !== null ? body.json : undefined;
  if (value === undefined) {
    if (body.content_type && body.content_type.startsWith("image/") && body.base64) {
      return html`<div class="media"><img src=${`data:${body.content_type};base64,${body.base64}`} alt="output" /></div>`;
    }
    return html`<pre>${body.text ?? (body.base64 ? `(binary, ${body.size} bytes)` : "")}${body.truncated ? "\n… (truncated)" : ""}</pre>`;
  }
  const { media, rest } = outputSections(value);
  return html`<div class="output">
    ${media.map((m) => html`<div class="media-section"><h3>${m.key}</h3><${Media} items=${m.items} /></div>`)}
    ${media.length && !raw ? (rest ? html`<h3>other fields</h3><pre>${JSON.stringify(rest, null, 2)}</pre>` : null)
      : html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`}
    ${media.length ? html`<button type="button" onClick=${() => setRaw(!raw)}>${raw ? "hide raw JSON" : "raw JSON"}</button>` : null}
  </div>`;
}

// An image's width and height when the output gives them (fal's Image may leave them null): a null
// would set the attribute to 0 and hide the picture.
function size(it) {
  const known = {};
  if (Number(it.width) > 0) known.width = it.width;
  if (Number(it.height) > 0) known.height = it.height;
  return known;
}

function Media({ items }) {
  const kind = mediaKind(items[0]);
  if (kind === "image") {
    return html`<div class="gallery">${items.map((it, i) => html`<a href=${it.url} target="_blank" rel="noreferrer"
      class=${items.length % 2 === 1 && i === 0 ? "span" : ""}><img src=${it.url} alt=${it.file_name || "image"}
      ...${size(it)} /></a>`)}</div>`;
  }
  return html`<div class="media">${items.map((it) => {
    const k = mediaKind(it);
    if (k === "video") return html`<video src=${it.url} controls></video>`;
    if (k === "audio") return html`<audio src=${it.url} controls></audio>`;
    if (k === "image") return html`<img src=${it.url} alt="image" />`;
    return html`<div><a href=${it.url} download=${it.file_name || ""}>⬇ ${it.file_name || it.url.slice(0, 80)}</a>
      <span class="muted"> ${it.content_type}${it.file_size ? `, ${it.file_size} bytes` : ""}</span></div>`;
  })}</div>`;
}

export function Logs({ lines, empty }) {
  if (!lines || !lines.length) return html`<div class="logs"><div class="empty">${empty || "no log lines"}</div></div>`;
  return html`<div class="logs">${lines.map((l) => html`<div class=${"ln " + (l.stream || "")}><span class="ts">${
    new Date(l.timestamp * 1000).toLocaleTimeString([], { hour12: false })}</span>${l.message}</div>`)}</div>`;
}

export function BodyView({ body, label }) {
  if (!body) return html`<div class="muted">${label}: not kept</div>`;
  return html`<div>
    <div class="muted">${body.content_type || "no content type"}, ${body.size} bytes${body.truncated ? " (first 64 KiB kept)" : ""}</div>
    <pre>${body.json !== undefined && body.json !== null ? JSON.stringify(body.json, null, 2) : body.text ?? "(binary)"}</pre>
  </div>`;
}
