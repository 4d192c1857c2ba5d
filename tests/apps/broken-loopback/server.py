"""A correct app; its Dockerfile binds it to 127.0.0.1, which fal cannot reach."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="loopback", version="1.0.0")


class Pong(BaseModel):
    ok: bool


@app.post("/ping", response_model=Pong)
def ping():
    return Pong(ok=True)
