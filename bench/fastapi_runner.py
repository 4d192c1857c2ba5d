"""The FastAPI runner of ``bench/gateway_throughput.py``: the shape of a typical direct-mode app, no work.

uvicorn --app-dir bench fastapi_runner:app
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/fast")
async def fast() -> dict[str, bool]:
    return {"ok": True}
