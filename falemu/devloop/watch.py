"""Watching each app's build context for changes (watchfiles), with the context's own ignore rules.

What counts as a change of an app is what would change its image or config: a file of its build
context (the pyproject folder, minus what its ``.dockerignore`` or fal's default ignore list leaves
out, the same rules the build uses), plus the Dockerfile, the ``.dockerignore`` and the pyproject
itself; for a fal.App also its module and the Python files of the module's folder, and its
``ContainerImage``'s build context. Editor noise (swap and backup files, ``.git``, ``__pycache__``)
is dropped by watchfiles' own default filter.

watchfiles groups changes: a batch is handed over once no new change came for ``step_ms`` (or after
``debounce_ms`` at most), so an editor's save (a temporary file, then a rename) or a ``git checkout``
is one batch. Where file system events do not reach the watcher (some network and container
mounts), ``WATCHFILES_FORCE_POLLING=1`` makes watchfiles poll.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from falemu.config.model import AppConfig
from falemu.runtime.context import IgnoreMatcher, ignore_patterns

STEP_MS = 100
DEBOUNCE_MS = 1600


def watched_roots(app: AppConfig) -> list[Path]:
    """The folders whose files can change the app: its project folder, plus the Dockerfile's folder
    and any context folder outside it."""
    root = app.project_root.resolve()
    roots = [root]
    extra: list[Path | None] = [app.app_files_context_dir, app.requirements_context_dir]
    if app.image is not None:
        extra.append(app.image.context_dir)
        if app.image.dockerfile is not None:
            extra.append(_absolute(app, app.image.dockerfile).parent)
    if app.fal_app is not None:  # a fal.App's module folder and its ContainerImage's context
        extra.append(app.fal_app.file.parent)
        if app.fal_app.image is not None:
            extra.append(app.fal_app.image.context_dir)
    for folder in extra:
        if folder is None:
            continue
        folder = _absolute(app, folder)
        if not any(folder == r or folder.is_relative_to(r) for r in roots) and folder.is_dir():
            roots.append(folder)
    return roots


def _absolute(app: AppConfig, path: Path) -> Path:
    return (path if path.is_absolute() else app.project_root / path).resolve()


class _Folder:
    """One folder whose files go into the app's image, with the rules that pick them."""

    def __init__(self, root: Path, *, python_only: bool = False) -> None:
        self.root = root
        self.python_only = python_only  # a fal.App's module folder: its Python files go into the image
        self._matcher: IgnoreMatcher | None = None

    def forget_rules(self) -> None:
        self._matcher = None

    def keeps(self, full: Path) -> str | None:
        if not full.is_relative_to(self.root):
            return None
        rel = full.relative_to(self.root).as_posix()
        if rel == "." or (self.python_only and not rel.endswith(".py")):
            return None
        if self._matcher is None:
            patterns = ignore_patterns(self.root)
            if self.python_only:  # fal's default list, without what only concerns a Dockerfile build
                patterns = [p for p in patterns if p not in ("Dockerfile", "Dockerfile.*", "*.md")]
            self._matcher = IgnoreMatcher(patterns)
        return None if self._matcher.ignored(rel) else rel


class ContextFilter:
    """Which changed paths are changes of one app (see the module docstring)."""

    def __init__(self, app: AppConfig) -> None:
        self.root = app.project_root.resolve()
        always = [self.root / ".dockerignore"]
        if app.pyproject is not None:
            always.append(app.pyproject.resolve())
        if app.image is not None and app.image.dockerfile is not None:
            always.append(_absolute(app, app.image.dockerfile))
        self._folders = [_Folder(self.root)]
        if app.fal_app is not None:  # a fal.App: its module folder, and its ContainerImage's context
            module = app.fal_app.file.parent.resolve()
            always.extend([app.fal_app.file.resolve(), module / ".dockerignore"])
            self._folders.append(_Folder(module, python_only=True))
            if app.fal_app.image is not None:
                context = app.fal_app.image.context_dir.resolve()
                always.append(context / ".dockerignore")
                self._folders.append(_Folder(context))
        self._always = frozenset(always)

    def relevant(self, path: str | Path) -> str | None:
        """The path as shown to the user (relative to the project folder) when it is a change of the
        app, else None."""
        full = Path(path).resolve() if not isinstance(path, Path) else path.resolve()
        if full in self._always:
            if full.name == ".dockerignore":
                for folder in self._folders:
                    folder.forget_rules()  # the rules changed: read them again
            return self._show(full)
        for folder in self._folders:
            if folder.keeps(full) is not None:
                return self._show(full)
        return None

    def _show(self, full: Path) -> str:
        return full.relative_to(self.root).as_posix() if full.is_relative_to(self.root) else str(full)

    def changes(self, paths: Iterable[str | Path]) -> list[str]:
        """The relevant ones of ``paths``, sorted, each once."""
        return sorted({shown for p in paths if (shown := self.relevant(p)) is not None})


class Watcher:
    """Calls ``on_change(app_name, changed_paths)`` (on the watcher's thread) for each batch of
    changes that concerns an app."""

    def __init__(
        self,
        apps: Mapping[str, AppConfig],
        on_change: Callable[[str, list[str]], None],
        *,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self._filters = {name: ContextFilter(app) for name, app in apps.items()}
        roots: list[Path] = []
        for app in apps.values():
            for folder in watched_roots(app):
                if not any(folder == r or folder.is_relative_to(r) for r in roots):
                    roots = [r for r in roots if not r.is_relative_to(folder)] + [folder]
        self.roots = roots
        self._on_change = on_change
        self._step = step_ms
        self._debounce = debounce_ms
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> Watcher:
        """Start watching; returns once the watcher is set up."""
        self._thread = threading.Thread(target=self._run, name="falemu-watch", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)

    def _run(self) -> None:
        import watchfiles

        try:
            changes = watchfiles.watch(
                *self.roots,
                watch_filter=watchfiles.DefaultFilter(),
                debounce=self._debounce,
                step=self._step,
                stop_event=self._stop,
                rust_timeout=500,
                yield_on_timeout=True,  # a first (empty) batch once the watch is set up
                raise_interrupt=False,
            )
            for batch in changes:
                self._started.set()
                if self._stop.is_set():
                    return
                if batch:
                    self.dispatch(path for _, path in batch)
        except Exception as exc:  # the watcher dies alone; `falemu up` keeps serving
            self.error = exc
        finally:
            self._started.set()

    def dispatch(self, paths: Iterable[str]) -> None:
        """Hand one batch of changed paths to ``on_change``, per app it concerns."""
        seen = list(paths)
        for name, context in self._filters.items():
            relevant = context.changes(seen)
            if relevant:
                with contextlib.suppress(Exception):
                    self._on_change(name, relevant)
