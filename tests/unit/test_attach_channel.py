"""The Kubernetes channel protocol: frames, the v5 close signal, the error channel."""

import pytest
from icee_kube import channel
from icee_kube.attach import attach_url
from icee_kube.channel import Channel, ChannelProtocolError, Frame
from icee_kube.pods import ContainerState, container_state


def test_stdin_frame_is_channel_byte_then_data() -> None:
    assert channel.encode(Channel.STDIN, b"hi\n") == b"\x00hi\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x01Hello\n", Frame(Channel.STDOUT, b"Hello\n")),
        (b"\x02oops", Frame(Channel.STDERR, b"oops")),
        (b"\x01", Frame(Channel.STDOUT, b"")),
        (b"\x03{}", Frame(Channel.ERROR, b"{}")),
        (b"\xff\x01", Frame(Channel.CLOSE, b"\x01")),
    ],
)
def test_decode(raw: bytes, expected: Frame) -> None:
    assert channel.decode(raw) == expected


@pytest.mark.parametrize("raw", [b"", b"\x07abc", "\x01text"])
def test_decode_rejects_frames_outside_the_protocol(raw: bytes | str) -> None:
    with pytest.raises(ChannelProtocolError):
        channel.decode(raw)


def test_v5_is_offered_before_v4() -> None:
    assert channel.SUBPROTOCOLS == ("v5.channel.k8s.io", "v4.channel.k8s.io")


def test_error_channel_status() -> None:
    ok = channel.parse_status(b'{"metadata":{},"status":"Success"}')
    assert ok.success
    bad = channel.parse_status(
        b'{"status":"Failure","reason":"InternalError","message":"container not found"}'
    )
    assert (bad.success, bad.reason, bad.message) == (False, "InternalError", "container not found")
    assert not channel.parse_status(b"not json").success


def test_attach_url() -> None:
    url = attach_url("https://10.0.0.1:6443", "icee-sandbox", "run-x", "program")
    assert url == (
        "wss://10.0.0.1:6443/api/v1/namespaces/icee-sandbox/pods/run-x/attach"
        "?container=program&stdin=true&stdout=true&stderr=true"
    )
    assert attach_url("http://h:8080/prefix/", "n", "p", "c").startswith(
        "ws://h:8080/prefix/api/v1/namespaces/n/pods/p/attach?"
    )


def _pod(state: dict[str, object], name: str = "program") -> dict[str, object]:
    return {"status": {"containerStatuses": [{"name": name, "state": state}]}}


def test_container_state_from_pod_status() -> None:
    assert container_state({}, "program") == ContainerState("absent")
    assert container_state(_pod({"running": {}}, name="other"), "program").kind == "absent"
    assert container_state(_pod({"waiting": {"reason": "ContainerCreating"}}), "program") == (
        ContainerState("waiting", "ContainerCreating")
    )
    assert container_state(_pod({"running": {"startedAt": "x"}}), "program").kind == "running"
    assert container_state(
        _pod({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}), "program"
    ) == ContainerState("terminated", "OOMKilled", 137)
