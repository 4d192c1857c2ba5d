// Errors: failed requests grouped by error type, status and endpoint, each with its payload, answer
// and the runner's logs around it; runners that failed to start.
import { html, useEffect, useState } from "../vendor/preact-htm.mjs";
import { fmt, get } from "../lib/api.js";
import { Logs } from "../lib/render.js";

export function Errors({ overview, version }) {
  const [app, setApp] = useState("");
  const [data, setData] = useState(null);
  const [open, setOpen] = useState(null);
  useEffect(() => { get("/errors", { app }).then(setData).catch(() => {}); }, [version, app]);
  if (!data) return html`<p class="muted">Loading…</p>`;
  return html`<div>
    <h1>Errors</h1>
    <div class="sub">${data.total} failed requests, grouped by error type, status code and endpoint; falemu's platform errors (startup_timeout, request_timeout, runner_disconnected…) included.</div>
    <div class="toolbar"><select value=${app} onChange=${(e) => setApp(e.target.value)}><option value="">all apps</option>${overview.apps.map((a) => html`<option value=${a.alias}>${a.alias}</option>`)}</select></div>
    ${data.groups.length ? html`<table class="error-groups"><thead><tr><th>error type</th><th>status</th><th>app</th><th>endpoint</th><th class="num">count</th><th>first</th><th>last</th></tr></thead>
      <tbody>${data.groups.map((g, i) => html`<tr class="click" data-group=${`${g.error_type} ${g.status} ${g.endpoint}`} onClick=${() => setOpen(open === i ? null : i)}>
        <td><span class=${"badge " + (g.status >= 500 ? "err" : "warn")}>${g.error_type}</span></td><td>${g.status}</td><td>${g.app}</td><td class="mono">${g.endpoint}</td>
        <td class="num">${g.count}</td><td>${fmt.when(g.first)}</td><td>${fmt.when(g.last)}</td></tr>
        ${open === i ? html`<tr><td colspan="7"><${Group} ids=${g.request_ids} /></td></tr>` : null}`)}</tbody></table>`
      : html`<div class="empty-state">No failed requests.</div>`}
    <h2>Runners that failed</h2>
    ${data.runner_failures.length ? data.runner_failures.map((f) => html`<div class="result"><div class="head"><span class="badge err">${f.error_type}</span>
      <span class="mono">${f.runner}</span><span class="muted">${fmt.when(f.at)}</span></div><div>${f.message}</div><h3>logs</h3><${Logs} lines=${f.logs} /></div>`)
      : html`<div class="empty-state">No runner failed to start.</div>`}
  </div>`;
}

function Group({ ids }) {
  const [which, setWhich] = useState(ids[0]);
  const [r, setR] = useState(null);
  useEffect(() => { get(`/requests/${encodeURIComponent(which)}`).then(setR).catch(() => {}); }, [which]);
  return html`<div class="panel">
    <div class="toolbar">${ids.slice(0, 12).map((id) => html`<button class=${id === which ? "primary" : ""} onClick=${() => setWhich(id)}>${id.slice(0, 8)}</button>`)}
      ${ids.length > 12 ? html`<span class="muted">and ${ids.length - 12} more</span>` : null}</div>
    ${r ? html`<div data-testid="error-detail">
      <div class="sub"><a class="mono" href=${`#/requests/${r.id}`}>${r.id}</a> · ${fmt.when(r.received_at)} · ${fmt.s(r.total)} · runner <span class="mono">${r.runner || "none"}</span></div>
      <div class="grid2"><div><h3>payload</h3><pre>${r.input ? (r.input.json !== null && r.input.json !== undefined ? JSON.stringify(r.input.json, null, 2) : r.input.text) : "not kept"}</pre></div>
        <div><h3>response</h3><pre>${r.output ? (r.output.json !== null && r.output.json !== undefined ? JSON.stringify(r.output.json, null, 2) : r.output.text) : "not kept"}</pre></div></div>
      <h3>runner logs around it</h3><${Logs} lines=${r.logs_around || r.logs} /></div>` : html`<p class="muted">Loading…</p>`}
  </div>`;
}
