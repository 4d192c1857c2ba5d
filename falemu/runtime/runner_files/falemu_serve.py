"""Inside a fal.App runner: serve the App with fal's own code, as fal's runners do.

``python falemu_serve.py /opt/falemu/app/app.py MyApp [PORT [METRICS_PORT]]`` does what fal's
``wrap_app(...).initialize_and_serve`` does in a runner: ``IS_ISOLATE_AGENT=1``, the class built by
fal (``App.__init__`` allows it only there), ``fal.ref.set_current_app``, then ``App.serve`` (uvicorn on
0.0.0.0:8080 with ``setup()`` in its lifespan, so the port opens once ``setup()`` has returned; a
``setup()`` that raises ends the process with uvicorn's code 3; SIGTERM runs ``teardown()``), and
fal's metrics server on 9090. The module runs here, in the runner, as in fal's module mode
(``python_entry_point`` / ``fal run --local``): its folder is on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys


def main(argv: list[str]) -> None:
    file, class_name = argv[1], argv[2]
    port = int(argv[3]) if len(argv) > 3 else 8080
    metrics_port = int(argv[4]) if len(argv) > 4 else 9090
    os.environ["IS_ISOLATE_AGENT"] = "1"
    folder = os.path.dirname(os.path.abspath(file))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if "" not in sys.path:
        sys.path.insert(0, "")  # fal's runtime config for container apps (_apply_runtime_config)
    namespace = runpy.run_path(file)
    cls = namespace[class_name]

    from fal.ref import set_current_app

    app = cls()
    set_current_app(app)
    asyncio.run(app.serve(port=port, metrics_port=metrics_port))


if __name__ == "__main__":
    main(sys.argv)
