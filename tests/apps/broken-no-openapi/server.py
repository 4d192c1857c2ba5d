"""A working endpoint, but no /openapi.json (openapi_url=None)."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="no-openapi", openapi_url=None, docs_url=None, redoc_url=None)


class Pong(BaseModel):
    ok: bool


@app.post("/ping", response_model=Pong)
def ping():
    return Pong(ok=True)
