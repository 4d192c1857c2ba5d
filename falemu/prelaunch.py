"""Begin an unchanged ``falemu up``'s first runners before the rest of falemu has loaded.

Before its first engine call, ``falemu up`` spends a quarter of a second in Python: the interpreter,
click and falemu's modules, the project, fal's loader (from its cache). On an app whose runner is ready
a second after its container starts, that is most of what separates ``falemu up`` from a bare
``docker run``. So a ``falemu up`` that got as far as Ready leaves a *launch plan* (:func:`save`): the
engine requests that created each app's first runner container, kept under a key made of its command
line, its folder and its environment, with the size and time of the files the apps were read from
(the pyproject, ``.env``, the Dockerfile and its build context, a fal.App's Python files).

The next ``falemu up`` with the same key and all those files unchanged sends those requests first
thing (:func:`early`, from the ``falemu`` command's entry point, with only the standard library loaded),
with names of its own (runner id, container name, the uploader socket's folder, this process as the
owner), and goes on as usual. The plan is never trusted: when the runtime reaches that runner's create,
it builds its request as it always does and adopts the early container only when the two requests are
the same (:func:`claim`); otherwise it removes the early one and creates its own. A plan can save time
and never changes what runs. Early containers no runtime adopted are removed once the apps are up and
at exit (an error's too, a SIGTERM's as a Ctrl-C's); a ``falemu up`` killed outright (SIGKILL) before
either leaves them to the next falemu process's orphan reaping, as any runner of a falemu process that is
gone.

Not planned: apps with ``secrets`` (their values would be written to disk), build contexts of more than
:data:`MAX_CONTEXT_FILES` files and engines not reached over a unix socket. ``FALEMU_PRELAUNCH=0`` turns
it off. Plans are small JSON files in ``<cache dir>/falemu/launch/``.

Imports only the standard library and :mod:`falemu.names`: it runs before anything else.
"""

from __future__ import annotations

import _thread
import json
import os
import sys
import time

from falemu import __version__, names

TYPE_CHECKING = False  # typing, pathlib and collections.abc are not loaded yet when early() runs
if TYPE_CHECKING:
    import socket
    import threading
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from typing import Any

    from falemu.config.model import AppConfig

PLAN_VERSION = 1
MAX_PLANS = 100  # the most recently used plans kept (one per command line, folder and environment)
MAX_CONTEXT_FILES = 2000  # a build context of more files is not stamped file by file: no plan is kept
CALL_TIMEOUT = 5.0  # an engine slower than this to create or start is left to the normal path
API_DIR_PREFIX = "falemu-api-"  # falemu.cdn.service.SOCKET_DIR_PREFIX
API_SOCKET_NAME = "api.sock"  # falemu.cdn.service.SOCKET_NAME
# Placeholders in a plan's request bodies for what each run names afresh.
RUNNER, API_DIR, OWNER, OWNER_STARTED = "{{runner}}", "{{api-dir}}", "{{owner}}", "{{owner-started}}"

# What differs from one shell, terminal or login to the next and no app decides anything on.
VOLATILE_ENV = frozenset(
    {
        *("_", "PWD", "OLDPWD", "SHLVL", "COLUMNS", "LINES", "PS1", "PS2", "PROMPT_COMMAND", "HISTFILE"),
        *("TERM_SESSION_ID", "WINDOWID", "TMUX", "TMUX_PANE", "STY", "WINDOW", "GPG_TTY", "SSH_AUTH_SOCK"),
        *("SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "XDG_SESSION_ID", "XDG_VTNR", "DBUS_SESSION_BUS_ADDRESS"),
        *("INVOCATION_ID", "JOURNAL_STREAM", "ITERM_SESSION_ID", "KITTY_WINDOW_ID", "KITTY_PID", "WEZTERM_PANE"),
        *("ALACRITTY_WINDOW_ID", "GNOME_TERMINAL_SCREEN", "TERM_PROGRAM_VERSION", "SECURITYSESSIONID"),
    }
)
VOLATILE_PREFIXES = ("VSCODE_",)


def stable_env(env: Mapping[str, str], drop_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """``env`` without what changes from one terminal to the next (:data:`VOLATILE_ENV`) and ``drop_prefixes``."""
    dropped = VOLATILE_PREFIXES + drop_prefixes
    return {k: v for k, v in env.items() if k not in VOLATILE_ENV and not k.startswith(dropped)}


class Launched:
    """One runner container :func:`early` created and started."""

    __slots__ = ("alias", "began", "body", "claimed", "container_id", "created", "name", "runner_id", "running")

    def __init__(self, alias: str, runner_id: str, name: str, body: dict[str, Any], began: float) -> None:
        self.alias, self.runner_id, self.name, self.body, self.began = alias, runner_id, name, body, began
        self.container_id = ""
        self.created = self.running = 0.0  # time.monotonic() once created / started
        self.claimed = False  # handed to the runtime (adopted or removed by it)


class _State:
    def __init__(self) -> None:
        self.key: str | None = None  # set by early() for `falemu up`: this run's plan is saved under it
        self.socket = ""  # the engine socket early() used
        self.launched: list[Launched] = []
        self.handed: set[str] = set()  # runner ids given to the scaler (take_runner_id)
        self.api_dir: str | None = None  # made by early(), until the CDN takes it
        self.api_socket: socket.socket | None = None  # bound and listening in api_dir, until the CDN takes it
        self.recorded: dict[str, tuple[str, dict[str, Any], str, str]] = {}  # alias -> (runner, body, socket, prefix)
        self.unplanned: set[str] = set()  # aliases that must not be planned (secrets)


_state = _State()
_lock = _thread.allocate_lock()


def enabled(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get("FALEMU_PRELAUNCH", "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def plan_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "falemu", "launch")


def plan_key(argv: list[str], cwd: str, env: Mapping[str, str]) -> str:
    import hashlib

    what = [PLAN_VERSION, __version__, sys.executable, argv[1:], cwd, sorted(stable_env(env).items())]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


# -- the early launch -------------------------------------------------------------------------------


def early(argv: list[str]) -> None:
    """For ``falemu up``: start the first runners its plan names, when every file of the plan is unchanged.

    Never raises and never prints: whatever goes wrong leaves the normal path to do it all.
    """
    command = next((arg for arg in argv[1:] if not arg.startswith("-")), None)  # after --debug, falemu's one flag
    if command != "up" or not enabled():
        return
    try:
        _state.key = plan_key(argv, os.getcwd(), os.environ)
        with open(os.path.join(plan_dir(), f"{_state.key}.json"), encoding="utf-8") as fh:
            plan = json.load(fh)
        if plan.get("version") != PLAN_VERSION or not unchanged(plan["files"]):
            return
        _launch(plan)
    except Exception:
        return
    finally:
        if _state.launched or _state.api_dir is not None:
            import atexit

            atexit.register(discard_unclaimed)


def unchanged(files: Mapping[str, Any]) -> bool:
    return all(file_stamp(path) == stamp for path, stamp in files.items())


def file_stamp(path: str | Path) -> list[int] | None:
    """Size and modification time of ``path``, or None when it does not exist."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def _launch(plan: Mapping[str, Any]) -> None:
    _state.socket = str(plan["socket"])
    _stop_on_sigterm()
    prefix = str(plan["prefix"])
    values = {OWNER: names.owner_label(), OWNER_STARTED: names.process_start_time(os.getpid())}
    if plan.get("api_parent"):
        _state.api_dir = values[API_DIR] = _make_api_dir(str(plan["api_parent"]))
    for runner in plan["runners"]:
        alias = str(runner["alias"])
        runner_id = names.new_runner_id(alias)
        text = str(runner["body"])
        for placeholder, value in {**values, RUNNER: runner_id}.items():
            text = text.replace(placeholder, json.dumps(value)[1:-1])
        launched = Launched(
            alias, runner_id, names.container_name(alias, runner_id), json.loads(text), time.monotonic()
        )
        with _lock:
            _state.launched.append(launched)  # from here on, exit removes it whatever happens next
        status, answer = _call("POST", f"{prefix}/containers/create?name={launched.name}", text.encode())
        if status != 201:
            return
        launched.container_id = str(json.loads(answer)["Id"])
        launched.created = time.monotonic()
        status, _ = _call("POST", f"{prefix}/containers/{launched.container_id}/start")
        if status not in (204, 304):
            return
        launched.running = time.monotonic()


def _stop_on_sigterm() -> None:
    """Until ``falemu up`` installs its own handler, SIGTERM stops this process as Ctrl-C does (it unwinds,
    and exit removes the early containers) instead of ending it with the containers left running."""
    import signal

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _make_api_dir(parent: str) -> str:
    """A fresh private folder for the uploader's socket, as the CDN service makes it (mkdtemp, then 0711)."""
    for _ in range(100):
        folder = os.path.join(parent, API_DIR_PREFIX + names.token(6))
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o711)
        _state.api_socket = _listen(os.path.join(folder, API_SOCKET_NAME))
        return folder
    raise FileExistsError(parent)


def _listen(path: str) -> socket.socket | None:
    """The uploader's socket, bound and listening before any runner starts, as the CDN service binds it:
    a runner that connects before the CDN serves waits in its backlog instead of finding no socket."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
        sock.listen(128)
    except OSError:
        sock.close()
        return None
    return sock


def _call(method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """One Engine API call over the unix socket (HTTP/1.0: the engine answers and closes)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CALL_TIMEOUT)
        sock.connect(_state.socket)
        head = f"{method} {target} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head_bytes, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status = head_bytes.split(b" ", 2)[1:2]
    if not status or not status[0].isdigit():  # the engine hung up without an answer (a restart)
        raise ConnectionError(f"no answer from the engine to {method} {target}")
    return int(status[0]), payload


# -- what the rest of falemu asks -------------------------------------------------------------------


def take_runner_id(alias: str) -> str | None:
    """The runner id of a container begun early for ``alias`` that no runner has yet, or None."""
    with _lock:
        for launched in _state.launched:
            if launched.alias == alias and launched.running and launched.runner_id not in _state.handed:
                _state.handed.add(launched.runner_id)
                return launched.runner_id
    return None


def reserved_name(runner_id: str) -> str | None:
    """The container name the early launch gave runner ``runner_id``, or None."""
    with _lock:
        return next((item.name for item in _state.launched if item.runner_id == runner_id), None)


def take_api_dir() -> str | None:
    """The uploader socket's folder the early launch made (the caller owns it from now on), or None."""
    with _lock:
        folder, _state.api_dir = _state.api_dir, None
    return folder if folder is not None and os.path.isdir(folder) else None


def take_api_socket() -> socket.socket | None:
    """The uploader's socket the early launch bound in that folder, listening already (the caller owns
    it from now on), or None."""
    with _lock:
        sock, _state.api_socket = _state.api_socket, None
    return sock


def claim(socket_path: str | None, name: str, body: Mapping[str, Any]) -> Launched | None:
    """The early container named ``name`` when it was made by the same request on the same engine.

    ``body`` is the create request the runtime would send now. On any difference the early container
    is removed (before returning: the runtime's own container takes its name) and None returned.
    """
    with _lock:
        launched = next((item for item in _state.launched if item.name == name and not item.claimed), None)
        if launched is None:
            return None
        launched.claimed = True
    same = socket_path == _state.socket and launched.running and json.loads(json.dumps(body)) == launched.body
    if same:
        return launched
    _remove(launched)
    return None


def discard_unclaimed() -> int:
    """Remove the early containers no runtime claimed (and the socket folder no CDN took); how many."""
    with _lock:
        left = [item for item in _state.launched if not item.claimed]
        for item in left:
            item.claimed = True
        folder, _state.api_dir = _state.api_dir, None
        sock, _state.api_socket = _state.api_socket, None
    for item in left:
        _remove(item)
    if sock is not None:
        sock.close()
    if folder is not None:
        import contextlib

        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, API_SOCKET_NAME))
        with contextlib.suppress(OSError):
            os.rmdir(folder)
    return len(left)


def _remove(launched: Launched) -> None:
    """Force-remove an early container (by name: one whose create never answered has no id here)."""
    try:
        _call("DELETE", f"/containers/{launched.container_id or launched.name}?force=1&v=1")
    except OSError:
        pass  # the engine went away: the orphan reaping of the next falemu process removes it


# -- the plan of this run ---------------------------------------------------------------------------


def record(alias: str, runner_id: str, body: Mapping[str, Any], socket_path: str | None, prefix: str) -> None:
    """Note the create request of ``alias``'s first runner (``falemu up`` only: :func:`early` ran)."""
    if _state.key is None or socket_path is None:
        return
    with _lock:
        _state.recorded.setdefault(alias, (runner_id, json.loads(json.dumps(body)), socket_path, prefix))


def do_not_plan(alias: str) -> None:
    """Keep ``alias`` out of the plan (its request carries secrets' values)."""
    with _lock:
        _state.unplanned.add(alias)


def source_files(configs: Iterable[AppConfig]) -> list[Path] | None:
    """The files the apps were read from: the pyproject, ``.env``, the Dockerfile and its build context
    (:func:`build_context`), a fal.App's folder's Python files (a folder of too many files: none of them).
    None when a build context is too large to stamp: then no plan is kept."""
    from falemu.config._falapp_cache import source_files as files_below

    files: set[Path] = set()
    for config in configs:
        files.add(config.project_root / ".env")
        if config.pyproject is not None:
            files.add(config.pyproject)
        image = config.image
        if image is not None and image.dockerfile is not None:
            files.add(image.dockerfile)
            context = build_context(image.context_dir or image.dockerfile.parent)
            if context is None:
                return None
            files.update(context)
        if config.fal_app is not None:
            files.update(files_below(config.fal_app.file.parent) or [config.fal_app.file])
    return sorted(files)


def build_context(root: Path) -> set[Path] | None:
    """What a build of ``root`` sends, as the image's tag hashes it (its ``.dockerignore``'s rules, else
    fal's): each file, ``.dockerignore`` and each folder holding them (a file added or removed changes its
    folder's time). None past :data:`MAX_CONTEXT_FILES` files."""
    from falemu.runtime.context import context_files, ignore_patterns

    relative = context_files(root, ignore_patterns(root))
    if len(relative) > MAX_CONTEXT_FILES:
        return None
    paths = {root, root / ".dockerignore"}
    for rel in relative:
        path = root / rel
        paths.add(path)
        paths.update(path.parents[: len(path.relative_to(root).parts) - 1])
    return paths


def ready(configs: Iterable[AppConfig], api_dir: Path | None) -> threading.Thread:
    """``falemu up`` is ready: remove the early containers no runner adopted and save this run's plan.

    In a thread of its own (not a daemon: a Ctrl-C right after Ready does not cut it short), so the
    Ready line waits for neither.
    """
    import threading

    configs = list(configs)

    def run() -> None:
        discard_unclaimed()
        save(configs, api_dir)

    thread = threading.Thread(target=run, name="falemu-prelaunch-plan")
    thread.start()
    return thread


def save(configs: Iterable[AppConfig], api_dir: Path | None) -> bool:
    """Write this run's plan: the recorded requests, this run's names in them as placeholders, and the
    stamps of the files ``configs`` were read from. Returns whether a plan was written."""
    from falemu.runtime.labels import OWNER as OWNER_KEY
    from falemu.runtime.labels import OWNER_STARTED as OWNER_STARTED_KEY

    with _lock:
        recorded = {alias: item for alias, item in _state.recorded.items() if alias not in _state.unplanned}
    if _state.key is None or not recorded:
        return False
    sockets = {(item[2], item[3]) for item in recorded.values()}
    if len(sockets) != 1:
        return False
    socket_path, prefix = sockets.pop()
    files = source_files(configs)
    if files is None:
        return False
    runners = []
    for alias, (runner_id, body, _, _) in sorted(recorded.items()):
        labels = dict(body.get("Labels") or {})
        labels[OWNER_KEY], labels[OWNER_STARTED_KEY] = OWNER, OWNER_STARTED
        text = json.dumps({**body, "Labels": labels})
        if api_dir is not None:
            text = text.replace(json.dumps(str(api_dir))[1:-1], API_DIR)
        runners.append({"alias": alias, "body": text.replace(json.dumps(runner_id)[1:-1], RUNNER)})
    plan = {
        "version": PLAN_VERSION,
        "socket": socket_path,
        "prefix": prefix,
        "api_parent": str(api_dir.parent) if api_dir is not None and API_DIR in str(runners) else None,
        "files": {str(path): file_stamp(path) for path in files},
        "runners": runners,
    }
    import tempfile

    folder = plan_dir()
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plan-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(plan, fh)
        os.replace(tmp, os.path.join(folder, f"{_state.key}.json"))
    except OSError:
        return False
    _prune(folder)
    return True


def _prune(folder: str) -> None:
    """Keep the :data:`MAX_PLANS` plans written last."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.stat().st_mtime_ns, reverse=True)
        for entry in entries[MAX_PLANS:]:
            os.unlink(entry.path)
    except OSError:
        return
