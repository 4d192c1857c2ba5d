"""`falemu up` with no flag, then `eval "$(falemu env)"`: the real fal_client (HTTPS), curl over plain HTTP
and HTTPS on the same port, and curl through the gateway as its HTTPS_PROXY.

The example app runs on the process runtime (no image to build); the gateway is the same either way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "direct-server"

CLIENT = textwrap.dedent(
    """
    import json, os, fal_client
    result = fal_client.run("local/greeter/greet", arguments={"name": "fal"})
    handle = fal_client.submit("local/greeter/greet", arguments={"name": "queue"})
    print(json.dumps({
        "run": result,
        "submitted": handle.get(),
        "result": fal_client.result("local/greeter", handle.request_id),
        "proxy": os.environ["HTTPS_PROXY"],
        "no_proxy": os.environ["NO_PROXY"],
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(180)
def test_fal_client_and_curl_reach_a_falemu_up_started_without_flags(tmp_path: Path) -> None:
    port = _free_port()  # the process runtime runs the app on its exposed_port
    project = tmp_path / "greeter"
    shutil.copytree(EXAMPLE, project)
    for name in ("pyproject.toml", "Dockerfile"):
        text = (project / name).read_text().replace("8000", str(port))
        (project / name).write_text(text.replace('auth = "public"\n', ""))  # private: FAL_KEY is needed
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FALEMU_")) and "PROXY" not in k.upper()},
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_RUNTIME_DIR": str(run_dir),
        "FALEMU_RUNTIME": "process",
        "FALEMU_PORT": "0",
        "NO_COLOR": "1",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "falemu", "up"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        seen = []
        for line in up.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("press Ctrl-C to stop"):
                break
        ready = next((line for line in seen if line.startswith("gateway at ")), None)
        assert ready is not None, "\n".join(seen)
        assert "(HTTPS on the same port)" in ready
        gateway = ready.split()[2]
        assert gateway.startswith("http://127.0.0.1:")
        falemu_env = f'eval "$({sys.executable} -m falemu env)"'
        script = textwrap.dedent(
            f"""
            set -e
            {falemu_env}
            {sys.executable} -c '{CLIENT}'
            auth="Authorization: Key $FAL_KEY"
            body='{{"name": "curl"}}'
            json='content-type: application/json'
            curl -sS --noproxy '*' {gateway}/local/greeter/greet -H "$auth" -H "$json" -d "$body"
            echo
            https={gateway.replace("http://", "https://")}
            curl -sS --noproxy '*' --cacert "$SSL_CERT_FILE" $https/local/greeter/greet -H "$auth" -H "$json" -d "$body"
            echo
            curl -sS --noproxy '' --cacert "$SSL_CERT_FILE" $https/local/greeter/health -H "$auth"
            echo
            """
        )
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr + "\nfalemu up:\n" + "\n".join(seen)
        assert "warning" not in done.stderr
        lines = done.stdout.strip().splitlines()
        client = json.loads(lines[0])
        assert client["run"]["message"] == "Hello, fal."
        assert client["submitted"]["message"] == "Hello, queue."
        assert client["result"] == client["submitted"]
        assert client["proxy"] == gateway
        assert client["no_proxy"] == "localhost,127.0.0.1,::1"
        assert json.loads(lines[1])["message"] == "Hello, curl."  # plain HTTP
        assert json.loads(lines[2])["message"] == "Hello, curl."  # HTTPS, same port
        assert json.loads(lines[3]) == {"ok": True}  # through HTTPS_PROXY (a passthrough tunnel) when not excepted
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
