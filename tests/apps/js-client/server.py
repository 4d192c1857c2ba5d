"""A Direct Server Mode app for @fal-ai/client: a quick endpoint, a slow one that logs, an SSE stream,
and one that downloads a file URL (an image URL as input, as many fal endpoints take)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import urllib.request
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI(title="jsdemo")


class Greet(BaseModel):
    name: str


class Work(BaseModel):
    name: str
    steps: int = 3
    delay: float = 0.4


class Fetch(BaseModel):
    url: str


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/greet")
def greet(req: Greet) -> dict[str, str]:
    return {"message": f"Hello, {req.name}."}


@app.post("/work")
async def work(req: Work) -> dict[str, object]:
    for step in range(1, req.steps + 1):
        print(f"working on {req.name}: step {step} of {req.steps}", file=sys.stderr, flush=True)
        await asyncio.sleep(req.delay)
    return {"message": f"Done, {req.name}.", "steps": req.steps}


@app.post("/stream")
async def stream(req: Greet) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for n in range(1, 5):
            yield f"data: {json.dumps({'n': n, 'text': f'{req.name} {n}'})}\n\n".encode()
            await asyncio.sleep(0.05)

    return StreamingResponse(events(), media_type="text/event-stream")


@app.post("/fetch")
def fetch(req: Fetch) -> dict[str, object]:
    with urllib.request.urlopen(req.url, timeout=30) as response:
        data = response.read()
        content_type = response.headers["content-type"]
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "content_type": content_type}
