// The falemu dashboard: hash routes, one module per page, live updates over SSE.
import { html, render, useEffect, useRef, useState } from "./vendor/preact-htm.mjs";
import { API, get } from "./lib/api.js";
import { Overview, AppPage } from "./pages/apps.js";
import { Playground } from "./pages/playground.js";
import { Requests, RequestPage } from "./pages/requests.js";
import { Analytics } from "./pages/analytics.js";
import { Errors } from "./pages/errors.js";
import { Cost } from "./pages/cost.js";

const NAV = [
  ["#/", "Apps & runners"],
  ["#/playground", "Playground"],
  ["#/requests", "Requests"],
  ["#/analytics", "Analytics"],
  ["#/errors", "Errors"],
  ["#/cost", "Cost & keep_alive"],
];

function route() {
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}

// The history's version, pushed by /events; pages refetch when it moves.
function useLive() {
  const [state, setState] = useState({ version: 0, online: true });
  useEffect(() => {
    let source;
    let timer;
    let pending = null;
    const open = () => {
      source = new EventSource(`${API}/events`);
      source.onmessage = (e) => {
        const data = JSON.parse(e.data);
        // at most one refresh a second, however busy the gateway is
        if (!timer) { setState({ version: data.version, online: true }); timer = setTimeout(() => { timer = null; if (pending) { setState(pending); pending = null; } }, 1000); }
        else pending = { version: data.version, online: true };
      };
      source.onerror = () => setState((s) => ({ ...s, online: false }));
      source.onopen = () => setState((s) => ({ ...s, online: true }));
    };
    open();
    return () => { source && source.close(); clearTimeout(timer); };
  }, []);
  return state;
}

function App() {
  const [r, setRoute] = useState(route());
  const [overview, setOverview] = useState(null);
  const live = useLive();
  useEffect(() => {
    const on = () => setRoute(route());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  // Refetch when the history moved past what the page shows (not at the first tick, which reports
  // the version the page was just loaded at), one fetch at a time; pages refetch when the overview's
  // version moves.
  // A fetch that fails (falemu up restarting, the API still being built) is tried again a second later:
  // a quiet app sends no event that would ask for it.
  const loading = useRef(false);
  const [retry, setRetry] = useState(0);
  useEffect(() => {
    if (loading.current || (overview && live.version <= overview.version)) return;
    loading.current = true;
    get("/overview")
      .then(setOverview)
      .catch(() => { setTimeout(() => setRetry((n) => n + 1), 1000); })
      .finally(() => { loading.current = false; });
  }, [live.version, overview, retry]);
  const [page, ...rest] = r.parts;
  const ctx = { overview, version: overview ? overview.version : 0, query: r.query };
  let body;
  if (!overview) body = html`<p class="muted">Loading…</p>`;
  else if (!page) body = html`<${Overview} ...${ctx} />`;
  else if (page === "apps") body = html`<${AppPage} ...${ctx} app=${rest[0]} />`;
  else if (page === "playground") body = html`<${Playground} ...${ctx} app=${rest[0]} endpoint=${rest.length > 1 ? "/" + rest.slice(1).join("/") : null} />`;
  else if (page === "requests" && rest[0]) body = html`<${RequestPage} ...${ctx} id=${rest[0]} />`;
  else if (page === "requests") body = html`<${Requests} ...${ctx} />`;
  else if (page === "analytics") body = html`<${Analytics} ...${ctx} />`;
  else if (page === "errors") body = html`<${Errors} ...${ctx} />`;
  else if (page === "cost") body = html`<${Cost} ...${ctx} />`;
  else body = html`<div class="empty-state">No page here. <a href="#/">Back to the apps</a>.</div>`;
  const current = "#/" + (page || "");
  return html`<div class="layout">
    <nav class="side">
      <div class="brand"><span class="dot"></span>falemu</div>
      ${NAV.map(([href, label]) => html`<a href=${href} class=${current === href || (href !== "#/" && current.startsWith(href)) ? "active" : ""}>${label}</a>`)}
      <div class="foot"><span class=${"live" + (live.online ? "" : " off")}></span>${live.online ? "live" : "reconnecting"}
        ${overview ? html`<div>${overview.requests_kept} ${overview.requests_kept === 1 ? "request" : "requests"} kept</div><div class="mono">owner ${overview.owner}</div>` : null}
        <div><a href="/metrics">/metrics</a> · <a href="/_falemu/api/openapi.json">API</a></div></div>
    </nav>
    <main>${body}</main>
  </div>`;
}

const root = document.getElementById("root");
root.textContent = "";
render(html`<${App} />`, root);
sessionStorage.removeItem("falemu-dashboard-reloads"); // boot.js: the modules loaded
