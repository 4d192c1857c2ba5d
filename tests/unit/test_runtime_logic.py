"""Pure logic of the runtime: addresses, build context and hash, GPU ids, /proc parsing, owners, secrets."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from falemu.config.model import AppConfig, AppShape, RegistryAuth
from falemu.errors import GpuUnavailable, ImageError
from falemu.events import EventBus, Notice
from falemu.runtime import labels
from falemu.runtime.base import PreparedApp, RunnerSpec
from falemu.runtime.context import context_files, dockerfile_instructions, effective_build_args, load_context
from falemu.runtime.engine import arch_mismatch, engine_address, engine_is_local
from falemu.runtime.environment import data_binds, machine_for, read_dotenv, resolve_secrets
from falemu.runtime.gpu import GpuAllocator, GpuGrant, GpuPolicy, is_no_gpu_error
from falemu.runtime.images import registry_credentials, registry_of
from falemu.runtime.readiness import (
    Exited,
    NotReady,
    ReadinessProbe,
    http_status,
    ipv6_only_message,
    listening_sockets,
    loopback_message,
    startup_error,
    wrong_port_message,
)


def _app(root: Path, **kw: object) -> AppConfig:
    return AppConfig(name="a", alias="a", shape=AppShape.DIRECT_SERVER, project_root=root, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "address", "local"),
    [
        ("unix:///var/run/docker.sock", "127.0.0.1", True),
        ("tcp://10.1.2.3:2376", "10.1.2.3", False),
        ("ssh://me@build-box", "build-box", False),
        ("tcp://localhost:2375", "127.0.0.1", True),
        ("npipe:////./pipe/docker_engine", "127.0.0.1", True),
    ],
)
def test_engine_address(url: str, address: str, local: bool):
    assert engine_address(url) == address
    assert engine_is_local(url) is local


def test_engine_address_follows_docker_host(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://192.0.2.7:2376")
    assert engine_address() == "192.0.2.7"


def test_arch_mismatch():
    assert arch_mismatch("amd64", "x86_64") is None
    warning = arch_mismatch("amd64", "aarch64")
    assert warning is not None
    assert "amd64" in warning
    assert "arm64" in warning


def test_context_uses_fal_default_ignores_without_dockerignore(tmp_path: Path):
    for rel in ("app.py", "README.md", "Dockerfile", ".env", "pkg/mod.py", "pkg/__pycache__/x.pyc", ".venv/bin/python"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert context_files(tmp_path, ["*.md", "Dockerfile", ".env", "__pycache__", "*.pyc", ".venv"]) == [
        "app.py",
        "pkg/mod.py",
    ]
    ctx = load_context(tmp_path, tmp_path / "Dockerfile", {})
    assert list(ctx.files) == ["app.py", "pkg/mod.py"]
    (tmp_path / ".dockerignore").write_text("# only this\npkg\n")
    assert "README.md" in context_files(tmp_path, (tmp_path / ".dockerignore").read_text().splitlines()[1:])
    assert list(load_context(tmp_path, tmp_path / "Dockerfile", {}).files) == [
        ".dockerignore",
        ".env",
        ".venv/bin/python",
        "Dockerfile",
        "README.md",
        "app.py",
    ]


def test_content_hash_changes_with_inputs_only(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("FROM x\nCOPY app.py /app.py\n")
    (tmp_path / "app.py").write_text("print(1)")
    first = load_context(tmp_path, tmp_path / "Dockerfile", {"A": "1"}).digest
    assert load_context(tmp_path, tmp_path / "Dockerfile", {"A": "1"}).digest == first
    (tmp_path / "notes.md").write_text("ignored")
    assert load_context(tmp_path, tmp_path / "Dockerfile", {"A": "1"}).digest == first
    assert load_context(tmp_path, tmp_path / "Dockerfile", {"A": "2"}).digest != first
    (tmp_path / "app.py").write_text("print(2)")
    assert load_context(tmp_path, tmp_path / "Dockerfile", {"A": "1"}).digest != first


def test_build_arg_overrides_from_environment():
    text = "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\nARG EXTRA\n"
    env = {"FALEMU_BUILD_ARG_BASE_IMAGE": "local:img", "FALEMU_BUILD_ARG_EXTRA": "x", "FALEMU_BUILD_ARG_NOPE": "y"}
    assert effective_build_args({"BASE_IMAGE": "python:3.11-slim"}, text, env) == {
        "BASE_IMAGE": "local:img",
        "EXTRA": "x",
    }
    assert len(dockerfile_instructions("FROM a\nRUN a \\\n  b\n# c\nCMD x\n")) == 3


def test_gpu_allocator_gives_distinct_ids_then_shares():
    gpus = GpuAllocator(2)
    assert gpus.allocate("r1", 1).device_ids == ("0",)
    assert gpus.allocate("r2", 1).device_ids == ("1",)
    third = gpus.allocate("r3", 1)
    assert third.shared
    gpus.release("r1")
    gpus.release("r3")
    assert gpus.allocate("r4", 1).device_ids == ("0",)
    assert gpus.allocate("r4", 1) == gpus.allocate("r4", 1)  # asking again keeps the same GPU
    assert gpus.free_count() == 0
    with pytest.raises(ValueError, match="needs 3 GPUs"):
        gpus.allocate("r5", 3)
    unknown = GpuAllocator(None).allocate("r1", 2)
    assert unknown.device_ids == ()
    assert unknown.count == 2
    assert is_no_gpu_error('could not select device driver "" with capabilities: [[gpu]]')


PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F40 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
"""


def test_sockets_are_read_from_this_hosts_proc_only_for_a_process_in_the_containers_cgroup():
    """A local engine's container PID read on this host must belong to the container (in a VM, it would not)."""
    from types import SimpleNamespace

    from falemu.runtime.docker import DockerRuntime

    class Engine:
        def container(self, container_id: str) -> dict[str, object]:
            return {"State": {"Pid": os.getpid()}}  # this test's process: in no container's cgroup

    class Api:
        def exec_create(self, *args: object, **kwargs: object) -> dict[str, str]:
            raise RuntimeError("no engine here")

    runtime = DockerRuntime.__new__(DockerRuntime)
    runtime._api = Engine()  # type: ignore[assignment]
    runtime._sdk = SimpleNamespace(api=Api())
    runtime._local, runtime._publish_ip = True, "127.0.0.1"
    container_id = "f" * 64
    assert runtime._host_proc_net_tcp(container_id, own_only=True) is None
    mine = runtime._host_proc_net_tcp(container_id, own_only=False)
    assert mine is not None
    assert "local_address" in mine
    # Inside the container (exec) is asked next; when that fails too, the unchecked read is the last resort.
    assert "local_address" in (runtime._proc_net_tcp(container_id) or "")


def test_proc_net_tcp_parsing_and_messages():
    sockets = listening_sockets(PROC_NET_TCP)
    assert sockets == [("127.0.0.1", 8000), ("0.0.0.0", 9090)]
    assert loopback_message(sockets, 8000) == (
        "the server listens on 127.0.0.1:8000 inside the container; fal needs 0.0.0.0"
    )
    assert loopback_message(sockets, 9090) is None
    assert wrong_port_message([("0.0.0.0", 9090)], 8000) == (
        "the server listens on port 9090 inside the container, but exposed_port is 8000"
    )
    v6 = "   0: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 0"
    assert listening_sockets(v6) == [("::1", 8000)]


def _ipv6_listener(v6only: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind(("::", 0))
    except OSError:
        sock.close()
        pytest.skip("this host cannot listen on IPv6")
    sock.listen()
    return sock


def test_a_server_on_ipv6_only_is_told_apart_from_a_dual_stack_one():
    # /proc/net/tcp6 shows [::] for both; only an IPv4 connection that is refused tells them apart.
    with _ipv6_listener(v6only=True) as only6, _ipv6_listener(v6only=False) as dual:
        port6, port_dual = only6.getsockname()[1], dual.getsockname()[1]
        message = ipv6_only_message([("::", port6)], port6, "127.0.0.1")
        assert message == (
            f"the server listens on [::]:{port6} inside the container, IPv6 only; runners are reached over "
            "IPv4: fal needs 0.0.0.0"
        )
        assert ipv6_only_message([("::", port_dual)], port_dual, "127.0.0.1") is None
        assert ipv6_only_message([("::", port6)], port6, None) is None  # no container address to ask
        assert ipv6_only_message([("0.0.0.0", port6)], port6, "127.0.0.1") is None
        assert ipv6_only_message([("::", port6)], port6 + 1, "127.0.0.1") is None


def test_a_start_that_timed_out_names_the_port_the_server_listens_on_in_its_message():
    # the message is what a caller waiting for the runner gets (a 504 detail, a test's failure), not the hint
    error = startup_error(
        NotReady("timeout", "timed out"),
        runner="r1",
        app="myapp",
        logs="INFO: Uvicorn running on http://0.0.0.0:9123\n",
        limit=12,
        port=9124,
        health_path="/health",
        cause=wrong_port_message([("0.0.0.0", 9123)], 9124),
    )
    assert error.message == (
        "runner r1 of myapp was not ready within startup_timeout (12 s): GET /health on port 9124 never answered "
        "2xx; the server listens on port 9123 inside the container, but exposed_port is 9124"
    )
    assert "exposed_port" in (error.hint or "")
    plain = startup_error(
        NotReady("timeout", "timed out"), runner="r1", app="myapp", logs="", limit=12, port=9124, health_path=None
    )
    assert plain.message.endswith("GET / on port 9124 never answered")


def test_owner_gone_only_for_dead_owners_on_this_host():
    me = labels.runner_labels("a", "r1")
    assert not labels.owner_gone(me)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = {labels.OWNER: f"{proc.pid}@{labels.hostname()}"}
    assert labels.owner_gone(dead)
    assert not labels.owner_gone({labels.OWNER: f"{proc.pid}@another-host"})
    assert not labels.owner_gone({labels.OWNER: "garbage"})
    reused = {labels.OWNER: f"{os.getpid()}@{labels.hostname()}", labels.OWNER_STARTED: "1"}
    assert labels.owner_gone(reused)  # this pid lives, but it is not the process that made the container


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told apart through /proc (Linux)")
def test_a_killed_owner_not_yet_collected_by_its_parent_is_gone():
    # `falemu up &` killed with -9 in a script whose shell has ended: until an init collects it, the pid
    # is a zombie, which kill(pid, 0) still finds. Its runners are orphans all the same.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        labelled = {
            labels.OWNER: f"{proc.pid}@{labels.hostname()}",
            labels.OWNER_STARTED: labels.process_start_time(proc.pid),
        }
        assert labels.pid_alive(proc.pid)
        assert not labels.owner_gone(labelled)
        proc.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not become a zombie"
            time.sleep(0.01)
        assert not labels.pid_alive(proc.pid)
        assert labels.owner_gone(labelled)
    finally:
        proc.kill()
        proc.wait()


class _Container:
    def __init__(self, name: str, **labelled: str) -> None:
        self.name = name
        self.labels = labelled


def test_down_keeps_to_the_asked_project_and_says_what_it_leaves(tmp_path: Path):
    from falemu.runtime.cleanup import plan_down

    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    me = f"{os.getpid()}@{labels.hostname()}"  # a live owner: this process
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = f"{proc.pid}@{labels.hostname()}"

    def runner(name: str, project: Path | None, owner: str, app: str = "greeter") -> _Container:
        meta = {labels.APP: app, labels.RUNNER: name, labels.OWNER: owner}
        if project is not None:
            meta[labels.PROJECT] = labels.project_label(project)
        return _Container(name, **meta)

    containers = [
        runner("mine-live", mine, me),
        runner("theirs-live", theirs, me),
        runner("theirs-dead", theirs, dead),
        runner("old-dead", None, dead),  # made by a falemu before the project label
        runner("old-live-theirs", None, me),  # ... whose live falemu up serves the other project
        runner("other-app", mine, me, app="painter"),
    ]
    live = {os.getpid(): labels.project_label(theirs)}
    plan = plan_down(containers, apps={"greeter"}, project=mine, live_projects=live)
    assert [c.name for c in plan.remove] == ["mine-live", "old-dead"]
    reasons = {s.name: s.reason for s in plan.skipped}
    assert set(reasons) == {"theirs-live", "theirs-dead", "old-live-theirs"}
    assert (
        reasons["theirs-live"]
        == f"it belongs to project {theirs.resolve()}, served by the falemu process of pid {os.getpid()}"
    )
    assert reasons["theirs-dead"] == f"it belongs to project {theirs.resolve()}"
    # --app outside any project: runners of a live falemu are left alone, those of a gone one go.
    nowhere = plan_down(containers, apps={"greeter"}, project=None, live_projects={})
    assert [c.name for c in nowhere.remove] == ["theirs-dead", "old-dead"]
    assert "add --project" in {s.name: s.reason for s in nowhere.skipped}["mine-live"]
    assert "project is unknown" in {s.name: s.reason for s in nowhere.skipped}["old-live-theirs"]
    # --project alone: every app of the project.
    whole = plan_down(containers, apps=None, project=mine, live_projects=live)
    assert [c.name for c in whole.remove] == ["mine-live", "old-dead", "other-app"]
    assert labels.runner_labels("a", "r1", mine)[labels.PROJECT] == str(mine.resolve())


def test_secrets_from_environment_then_dotenv(tmp_path: Path):
    (tmp_path / ".env").write_text("# comment\nexport A='from file'\nB=file-b # trailing\nC=\"c\"\n")
    assert read_dotenv(tmp_path / ".env") == {"A": "from file", "B": "file-b", "C": "c"}
    app = _app(tmp_path, secrets=("A", "B", "MISSING"))
    found, missing = resolve_secrets(app, {"B": "from env"})
    assert found == {"A": "from file", "B": "from env"}
    assert missing == ["MISSING"]


def test_data_binds_and_machines(tmp_path: Path):
    assert data_binds(_app(tmp_path), tmp_path / "d") == {str((tmp_path / "d").resolve()): "/data"}
    part = data_binds(_app(tmp_path, data_mounts=("/data/.cache",)), tmp_path / "d")
    assert part == {str((tmp_path / "d" / ".cache").resolve()): "/data/.cache"}
    name, machine = machine_for(_app(tmp_path, machine_types=("M", "L")))
    assert name == "M"
    assert machine is not None
    assert (machine.cpus, machine.memory_mb) == (2, 2048)
    assert machine_for(_app(tmp_path, machine_types=("GPU-NEW",)))[1] is None


def test_registry_credentials():
    assert registry_of("ghcr.io/org/app:1") == "ghcr.io"
    assert registry_of("org/app") == "docker.io"
    assert registry_of("localhost:5000/app") == "localhost:5000"
    regs = {"https://index.docker.io/v1/": RegistryAuth("u", "$TOKEN"), "ghcr.io": RegistryAuth("g", "plain")}
    assert registry_credentials("org/app", regs, {"TOKEN": "t"}) == {"username": "u", "password": "t"}
    assert registry_credentials("ghcr.io/o/a", regs, {}) == {"username": "g", "password": "plain"}
    assert registry_credentials("quay.io/o/a", regs, {}) is None
    with pytest.raises(ImageError, match="environment variable TOKEN is not set"):
        registry_credentials("org/app", regs, {})


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_readiness_probe_against_a_local_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert http_status("127.0.0.1", port, "/nope", 1) == 503
        phases = ReadinessProbe("127.0.0.1", port, "/health").wait(5, exited=lambda: None)
        assert set(phases) == {"port_open", "http_ready"}
        assert phases["port_open"] < 1.0
        # Counted from when the runner was started (the engine's start call), not from when the wait began.
        since = ReadinessProbe("127.0.0.1", port, "/health").wait(5, exited=lambda: None, since=time.monotonic() - 2.0)
        assert since["port_open"] >= 2.0
        with pytest.raises(NotReady) as info:
            ReadinessProbe("127.0.0.1", port, "/nope").wait(0.3, exited=lambda: None)
        assert info.value.reason == "timeout"
        with pytest.raises(NotReady) as gone:
            ReadinessProbe("127.0.0.1", port, "/nope").wait(30, exited=lambda: Exited(2))
        assert gone.value.exited == Exited(2)
    finally:
        server.shutdown()
        server.server_close()
    assert http_status("127.0.0.1", port, "/", 0.2) is None


def _gpu_spec(tmp_path: Path, gpu: str, **app_kw: object) -> RunnerSpec:
    app = _app(tmp_path, machine_types=("GPU-H100",), **app_kw)
    return RunnerSpec(PreparedApp(app, "img", built=False), "r", "local", tmp_path, gpu=gpu)  # type: ignore[arg-type]


def test_gpu_policy_modes(tmp_path: Path):
    events = EventBus()
    policy = GpuPolicy(GpuAllocator(1))
    assert policy.plan(_gpu_spec(tmp_path, "off"), events, "a") is None
    cpu_app = RunnerSpec(PreparedApp(_app(tmp_path), "img", built=False), "r", "local", tmp_path)
    assert policy.plan(cpu_app, events, "a") is None
    assert policy.plan(_gpu_spec(tmp_path, "require"), events, "a") == GpuGrant(1, ("0",))
    with pytest.raises(GpuUnavailable, match="held by another runner"):
        policy.plan(_gpu_spec(tmp_path, "require"), events, "b")
    shared = policy.plan(_gpu_spec(tmp_path, "auto"), events, "b")
    assert shared is not None
    assert shared.shared
    with pytest.raises(GpuUnavailable, match="needs 2 GPUs"):
        policy.plan(_gpu_spec(tmp_path, "require", num_gpus=2), events, "c")
    assert events.history == [e for e in events.history if isinstance(e, Notice)]
    assert len(events.history) == 1

    policy.refused(_gpu_spec(tmp_path, "auto"), events, "no driver", "a")
    policy.refused(_gpu_spec(tmp_path, "auto"), events, "no driver", "b")
    assert len(events.history) == 2  # the CPU fallback warns once per runtime
    assert policy.plan(_gpu_spec(tmp_path, "auto"), events, "d") is None
    with pytest.raises(GpuUnavailable, match="cannot give GPUs"):
        policy.plan(_gpu_spec(tmp_path, "require"), events, "e")


def test_container_names_are_unique_and_readable():
    from falemu.runtime.docker import container_name

    first, second = container_name("my app", "r1"), container_name("my app", "r1")
    assert first != second
    assert first.startswith("falemu-my-app-r1-")
    assert container_name("a", "").startswith("falemu-a-")
    # Docker takes ASCII names: other letters become '-', and a long app name is cut.
    assert re.fullmatch(r"falemu-n-r1-[0-9a-f]{6}", container_name("ünï", "ünï-r1"))
    long = container_name("a" * 300, "a" * 300 + "-r2")
    assert re.fullmatch(r"falemu-a{40}-r2-[0-9a-f]{6}", long)


def test_image_repository_names_are_valid_for_any_app_name(tmp_path: Path):
    from falemu.runtime.images import image_repository

    valid = re.compile(r"falemu/[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*")  # Docker's repository path rule
    import dataclasses

    def repo(alias: str) -> str:
        return image_repository(dataclasses.replace(_app(tmp_path), alias=alias))

    names = {name: repo(name) for name in ("ünï", "a" * 300, "My_.App", "x")}
    assert all(valid.fullmatch(repo) and len(repo) <= 255 for repo in names.values()), names
    assert names["x"] == "falemu/x"
    assert repo("a" * 299 + "b") != names["a" * 300]  # cut names stay apart


def test_an_engines_gpu_refusal_is_remembered_for_a_day_while_it_describes_itself_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from falemu.runtime import gpu_probe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    info = {"ID": "engine-1", "ServerVersion": "27.0.1", "Runtimes": {"runc": {}}, "KernelVersion": "6.1"}
    reason = 'could not select device driver "" with capabilities: [[gpu]]'
    assert gpu_probe.remembered_refusal(info) is None
    gpu_probe.remember_refusal(info, reason)
    assert gpu_probe.remembered_refusal(info) == reason
    assert gpu_probe.remembered_refusal({**info, "Containers": 7}) == reason  # what changes all the time: ignored
    for changed in ({"Runtimes": {"runc": {}, "nvidia": {}}}, {"ServerVersion": "28.0.0"}, {"ID": "engine-2"}):
        assert gpu_probe.remembered_refusal({**info, **changed}) is None, changed
    assert gpu_probe.remembered_refusal(info, now=time.time() + gpu_probe.REMEMBER_SECONDS + 1) is None
    assert gpu_probe.remembered_refusal({}) is None  # an engine without id is never remembered
    for entry in gpu_probe.memory_dir().glob("gpu-*.json"):
        entry.write_text("{not json")
    assert gpu_probe.remembered_refusal(info) is None


def test_doctor_says_a_gateway_port_taken_by_a_running_falemu_up_is_served_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import json
    import socket

    from falemu.runtime.doctor import check_port

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = check_port("127.0.0.1", port)  # held by something else: a failure, as before
        assert (other.status, other.detail) == ("fail", f"gateway port 127.0.0.1:{port} is in use")
        (tmp_path / "falemu").mkdir()
        state = {"pid": os.getpid(), "url": f"http://127.0.0.1:{port}", "admin_token": "t", "project": "/src/p"}
        (tmp_path / "falemu" / f"{os.getpid()}.json").write_text(json.dumps({**state, "apps": ["a"], "started": 1.0}))
        served = check_port("127.0.0.1", port)
    assert served.status == "warn"  # `falemu doctor` exits 0: the machine is fine, falemu runs on it
    assert served.detail == f"gateway port 127.0.0.1:{port} is served by falemu up (pid {os.getpid()}, project /src/p)"
    assert "--port" in (served.hint or "")
