"""A model server that loads its weights after it starts listening, as many do.

GET /health answers 200 {"status": "starting"} at once (so the runner counts as started), while every
other path, /openapi.json included, answers 503 until LOAD_SECONDS have passed. fal retries 503s;
`falemu check` must wait for the load, not fail the app.
"""

import os
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "4"))
STARTED = time.monotonic()

app = FastAPI(title="loads-slowly", version="1.0.0")


@app.middleware("http")
async def loading(request: Request, call_next):
    loaded = time.monotonic() - STARTED >= LOAD_SECONDS
    if request.url.path != "/health" and not loaded:
        return JSONResponse({"detail": "model is loading"}, status_code=503)
    return await call_next(request)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok" if time.monotonic() - STARTED >= LOAD_SECONDS else "starting"}


class EchoRequest(BaseModel):
    text: str


class EchoResponse(BaseModel):
    text: str


@app.post("/echo", response_model=EchoResponse)
def echo(req: EchoRequest) -> EchoResponse:
    return EchoResponse(text=req.text)
