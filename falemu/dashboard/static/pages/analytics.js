// fal's Requests and Runners views, per app and endpoint.
import { html, useEffect, useState } from "../vendor/preact-htm.mjs";
import { fmt, get } from "../lib/api.js";
import { Bars, Lines, StateBar } from "../lib/charts.js";
import { RequestTable } from "./requests.js";

const RANGES = [["", "since falemu started"], ["600", "last 10 minutes"], ["3600", "last hour"], ["86400", "last day"]];

export function Analytics({ overview, version, query }) {
  const [app, setApp] = useState(query.get("app") || "");
  const [endpoint, setEndpoint] = useState("");
  const [range, setRange] = useState("");
  const [data, setData] = useState(null);
  useEffect(() => {
    const since = range ? Date.now() / 1000 - Number(range) : undefined;
    get("/analytics", { app, endpoint, since }).then(setData).catch(() => {});
  }, [version, app, endpoint, range]);
  if (!data) return html`<p class="muted">Loading…</p>`;
  const s = data.summary;
  const b = data.series.buckets;
  const tile = (label, value, small, id) => html`<div class="tile" data-kpi=${id}><div class="label">${label}</div><div class="value">${value}</div>${small ? html`<div class="small">${small}</div>` : null}</div>`;
  const pcts = (p) => `p75 ${fmt.s(p.p75)} · p90 ${fmt.s(p.p90)} · p95 ${fmt.s(p.p95)}`;
  return html`<div>
    <h1>Analytics</h1>
    <div class="sub">fal's Requests and Runners views. Startup is gateway receipt to execution start (queue wait plus any cold start); percentiles are nearest-rank; execution and end-to-end over successful requests.</div>
    <div class="toolbar">
      <select value=${app} onChange=${(e) => { setApp(e.target.value); setEndpoint(""); }} data-testid="analytics-app"><option value="">all apps</option>${overview.apps.map((a) => html`<option value=${a.alias}>${a.alias}</option>`)}</select>
      <select value=${endpoint} onChange=${(e) => setEndpoint(e.target.value)} data-testid="analytics-endpoint"><option value="">all endpoints</option>
        ${[...new Set(data.endpoints.filter((x) => !app || x.app === app).map((x) => x.endpoint))].map((ep) => html`<option value=${ep}>${ep}</option>`)}
      </select>
      <select value=${range} onChange=${(e) => setRange(e.target.value)}>${RANGES.map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select>
      <span class="muted">buckets: ${data.series.granularity}</span>
    </div>
    <div class="tiles">
      ${tile("total requests", s.total, `${s.success} 2xx · ${s.client_errors} 4xx · ${s.server_errors} 5xx`, "total")}
      ${tile("success rate", fmt.pct(s.success_rate), null, "success_rate")}
      ${tile("execution p50", fmt.s(s.execution.p50), pcts(s.execution), "execution")}
      ${tile("startup p50", fmt.s(s.startup.p50), pcts(s.startup), "startup")}
      ${tile("end to end p50", fmt.s(s.end_to_end.p50), pcts(s.end_to_end), "end_to_end")}
      ${tile("cold boots", s.cold_boots, "startup over 1 s", "cold_boots")}
    </div>
    <pre data-testid="kpi-json" hidden>${JSON.stringify(s)}</pre>
    <div class="charts">
      <${Bars} title="Request counts" buckets=${b} series=${[
        { key: "success", label: "success", color: "#2fbf71" }, { key: "client_errors", label: "4xx client", color: "#e0a526" }, { key: "server_errors", label: "5xx server", color: "#ef5a5a" }]} />
      <${Lines} title="End-to-end latency (successful)" buckets=${b} series=${[{ key: "end_to_end_p50", label: "p50", color: "#7c5cff" }]} />
      <${Lines} title="Request startup (queue wait + cold start)" buckets=${b} series=${[{ key: "startup_p50", label: "p50", color: "#3aa0ff" }, { key: "startup_p90", label: "p90", color: "#a48bff" }]} />
      <${Lines} title="Request execution (successful)" buckets=${b} series=${[{ key: "execution_p50", label: "p50", color: "#2fbf71" }, { key: "execution_p75", label: "p75", color: "#e0a526" }, { key: "execution_p90", label: "p90", color: "#ef5a5a" }]} />
    </div>
    <h2>By endpoint</h2>
    <table class="endpoints"><thead><tr><th>app</th><th>endpoint</th><th class="num">total</th><th class="num">2xx</th><th class="num">4xx</th><th class="num">5xx</th><th class="num">success</th>
      <th class="num">startup p50 / p95</th><th class="num">execution p50 / p95</th><th class="num">cold boots</th></tr></thead><tbody>
      ${data.endpoints.map((e) => html`<tr data-endpoint=${e.endpoint}><td>${e.app}</td><td class="mono">${e.endpoint}</td><td class="num">${e.total}</td><td class="num">${e.success}</td><td class="num">${e.client_errors}</td>
        <td class="num">${e.server_errors}</td><td class="num">${fmt.pct(e.success_rate)}</td><td class="num">${fmt.s(e.startup.p50)} / ${fmt.s(e.startup.p95)}</td>
        <td class="num">${fmt.s(e.execution.p50)} / ${fmt.s(e.execution.p95)}</td><td class="num">${e.cold_boots}</td></tr>`)}
    </tbody></table>
    <h2>Runners: time by state</h2>
    <div class="sub">Billed states are SETUP, IDLE, RUNNING, DRAINING and TERMINATING. Mostly idle means keep_alive or min_concurrency is high (see Cost & keep_alive).</div>
    <table><thead><tr><th>runner</th><th>app</th><th class="num">setup</th><th class="num">running</th><th class="num">idle</th><th class="num">billed</th><th>split</th></tr></thead><tbody>
      ${data.runners.map((r) => html`<tr><td class="mono">${r.runner}</td><td>${r.app}</td><td class="num">${fmt.s(r.states.SETUP)}</td><td class="num">${fmt.s(r.states.RUNNING)}</td>
        <td class="num">${fmt.s(r.states.IDLE)}</td><td class="num">${fmt.s(r.billed_seconds)}</td><td><${StateBar} states=${r.states} /></td></tr>`)}
    </tbody></table>
    <h2>Recent errors</h2><${RequestTable} rows=${data.recent_errors} />
    <h2>Slowest requests</h2><${RequestTable} rows=${data.slowest} />
  </div>`;
}
