// Small SVG charts (no library): stacked bars for counts, lines for latencies.
import { html } from "../vendor/preact-htm.mjs";
import { fmt } from "./api.js";

const W = 600, H = 150, PAD = 28;

export function Bars({ title, buckets, series }) {
  const n = buckets.length || 1;
  const totals = buckets.map((b) => series.reduce((s, x) => s + (b[x.key] || 0), 0));
  const max = Math.max(1, ...totals);
  const bw = (W - PAD) / n;
  return html`<div class="chart"><div class="title"><span>${title}</span><span class="legend">${series.map((x) =>
    html`<span><i style=${`background:${x.color}`}></i>${x.label}</span>`)}</span></div>
    <svg viewBox=${`0 0 ${W} ${H}`} preserveAspectRatio="none">
      ${axis(max, (v) => String(Math.round(v)))}
      ${buckets.map((b, i) => {
        let y = H - 14;
        return series.map((x) => {
          const h = ((b[x.key] || 0) / max) * (H - 24);
          y -= h;
          return h > 0 ? html`<rect x=${PAD + i * bw + 1} y=${y} width=${Math.max(1, bw - 2)} height=${h} fill=${x.color}>
            <title>${new Date(b.start * 1000).toLocaleTimeString([], { hour12: false })}: ${x.label} ${b[x.key]}</title></rect>` : null;
        });
      })}
    </svg></div>`;
}

export function Lines({ title, buckets, series }) {
  const values = buckets.flatMap((b) => series.map((x) => b[x.key]).filter((v) => v !== null && v !== undefined));
  const max = Math.max(1e-6, ...values);
  const n = buckets.length || 1;
  const bw = (W - PAD) / n;
  const xy = (i, v) => [PAD + i * bw + bw / 2, H - 14 - (v / max) * (H - 24)];
  return html`<div class="chart"><div class="title"><span>${title}</span><span class="legend">${series.map((x) =>
    html`<span><i style=${`background:${x.color}`}></i>${x.label}</span>`)}</span></div>
    <svg viewBox=${`0 0 ${W} ${H}`} preserveAspectRatio="none">
      ${axis(max, fmt.s)}
      ${series.map((x) => {
        const pts = buckets.map((b, i) => (b[x.key] === null || b[x.key] === undefined ? null : xy(i, b[x.key]))).filter(Boolean);
        return html`<g><polyline fill="none" stroke=${x.color} stroke-width="2" points=${pts.map((p) => p.join(",")).join(" ")} />
          ${pts.map((p) => html`<circle cx=${p[0]} cy=${p[1]} r="2.5" fill=${x.color} />`)}</g>`;
      })}
    </svg></div>`;
}

function axis(max, label) {
  return html`<g>
    <line x1=${PAD} x2=${W} y1=${H - 14} y2=${H - 14} stroke="#262c3b" />
    <line x1=${PAD} x2=${W} y1="10" y2="10" stroke="#1b2030" stroke-dasharray="3 3" />
    <text x="2" y="14" fill="#8b93a7" font-size="10">${label(max)}</text>
    <text x="2" y=${H - 14} fill="#8b93a7" font-size="10">0</text>
  </g>`;
}

export function StateBar({ states }) {
  const colors = { PENDING: "#56607a", SETUP: "#e0a526", IDLE: "#3aa0ff", RUNNING: "#2fbf71", DRAINING: "#a48bff", TERMINATING: "#ef5a5a" };
  const total = Object.values(states).reduce((a, b) => a + b, 0) || 1;
  return html`<div class="bar" title=${Object.entries(states).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${fmt.s(v)}`).join(", ")}>
    ${Object.entries(states).map(([k, v]) => (v > 0 ? html`<div style=${`width:${(v / total) * 100}%;background:${colors[k] || "#888"}`}></div>` : null))}
  </div>`;
}
