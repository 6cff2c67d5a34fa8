"""HTTP calls and WebSocket refusals against an in-memory stand-in for the cluster.

Only the api's own validation and mapping are checked here; everything that
touches Kubernetes for real is in tests/integration (pytest -m cluster).
"""

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():
    # starlette 1.x prefers `httpx2` for its TestClient; plain httpx still works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse

from icee_api.app import create_app
from icee_api.settings import Settings
from icee_core.models import CODE_MAX_BYTES
from icee_kube.client import KubeError

ID = "0b8a0f8e-6f5e-4c4c-9d3a-0e1f2a3b4c5d"


class FakeLeases:
    """The Lease calls of icee_api.session.claims, in memory (create is atomic, as in the API)."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        assert "/leases" in path, path
        self.version += 1
        if method == "POST":
            body = kwargs["body"]
            name = body["metadata"]["name"]
            if name in self.leases:
                raise KubeError("409 AlreadyExists", 409)
            body["metadata"] |= {"uid": f"uid-{self.version}", "resourceVersion": str(self.version)}
            self.leases[name] = body
            return body
        name = path.rsplit("/", 1)[1]
        if name not in self.leases:
            raise KubeError("404 NotFound", 404)
        if method == "DELETE":
            del self.leases[name]
            return {}
        lease = self.leases[name]
        lease["spec"] |= kwargs["body"].get("spec") or {}
        lease["metadata"]["resourceVersion"] = str(self.version)
        return lease


class FakeCluster:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.terminations: list[tuple[str, str]] = []
        self.kube = FakeLeases()

    async def check(self) -> None:
        return None

    async def watch_pods(self, version: str | None, seconds: float) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield  # pragma: no cover

    watch_sessions = watch_pods
    watch_started = watch_pods

    async def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        return [], "1"

    async def list_sessions(self) -> tuple[list[dict[str, Any]], str]:
        return list(self.sessions.values()), "1"

    list_started = list_pods

    async def create_session(self, session_id: str, spec: Any, client: str | None = None) -> None:
        self.sessions[session_id] = {
            "metadata": {
                "name": session_id,
                "creationTimestamp": "2025-01-01T00:00:00Z",
                "labels": {"icee.dev/client": client},
            },
            "spec": spec.to_wire(),
        }

    async def mark_connected(self, session_id: str, at: Any) -> None:
        self.sessions[session_id]["spec"]["start"] = {"at": at.isoformat()}

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        return self.sessions.get(session_id)

    async def request_termination(self, session_id: str, reason: str, message: str) -> bool:
        self.terminations.append((session_id, reason))
        return True


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def api(cluster: FakeCluster, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(ui_dir=tmp_path / "missing")
    with TestClient(create_app(settings, cluster=cluster)) as client:  # type: ignore[arg-type]
        yield client


def test_create_session(api: TestClient, cluster: FakeCluster) -> None:
    r = api.post("/session", json={"language": "python", "code": "print('Hello World')"})
    assert r.status_code == 201
    sid = r.json()["sessionId"]
    spec = cluster.sessions[sid]["spec"]
    assert spec["language"] == "python"
    assert spec["limits"]["outputBytes"] == 1024 * 1024
    assert spec["timeouts"] == {"executionSeconds": 120, "idleSeconds": 30}


def test_tty_session_with_its_terminal_size(api: TestClient, cluster: FakeCluster) -> None:
    r = api.post("/session", json={"language": "python", "code": "x", "tty": True, "cols": 120})
    assert r.status_code == 201, r.text
    spec = cluster.sessions[r.json()["sessionId"]]["spec"]
    assert (spec["tty"], spec["cols"], spec["rows"]) == (True, 120, 24)
    r = api.post("/session", json={"language": "python", "code": "x"})
    spec = cluster.sessions[r.json()["sessionId"]]["spec"]
    assert spec["tty"] is False
    assert "cols" not in spec


def test_several_files(api: TestClient, cluster: FakeCluster) -> None:
    files = [{"name": "lib/util.py", "content": "X = 1"}, {"name": "main.py", "content": "1"}]
    r = api.post("/session", json={"language": "python", "files": files})
    assert r.status_code == 201, r.text
    spec = cluster.sessions[r.json()["sessionId"]]["spec"]
    assert [f["name"] for f in spec["files"]] == ["lib/util.py", "main.py"]
    assert "code" not in spec


def test_requested_limits_may_lower_but_never_raise(api: TestClient, cluster: FakeCluster) -> None:
    r = api.post(
        "/session",
        json={
            "language": "python",
            "code": "x",
            "limits": {"outputBytes": 1000, "memoryBytes": 1024**3},
            "timeouts": {"idleSeconds": 5},
        },
    )
    assert r.status_code == 201
    spec = cluster.sessions[r.json()["sessionId"]]["spec"]
    assert spec["limits"]["outputBytes"] == 1000
    assert spec["limits"]["memoryBytes"] == 200 * 1024 * 1024  # capped at the maximum
    assert spec["limits"]["cpuMillis"] == 500  # unset: the maximum
    assert spec["timeouts"] == {"executionSeconds": 120, "idleSeconds": 5}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"language": "cobol", "code": "x"}, 422, "unknown language 'cobol'"),
        ({"language": "python", "code": "   "}, 422, "code is empty"),
        ({"language": "python", "code": "x", "extra": 1}, 422, "extra"),
        ({"language": "python", "code": "x", "limits": {"outputBytes": 0}}, 422, "outputBytes"),
        ({"language": "python", "code": "x" * (CODE_MAX_BYTES + 1)}, 413, "at most 65536"),
        ([1, 2], 422, ""),
        ({"language": "python", "code": "x", "tty": True, "cols": 0}, 422, "cols"),
        ({"language": "python", "code": "x", "tty": True, "rows": 1001}, 422, "rows"),
        ({"language": "python", "code": "x", "tty": True, "cols": "80"}, 422, "cols"),
        ({"language": "python", "code": "x", "tty": "yes"}, 422, "tty"),
        ({"language": "python", "code": "x", "cols": 80}, 422, 'need "tty": true'),
        ({"language": "python"}, 422, "give either code or files"),
        (
            {"language": "python", "code": "x", "files": [{"name": "a.py", "content": "x"}]},
            422,
            "give either code or files",
        ),
        (
            {"language": "python", "files": [{"name": "../etc/x.py", "content": "x"}]},
            422,
            "'../etc/x.py'",
        ),
        ({"language": "python", "files": [{"name": "/abs.py", "content": "x"}]}, 422, "/abs.py"),
        (
            {
                "language": "python",
                "files": [{"name": "a.py", "content": "1"}, {"name": "b.py", "content": "2"}],
            },
            422,
            "which of the 2 files is the main one",
        ),
    ],
)
def test_bad_session_requests(api: TestClient, body: Any, status: int, says: str) -> None:
    r = api.post("/session", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]


def test_malformed_json(api: TestClient, cluster: FakeCluster) -> None:
    r = api.post(
        "/session", content=b"{language: python", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["detail"]
    assert cluster.sessions == {}


def test_oversized_body_is_refused_before_parsing(api: TestClient) -> None:
    r = api.post(
        "/session", content=b"x" * (1024 * 1024), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


RUN_USAGE = {"exitCode": 0, "signal": 0, "cpuMillis": 9, "memoryBytes": 8, "wallMillis": 7}


def test_get_session_maps_the_status(api: TestClient, cluster: FakeCluster) -> None:
    cluster.sessions[ID] = {
        "metadata": {"name": ID},
        "spec": {"language": "python"},
        "status": {
            "phase": "Finished",
            "exitCode": 0,
            "reason": "Completed",
            "createdAt": "2025-01-01T00:00:00Z",
            "startedAt": "2025-01-01T00:00:01Z",
            "finishedAt": "2025-01-01T00:00:02Z",
            "usage": {"run": RUN_USAGE},
        },
    }
    body = api.get(f"/session/{ID}").json()
    assert body["state"] == "finished"
    assert (body["exitCode"], body["reason"], body["language"]) == (0, "Completed", "python")
    assert body["finishedAt"].startswith("2025-01-01T00:00:02")
    assert body["usage"] == {"run": RUN_USAGE}


@pytest.mark.parametrize("sid", [ID, "not-a-uuid", ID.upper()])
def test_unknown_or_malformed_ids_are_404(api: TestClient, sid: str) -> None:
    assert api.get(f"/session/{sid}").status_code == 404
    assert api.delete(f"/session/{sid}").status_code == 404


def test_delete_asks_the_operator(api: TestClient, cluster: FakeCluster) -> None:
    sid = api.post("/session", json={"language": "python", "code": "x"}).json()["sessionId"]
    r = api.delete(f"/session/{sid}")
    assert r.status_code == 202
    assert cluster.terminations == [(sid, "UserTerminated")]


def test_languages(api: TestClient) -> None:
    langs = {lang["id"]: lang for lang in api.get("/languages").json()["languages"]}
    assert langs["python"] == {"id": "python", "displayName": "Python", "version": "3.11"}


def ready(api: TestClient) -> int:
    """/readyz's status once the informers had time for their first list."""
    deadline = time.monotonic() + 5
    while (code := api.get("/readyz").status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    return code


def test_probes_and_metrics(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert ready(api) == 200
    api.post("/session", json={"language": "python", "code": "x"})
    text = api.get("/metrics").text
    assert 'icee_sessions_created_total{language="python"} 1.0' in text
    assert "icee_session_start_seconds_bucket" in text


class UnlistedCluster(FakeCluster):
    """The API server never answers the pod list: the pod cache never syncs."""

    async def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        await asyncio.Event().wait()
        return [], ""

    async def list_sessions(self) -> tuple[list[dict[str, Any]], str]:
        return [], "1"


def test_not_ready_until_the_caches_are_synced() -> None:
    with TestClient(create_app(Settings(), cluster=UnlistedCluster())) as client:  # type: ignore[arg-type]
        time.sleep(0.2)
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["detail"] == "not synced: pod"


def test_ui_missing_is_a_clear_503(api: TestClient) -> None:
    r = api.get("/")
    assert r.status_code == 503
    assert "not built" in r.text


def test_ui_is_served_when_built(cluster: FakeCluster, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>icee</h1>")
    with TestClient(create_app(Settings(ui_dir=tmp_path), cluster=cluster)) as client:  # type: ignore[arg-type]
        assert client.get("/").text == "<h1>icee</h1>"
        assert client.get("/languages").status_code == 200


@pytest.mark.parametrize("sid", ["nope", ID])
def test_websocket_to_unknown_session_closes_4404(api: TestClient, sid: str) -> None:
    with (
        api.websocket_connect(f"/ws/session/{sid}") as ws,
        pytest.raises(WebSocketDisconnect) as exc,
    ):
        ws.receive_json()
    assert exc.value.code == 4404


def test_draining_refuses_new_sessions(api: TestClient) -> None:
    api.app.state.services.live.draining = True  # type: ignore[attr-defined]
    r = api.post("/session", json={"language": "python", "code": "x"})
    assert r.status_code == 503
    assert api.get("/readyz").status_code == 503


def test_draining_refuses_new_websockets(api: TestClient) -> None:
    # Before the handshake: a socket accepted now would be cut at the drain's end.
    api.app.state.services.live.draining = True  # type: ignore[attr-defined]
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        api.websocket_connect(f"/ws/session/{ID}"),
    ):
        pass  # pragma: no cover
    assert refused.value.status_code == 503
    assert "shutting down" in refused.value.json()["detail"]
    assert 'icee_websockets_rejected_total{why="draining"} 1.0' in api.get("/metrics").text


# -- admission, tokens, origin (issue 9) ---------------------------------------------

HELLO = {"language": "python", "code": "print(1)"}


def test_post_needs_json_content_type(api: TestClient) -> None:
    r = api.post("/session", content=b'{"language": "python", "code": "print(1)"}')
    assert r.status_code == 415
    assert "application/json" in r.json()["detail"]
    r = api.post("/session", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_client_quota_gives_429_with_retry_after(cluster: FakeCluster, tmp_path: Path) -> None:
    settings = Settings(ui_dir=tmp_path / "missing", client_max_sessions=2)
    with TestClient(create_app(settings, cluster=cluster)) as api:  # type: ignore[arg-type]
        assert [api.post("/session", json=HELLO).status_code for _ in range(2)] == [201, 201]
        r = api.post("/session", json=HELLO)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0
        assert r.json()["limit"] == "client_sessions"
        assert "at most 2" in r.json()["detail"]
        metrics = api.get("/metrics").text
        assert 'icee_sessions_rejected_total{why="client_sessions"} 1.0' in metrics
        assert "icee_sessions_unconnected 2.0" in metrics


def test_too_many_starting_gives_429_with_retry_after(cluster: FakeCluster, tmp_path: Path) -> None:
    settings = Settings(ui_dir=tmp_path / "missing", max_starting_sessions=4)
    with TestClient(create_app(settings, cluster=cluster)) as api:  # type: ignore[arg-type]
        counts = api.app.state.services.admission.counts  # type: ignore[attr-defined]
        other = {
            "metadata": {"labels": {"icee.dev/client": "someone-else"}},
            "spec": {"start": {"at": "2026-01-01T00:00:00Z"}},
        }
        for i in range(4):  # another client's sandboxes starting, seen in the watch
            counts.apply(f"other-{i}", other)
        r = api.post("/session", json=HELLO)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "2"
        assert r.json()["limit"] == "starting_sessions"
        assert r.json()["retryAfterSeconds"] == 2
        assert "at most 4" in r.json()["detail"]
        counts.apply("other-0", {**other, "status": {"phase": "Running"}})
        assert api.post("/session", json=HELLO).status_code == 201
        metrics = api.get("/metrics").text
        assert 'icee_sessions_rejected_total{why="starting_sessions"} 1.0' in metrics
        assert "icee_sessions_starting 4.0" in metrics


def test_rate_quota(cluster: FakeCluster, tmp_path: Path) -> None:
    settings = Settings(ui_dir=tmp_path / "missing", client_burst=3, client_rate_per_second=0.01)
    with TestClient(create_app(settings, cluster=cluster)) as api:  # type: ignore[arg-type]
        codes = [api.post("/session", json=HELLO).status_code for _ in range(5)]
        assert codes == [201, 201, 201, 429, 429]
        assert api.post("/session", json=HELLO).json()["limit"] == "client_rate"


TOKEN = "t0ken-for-unit-tests-0123"


@pytest.fixture
def token_api(cluster: FakeCluster, tmp_path: Path) -> Iterator[TestClient]:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "alice").write_text(TOKEN)
    settings = Settings(ui_dir=tmp_path / "missing", tokens_dir=tokens)
    with TestClient(create_app(settings, cluster=cluster)) as client:  # type: ignore[arg-type]
        yield client


def test_tokens_401_403_and_open_paths(token_api: TestClient) -> None:
    r = token_api.post("/session", json=HELLO)
    assert r.status_code == 401
    assert "Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = token_api.post("/session", json=HELLO, headers={"authorization": "Bearer " + "x" * 20})
    assert r.status_code == 403
    assert "refused" in r.json()["detail"]
    r = token_api.post("/session", json=HELLO, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201
    sid = r.json()["sessionId"]
    assert token_api.get(f"/session/{sid}").status_code == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert token_api.get(f"/session/{sid}", headers=auth).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics", "/languages"):
        assert token_api.get(path).status_code == 200, path


def test_websocket_token_by_subprotocol(token_api: TestClient, cluster: FakeCluster) -> None:
    with pytest.raises(WebSocketDisconnect), token_api.websocket_connect(f"/ws/session/{ID}"):
        pass  # pragma: no cover
    with token_api.websocket_connect(
        f"/ws/session/{ID}", subprotocols=["icee", f"bearer.{TOKEN}"]
    ) as ws:
        assert ws.accepted_subprotocol == "icee"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4404


def test_cross_origin_websocket_is_refused(api: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect),
        api.websocket_connect(f"/ws/session/{ID}", headers={"origin": "https://evil.example"}),
    ):
        pass  # pragma: no cover
    assert 'icee_websockets_rejected_total{why="origin"} 1.0' in api.get("/metrics").text
    with api.websocket_connect(f"/ws/session/{ID}", headers={"origin": "http://testserver"}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4404


def test_error_messages_echo_only_a_prefix(api: TestClient) -> None:
    r = api.post("/session", json={"language": "x" * 5000, "code": "print(1)"})
    assert r.status_code == 422
    assert len(r.text) < 600
    r = api.post("/session", json={"language": "python", "code": "1", "y" * 5000: 1})
    assert r.status_code == 422
    assert len(r.text) < 600
