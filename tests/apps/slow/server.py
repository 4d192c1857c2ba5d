"""A direct-server app with a slow endpoint and a request recorder, for scaling tests and benches."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import FastAPI, Request

app = FastAPI(title="slowpoke", version="1.0.0")
RUNNER = os.environ.get("FAL_JOB_ID", "local")
DATA = Path(os.environ.get("FAL_PERSISTENT_DIR", "/data"))
print(f"slowpoke runner {RUNNER} starting", flush=True)


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/slow")
async def slow(seconds: float = 1.0) -> dict[str, object]:
    print(f"slow request for {seconds:g} s", flush=True)
    await asyncio.sleep(min(seconds, 30.0))
    return {"runner": RUNNER, "slept": seconds}


@app.post("/record")
async def record(request: Request, run: str = "default", seconds: float = 0.0) -> dict[str, str]:
    """Append the request id to /data/<run>/<runner>.log: one line per execution."""
    request_id = request.headers.get("x-fal-request-id", "")
    if seconds > 0:
        await asyncio.sleep(min(seconds, 30.0))
    folder = DATA / run
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{RUNNER}.log", "a") as fh:
        fh.write(request_id + "\n")
    return {"runner": RUNNER, "request_id": request_id}
