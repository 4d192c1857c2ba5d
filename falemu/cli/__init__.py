"""The ``falemu`` command: a thin layer over the library.

Subcommands live one per module and are imported only when invoked, so ``falemu --help`` stays fast.
This module is the single error boundary: a :class:`~falemu.errors.FalemuError` prints
``error: <message>`` (and ``hint: <hint>``) on stderr and exits with the error's code; Ctrl-C exits 130;
anything else exits 70 with a request to report it. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from falemu import __version__

# command name -> "module:attribute"; modules are imported on first use only.
COMMANDS: dict[str, str] = {
    "config": "falemu.cli.config_cmd:config",
    "up": "falemu.cli.up:up",
    "down": "falemu.cli.down:down",
    "doctor": "falemu.cli.doctor:doctor",
    "ps": "falemu.cli.ps:ps",
    "logs": "falemu.cli.logs:logs",
    "keys": "falemu.cli.keys:keys",
    "env": "falemu.cli.env:env",
    "check": "falemu.cli.check:check",
    "report": "falemu.cli.report:report",
    "chaos": "falemu.cli.chaos:chaos",
}

SHORT_HELP: dict[str, str] = {
    "config": "Validate and show [tool.fal.apps.*] as fal reads it.",
    "up": "Build, start runners and serve the gateway at fal-shaped URLs.",
    "down": "Remove every container falemu made.",
    "doctor": "Report the Docker engine, GPU support, data folder and ports.",
    "ps": "List running falemu runners.",
    "logs": "Show runner logs.",
    "keys": "List, create and revoke local API keys.",
    "env": "Print the exports that point fal_client at falemu.",
    "check": "Pre-deploy contract gate: build, start, and check the app's OpenAPI.",
    "chaos": "Inject faults into a running falemu up (kill runners, fail starts, 503s, latency).",
    "report": "Analytics, errors, cost and the keep_alive advisor of a running falemu up.",
}


def _usage_error(exc: click.UsageError) -> click.exceptions.Exit:
    """Print a click usage error as falemu prints every error: ``error:`` and ``hint:``, one line each."""
    message = exc.format_message()
    hint = None
    if exc.ctx is not None:
        hint = f"see `{exc.ctx.command_path} --help`"
        unknown = message.startswith("No such command") and "Did you mean" not in message
        if unknown and isinstance(exc.ctx.command, click.Group):
            import difflib

            name = message.split("'")[1] if message.count("'") >= 2 else ""
            commands = exc.ctx.command.list_commands(exc.ctx)
            close = difflib.get_close_matches(name, commands, n=1)
            if close:
                hint = f"did you mean `{exc.ctx.command_path} {close[0]}`? ({hint})"
            else:
                hint = f"commands: {', '.join(commands)}"
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    return click.exceptions.Exit(exc.exit_code)


class LazyGroup(click.Group):
    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _usage_error(exc) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing short help from a table keeps `falemu --help` from importing every subcommand.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        from falemu.errors import FalemuError

        try:
            return super().invoke(ctx)
        except FalemuError as exc:
            debug = bool(ctx.obj and ctx.obj.get("debug"))
            if debug:
                import traceback

                traceback.print_exc()
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            raise _usage_error(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C in a command that does not stop on it by itself (as `up` does)
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # `falemu ... | head`: the reader went away; that is not an error of falemu.
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)
        except Exception as exc:  # the boundary: anything unexpected is a bug in falemu
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
            click.echo("hint: run again with --debug for the traceback, and please report it", err=True)
            ctx.exit(70)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="falemu")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """falemu runs fal's serverless deploy path on your machine.

    Reads [tool.fal.apps.<name>] from pyproject.toml the way `fal deploy` does, builds the image,
    starts runners on your Docker engine and serves them behind fal-shaped URLs.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="falemu", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
