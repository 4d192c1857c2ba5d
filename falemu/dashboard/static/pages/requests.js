// Request history: every request, sync and queue, with filters; one request in full; replay.
import { html, useEffect, useState } from "../vendor/preact-htm.mjs";
import { fmt, get, post, statusClass } from "../lib/api.js";
import { BodyView, Logs, Output } from "../lib/render.js";

const PAGE = 50; // rows per page: the newest first, older ones a click away

export function Requests({ overview, version, query }) {
  const [filters, setFilters] = useState({ app: query.get("app") || "", status: query.get("status") || "", mode: "", endpoint: "", q: "" });
  const [pages, setPages] = useState([]); // the cursor (a row's seq) of each page after the first
  const [data, setData] = useState(null);
  const olderThan = pages.length ? pages[pages.length - 1] : null;
  useEffect(() => { get("/requests", { ...filters, limit: PAGE, older_than: olderThan }).then(setData).catch(() => {}); }, [version, JSON.stringify(filters), olderThan]);
  const set = (k) => (e) => { setPages([]); setFilters({ ...filters, [k]: e.target.value }); };
  const rows = data ? data.requests : [];
  const first = pages.length * PAGE;
  return html`<div>
    <h1>Requests</h1>
    <div class="sub">Every request through the gateway, sync and queue, newest first. Inputs and outputs are kept up to 64 KiB each (not for <span class="mono">X-Fal-Store-IO: 0</span>).</div>
    <div class="toolbar">
      <select value=${filters.app} onChange=${set("app")} data-testid="filter-app"><option value="">all apps</option>${overview.apps.map((a) => html`<option value=${a.alias}>${a.alias}</option>`)}</select>
      <select value=${filters.status} onChange=${set("status")} data-testid="filter-status">
        ${[["", "any status"], ["2xx", "2xx"], ["4xx", "4xx"], ["5xx", "5xx"], ["error", "errors"], ["queued", "queued"], ["running", "running"]].map(([v, l]) => html`<option value=${v}>${l}</option>`)}
      </select>
      <select value=${filters.mode} onChange=${set("mode")}><option value="">sync and queue</option><option value="sync">sync</option><option value="queue">queue</option></select>
      <input type="text" placeholder="endpoint, e.g. /greet" style="width:200px" value=${filters.endpoint} onInput=${set("endpoint")} />
      <input type="text" placeholder="request id" style="width:220px" value=${filters.q} onInput=${set("q")} />
      ${data ? html`<span class="muted">${olderThan === null ? `${data.matched} matching of ${data.kept} kept` : `${data.matched} older matching of ${data.kept} kept`}</span>` : null}
    </div>
    ${data ? html`<${RequestTable} rows=${rows} pageSize=${PAGE} />` : html`<p class="muted">Loading…</p>`}
    ${data && (pages.length || data.matched > rows.length) ? html`<div class="toolbar pager">
      <button disabled=${!pages.length} onClick=${() => setPages([])}>Newest</button>
      <button disabled=${!pages.length} onClick=${() => setPages(pages.slice(0, -1))} data-testid="newer">Newer</button>
      <span class="muted">rows ${rows.length ? first + 1 : 0}–${first + rows.length}</span>
      <button disabled=${data.matched <= rows.length} onClick=${() => setPages([...pages, rows[rows.length - 1].seq])} data-testid="older">Older</button>
    </div>` : null}
  </div>`;
}

export function RequestTable({ rows, pageSize }) {
  if (!rows.length) return html`<div class="empty-state">No requests match.</div>`;
  return html`<table class="requests" data-page-size=${pageSize}><thead><tr><th>when</th><th>request</th><th>app</th><th>endpoint</th><th>mode</th><th>status</th>
    <th class="num">queue wait</th><th class="num">execution</th><th class="num">total</th><th>runner</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr class="click" data-request=${r.id} onClick=${() => (location.hash = `#/requests/${r.id}`)}>
      <td>${fmt.when(r.received_at)}</td><td class="mono">${r.id.slice(0, 8)}</td><td>${r.app}</td><td class="mono">${r.method} ${r.endpoint}</td>
      <td>${r.mode}</td><td><span class=${"badge " + (r.state === "done" ? statusClass(r.status) : "info")}>${r.state === "done" ? r.status : r.state}</span>
        ${r.error_type ? html` <span class="muted">${r.error_type}</span>` : null}</td>
      <td class="num">${fmt.s(r.queue_wait)}</td><td class="num">${fmt.s(r.execution)}</td><td class="num">${fmt.s(r.total)}</td><td class="mono">${r.runner}</td>
    </tr>`)}</tbody></table>`;
}

export function RequestPage({ id, version }) {
  const [r, setR] = useState(null);
  const [error, setError] = useState("");
  const [replayed, setReplayed] = useState(null);
  useEffect(() => { get(`/requests/${encodeURIComponent(id)}`).then(setR).catch((e) => setError(e.message)); }, [id, version]);
  if (error) return html`<div class="message error">${error}</div>`;
  if (!r) return html`<p class="muted">Loading…</p>`;
  const replay = async () => {
    setReplayed({ state: "sending" });
    try { setReplayed(await post(`/requests/${encodeURIComponent(id)}/replay`, {})); } catch (e) { setReplayed({ error: e.message }); }
  };
  return html`<div data-request=${r.id}>
    <h1>Request <span class="mono">${r.id}</span></h1>
    <div class="sub">${r.mode} · <span class="mono">${r.method} /${r.app}${r.endpoint}</span> · ${fmt.when(r.received_at)}</div>
    <div class="tiles">
      <div class="tile"><div class="label">status</div><div class="value"><span class=${"pill-" + ({ ok: "ok", warn: "warn", err: "err" }[statusClass(r.status)] || "")}>${r.status ?? r.state}</span></div><div class="small">${r.error_type || ""}</div></div>
      <div class="tile"><div class="label">queue wait (startup)</div><div class="value">${fmt.s(r.queue_wait)}</div></div>
      <div class="tile"><div class="label">execution</div><div class="value">${fmt.s(r.execution)}</div></div>
      <div class="tile"><div class="label">total</div><div class="value">${fmt.s(r.total)}</div></div>
      <div class="tile"><div class="label">runner</div><div class="value mono" style="font-size:15px">${r.runner || "none"}</div><div class="small">${r.attempts} attempt(s)</div></div>
    </div>
    <div class="toolbar">
      <button class="primary" data-testid="replay" disabled=${!r.replayable} onClick=${replay}>Replay</button>
      <a href=${`#/playground/${r.app}${r.endpoint === "/" ? "" : r.endpoint}?replay=${r.id}`}><button>Open in the Playground</button></a>
      ${!r.replayable ? html`<span class="muted">${r.store_io ? "its input was not kept" : "sent with X-Fal-Store-IO: 0"}</span>` : null}
      ${replayed ? (replayed.error ? html`<span class="pill-err">${replayed.error}</span>` : replayed.request_id
        ? html`<span data-testid="replayed">replayed as <a class="mono" href=${`#/requests/${replayed.request_id}`}>${replayed.request_id}</a></span>` : html`<span class="muted">sending…</span>`) : null}
    </div>
    <div class="grid2">
      <div><h2>Input</h2><${BodyView} body=${r.input} label="input" /></div>
      <div><h2>Output</h2>${r.output ? html`<${Output} body=${r.output} />` : html`<div class="muted">${r.store_io ? "not kept" : "not kept (X-Fal-Store-IO: 0)"}</div>`}</div>
    </div>
    <h2>Logs</h2>
    <${Logs} lines=${r.logs} empty="the runner wrote no log lines while this request ran" />
    ${r.logs_around ? html`<h2>Runner logs around it</h2><div class="sub">10 s before it started to 2 s after it ended.</div><${Logs} lines=${r.logs_around} />` : null}
  </div>`;
}
