"""FastAPI apps with one fault each, for the contract checks."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field


class GreetRequest(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    excited: bool = False


class GreetResponse(BaseModel):
    message: str
    length: int


def good_app() -> FastAPI:
    app = FastAPI(title="good", version="1")

    @app.post("/greet")
    def greet(req: GreetRequest) -> GreetResponse:
        message = f"Hello, {req.name}" + ("!" if req.excited else ".")
        return GreetResponse(message=message, length=len(message))

    return app


def schema_breaking_app() -> FastAPI:
    """Documents ``length: int`` but answers a string."""
    app = FastAPI(title="schema-breaking", version="1")

    @app.post("/greet", response_model=GreetResponse)
    def greet(req: GreetRequest) -> Any:
        return JSONResponse({"message": "hi", "length": "five"})

    return app


class Count(BaseModel):
    n: int = Field(ge=0, le=1000)


class Doubled(BaseModel):
    value: int


def server_error_app() -> FastAPI:
    """Crashes for n > 500."""
    app = FastAPI(title="crashy", version="1")

    @app.post("/double")
    def double(req: Count) -> Doubled:
        if req.n > 500:
            raise RuntimeError("too big")
        return Doubled(value=req.n * 2)

    return app


def no_openapi_app() -> FastAPI:
    app = FastAPI(title="hidden", openapi_url=None)

    @app.post("/greet")
    def greet(req: GreetRequest) -> GreetResponse:
        return GreetResponse(message="hi", length=2)

    return app


def untyped_app() -> FastAPI:
    """Valid OpenAPI, but the response has no schema (no return type)."""
    app = FastAPI(title="untyped", version="1")

    @app.post("/greet")
    def greet(req: GreetRequest):  # type: ignore[no-untyped-def]
        return {"message": "hi"}

    return app


def invalid_document_app() -> FastAPI:
    """Serves a hand-written /openapi.json that is not valid OpenAPI."""
    app = FastAPI(openapi_url=None)

    @app.get("/openapi.json")
    def spec() -> Any:
        return JSONResponse(
            {
                "openapi": "3.1.0",
                "info": {"title": "x"},
                "paths": {"/a": {"get": {"responses": {"200": {"description": 5}}}}},
            }
        )

    return app


def teapot_app() -> FastAPI:
    """Answers an undocumented 418 to everyone."""
    app = FastAPI(title="teapot", version="1")

    @app.post("/greet")
    def greet(req: GreetRequest) -> GreetResponse:
        raise HTTPException(status_code=418, detail="teapot")

    return app


class SlimResponse(BaseModel):
    message: str


def slim_app() -> FastAPI:
    """The good app after `length` was dropped from its response."""
    app = FastAPI(title="slim", version="2")

    @app.post("/greet")
    def greet(req: GreetRequest) -> SlimResponse:
        return SlimResponse(message="hi")

    return app


class StreamRequest(BaseModel):
    count: int = Field(default=2, ge=1, le=3)


def sse_app(*, documented: bool) -> FastAPI:
    """An SSE endpoint, documented FastAPI's default way (application/json, no schema) or as a stream."""
    app = FastAPI(title="sse", version="1")
    extra: dict[str, Any] = {}
    if documented:
        extra = {"response_class": StreamingResponse, "responses": {200: {"content": {"text/event-stream": {}}}}}

    @app.post("/stream", **extra)
    def stream(req: StreamRequest) -> StreamingResponse:
        def events() -> Any:
            for i in range(req.count):
                yield f"data: {i}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
