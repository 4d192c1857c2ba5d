"""The ``falemu`` command's entry point: an unchanged ``falemu up``'s early launch, then the CLI.

:func:`falemu.prelaunch.early` runs before click or any other part of falemu is imported (it does
nothing for other commands); :func:`falemu.cli.main` then does everything as usual.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        if "up" in sys.argv[1:]:  # other commands never load the early launch (json, socket: 10-20 ms)
            from falemu import prelaunch

            prelaunch.early(sys.argv)
        from falemu.cli import main as cli_main
    except KeyboardInterrupt:  # Ctrl-C before the CLI (which handles its own) was even loaded
        sys.exit(130)
    cli_main()
