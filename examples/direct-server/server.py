"""A small server deployed to fal in Direct Server Mode: fal forwards all traffic to its exposed port."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI(title="greeter", version="1.0.0")
DATA = Path(os.environ.get("FAL_PERSISTENT_DIR", "/data"))


class GreetRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="Who to greet")
    excited: bool = False


class GreetResponse(BaseModel):
    message: str
    length: int
    runner: str


class Health(BaseModel):
    ok: bool


@app.get("/health")
def health() -> Health:
    return Health(ok=True)


@app.post("/greet")
def greet(req: GreetRequest) -> GreetResponse:
    message = f"Hello, {req.name}" + ("!" if req.excited else ".")
    return GreetResponse(message=message, length=len(message), runner=os.environ.get("FAL_JOB_ID", "local"))


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8000")))
