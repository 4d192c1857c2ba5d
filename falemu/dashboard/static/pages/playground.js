// The Playground: a form per endpoint from the app's OpenAPI document (fal's mapping), runs through
// the queue (or sync) with live status and logs, fal's output rendering, every result kept to compare,
// and the exact request as fal_client, @fal-ai/client and curl code.
import { html, useEffect, useMemo, useState } from "../vendor/preact-htm.mjs";
import { API, follow, fmt, get, post, statusClass } from "../lib/api.js";
import { snippets } from "../lib/code.js";
import { Logs, Output } from "../lib/render.js";
import { endpoints, initialValues, inputSchema, isStreaming } from "../lib/schema.js";
import { Form } from "../lib/widgets.js";

let runCounter = 0;

export function Playground({ overview, app, endpoint, query }) {
  const alias = app || (overview.apps[0] && overview.apps[0].alias);
  const [openapi, setOpenapi] = useState(null);
  const [caps, setCaps] = useState(null);
  const [results, setResults] = useState([]);
  useEffect(() => { get("/capabilities").then(setCaps).catch(() => {}); }, []);
  useEffect(() => {
    setOpenapi(null);
    if (alias) get(`/apps/${encodeURIComponent(alias)}/openapi`).then(setOpenapi).catch((e) => setOpenapi({ available: false, message: e.message }));
  }, [alias]);
  if (!alias) return html`<div class="empty-state">No app is served.</div>`;
  const info = overview.apps.find((a) => a.alias === alias);
  return html`<div>
    <h1>Playground</h1>
    <div class="toolbar">
      <select value=${alias} onChange=${(e) => (location.hash = `#/playground/${e.target.value}`)}>
        ${overview.apps.map((a) => html`<option value=${a.alias}>${a.id}</option>`)}
      </select>
      ${info ? html`<span class="muted">runs through <span class="mono">${info.queue_url}</span> with your local key (kept server-side)</span>` : null}
    </div>
    ${!openapi ? html`<p class="muted">Loading the app's OpenAPI document…</p>`
      : !openapi.available ? html`<div class="message" data-testid="no-openapi">${openapi.message}</div>`
      : html`<${Runner} key=${alias} doc=${openapi.document} info=${info} endpoint=${endpoint} query=${query} caps=${caps}
          results=${results} setResults=${setResults} base=${overview.base_url} />`}
  </div>`;
}

function Runner({ doc, info, endpoint, query, caps, results, setResults, base }) {
  const eps = useMemo(() => endpoints(doc), [doc]);
  const initialEp = eps.find((e) => e.path === endpoint) || eps[0];
  const [ep, setEp] = useState(initialEp);
  const schema = ep ? inputSchema(doc, ep.operation) : null;
  const [values, setValues] = useState(() => (schema ? initialValues(doc, schema) : {}));
  const [error, setError] = useState("");
  const replay = query.get("replay");
  useEffect(() => {
    if (!replay) return;
    get(`/requests/${encodeURIComponent(replay)}`).then((r) => {
      const found = eps.find((e) => e.path === r.endpoint && e.method === r.method) || eps.find((e) => e.path === r.endpoint);
      if (found) setEp(found);
      if (r.input && r.input.json && typeof r.input.json === "object") setValues(r.input.json);
    }).catch((e) => setError(e.message));
  }, [replay]);
  if (!ep) return html`<div class="message">The app's OpenAPI document lists no endpoint to run.</div>`;
  const streaming = isStreaming(doc, ep.operation, ep.path);
  const choose = (key) => {
    const next = eps.find((e) => `${e.method} ${e.path}` === key);
    setEp(next);
    const s = inputSchema(doc, next.operation);
    setValues(s ? initialValues(doc, s) : {});
  };
  const run = async (mode) => {
    setError("");
    const input = schema ? values : undefined;
    const entry = { key: ++runCounter, app: info.alias, appId: info.id, path: ep.path, method: ep.method, mode, input: JSON.parse(JSON.stringify(input ?? {})), state: "submitting", logs: [], startedAt: Date.now() / 1000 };
    const update = (patch) => setResults((rs) => rs.map((r) => (r.key === entry.key ? { ...r, ...patch(r) } : r)));
    setResults((rs) => [entry, ...rs]);
    try {
      if (mode === "stream") return await runStream(entry, update);
      const started = await post("/playground/run", { app: info.alias, endpoint: ep.path, method: ep.method, input, mode });
      update(() => ({ id: started.request_id, state: started.state, status: started.status, output: started.output }));
      if (mode === "queue") {
        follow(`/requests/${encodeURIComponent(started.request_id)}/live`, (ev) => update((r) => ({ state: ev.state === "done" ? "fetching" : ev.state, status: ev.status, row: ev, logs: [...r.logs, ...ev.logs] })), async () => {
          const result = await get(`/requests/${encodeURIComponent(started.request_id)}/result`).catch((e) => ({ error: e.message }));
          update(() => ({ state: "done", status: result.status, output: result.output, error: result.error }));
        });
      } else {
        setTimeout(async () => {
          const detail = await get(`/requests/${encodeURIComponent(started.request_id)}`).catch(() => null);
          if (detail) update(() => ({ row: detail, logs: detail.logs }));
        }, 1200);
      }
    } catch (e) {
      update(() => ({ state: "failed", error: e.message }));
    }
  };
  const runStream = async (entry, update) => {
    const resp = await fetch(`${API}/playground/stream`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ app: info.alias, endpoint: ep.path, method: ep.method, input: values, mode: "sync" }),
    });
    update(() => ({ id: resp.headers.get("x-fal-request-id") || "", status: resp.status, state: "running", events: [] }));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const parts = buffer.split("\n\n");
      buffer = parts.pop();
      for (const part of parts) {
        const data = part.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        let parsed = data;
        try { parsed = JSON.parse(data); } catch (_) { /* plain text event */ }
        update((r) => ({ events: [...(r.events || []), parsed] }));
      }
    }
    update(() => ({ state: "done" }));
  };
  return html`<div class="split">
    <div class="panel">
      <div class="field"><label>Endpoint</label>
        <select data-testid="endpoint" value=${`${ep.method} ${ep.path}`} onChange=${(e) => choose(e.target.value)}>
          ${eps.map((e) => html`<option value=${`${e.method} ${e.path}`}>${e.method} ${e.path}${e.operation.summary ? ` — ${e.operation.summary}` : ""}</option>`)}
        </select>
        ${ep.operation.description ? html`<div class="hint">${ep.operation.description}</div>` : null}
      </div>
      ${schema ? html`<${Form} doc=${doc} schema=${schema} value=${values} onChange=${setValues} uploads=${caps} />`
        : html`<div class="muted" style="margin-bottom:12px">This endpoint takes no JSON body.</div>`}
      <div class="toolbar">
        ${streaming ? html`<button class="primary" data-testid="run-stream" onClick=${() => run("stream")}>Run (stream)</button>`
          : ep.method === "POST" ? html`<button class="primary" data-testid="run-queue" onClick=${() => run("queue")}>Run</button>` : null}
        <button data-testid="run-sync" onClick=${() => run("sync")}>Run sync</button>
        <button onClick=${() => setValues(schema ? initialValues(doc, schema) : {})}>Reset</button>
      </div>
      ${error ? html`<div class="message error">${error}</div>` : null}
    </div>
    <div data-testid="results">
      ${results.length ? results.map((r) => html`<${Result} key=${r.key} r=${r} base=${base} />`)
        : html`<div class="empty-state">Results appear here, newest first; each one stays to compare.</div>`}
    </div>
  </div>`;
}

function Result({ r, base }) {
  const [tab, setTab] = useState("output");
  const code = snippets({ appId: r.appId, path: r.path, input: r.input, mode: r.mode === "sync" ? "sync" : "queue", base });
  const row = r.row || {};
  return html`<div class="result" data-request=${r.id || ""} data-state=${r.state}>
    <div class="head">
      <span class=${"badge " + (r.state === "done" || r.state === "failed" ? statusClass(r.status) : "info")}>${r.state === "done" ? r.status : r.state}</span>
      <span class="badge">${r.mode}</span>
      <span class="mono">${r.method} ${r.path}</span>
      ${r.id ? html`<a class="mono" href=${`#/requests/${r.id}`}>${r.id.slice(0, 8)}</a>` : null}
      <span class="spacer"></span>
      ${row.queue_wait !== undefined ? html`<span class="muted">startup ${fmt.s(row.queue_wait)} · exec ${fmt.s(row.execution)}</span>` : null}
    </div>
    ${r.error ? html`<div class="message error">${r.error}</div>` : null}
    <div class="tabs">${["output", "python", "js", "curl"].map((t) => html`<button class=${tab === t ? "on" : ""} onClick=${() => setTab(t)}>${t === "js" ? "JavaScript" : t === "python" ? "Python" : t === "curl" ? "cURL" : "output & logs"}</button>`)}</div>
    ${tab === "output" ? (r.events ? html`<div data-testid="events">${r.events.map((ev, i) => html`<div><span class="muted">event ${i + 1}</span><${Output} body=${{ json: ev, content_type: "application/json", size: 0 }} /></div>`)}</div>`
      : r.output ? html`<${Output} body=${r.output} />` : html`<div class="muted">${r.state === "done" ? "no output" : "waiting for the result…"}</div>`) : null}
    ${tab === "output" ? html`<h3>logs</h3><div data-testid="logs"><${Logs} lines=${r.logs} empty=${r.state === "done" ? "the request wrote no log lines" : "no log lines yet"} /></div>` : null}
    ${["python", "js", "curl"].includes(tab) ? html`<pre class="code">${code[tab]}</pre>` : null}
  </div>`;
}
