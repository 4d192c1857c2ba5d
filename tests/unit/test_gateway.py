"""The gateway's sync API, headers, errors and auth, over real sockets.

Runners are probe apps (falemu.gateway.probe) served by uvicorn on 127.0.0.1 in threads, behind a
StaticPool; the gateway is served the same way and called with httpx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_support import app_config, wait_for

from falemu.config.settings import Settings
from falemu.events import EventBus, RequestCompleted, RequestStarted
from falemu.gateway import GatewayApp, create_app
from falemu.gateway.harness import GatewayHarness
from falemu.gateway.keys import KeyStore
from falemu.gateway.serve import ThreadedServer
from falemu.gateway.static_pool import StaticPool
from falemu.runtime.base import Runner

# -- forwarding ---------------------------------------------------------------------------------------


def test_sync_forwards_method_path_query_and_body_unmodified(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    body = b'{"prompt": "a cat", "n": 2}'
    resp = client.put(f"{url}/local/echo/v1/items/?a=1&b=two", content=body, headers={"content-type": "text/odd"})
    assert resp.status_code == 200
    seen = resp.json()
    assert seen["method"] == "PUT"
    assert seen["path"] == "/v1/items/"
    assert seen["query"] == "a=1&b=two"
    assert seen["body"] == body.decode()
    assert seen["headers"]["content-type"] == "text/odd"
    assert seen["headers"]["content-length"] == str(len(body))


def test_sync_keeps_percent_encoding_of_the_path(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    seen = client.get(f"{url}/local/echo/files/a%2Fb%20c").json()
    assert seen["raw_path"] == "/files/a%2Fb%20c"


def test_app_root_with_and_without_trailing_slash_reaches_runner_root(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo")])
    assert client.post(f"{url}/local/echo", json={}).json()["path"] == "/"
    assert client.post(f"{url}/local/echo/", json={}).json()["path"] == "/"


def test_identity_headers_added_and_caller_fal_headers_stripped(
    harness: GatewayHarness, client: httpx.Client, keys: KeyStore
) -> None:
    url = harness.serve([app_config("echo", auth="private")])
    _, key = keys.create("test")
    resp = client.post(
        f"{url}/local/echo/run",
        json={"x": 1},
        headers={
            "Authorization": f"Key {key}",
            "x-fal-request-id": "forged",
            "x-fal-caller-user-id": "admin",
            "X-Fal-Something": "nope",
            "X-Fal-Request-Timeout": "30",
            "X-Fal-Runner-Hint": "warm",
            "X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 60}',
            "x-custom": "kept",
        },
    )
    assert resp.status_code == 200
    seen = resp.json()["headers"]
    fal = {k: v for k, v in seen.items() if k.startswith("x-fal-")}
    request_id = resp.headers["x-fal-request-id"]
    assert fal == {
        "x-fal-request-id": request_id,
        "x-fal-endpoint": "local/echo/run",
        "x-fal-caller-user-id": "local",
        "x-fal-object-lifecycle-preference": '{"expiration_duration_seconds": 60}',  # read by the fal SDK
    }
    assert request_id != "forged"
    assert seen["x-custom"] == "kept"
    assert "authorization" not in seen  # the fal key is the platform's, not the app's


def test_non_key_authorization_passes_through_on_public_app(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    seen = client.get(f"{url}/local/echo/", headers={"Authorization": "Basic dXNlcjpwYXNz"}).json()
    assert seen["headers"]["authorization"] == "Basic dXNlcjpwYXNz"
    assert "x-fal-caller-user-id" not in seen["headers"]


def test_every_response_carries_a_request_id(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    ok = client.get(f"{url}/local/echo/")
    missing = client.get(f"{url}/local/nope/")
    assert ok.headers["x-fal-request-id"]
    assert missing.headers["x-fal-request-id"]
    assert ok.headers["x-fal-request-id"] != missing.headers["x-fal-request-id"]


def test_response_status_headers_and_body_come_from_the_runner(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    resp = client.get(f"{url}/local/echo/status/418")
    assert resp.status_code == 418
    assert resp.json() == {"detail": "status 418", "runner": "echo-0"}
    assert "x-fal-error-type" not in resp.headers  # an app's own error is not a platform error


def test_streaming_response_is_not_buffered(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    runner_url = f"http://127.0.0.1:{harness.servers[0].port}"
    with client.stream("POST", f"{url}/local/echo/stream?n=3&gate=g1", json={}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        first = next(line for line in lines if line)
        # The runner holds the rest until released: the first event got here on its own.
        assert json.loads(first.removeprefix("data: ")) == {"i": 0, "runner": "echo-0"}
        assert client.post(f"{runner_url}/_probe/release/g1").status_code == 200
        rest = [json.loads(line.removeprefix("data: ")) for line in lines if line]
    assert [e["i"] for e in rest] == [1, 2]


def test_a_chunked_upload_reaches_the_runner_whole_with_its_length(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo")])
    chunks = [bytes([65 + i % 26]) * 100_000 for i in range(30)]  # 3 MB: kept in a file on the way

    def gen() -> Iterator[bytes]:
        yield from chunks

    seen = client.post(f"{url}/local/echo/upload", content=gen()).json()
    assert seen["body"].encode() == b"".join(chunks)
    assert "transfer-encoding" not in seen["headers"]  # read whole before a runner was leased
    assert seen["headers"]["content-length"] == "3000000"


def test_two_apps_at_once_route_to_their_own_runners(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("alpha"), app_config("beta")])
    assert client.get(f"{url}/local/alpha/").json()["runner"] == "alpha-0"
    assert client.get(f"{url}/local/beta/").json()["runner"] == "beta-0"
    assert client.get(f"{url}/local/alpha/x").json()["runner"] == "alpha-0"


def test_request_events_are_emitted(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    rid = client.get(f"{url}/local/echo/").headers["x-fal-request-id"]
    wait_for(lambda: [e for e in harness.events_of(RequestCompleted) if e.request_id == rid])
    started = [e for e in harness.events_of(RequestStarted) if e.request_id == rid]
    done = [e for e in harness.events_of(RequestCompleted) if e.request_id == rid]
    assert [e.runner for e in started] == ["echo-0"]
    assert [e.status_code for e in done] == [200]


# -- platform errors ------------------------------------------------------------------------------------


def test_unknown_app_and_owner_are_404(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    for path in ("/local/nope/", "/someone/echo/", "/local"):
        resp = client.post(url + path, json={})
        assert resp.status_code == 404, path
        assert "not found" in resp.json()["detail"]


def test_request_timeout_is_504_and_replaces_the_runner(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo", request_timeout=1)])
    resp = client.post(f"{url}/local/echo/slow?s=20", json={})
    assert resp.status_code == 504
    assert resp.json()["error_type"] == "request_timeout"
    assert resp.headers["x-fal-error-type"] == "request_timeout"
    assert "x-fal-request-timeout-type" not in resp.headers
    wait_for(lambda: harness.pools["echo"].replaced)
    assert harness.pools["echo"].replaced == ["echo-0"]


def test_runner_503_is_passed_on_and_the_runner_replaced(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    resp = client.get(f"{url}/local/echo/status/503")
    assert resp.status_code == 503
    assert resp.headers["x-fal-request-id"]
    wait_for(lambda: harness.pools["echo"].replaced)
    assert harness.pools["echo"].replaced == ["echo-0"]
    assert client.get(f"{url}/local/echo/").json()["runner"] == "echo-0"  # same server, new runner id in the pool
    assert harness.pools["echo"].acquired[-1][1] == "echo-0-r1"


def test_unreachable_runner_is_503_runner_connection_refused(harness: GatewayHarness, client: httpx.Client) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead_port = sock.getsockname()[1]
    sock.close()
    config = app_config("dead")
    pool = StaticPool(config, [Runner(id="dead-0", app="dead", host="127.0.0.1", port=dead_port)])
    gateway = create_app({"dead": GatewayApp(config, pool)}, settings=Settings(), events=EventBus(), keys=harness.keys)
    server = ThreadedServer(gateway).start()
    harness.servers.append(server)
    resp = client.get(f"{server.url}/local/dead/")
    assert resp.status_code == 503
    assert resp.json()["error_type"] == "runner_connection_refused"
    assert resp.headers["x-fal-error-type"] == "runner_connection_refused"
    wait_for(lambda: pool.replaced)
    assert pool.replaced == ["dead-0"]


def test_start_timeout_is_504_with_user_timeout_type(harness: GatewayHarness, client: httpx.Client) -> None:
    import threading

    url = harness.serve([app_config("echo")])
    busy = threading.Thread(target=lambda: httpx.post(f"{url}/local/echo/slow?s=4", json={}, timeout=20))
    busy.start()
    try:
        while not harness.pools["echo"].acquired:
            threading.Event().wait(0.02)
        resp = client.post(f"{url}/local/echo/", json={}, headers={"X-Fal-Request-Timeout": "1.5"})
    finally:
        busy.join()
    assert resp.status_code == 504
    assert resp.json()["error_type"] == "request_timeout"
    assert resp.headers["x-fal-request-timeout-type"] == "user"


def test_bad_request_timeout_header_is_400(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    for value in ("soon", "0.5"):
        resp = client.get(f"{url}/local/echo/", headers={"X-Fal-Request-Timeout": value})
        assert resp.status_code == 400
        assert resp.json()["error_type"] == "bad_request"


# -- auth -----------------------------------------------------------------------------------------------


def test_private_app_refuses_missing_and_wrong_keys(
    harness: GatewayHarness, client: httpx.Client, keys: KeyStore
) -> None:
    url = harness.serve([app_config("secret", auth=None)])  # unset auth deploys private
    _, key = keys.create("test")
    key_id = key.split(":")[0]
    missing = client.post(f"{url}/local/secret/", json={})
    wrong_secret = client.post(f"{url}/local/secret/", json={}, headers={"Authorization": f"Key {key_id}:nope"})
    unknown = client.post(f"{url}/local/secret/", json={}, headers={"Authorization": "Key abc:def"})
    malformed = client.post(f"{url}/local/secret/", json={}, headers={"Authorization": "Key nocolon"})
    assert missing.status_code == 401
    assert "authorization" in missing.json()["detail"].lower()
    for resp in (wrong_secret, unknown, malformed):
        assert resp.status_code == 401
        assert resp.json() == {"detail": "No user found for Key ID and Secret"}
        assert resp.headers["x-fal-request-id"]
    assert not harness.pools["secret"].acquired  # nothing reached a runner
    assert client.post(f"{url}/local/secret/", json={}, headers={"Authorization": f"Key {key}"}).status_code == 200
    assert client.post(f"{url}/local/secret/", json={}, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_private_app_refuses_another_users_key_but_shared_app_accepts_it(
    harness: GatewayHarness, client: httpx.Client, keys: KeyStore
) -> None:
    url = harness.serve([app_config("mine", auth="private"), app_config("ours", auth="shared")])
    _, other = keys.create("friend", user="someone-else")
    headers = {"Authorization": f"Key {other}"}
    assert client.get(f"{url}/local/mine/", headers=headers).status_code == 403
    shared = client.get(f"{url}/local/ours/", headers=headers)
    assert shared.status_code == 200
    assert shared.json()["headers"]["x-fal-caller-user-id"] == "someone-else"
    assert client.get(f"{url}/local/ours/").status_code == 401


def test_public_app_needs_no_key_but_rejects_a_bad_one(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("open", auth="public")])
    assert client.get(f"{url}/local/open/").status_code == 200
    assert client.get(f"{url}/local/open/", headers={"Authorization": "Key abc:def"}).status_code == 401


def test_revoked_key_stops_working(harness: GatewayHarness, client: httpx.Client, keys: KeyStore) -> None:
    url = harness.serve([app_config("secret", auth="private")])
    key, value = keys.create("short-lived")
    headers = {"Authorization": f"Key {value}"}
    assert client.get(f"{url}/local/secret/", headers=headers).status_code == 200
    KeyStore(keys.directory).revoke(key.id)  # another process, as `falemu keys revoke`
    # The gateway looks at the key file at most every RELOAD_INTERVAL, not on every request...
    wait_for(lambda: client.get(f"{url}/local/secret/", headers=headers).status_code == 401, timeout=5)
    key, value = keys.create("second")
    headers = {"Authorization": f"Key {value}"}
    assert client.get(f"{url}/local/secret/", headers=headers).status_code == 200
    KeyStore(keys.directory).revoke(key.id)
    keys.reload()  # ...and at once when told (`falemu keys revoke` tells every running falemu up)
    assert client.get(f"{url}/local/secret/", headers=headers).status_code == 401


@pytest.mark.parametrize("api", ["sync", "queue"])
def test_the_local_users_key_calls_private_apps_of_any_owner(
    harness: GatewayHarness, client: httpx.Client, keys: KeyStore, api: str
) -> None:
    url = harness.serve([app_config("secret", auth="private")], settings=Settings(owner="myteam"))
    prefix = f"{url}/queue" if api == "queue" else url
    local = {"Authorization": f"Key {keys.default_key()}"}
    _, alice_value = keys.create("alice's", user="alice")
    alice = {"Authorization": f"Key {alice_value}"}
    _, team_value = keys.create("team's", user="myteam")
    team = {"Authorization": f"Key {team_value}"}

    def call(headers: dict[str, str]) -> httpx.Response:
        resp = client.post(f"{prefix}/myteam/secret/run", json={"x": 1}, headers=headers)
        if api == "queue" and resp.status_code == 200:
            result = resp.json()["response_url"]
            wait_for(lambda: client.get(result, headers=headers).status_code != 400, timeout=10)
            resp = client.get(result, headers=headers)
        return resp

    ok = call(local)
    assert ok.status_code == 200, ok.text
    assert ok.json()["headers"]["x-fal-caller-user-id"] == "local"
    assert call(team).status_code == 200  # the owner's own key
    denied = call(alice)
    assert denied.status_code == 403
    assert denied.json()["detail"] == "User alice cannot access private app myteam/secret"
    assert call({"Authorization": "Key abc:def"}).status_code == 401
    assert call({}).status_code == 401


def test_keys_never_appear_in_events(harness: GatewayHarness, client: httpx.Client, keys: KeyStore) -> None:
    url = harness.serve([app_config("secret", auth="private")])
    _, value = keys.create("test")
    client.get(f"{url}/local/secret/", headers={"Authorization": f"Key {value}"})
    client.get(f"{url}/local/secret/", headers={"Authorization": "Key abc:wrong-secret"})
    dumped = json.dumps([e.to_dict() for e in harness.events.history])
    assert value.split(":")[1] not in dumped
    assert "wrong-secret" not in dumped


def test_caller_leaving_an_open_stream_frees_the_runner(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    with client.stream("POST", f"{url}/local/echo/stream?n=3&gate=never", json={}) as resp:
        rid = resp.headers["x-fal-request-id"]
        first = next(line for line in resp.iter_lines() if line)
        assert first.startswith("data: ")
    # The runner still holds its stream open; the gateway must notice the caller left and let go.
    deadline = time.monotonic() + 15
    while not [e for e in harness.events_of(RequestCompleted) if e.request_id == rid]:
        assert time.monotonic() < deadline, "the gateway kept the abandoned stream"
        time.sleep(0.02)
    done = next(e for e in harness.events_of(RequestCompleted) if e.request_id == rid)
    assert done.status_code == 499
    assert "echo-0" not in harness.pools["echo"].replaced  # the runner did nothing wrong
    assert client.get(f"{url}/local/echo/").status_code == 200  # and it takes the next request


def test_head_request_and_expect_header(harness: GatewayHarness, client: httpx.Client) -> None:
    url = harness.serve([app_config("echo")])
    head = client.head(f"{url}/local/echo/anything")
    assert head.status_code == 200
    assert head.content == b""
    seen = client.post(f"{url}/local/echo/x", content=b"abc", headers={"Expect": "100-continue"}).json()
    assert seen["body"] == "abc"
    assert "expect" not in seen["headers"]


# -- websockets --------------------------------------------------------------------------------------------


def test_websocket_is_forwarded_both_ways(harness: GatewayHarness, keys: KeyStore) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    url = harness.serve([app_config("live", auth="private")])
    _, value = keys.create("ws")
    ws_url = url.replace("http://", "ws://") + "/local/live/realtime?max_buffering=5&fal_jwt_token=t"
    auth = {"Authorization": f"Key {value}"}
    with connect(ws_url, additional_headers=auth, subprotocols=[Subprotocol("chat")]) as ws:
        hello = json.loads(ws.recv())
        assert ws.subprotocol == "chat"
        assert hello["path"] == "/realtime"
        assert hello["query"] == "max_buffering=5"  # the platform's token is not the app's
        assert hello["headers"]["x-fal-caller-user-id"] == "local"
        assert hello["headers"]["x-fal-endpoint"] == "local/live/realtime"
        assert "authorization" not in hello["headers"]
        ws.send("ping")
        assert ws.recv() == "live-0: ping"
        ws.send(b"\x00\x01")
        assert ws.recv() == b"live-0: \x00\x01"
        ws.send("close")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4000
    wait_for(lambda: harness.pools["live"].outcomes)
    assert harness.pools["live"].outcomes[-1][1] == "ok"


def test_websocket_refused_without_a_key(harness: GatewayHarness) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = harness.serve([app_config("live", auth="private")])
    with pytest.raises(InvalidStatus) as info:
        connect(url.replace("http://", "ws://") + "/local/live/realtime")
    assert info.value.response.status_code == 401
    assert not harness.pools["live"].acquired


def test_websocket_takes_a_realtime_token_for_its_app_while_its_key_lasts(
    harness: GatewayHarness, keys: KeyStore
) -> None:
    """fal_client's realtime()/ws_connect() send ``?fal_jwt_token=`` from POST /tokens/ and no key."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = harness.serve([app_config("live", auth="private"), app_config("other", auth="private")])
    base = url.replace("http://", "ws://")
    key, value = keys.create("ws")
    caller = keys.authenticate(f"Key {value}")
    assert caller is not None
    token = keys.issue_token(caller, ["live"], 60)
    with connect(f"{base}/local/live/realtime?fal_jwt_token={token}&max_buffering=2") as ws:
        hello = json.loads(ws.recv())
        assert hello["query"] == "max_buffering=2"
        assert hello["headers"]["x-fal-caller-user-id"] == "local"
        ws.send("ping")
        assert ws.recv() == "live-0: ping"

    _, bob_value = keys.create("bob", user="bob")
    bob = keys.authenticate(f"Key {bob_value}")
    assert bob is not None
    refused = {
        "another app's token": (f"/local/other/realtime?fal_jwt_token={token}", 401),
        "a tampered token": (f"/local/live/realtime?fal_jwt_token={token[:-2]}xx", 401),
        "an expired token": (f"/local/live/realtime?fal_jwt_token={keys.issue_token(caller, ['live'], 1e-6)}", 401),
        "another user's token": (f"/local/live/realtime?fal_jwt_token={keys.issue_token(bob, ['live'], 60)}", 403),
    }
    for what, (path, status) in refused.items():
        with pytest.raises(InvalidStatus) as info:
            connect(base + path)
        assert info.value.response.status_code == status, what
    keys.revoke(key.id)
    with pytest.raises(InvalidStatus) as info:
        connect(f"{base}/local/live/realtime?fal_jwt_token={token}")
    assert info.value.response.status_code == 401  # revoking the key ends its tokens
    assert len(harness.pools["live"].acquired) == 1


def test_request_ids_are_uuid4() -> None:
    import uuid

    from falemu.gateway.asgi import new_request_id

    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in list(ids)[:200]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_concurrent_sync_requests_share_the_runners(harness: GatewayHarness) -> None:
    import asyncio

    url = harness.serve([app_config("echo")], runners_per_app=2)  # max_multiplexing 1: one request per runner

    async def main() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as c:
            responses = await asyncio.gather(*(c.get(f"{url}/local/echo/sleep?s=0.05") for _ in range(30)))
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 30
    pool = harness.pools["echo"]
    assert len(pool.acquired) == 30
    assert {runner for _, runner in pool.acquired} == {"echo-0", "echo-1"}
    # Every lease is given back (just after each caller has its last byte, on the gateway's thread).
    wait_for(lambda: all(info.in_flight == 0 for info in pool.runners()))


def test_runner_hint_prefers_a_runner_that_reported_it_and_never_waits(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    import threading

    url = harness.serve([app_config("models", max_multiplexing=1)], runners_per_app=2)
    pool = harness.pools["models"]
    # models-0 busy: the hint report lands on models-1.
    busy = threading.Thread(target=lambda: httpx.post(f"{url}/local/models/slow?s=1", timeout=20))
    busy.start()
    wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 1)
    assert client.get(f"{url}/local/models/hints/flux,sdxl").json()["runner"] == "models-1"
    busy.join()
    wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 0)
    hinted = {"X-Fal-Runner-Hint": "flux"}

    def runner_of(headers: dict[str, str] | None = None) -> str:
        answer: str = client.get(f"{url}/local/models/x", headers=headers).json()["runner"]
        # The lease is given back just after the answer leaves: wait, or the next request finds it busy.
        wait_for(lambda: sum(info.in_flight for info in pool.runners()) == 0)
        return answer

    assert [runner_of(hinted) for _ in range(3)] == ["models-1"] * 3
    assert runner_of() == "models-0"  # no hint: the usual pick
    assert runner_of({"X-Fal-Runner-Hint": "other"}) == "models-0"
    queued = client.post(f"{url}/queue/local/models/x", json={}, headers=hinted).json()
    wait_for(lambda: client.get(queued["status_url"]).json()["status"] == "COMPLETED")
    assert client.get(queued["response_url"]).json()["runner"] == "models-1"
    # The hinted runner busy: the request goes to the other one at once.
    busy = threading.Thread(target=lambda: httpx.post(f"{url}/local/models/slow?s=1", headers=hinted, timeout=20))
    busy.start()
    wait_for(lambda: any(info.in_flight for info in pool.runners() if info.id == "models-1"))
    assert client.get(f"{url}/local/models/x", headers=hinted).json()["runner"] == "models-0"
    busy.join()


# -- mounts -------------------------------------------------------------------------------------------


def test_mounted_paths_go_to_their_app_and_app_routing_is_untouched(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    url = harness.serve([app_config("echo", auth="public")])
    assert harness.app is not None
    seen: list[str] = []

    def answer(text: bytes) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(str(scope["path"]))
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": text})

        return app

    harness.app.mount("/", answer(b"root"), exact=True)
    harness.app.mount("/_falemu/ui/", answer(b"ui"))
    harness.app.mount("/_falemu/ui/deep/", answer(b"deep"))
    assert client.get(url + "/").text == "root"
    assert client.get(url + "/_falemu/ui").text == "ui"
    assert client.get(url + "/_falemu/ui/x/y").text == "ui"
    assert client.get(url + "/_falemu/ui/deep/z").text == "deep"  # the longest mount wins
    assert seen == ["/", "/_falemu/ui", "/_falemu/ui/x/y", "/_falemu/ui/deep/z"]
    # Everything else still reaches the app, on whichever path the request takes.
    resp = client.post(url + "/local/echo/x", content=b"hi")
    assert resp.status_code == 200
    assert resp.json()["path"] == "/x"
    assert client.get(url + "/_falemu/other").status_code == 404


def test_a_runner_that_closes_its_connection_after_a_500_does_not_fail_the_next_request(
    harness: GatewayHarness, client: httpx.Client
) -> None:
    """uvicorn closes the connection after an app's unhandled exception (FastAPI answers 500 first): the
    gateway must not reuse it for the next request, which would then fail with 503 runner_disconnected."""
    url = harness.serve([app_config("echo")])
    for _ in range(20):
        assert client.post(f"{url}/local/echo/crash", json={}).status_code == 500
        after = client.post(f"{url}/local/echo/after", json={"n": 1})
        assert after.status_code == 200, after.text
    assert harness.replacements == 0  # the runner was never taken for broken
