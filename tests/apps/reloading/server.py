"""A direct-server app that says which version of its code answers (the devloop tests rewrite VERSION)."""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI

VERSION = 1
app = FastAPI(title="reloading", version="1.0.0")
RUNNER = os.environ.get("FAL_JOB_ID", "local")


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/version")
async def version(seconds: float = 0.0) -> dict[str, object]:
    if seconds > 0:
        await asyncio.sleep(min(seconds, 30.0))
    return {"version": VERSION, "runner": RUNNER}
