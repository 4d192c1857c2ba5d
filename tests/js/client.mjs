// Drives the official @fal-ai/client, unmodified, against a running falemu up, and prints what it saw
// as one JSON object. Used by tests/integration/test_js_client.py.
//
//   FALEMU_URL=http://127.0.0.1:8787 APP_ID=myteam/jsdemo MODE=middleware FAL_KEY=... node client.mjs
//   FALEMU_URL=http://127.0.0.1:8787 APP_ID=myteam/jsdemo MODE=proxy node client.mjs   (no key: the proxy adds it)
import { createHash } from "node:crypto";
import { fal } from "@fal-ai/client";

const base = process.env.FALEMU_URL;
const appId = process.env.APP_ID;
const mode = process.env.MODE;

// Mode (a): fal's URLs rewritten to the gateway, as the README shows.
function toFalemu(url) {
  const u = new URL(url);
  const prefix = { "fal.run": "", "queue.fal.run": "/queue", "rest.fal.ai": "/_falemu/rest" }[u.host];
  return prefix === undefined ? url : `${base}${prefix}${u.pathname}${u.search}`;
}

if (mode === "middleware") {
  fal.config({
    credentials: process.env.FAL_KEY,
    requestMiddleware: async (request) => ({ ...request, url: toFalemu(request.url) }),
  });
} else if (mode === "proxy") {
  // Mode (b): every request through the @fal-ai/server-proxy protocol; in Node, proxy always.
  fal.config({ proxyUrl: { url: `${base}/api/fal/proxy`, when: "always" } });
} else {
  throw new Error(`MODE must be middleware or proxy, not ${mode}`);
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const out = { mode };

// run
const ran = await fal.run(`${appId}/greet`, { input: { name: "js" } });
out.run = { data: ran.data, requestId: ran.requestId };

// a validation error comes back as fal's ValidationError
try {
  await fal.run(`${appId}/greet`, { input: { nom: "x" } });
  out.invalid = { thrown: false };
} catch (error) {
  out.invalid = { thrown: true, name: error.name, status: error.status, field: error.fieldErrors?.[0]?.loc };
}

// subscribe, polling, with logs
const polled = { statuses: [], logs: [] };
const subscribed = await fal.subscribe(`${appId}/work`, {
  input: { name: "poll", steps: 3, delay: 0.4 },
  logs: true,
  pollInterval: 100,
  onQueueUpdate: (update) => {
    polled.statuses.push(update.status);
    for (const entry of update.logs ?? []) polled.logs.push(entry.message);
  },
});
out.subscribe = { data: subscribed.data, requestId: subscribed.requestId, ...polled };

// subscribe, status over server-sent events
const streamed = { statuses: [], logs: [] };
const viaStream = await fal.subscribe(`${appId}/work`, {
  input: { name: "sse", steps: 2, delay: 0.3 },
  logs: true,
  mode: "streaming",
  onQueueUpdate: (update) => {
    streamed.statuses.push(update.status);
    for (const entry of update.logs ?? []) streamed.logs.push(entry.message);
  },
});
out.subscribeStreaming = { data: viaStream.data, ...streamed };

// queue: submit, status, result; cancel one that waits behind another (max_concurrency 1)
const busy = await fal.queue.submit(`${appId}/work`, { input: { name: "busy", steps: 4, delay: 0.5 } });
const waiting = await fal.queue.submit(`${appId}/work`, { input: { name: "waiting", steps: 1, delay: 0 } });
const waitingStatus = await fal.queue.status(`${appId}/work`, { requestId: waiting.request_id });
await fal.queue.cancel(`${appId}/work`, { requestId: waiting.request_id });
let cancelledStatus;
for (let i = 0; i < 100; i++) {
  cancelledStatus = await fal.queue.status(`${appId}/work`, { requestId: waiting.request_id });
  if (cancelledStatus.status === "COMPLETED") break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}
let busyStatus;
for (let i = 0; i < 200; i++) {
  busyStatus = await fal.queue.status(`${appId}/work`, { requestId: busy.request_id, logs: true });
  if (busyStatus.status === "COMPLETED") break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}
const busyResult = await fal.queue.result(`${appId}/work`, { requestId: busy.request_id });
out.queue = {
  submitted: Object.keys(busy).sort(),
  statusUrl: busy.status_url,
  waitingStatus: waitingStatus.status,
  cancelledStatus: cancelledStatus.status,
  busyStatus: busyStatus.status,
  busyLogs: (busyStatus.logs ?? []).map((entry) => entry.message),
  result: busyResult.data,
};

// stream
const events = [];
const stream = await fal.stream(`${appId}/stream`, { input: { name: "s" } });
for await (const event of stream) events.push(event);
const last = await stream.done();
out.stream = { events, last };

// storage.upload into falemu's CDN, then an endpoint downloads the URL; and the client's own
// upload of a Blob found in the input
const bytes = new Uint8Array(200_000).map((_, i) => (i * 7) % 251);
const url = await fal.storage.upload(new Blob([bytes], { type: "image/png" }));
const downloaded = await fetch(url);
const body = new Uint8Array(await downloaded.arrayBuffer());
const fetched = await fal.run(`${appId}/fetch`, { input: { url } });
const auto = await fal.run(`${appId}/fetch`, {
  input: { url: new Blob([new TextEncoder().encode("auto upload")], { type: "text/plain" }) },
});
out.storage = {
  url,
  sha256: sha256(bytes),
  downloadedSha256: sha256(body),
  contentType: downloaded.headers.get("content-type"),
  runner: fetched.data,
  auto: auto.data,
  autoSha256: sha256(new TextEncoder().encode("auto upload")),
};

console.log(JSON.stringify(out));
