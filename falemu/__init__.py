"""falemu: fal's serverless deploy path on your own machine.

Importing this package is cheap: it loads none of docker, pytest or schemathesis.
Heavy parts are imported by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
