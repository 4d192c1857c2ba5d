// The exact request as code against falemu: Python fal_client, JS @fal-ai/client, curl. The key is
// never in the page: the snippets read FAL_KEY from the environment (`eval "$(falemu env)"`).
export function snippets({ appId, path, input, mode, base }) {
  const id = `${appId}${path === "/" ? "" : path}`;
  const json = JSON.stringify(input ?? {}, null, 2);
  const pyArgs = toPython(input ?? {}, 1);
  const python = mode === "sync"
    ? `# falemu up --tls; eval "$(falemu env)"   (points fal_client at falemu, sets FAL_KEY)
import fal_client

result = fal_client.run(
    "${id}",
    arguments=${pyArgs},
)
print(result)`
    : `# falemu up --tls; eval "$(falemu env)"   (points fal_client at falemu, sets FAL_KEY)
import fal_client

def on_queue_update(update):
    if isinstance(update, fal_client.InProgress):
        for log in update.logs:
            print(log["message"])

result = fal_client.subscribe(
    "${id}",
    arguments=${pyArgs},
    with_logs=True,
    on_queue_update=on_queue_update,
)
print(result)`;
  const js = `import { fal } from "@fal-ai/client";

// In the browser, through falemu's proxy route (the key stays on the server side):
fal.config({ proxyUrl: "${base}/api/fal/proxy" });

const result = await fal.${mode === "sync" ? "run" : "subscribe"}("${id}", {
  input: ${json.replace(/\n/g, "\n  ")},${mode === "sync" ? "" : `
  logs: true,
  onQueueUpdate: (update) => {
    if (update.status === "IN_PROGRESS") update.logs.map((log) => log.message).forEach(console.log);
  },`}
});
console.log(result.data);
console.log(result.requestId);`;
  const curl = mode === "sync"
    ? `curl -s -X POST "${base}/${id}" \\
  -H "Authorization: Key $FAL_KEY" \\
  -H "Content-Type: application/json" \\
  -d '${JSON.stringify(input ?? {}).replace(/'/g, "'\\''")}'`
    : `curl -s -X POST "${base}/queue/${id}" \\
  -H "Authorization: Key $FAL_KEY" \\
  -H "Content-Type: application/json" \\
  -d '${JSON.stringify(input ?? {}).replace(/'/g, "'\\''")}'
# then, with the request_id it answers:
curl -s "${base}/queue/${appId}/requests/$REQUEST_ID/status?logs=1" -H "Authorization: Key $FAL_KEY"
curl -s "${base}/queue/${appId}/requests/$REQUEST_ID" -H "Authorization: Key $FAL_KEY"`;
  return { python, js, curl };
}

function toPython(v, depth) {
  const pad = "    ".repeat(depth);
  const inner = "    ".repeat(depth + 1);
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return String(v);
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return v.length ? `[\n${v.map((x) => inner + toPython(x, depth + 1)).join(",\n")},\n${pad}]` : "[]";
  const entries = Object.entries(v);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${toPython(x, depth + 1)}`).join(",\n")},\n${pad}}`;
}
