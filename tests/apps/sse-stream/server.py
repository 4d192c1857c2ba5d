"""A valid streaming app, documented the way FastAPI does by default.

POST /stream answers text/event-stream, but FastAPI documents its 200 response as application/json with
an empty schema. fal serves it fine; `falemu check` warns and names the fix instead of failing.
"""

import json

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

app = FastAPI(title="sse-stream", version="1.0.0")


class StreamRequest(BaseModel):
    count: int = Field(default=3, ge=1, le=5)


@app.post("/stream")
def stream(req: StreamRequest) -> StreamingResponse:
    def events():
        for i in range(req.count):
            yield f"data: {json.dumps({'index': i})}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


class GreetRequest(BaseModel):
    name: str = Field(min_length=1, max_length=20)


class GreetResponse(BaseModel):
    message: str


@app.post("/greet", response_model=GreetResponse)
def greet(req: GreetRequest) -> GreetResponse:
    return GreetResponse(message=f"Hello, {req.name}.")
