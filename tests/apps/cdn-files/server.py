"""Saves files through fal's node-local uploader (the protocol of fal.toolkit's _local_uploader, spoken
with the standard library) and downloads URLs with urllib, as apps taking image URLs as input do."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import urllib.request

from fastapi import FastAPI

app = FastAPI()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/save")
def save(body: dict) -> dict:
    data = base64.b64decode(body["data"])
    conn = UnixConnection(os.environ["FAL_API_SOCKET"])
    conn.request(
        "POST",
        "/v1/uploads",
        body=data,
        headers={
            "X-Fal-File-Name": body["file_name"],
            "Content-Type": body["content_type"],
            "Content-Length": str(len(data)),
            "x-fal-application": os.environ.get("FAL_APP_NAME", ""),
        },
    )
    response = conn.getresponse()
    answer = json.loads(response.read())
    env = {k: v for k, v in os.environ.items() if k.startswith(("FAL_USE_", "FAL_API_", "FALEMU_"))}
    return {"status": response.status, "answer": answer, "env": env}


@app.post("/fetch")
def fetch(body: dict) -> dict:
    with urllib.request.urlopen(body["url"], timeout=30) as response:
        data = response.read()
        return {"data": base64.b64encode(data).decode(), "content_type": response.headers["content-type"]}
