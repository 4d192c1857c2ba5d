"""A realistic runner for the gateway benchmark: every request writes two log lines.

uvicorn's access log plus one line from the app's own logger, the common case for a model server, so
`falemu up` follows and prints two lines per request while it forwards it.
"""

import logging
import os

from fastapi import FastAPI

log = logging.getLogger("chatty")
_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
log.addHandler(_handler)
log.setLevel(logging.INFO)
app = FastAPI(title="chatty", version="1.0.0")
RUNNER = os.environ.get("FAL_JOB_ID", "local")


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/work")
def work() -> dict[str, str]:
    log.info("handled a work request on runner %s", RUNNER)
    return {"runner": RUNNER}
