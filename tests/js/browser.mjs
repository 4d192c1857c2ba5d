// The browser entry of @fal-ai/client for tests/integration/test_js_client.py: bundled with esbuild into
// one script that a page on localhost loads, as a web app's bundler would.
import { fal } from "@fal-ai/client";

window.fal = fal;
