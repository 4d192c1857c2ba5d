"""Answers GET with its environment as JSON; GET /visit counts visits in $FAL_PERSISTENT_DIR."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        counter = Path(os.environ["FAL_PERSISTENT_DIR"]) / "visits.txt"
        visits = int(counter.read_text()) if counter.exists() else 0
        if self.path == "/visit":
            visits += 1
            counter.write_text(str(visits))
        body = json.dumps({"env": dict(os.environ), "visits": visits, "argv": sys.argv}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print("serving on", os.environ["PORT"], flush=True)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
