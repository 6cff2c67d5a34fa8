"""Reading a kubeconfig or the in-cluster service account (no cluster involved)."""

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from icee_kube.kubeconfig import (
    KubeConfig,
    KubeConfigError,
    TokenSource,
    in_cluster,
    kubeconfig_path,
    load,
    parse_kubeconfig,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def doc(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "contexts": [
            {"name": "other", "context": {"cluster": "nowhere", "user": "nobody"}},
            {"name": "dev", "context": {"cluster": "local", "user": "admin"}},
        ],
        "clusters": [
            {"name": "local", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}
        ],
        "users": [{"name": "admin", "user": user}],
    }


def test_client_certificate_data_and_ca_data() -> None:
    cfg = parse_kubeconfig(
        doc(
            {"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")},
            {"server": "https://10.0.0.1:6443/", "certificate-authority-data": b64(b"CA")},
        ),
        Path("/etc/kube"),
    )
    assert cfg == KubeConfig(
        server="https://10.0.0.1:6443", ca_data=b"CA", cert_data=b"CERT", key_data=b"KEY"
    )


def test_relative_paths_are_relative_to_the_kubeconfig() -> None:
    cfg = parse_kubeconfig(
        doc(
            {"client-certificate": "pki/a.crt", "client-key": "/abs/a.key", "tokenFile": "t"},
            {"server": "https://h", "certificate-authority": "ca.crt", "tls-server-name": "kube"},
        ),
        Path("/etc/kube"),
    )
    assert cfg.ca_file == Path("/etc/kube/ca.crt")
    assert cfg.cert_file == Path("/etc/kube/pki/a.crt")
    assert cfg.key_file == Path("/abs/a.key")
    assert cfg.token_file == Path("/etc/kube/t")
    assert cfg.tls_server_name == "kube"


def test_token_and_insecure_and_named_context() -> None:
    d = doc({"token": "abc"}, {"server": "https://h:1", "insecure-skip-tls-verify": True})
    d["contexts"][0]["context"] = {"cluster": "local", "user": "admin"}
    cfg = parse_kubeconfig(d, Path("."), context="other")
    assert cfg.token == "abc"
    assert cfg.insecure


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: d.pop("current-context"), "no current-context"),
        (lambda d: d["contexts"][1]["context"].update(cluster="gone"), "no cluster named 'gone'"),
        (lambda d: d["users"][0]["user"].update(exec={"command": "x"}), "'exec'"),
        (lambda d: d["clusters"][0]["cluster"].update(server="127.0.0.1:6443"), r"http\(s\) URL"),
        (lambda d: d["users"][0]["user"].update({"client-key-data": "%%"}), "base64"),
    ],
)
def test_bad_kubeconfigs_say_what_is_wrong(mutate: Any, error: str) -> None:
    d = doc({"token": "t"})
    mutate(d)
    with pytest.raises(KubeConfigError, match=error):
        parse_kubeconfig(d, Path("."))
    with pytest.raises(KubeConfigError, match="mapping"):
        parse_kubeconfig(["not", "a", "mapping"], Path("."))


def test_in_cluster_service_account() -> None:
    root = Path("/sa")
    cfg = in_cluster(
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, root
    )
    assert cfg == KubeConfig(
        server="https://10.96.0.1:443", ca_file=root / "ca.crt", token_file=root / "token"
    )
    v6 = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, root)
    assert v6.server == "https://[fd00::1]:443"
    with pytest.raises(KubeConfigError, match="not in a pod"):
        in_cluster({}, root)


def test_which_kubeconfig_file(tmp_path: Path) -> None:
    there = tmp_path / "b"
    there.write_text("")
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "a"), str(there)])}
    assert kubeconfig_path(None, env) == there
    assert kubeconfig_path("/x/y", env) == Path("/x/y")
    assert kubeconfig_path(None, {}) == Path("~/.kube/config").expanduser()


def test_load_prefers_in_cluster_unless_a_kubeconfig_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://h:8080'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    pod_env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert load(None, pod_env).server == "https://10.96.0.1:443"
    assert load(str(path), pod_env) == KubeConfig(server="http://h:8080", token="t")
    assert load(None, {"KUBECONFIG": str(path)}).token == "t"
    with pytest.raises(KubeConfigError, match="cannot read"):
        load(str(tmp_path / "missing"), {})


def test_token_file_is_reread_after_the_refresh_interval(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    source = TokenSource(KubeConfig(server="https://h", token_file=token), refresh_seconds=0)
    assert source.authorization() == "Bearer one"
    token.write_text("two")
    assert source.authorization() == "Bearer two"
    cached = TokenSource(KubeConfig(server="https://h", token_file=token), refresh_seconds=3600)
    assert cached.authorization() == "Bearer two"
    token.write_text("three")
    assert cached.authorization() == "Bearer two"
    assert TokenSource(KubeConfig(server="https://h")).authorization() is None
    assert TokenSource(KubeConfig(server="h", token="fixed")).authorization() == "Bearer fixed"
