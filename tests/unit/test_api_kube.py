"""The api's Kubernetes client: pure parts, then the client against a local TLS server.

The server stands in for the API server's REST surface (aiohttp.web over TLS with a
client certificate, as the local cluster's kubeconfig uses); the real API server is
exercised by tests/integration.
"""

import json
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from icee_api.session.cluster import Cluster, codesessions_path
from icee_core.models import CodeSessionSpec
from icee_kube.attach import AttachBuffers, AttachRefused, open_attach
from icee_kube.channel import V5, Channel, Frame
from icee_kube.client import (
    KubeClient,
    KubeError,
    WatchExpired,
    status_message,
    watch_event,
    watch_query,
)
from icee_kube.kubeconfig import KubeConfig, KubeConfigError, ssl_context
from icee_kube.paths import pods_path

NS = "sandbox"
SID = "0b8a0f8e-6f5e-4c4c-9d3a-0e1f2a3b4c5d"
REFUSED = "1b8a0f8e-6f5e-4c4c-9d3a-0e1f2a3b4c5d"
UNREACHABLE = "2b8a0f8e-6f5e-4c4c-9d3a-0e1f2a3b4c5d"


# -- pure parts --------------------------------------------------------------------------


def test_paths() -> None:
    assert codesessions_path("ns") == "/apis/icee.dev/v1alpha1/namespaces/ns/codesessions"
    assert codesessions_path("ns", SID).endswith(f"/codesessions/{SID}")
    assert pods_path("ns") == "/api/v1/namespaces/ns/pods"
    assert pods_path("ns", "run-x", "log") == "/api/v1/namespaces/ns/pods/run-x/log"


def test_watch_query() -> None:
    assert watch_query(None, 290.0) == {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "290",
    }
    query = watch_query("42", 10, "a=b")
    assert query["resourceVersion"] == "42"
    assert query["labelSelector"] == "a=b"


def test_status_message() -> None:
    body = {"kind": "Status", "reason": "NotFound", "message": 'pods "x" not found', "code": 404}
    assert status_message(404, json.dumps(body).encode()) == '404 NotFound: pods "x" not found'
    assert status_message(502, b"bad gateway\n") == "502 bad gateway"
    assert status_message(500, b"") == "500"


def test_watch_event() -> None:
    assert watch_event(b"  \n") is None
    assert watch_event(b'{"type":"ADDED","object":{"a":1}}') == ("ADDED", {"a": 1})
    with pytest.raises(WatchExpired):
        watch_event(b'{"type":"ERROR","object":{"code":410,"message":"too old"}}')
    with pytest.raises(KubeError, match="500") as err:
        watch_event(b'{"type":"ERROR","object":{"code":500,"message":"boom"}}')
    assert err.value.status == 500


# -- a TLS stand-in for the API server ----------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    server_cert: Path
    server_key: Path
    client_cert_pem: bytes
    client_key_pem: bytes


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "req",
            *ec,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-out", f"{name}.crt",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return Pki(
        ca_pem=(d / "ca.crt").read_bytes(),
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert_pem=(d / "client.crt").read_bytes(),
        client_key_pem=(d / "client.key").read_bytes(),
    )


class FakeApiServer:
    """Records requests; answers CodeSession, pod-watch, log and attach calls."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.patch_conflicts = 0
        self.watch_lines: list[bytes] = []
        self.watch_gone = False
        self.pages: list[dict[str, Any]] = []
        self.peer_certs: list[Any] = []

    def app(self) -> web.Application:
        app = web.Application()
        cs = codesessions_path(NS)
        app.router.add_post(cs, self.create)
        app.router.add_get(cs, self.list_or_watch)
        app.router.add_get(cs + "/{name}", self.get)
        app.router.add_patch(cs + "/{name}", self.patch)
        app.router.add_get(pods_path(NS), self.list_or_watch)
        app.router.add_get(pods_path(NS) + "/{name}/log", self.log)
        app.router.add_get(pods_path(NS) + "/{name}/attach", self.attach)
        return app

    def _record(self, request: web.Request, body: Any = None) -> None:
        self.requests.append((request.method, request.path, dict(request.headers), body))
        transport = request.transport
        if transport is not None:
            self.peer_certs.append(transport.get_extra_info("peercert"))

    @staticmethod
    def status(code: int, reason: str) -> web.Response:
        body = {"kind": "Status", "code": code, "reason": reason, "message": reason.lower()}
        return web.json_response(body, status=code)

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        body["metadata"]["resourceVersion"] = "1"
        self.sessions[body["metadata"]["name"]] = body
        return web.json_response(body, status=201)

    async def get(self, request: web.Request) -> web.Response:
        self._record(request)
        obj = self.sessions.get(request.match_info["name"])
        return web.json_response(obj) if obj else self.status(404, "NotFound")

    async def patch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if self.patch_conflicts:
            self.patch_conflicts -= 1
            return self.status(409, "Conflict")
        obj = self.sessions[request.match_info["name"]]
        obj["spec"].update(body["spec"])
        return web.json_response(obj)

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        if request.query.get("watch") != "true":
            if self.pages:
                return web.json_response(self.pages.pop(0))
            return web.json_response({"kind": "List", "items": []})
        if self.watch_gone:
            return self.status(410, "Expired")
        resp = web.StreamResponse()
        await resp.prepare(request)
        data = b"".join(self.watch_lines)
        for i in range(0, len(data), 1000):  # chunks that cut lines anywhere
            await resp.write(data[i : i + 1000])
        await resp.write_eof()
        return resp

    async def log(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for part in (b"hello ", b"world\n"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def attach(self, request: web.Request) -> web.WebSocketResponse:
        self._record(request)
        ws = web.WebSocketResponse(protocols=["v5.channel.k8s.io"])
        await ws.prepare(request)
        await ws.send_bytes(b"\x01")  # the API server's "stream ready"
        if request.match_info["name"] == f"run-{REFUSED}":
            # What the API server relays when the kubelet does not find the container.
            status = {
                "status": "Failure",
                "reason": "InternalError",
                "message": "Internal error occurred: unable to upgrade connection: "
                "container program not found in pod run-x_sandbox",
            }
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        elif request.match_info["name"] == f"run-{UNREACHABLE}":
            # What the API server sends when it cannot reach the kubelet (restarting).
            status = {
                "status": "Failure",
                "reason": "InternalError",
                "message": "Internal error occurred: error sending request: Post "
                '"https://10.0.0.1:10250/attach/sandbox/run-x/program": connection refused',
            }
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        else:
            await ws.send_bytes(b"\x01hi\n")
            await ws.send_bytes(b'\x03{"status":"Success"}')
        await ws.close()
        return ws


@dataclass
class Served:
    fake: FakeApiServer
    client: KubeClient
    cluster: Cluster


def _server_ssl(pki: Pki, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


@pytest.fixture
async def served(pki: Pki, tmp_path: Path) -> AsyncIterator[Served]:
    fake = FakeApiServer()
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.ca_pem)
    runner = web.AppRunner(fake.app())
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, ssl_context=_server_ssl(pki, ca))
    await site.start()
    port = sock.getsockname()[1]
    cfg = KubeConfig(
        server=f"https://127.0.0.1:{port}",
        ca_data=pki.ca_pem,
        cert_data=pki.client_cert_pem,
        key_data=pki.client_key_pem,
        token="secret",
    )
    client = KubeClient(cfg, max_connections=4)
    try:
        yield Served(fake, client, Cluster(client, NS))
    finally:
        await client.close()
        await runner.cleanup()


def spec() -> CodeSessionSpec:
    return CodeSessionSpec(language="python", code="print(1)")


async def test_create_get_and_patch_over_tls_with_a_client_certificate(served: Served) -> None:
    cluster, fake = served.cluster, served.fake
    assert await cluster.get_session(SID) is None
    await cluster.create_session(SID, spec())
    got = await cluster.get_session(SID)
    assert got is not None
    assert got["spec"]["code"] == "print(1)"
    fake.patch_conflicts = 1
    assert await cluster.request_termination(SID, "UserTerminated", "bye")
    # A session already asked to end is not asked again.
    assert not await cluster.request_termination(SID, "IdleTimeout", "late")
    patches = [r for r in fake.requests if r[0] == "PATCH"]
    assert len(patches) == 2  # one conflict, one success
    _, _, headers, body = patches[-1]
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert headers["Authorization"] == "Bearer secret"
    assert body == {
        "metadata": {"resourceVersion": "1"},
        "spec": {"termination": {"reason": "UserTerminated", "message": "bye"}},
    }
    # The client certificate loaded from memory was presented.
    assert fake.peer_certs[0]["subject"] == ((("commonName", "client"),),)


async def test_errors_carry_the_status(served: Served) -> None:
    with pytest.raises(KubeError) as err:
        await served.client.call("GET", "/api/v1/nowhere")
    assert err.value.status == 404
    await served.cluster.check()


async def test_watch_reads_long_lines_split_across_chunks(served: Served) -> None:
    big = "x" * 300_000  # over aiohttp's 128 KiB readline limit
    served.fake.watch_lines = [
        json.dumps({"type": "ADDED", "object": {"metadata": {"name": "a"}, "code": big}}).encode()
        + b"\n",
        b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}\n',
        b'{"type":"ERROR","object":{"code":410,"message":"too old"}}\n',
    ]
    events: list[tuple[str, dict[str, Any]]] = []

    async def read() -> None:
        async for event in served.cluster.watch_pods("5", 30):
            events.append(event)

    with pytest.raises(WatchExpired):
        await read()
    assert [kind for kind, _ in events] == ["ADDED", "BOOKMARK"]
    assert events[0][1]["code"] == big
    _, path, _, _ = served.fake.requests[-1]
    assert path == pods_path(NS)


async def test_watch_refused_with_410_is_expired(served: Served) -> None:
    served.fake.watch_gone = True
    with pytest.raises(WatchExpired) as err:
        async for _ in served.cluster.watch_sessions("5", 30):
            pass
    assert err.value.status == 410


async def test_list_reads_every_page(served: Served) -> None:
    served.fake.pages = [
        {"items": [{"n": 1}], "metadata": {"continue": "c1", "resourceVersion": "8"}},
        {"items": [{"n": 2}], "metadata": {"resourceVersion": "9"}},
    ]
    items, version = await served.cluster.list_pods()
    assert (items, version) == ([{"n": 1}, {"n": 2}], "9")
    queries = [r[1] for r in served.fake.requests]
    assert queries == [pods_path(NS)] * 2


async def test_read_log(served: Served) -> None:
    chunks = [c async for c in served.cluster.read_log(SID, 100)]
    assert b"".join(chunks) == b"hello world\n"


async def test_attach_target_shares_one_tls_context(served: Served) -> None:
    a = served.cluster.attach_target(SID)
    b = served.cluster.attach_target(SID)
    assert a.ssl is b.ssl is served.client.ssl
    assert a.headers == {"Authorization": "Bearer secret"}
    assert a.url.startswith("wss://127.0.0.1:")
    async with open_attach(a, AttachBuffers(open_timeout=5)) as attach:
        assert attach.subprotocol == V5
        frames = [frame async for frame in attach.frames()]
    assert frames == [
        Frame(Channel.STDOUT, b""),
        Frame(Channel.STDOUT, b"hi\n"),
        Frame(Channel.ERROR, b'{"status":"Success"}'),
    ]


async def test_attach_refused_by_the_kubelet(served: Served) -> None:
    async with open_attach(
        served.cluster.attach_target(REFUSED), AttachBuffers(open_timeout=5)
    ) as attach:
        with pytest.raises(AttachRefused, match="container program not found"):
            _ = [frame async for frame in attach.frames()]


async def test_attach_refused_when_the_kubelet_cannot_be_reached(served: Served) -> None:
    async with open_attach(
        served.cluster.attach_target(UNREACHABLE), AttachBuffers(open_timeout=5)
    ) as attach:
        with pytest.raises(AttachRefused, match="connection refused"):
            _ = [frame async for frame in attach.frames()]


def test_ssl_context_from_memory_leaves_no_key_file(pki: Pki) -> None:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    before = set(tmp.glob("icee-client-*"))
    cfg = KubeConfig(
        server="https://127.0.0.1:1",
        ca_data=pki.ca_pem,
        cert_data=pki.client_cert_pem,
        key_data=pki.client_key_pem,
    )
    ctx = ssl_context(cfg)
    assert ctx is not None
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert set(tmp.glob("icee-client-*")) == before
    assert ssl_context(KubeConfig(server="http://h")) is None
    insecure = ssl_context(KubeConfig(server="https://h", insecure=True))
    assert insecure is not None
    assert insecure.verify_mode is ssl.CERT_NONE
    with pytest.raises(KubeConfigError, match="TLS"):
        ssl_context(KubeConfig(server="https://h", cert_data=b"junk", key_data=b"junk"))
