// Cost and the keep_alive advisor: billed runner-seconds by state and machine type times the price
// table, and the recorded arrivals replayed through the scaling policy for other settings.
import { html, useEffect, useState } from "../vendor/preact-htm.mjs";
import { fmt, get } from "../lib/api.js";

export function Cost({ overview, version }) {
  const [cost, setCost] = useState(null);
  const [app, setApp] = useState(overview.apps[0] ? overview.apps[0].alias : "");
  const [keepAlive, setKeepAlive] = useState("");
  const [minC, setMinC] = useState("");
  const [mux, setMux] = useState("");
  const [advice, setAdvice] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { get("/cost").then(setCost).catch(() => {}); }, [version]);
  const ask = () => {
    if (!app) return;
    setBusy(true);
    get(`/advisor/${encodeURIComponent(app)}`, { keep_alive: keepAlive, min_concurrency: minC, max_multiplexing: mux })
      .then(setAdvice).catch((e) => setAdvice({ error: e.message })).finally(() => setBusy(false));
  };
  useEffect(ask, [app]);
  return html`<div>
    <h1>Cost & keep_alive</h1>
    <div class="sub">fal bills runners per second in SETUP, IDLE, RUNNING, DRAINING and TERMINATING, by machine type (times num_gpus).</div>
    ${cost ? html`<table class="cost"><thead><tr><th>machine type</th><th class="num">setup</th><th class="num">idle</th><th class="num">running</th><th class="num">draining + terminating</th><th class="num">billed</th><th class="num">$/hour</th><th class="num">cost</th></tr></thead>
      <tbody>${cost.machines.map((m) => html`<tr><td>${m.machine_type}</td><td class="num">${fmt.s(m.states.SETUP)}</td><td class="num">${fmt.s(m.states.IDLE)}</td><td class="num">${fmt.s(m.states.RUNNING)}</td>
        <td class="num">${fmt.s((m.states.DRAINING || 0) + (m.states.TERMINATING || 0))}</td><td class="num">${fmt.s(m.billed_seconds)}</td><td class="num">${m.hourly ?? "no price"}</td><td class="num">${fmt.money(m.cost, cost.currency)}</td></tr>`)}
      <tr><td><b>total</b></td><td colspan="6"></td><td class="num"><b>${fmt.money(cost.total_cost, cost.currency)}</b></td></tr></tbody></table>
      <div class="sub" style="margin-top:8px">Prices: ${cost.prices.sources.map((s) => html`<span><a href=${s.url} target="_blank" rel="noreferrer">${s.url}</a> (${s.read || "user"}) · </span>`)}
        override with <span class="mono">[tool.falemu] prices = "file.json"</span> or <span class="mono">FALEMU_PRICES</span>.</div>` : null}
    <h2>What-if: the keep_alive advisor</h2>
    <div class="sub">The requests recorded so far, replayed through falemu's scaling policy (the same function that scales your runners) for other settings. Execution times are as recorded; the cold start is the median measured here.</div>
    <div class="toolbar">
      <select value=${app} onChange=${(e) => setApp(e.target.value)} data-testid="advisor-app">${overview.apps.map((a) => html`<option value=${a.alias}>${a.alias}</option>`)}</select>
      <input type="text" style="width:180px" placeholder="keep_alive: 0,10,30,60,300" value=${keepAlive} onInput=${(e) => setKeepAlive(e.target.value)} />
      <input type="text" style="width:160px" placeholder="min_concurrency: 0,1" value=${minC} onInput=${(e) => setMinC(e.target.value)} />
      <input type="text" style="width:170px" placeholder="max_multiplexing: current" value=${mux} onInput=${(e) => setMux(e.target.value)} />
      <button class="primary" onClick=${ask} disabled=${busy}>${busy ? "simulating…" : "Simulate"}</button>
    </div>
    ${advice && advice.error ? html`<div class="message error">${advice.error}</div>` : null}
    ${advice && advice.variants ? html`<div>
      <div class="muted">${advice.requests} requests over ${fmt.s(advice.window.seconds)} · cold start ${fmt.s(advice.cold_start_seconds)} · ${advice.machine_type}
        ${advice.price_per_second !== null ? ` at ${(advice.price_per_second * 3600).toFixed(2)} ${advice.currency}/hour` : " (no price: runner-seconds only)"}</div>
      ${advice.recommendation ? html`<div class="rec" data-testid="recommendation"><b>Suggested:</b> keep_alive ${advice.recommendation.keep_alive}, min_concurrency ${advice.recommendation.min_concurrency},
        max_multiplexing ${advice.recommendation.max_multiplexing}: ${advice.recommendation.reason}</div>` : null}
      <table class="advisor"><thead><tr><th class="num">keep_alive</th><th class="num">min_concurrency</th><th class="num">max_multiplexing</th><th class="num">runner starts</th><th class="num">cold boots</th>
        <th class="num">startup p50</th><th class="num">startup p95</th><th class="num">setup</th><th class="num">idle</th><th class="num">running</th><th class="num">cost</th></tr></thead>
        <tbody>${advice.variants.map((v) => html`<tr class=${v.current ? "current" : ""}><td class="num">${v.keep_alive}${v.current ? " (now)" : ""}</td><td class="num">${v.min_concurrency}</td><td class="num">${v.max_multiplexing}</td>
          <td class="num">${v.runner_starts}</td><td class="num">${v.cold_boots}</td><td class="num">${fmt.s(v.startup_p50)}</td><td class="num">${fmt.s(v.startup_p95)}</td>
          <td class="num">${fmt.s(v.setup_seconds)}</td><td class="num">${fmt.s(v.idle_seconds)}</td><td class="num">${fmt.s(v.running_seconds)}</td><td class="num">${v.cost === null ? fmt.s(v.billed_seconds) : fmt.money(v.cost, advice.currency)}</td></tr>`)}</tbody></table>
    </div>` : html`<p class="muted">${busy ? "Simulating…" : ""}</p>`}
  </div>`;
}
