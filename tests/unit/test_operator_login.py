"""kopf logs in with what icee_kube reads (no kubernetes_asyncio, no cluster DNS needed)."""

from pathlib import Path

from icee_kube.kubeconfig import KubeConfig, in_cluster
from icee_operator.login import connection_info

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_kubeconfig_with_a_client_certificate() -> None:
    cfg = KubeConfig(server="https://127.0.0.1:6443", ca_data=PEM, cert_data=PEM, key_data=b"key")
    info = connection_info(cfg)
    assert info.server == "https://127.0.0.1:6443"
    assert info.ca_data == PEM
    assert info.certificate_data == PEM
    assert info.private_key_data == b"key"
    assert info.token is None


def test_in_a_pod_the_service_hosts_address_and_the_current_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\n")
    (tmp_path / "ca.crt").write_bytes(PEM)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    info = connection_info(in_cluster(env, root=tmp_path))
    # The address, not https://kubernetes.default.svc: no cluster DNS needed.
    assert info.server == "https://10.0.0.1:443"
    assert info.ca_path == str(tmp_path / "ca.crt")
    assert info.token == "abc"
    # Rotated by the kubelet: the next login (kopf's retry on 401) reads the new one.
    (tmp_path / "token").write_text("def\n")
    assert connection_info(in_cluster(env, root=tmp_path)).token == "def"
