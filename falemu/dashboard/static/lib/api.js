// The dashboard API (/_falemu/api/...): JSON reads, JSON POSTs (same origin), server-sent events.
export const API = "/_falemu/api";

export async function get(path, params) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const resp = await fetch(url, { headers: { accept: "application/json" } });
  const body = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (!resp.ok) throw new Error(body.detail || `${resp.status}`);
  return body;
}

export async function post(path, data, params) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v) url.searchParams.set(k, v);
  const resp = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(data ?? {}),
  });
  const body = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (!resp.ok) throw new Error(body.detail || `${resp.status}`);
  return body;
}

// Follow an SSE route; onData gets each parsed event; returns a function that stops it.
export function follow(path, onData, onDone) {
  const source = new EventSource(API + path);
  source.onmessage = (e) => { try { onData(JSON.parse(e.data)); } catch (_) { /* keep going */ } };
  source.addEventListener("done", () => { source.close(); onDone && onDone(); });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) onDone && onDone(); };
  return () => source.close();
}

export const fmt = {
  s(v) {
    if (v === null || v === undefined) return "–";
    if (v < 0.001) return `${(v * 1e6).toFixed(0)} µs`;
    if (v < 1) return `${(v * 1000).toFixed(v < 0.01 ? 2 : 1)} ms`;
    if (v < 120) return `${v.toFixed(2)} s`;
    if (v < 7200) return `${(v / 60).toFixed(1)} min`;
    return `${(v / 3600).toFixed(1)} h`;
  },
  pct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`; },
  when(ts) {
    if (!ts) return "–";
    const d = new Date(ts * 1000);
    const ago = (Date.now() / 1000) - ts;
    const time = d.toLocaleTimeString([], { hour12: false });
    if (ago < 60) return `${time} (${Math.max(0, Math.round(ago))} s ago)`;
    if (ago < 3600) return `${time} (${Math.round(ago / 60)} min ago)`;
    return d.toLocaleString([], { hour12: false });
  },
  money(v, currency) {
    if (v === null || v === undefined) return "unknown";
    return `${v < 0.01 && v > 0 ? v.toFixed(6) : v.toFixed(4)} ${currency || "USD"}`;
  },
  bytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  },
};

export function statusClass(status) {
  if (status === null || status === undefined) return "muted";
  if (status >= 200 && status < 300) return "ok";
  if (status >= 400 && status < 500) return "warn";
  return "err";
}
