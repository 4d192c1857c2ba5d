"""fal.App classes for falemu's Proxy App Mode tests.

Every App here has the same requirements and no image of its own (it runs on the Python image falemu
picks), so all of them share one fal layer: the test session installs fal into an image once.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import fal
from fastapi import WebSocket
from pydantic import BaseModel

REQUIREMENTS = ["pillow", "websockets", "msgpack"]
LOG = "falemu-test:"


class EchoInput(BaseModel):
    text: str
    sleep: float = 0.0


class EchoOutput(BaseModel):
    text: str
    runner: str
    setup_finished_at: float
    answered_at: float
    env: dict[str, str]


class Lifecycle(fal.App, keep_alive=2, max_concurrency=2):  # class kwargs
    """setup() before readiness, teardown() on SIGTERM, one request at a time per runner."""

    requirements = REQUIREMENTS
    max_multiplexing = 1  # a class variable
    request_timeout = 30

    def setup(self) -> None:
        print(f"{LOG} setup started", flush=True)
        time.sleep(1.5)  # port 8080 must stay closed until this returns
        self.setup_finished_at = time.time()
        print(f"{LOG} setup finished", flush=True)

    def teardown(self) -> None:
        print(f"{LOG} teardown ran", flush=True)

    def provide_hints(self) -> list[str]:
        return [f"runner-{os.environ.get('FAL_JOB_ID', '')}"]

    @fal.endpoint("/echo")
    def echo(self, payload: EchoInput) -> EchoOutput:
        time.sleep(payload.sleep)
        print(f"{LOG} echo {payload.text}", flush=True)
        names = ("FAL_APP_NAME", "FAL_RUNNER_STATE", "FAL_KEY", "HF_HOME", "IS_ISOLATE_AGENT", "FAL_JOB_ID")
        return EchoOutput(
            text=payload.text,
            runner=os.environ.get("FAL_JOB_ID", ""),
            setup_finished_at=self.setup_finished_at,
            answered_at=time.time(),
            env={name: os.environ.get(name, "") for name in names} | {"data": str(os.path.isdir("/data"))},
        )

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close()
                return
            await websocket.send_text(f"echo:{text}")

    @fal.realtime("/realtime")
    def realtime(self, payload: EchoInput) -> EchoInput:
        return EchoInput(text=payload.text.upper())


class FetchInput(BaseModel):
    url: str


class FetchOutput(BaseModel):
    ok: bool
    detail: str
    size: list[int] = []


class Fetcher(fal.App):
    """fal's own download helpers, which refuse private addresses unless FALEMU_PUBLIC_ADDRESSES names them."""

    requirements = REQUIREMENTS

    @fal.endpoint("/fetch")
    def fetch(self, payload: FetchInput) -> FetchOutput:
        from fal.toolkit import Image
        from fal.toolkit.utils.download_utils import download_file

        try:
            path = download_file(payload.url, tempfile.mkdtemp(), force=True)
            image = Image(url=payload.url).to_pil()
        except Exception as exc:
            return FetchOutput(ok=False, detail=f"{type(exc).__name__}: {exc}")
        return FetchOutput(ok=True, detail=f"{path.stat().st_size} bytes", size=list(image.size))


class BrokenSetup(fal.App):
    requirements = REQUIREMENTS

    def setup(self) -> None:
        print(f"{LOG} about to fail", flush=True)
        raise RuntimeError("the model weights are missing")

    @fal.endpoint("/")
    def root(self) -> dict[str, str]:
        return {}


class SlowSetup(fal.App, startup_timeout=10):
    requirements = REQUIREMENTS

    def setup(self) -> None:
        print(f"{LOG} slow setup", flush=True)
        time.sleep(120)

    @fal.endpoint("/")
    def root(self) -> dict[str, str]:
        return {}


class WrongPython(fal.App):
    requirements = REQUIREMENTS

    @fal.endpoint("/")
    def root(self) -> dict[str, str]:
        return {"python": sys.version}


class Reply(BaseModel):
    text: str
    length: int


class BadOutput(fal.App):
    """Its endpoint answers JSON that its own output model does not allow: `falemu check` must say so."""

    requirements = REQUIREMENTS

    @fal.endpoint("/reply")
    def reply(self, payload: EchoInput) -> Reply:
        from fastapi.responses import JSONResponse

        return JSONResponse({"text": payload.text})  # type: ignore[return-value]  # no "length"


class Naps(fal.App, request_timeout=3):
    """A request that outlives request_timeout: falemu answers 504 (nothing inside the App enforces it)."""

    requirements = REQUIREMENTS

    @fal.endpoint("/nap")
    def nap(self, payload: EchoInput) -> EchoInput:
        time.sleep(payload.sleep)
        return payload
