// Apps and runners: each app's configuration with sources, its runners with fal's states and the
// stages of each cold start, requests in flight and queue depth, and a runner's logs.
import { html, useEffect, useState } from "../vendor/preact-htm.mjs";
import { follow, fmt, get } from "../lib/api.js";
import { StateBar } from "../lib/charts.js";
import { Logs } from "../lib/render.js";

const STATE_CLASS = { IDLE: "info", RUNNING: "ok", PENDING: "muted", SETUP: "warn", DRAINING: "warn", TERMINATING: "muted", TERMINATED: "muted", FAILURE_DELAY: "err" };

export function stateBadge(state) {
  return html`<span class=${"badge " + (STATE_CLASS[state] || "muted")}>${state}</span>`;
}

export function Overview({ overview, version }) {
  const [runners, setRunners] = useState([]);
  const [logsOf, setLogsOf] = useState(null);
  useEffect(() => { get("/runners").then(setRunners).catch(() => {}); }, [version]);
  return html`<div>
    <h1>Apps & runners</h1>
    <div class="sub">What <span class="mono">falemu up</span> serves at ${overview.base_url}, as fal's dashboard shows it.</div>
    <div class="cards">${overview.apps.map((a) => html`<div class="card" data-app=${a.alias}>
      <h4><a href=${`#/apps/${a.alias}`}>${a.id}</a><span class="badge">${a.machine_type}</span></h4>
      <div class="kv">
        <span>auth</span><span>${a.auth}</span>
        <span>revision</span><span>r${a.revision}</span>
        <span>runners</span><span>${Object.entries(a.runners).length ? Object.entries(a.runners).map(([s, n]) => html`${stateBadge(s)} ×${n} `) : html`<span class="muted">none</span>`}</span>
        <span>in flight</span><span>${a.in_flight}</span>
        <span>queue depth</span><span>${a.queue_depth}</span>
        <span>last hour</span><span>${a.requests_last_hour} requests, ${fmt.pct(a.success_rate_last_hour)} success</span>
        ${a.faults.length ? html`<span>faults</span><span>${a.faults.map((f) => html`<span class="badge err" data-fault=${f.id} title=${f.description}>${f.id} ${f.kind}</span> `)}</span>` : null}
      </div>
      <div class="toolbar" style="margin:10px 0 0"><a href=${`#/playground/${a.alias}`}><button class="primary">Playground</button></a>
        <a href=${`#/requests?app=${a.alias}`}><button>Requests</button></a><a href=${`#/analytics?app=${a.alias}`}><button>Analytics</button></a></div>
    </div>`)}</div>
    <h2>Runners</h2>
    <${RunnerTable} runners=${runners} onLogs=${setLogsOf} />
    ${logsOf ? html`<${RunnerLogs} runner=${logsOf} onClose=${() => setLogsOf(null)} />` : null}
  </div>`;
}

export function RunnerTable({ runners, onLogs }) {
  if (!runners.length) return html`<div class="empty-state">No runners yet.</div>`;
  return html`<table class="runners"><thead><tr><th>runner</th><th>app</th><th>rev</th><th>state</th><th>machine</th>
    <th class="num">in flight</th><th class="num">served</th><th>cold start stages</th><th class="num">cold start</th><th>time by state</th><th></th></tr></thead>
    <tbody>${runners.map((r) => html`<tr data-runner=${r.id}>
      <td class="mono">${r.id}</td><td>${r.app}</td><td>r${r.revision}</td>
      <td>${stateBadge(r.state)}${r.error_type ? html` <span class="badge err">${r.error_type}</span>` : null}${r.stop_reason ? html` <span class="muted">(${r.stop_reason})</span>` : null}</td>
      <td>${r.machine_type}</td><td class="num">${r.in_flight}</td><td class="num">${r.served ?? "–"}</td>
      <td><div class="stages">${r.stages.map((s) => html`<span class="stage" title=${s.stage}>${s.label} ${fmt.s(s.seconds)}</span>`)}</div></td>
      <td class="num">${fmt.s(r.cold_start_seconds)}${r.started_for_request ? html`<div class="muted">for a request</div>` : null}</td>
      <td><${StateBar} states=${r.states} /></td>
      <td><button onClick=${() => onLogs(r.id)}>logs</button></td>
    </tr>`)}</tbody></table>`;
}

export function RunnerLogs({ runner, onClose }) {
  const [lines, setLines] = useState([]);
  useEffect(() => {
    let stop = () => {};
    get(`/runners/${encodeURIComponent(runner)}/logs`, { tail: 1000 }).then((d) => {
      setLines(d.lines);
      stop = follow(`/runners/${encodeURIComponent(runner)}/logs/live`, (e) => setLines((old) => [...old, ...e.lines].slice(-3000)));
    }).catch(() => {});
    return () => stop();
  }, [runner]);
  return html`<div class="drawer"><button class="close" onClick=${onClose}>close</button>
    <h2 style="margin-top:0">Logs of <span class="mono">${runner}</span></h2>
    <div class="sub">Its whole life: start-up, every request, shutdown. New lines appear as they come.</div>
    <${Logs} lines=${lines} empty="no log lines yet" /></div>`;
}

export function AppPage({ app, version }) {
  const [detail, setDetail] = useState(null);
  const [error, setError] = useState("");
  const [logsOf, setLogsOf] = useState(null);
  useEffect(() => { get(`/apps/${encodeURIComponent(app)}`).then(setDetail).catch((e) => setError(e.message)); }, [app, version]);
  if (error) return html`<div class="message error">${error}</div>`;
  if (!detail) return html`<p class="muted">Loading…</p>`;
  return html`<div>
    <h1>${detail.id}</h1>
    <div class="sub">${detail.shape} · ${detail.machine_types.join(", ")} · auth ${detail.auth} · <span class="mono">${detail.url}</span></div>
    <div class="toolbar"><a href=${`#/playground/${detail.alias}`}><button class="primary">Open the Playground</button></a>
      <span class="badge">${detail.in_flight} in flight</span><span class="badge">${detail.queue_depth} waiting</span></div>
    ${detail.warnings.length ? html`<div class="message">${detail.warnings.map((w) => html`<div>${w}</div>`)}</div>` : null}
    <h2>Runners <span class="muted">(serving revision r${detail.revision})</span></h2>
    <${RunnerTable} runners=${detail.runners_detail} onLogs=${setLogsOf} />
    <${Faults} faults=${detail.fault_history} />
    <${Activity} items=${detail.activity} />
    <h2>Configuration</h2>
    <table class="config"><thead><tr><th>key</th><th>value</th><th>from</th></tr></thead><tbody>
      ${detail.config.map((e) => html`<tr><td class="mono">${e.key}</td><td class="mono">${typeof e.value === "object" ? JSON.stringify(e.value) : String(e.value)}</td>
        <td><span class=${"src " + e.source}>${e.source}</span></td></tr>`)}
    </tbody></table>
    ${logsOf ? html`<${RunnerLogs} runner=${logsOf} onClose=${() => setLogsOf(null)} />` : null}
  </div>`;
}

// Faults injected with `falemu chaos` or `falemu_app.faults`, in effect first.
export function Faults({ faults }) {
  if (!faults.length) return null;
  const rows = [...faults].sort((a, b) => (a.ended === null ? 0 : 1) - (b.ended === null ? 0 : 1) || b.started - a.started);
  return html`<h2>Faults</h2><table class="faults"><thead><tr><th>fault</th><th>kind</th><th>what</th><th>state</th><th class="num">hit</th><th>runners</th></tr></thead>
    <tbody>${rows.map((f) => html`<tr data-fault=${f.id}><td class="mono">${f.id}</td><td>${f.kind}</td><td>${f.description}</td>
      <td>${f.ended === null ? html`<span class="badge err">in effect</span>` : html`<span class="badge muted">ended (${f.reason})</span>`}</td>
      <td class="num">${f.applied}</td><td class="mono">${f.targets.join(", ")}</td></tr>`)}</tbody></table>`;
}

// Rollouts (`falemu up --watch`) and faults as they happened, newest first.
export function Activity({ items }) {
  if (!items.length) return null;
  return html`<h2>Revisions & faults</h2><table class="activity"><tbody>${[...items].reverse().map((a) => html`<tr data-event=${a.event}>
    <td class="mono">${new Date(a.ts * 1000).toLocaleTimeString()}</td><td>${a.text}</td></tr>`)}</tbody></table>`;
}
