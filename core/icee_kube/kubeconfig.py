"""Where the Kubernetes API server is and how to authenticate to it.

Two sources, as client-go reads them:

- in a pod: the service account (``KUBERNETES_SERVICE_HOST``/``_PORT``, the token and
  CA under ``/var/run/secrets/kubernetes.io/serviceaccount``); the token file is
  re-read now and then because the kubelet rotates it;
- else a kubeconfig file (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``): its
  current context's server, CA, ``insecure-skip-tls-verify``, ``tls-server-name``,
  and a client certificate and key, a token or a token file.

Exec plugins and auth providers are not supported (a clear error says so). Parsing
is pure (:func:`parse_kubeconfig`, :func:`in_cluster`); files named by the config are
read when the TLS context or the token is needed. One :class:`ssl.SSLContext` is
built per process and shared by every connection: loading the CA and the key per
connection would cost time and memory on each.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# client-go re-reads a rotating token file at most once a minute.
TOKEN_REFRESH_SECONDS = 60.0


class KubeConfigError(ValueError):
    """The configuration is missing, malformed or asks for something unsupported."""


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """One API server and one identity. ``*_data`` is PEM bytes, ``*_file`` a path."""

    server: str
    ca_data: bytes | None = None
    ca_file: Path | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    cert_data: bytes | None = None
    cert_file: Path | None = None
    key_data: bytes | None = None
    key_file: Path | None = None
    token: str | None = None
    token_file: Path | None = None

    @property
    def is_tls(self) -> bool:
        return self.server.startswith("https://")


def _named(items: Any, name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            body = item.get(what)
            if not isinstance(body, Mapping):
                raise KubeConfigError(f"{what} {name!r} has no {what} section")
            return dict(body)
    raise KubeConfigError(f"kubeconfig has no {what} named {name!r}")


def _data(section: Mapping[str, Any], key: str) -> bytes | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KubeConfigError(f"{key} is not valid base64") from exc


def _path(section: Mapping[str, Any], key: str, base_dir: Path) -> Path | None:
    value = section.get(key)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    # Relative paths in a kubeconfig are relative to the file itself.
    return path if path.is_absolute() else base_dir / path


def parse_kubeconfig(doc: Any, base_dir: Path, context: str | None = None) -> KubeConfig:
    """The cluster and user of ``context`` (default: current-context) of a parsed kubeconfig."""
    if not isinstance(doc, Mapping):
        raise KubeConfigError("a kubeconfig must be a YAML mapping")
    name = context or doc.get("current-context")
    if not name:
        raise KubeConfigError("kubeconfig has no current-context")
    ctx = _named(doc.get("contexts"), str(name), "context")
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster")
    user = _named(doc.get("users"), str(ctx.get("user")), "user") if ctx.get("user") else {}
    for unsupported in ("exec", "auth-provider", "username"):
        if user.get(unsupported):
            raise KubeConfigError(f"kubeconfig user {unsupported!r} credentials are not supported")
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"cluster server must be an http(s) URL, not {server!r}")
    return KubeConfig(
        server=server.rstrip("/"),
        ca_data=_data(cluster, "certificate-authority-data"),
        ca_file=_path(cluster, "certificate-authority", base_dir),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name") or None,
        cert_data=_data(user, "client-certificate-data"),
        cert_file=_path(user, "client-certificate", base_dir),
        key_data=_data(user, "client-key-data"),
        key_file=_path(user, "client-key", base_dir),
        token=user.get("token") or None,
        token_file=_path(user, "tokenFile", base_dir),
    )


def in_cluster(env: Mapping[str, str], root: Path = SERVICE_ACCOUNT) -> KubeConfig:
    """The pod's service account, as ``rest.InClusterConfig`` reads it."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError("KUBERNETES_SERVICE_HOST/PORT are not set: not in a pod")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return KubeConfig(
        server=f"https://{host}:{port}", ca_file=root / "ca.crt", token_file=root / "token"
    )


def kubeconfig_path(explicit: str | None, env: Mapping[str, str]) -> Path:
    """``explicit``, else the first existing file of ``$KUBECONFIG``, else ~/.kube/config.

    (kubectl merges every file of ``$KUBECONFIG``; the api only needs one.)
    """
    if explicit:
        return Path(explicit).expanduser()
    candidates = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    for candidate in candidates:
        if Path(candidate).expanduser().exists():
            return Path(candidate).expanduser()
    return Path(candidates[0] if candidates else "~/.kube/config").expanduser()


def load(kubeconfig: str | None = None, env: Mapping[str, str] | None = None) -> KubeConfig:
    """In-cluster service account if in a pod and no kubeconfig is named, else a kubeconfig."""
    env = os.environ if env is None else env
    if kubeconfig is None and env.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(env)
    path = kubeconfig_path(kubeconfig, env)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
    return parse_kubeconfig(doc, path.parent)


def ssl_context(cfg: KubeConfig) -> ssl.SSLContext | None:
    """The TLS settings as one SSLContext, to share by every connection; None for http."""
    if not cfg.is_tls:
        return None
    ca_file = str(cfg.ca_file) if cfg.ca_file else None
    ca_data = cfg.ca_data.decode("ascii") if cfg.ca_data else None
    try:
        ctx = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
        if cfg.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert = cfg.cert_data or _read(cfg.cert_file)
        key = cfg.key_data or _read(cfg.key_file)
        if cert is not None:
            _load_cert_chain(ctx, cert, key)
    except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
        raise KubeConfigError(f"bad TLS settings in the kube config: {exc}") from exc
    return ctx


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes | None) -> None:
    """``load_cert_chain`` only reads files: write the PEM to a private file, then remove it."""
    fd, name = tempfile.mkstemp(prefix="icee-client-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(cert.rstrip(b"\n") + b"\n")
            if key is not None:
                out.write(key)
        ctx.load_cert_chain(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


class TokenSource:
    """The bearer token: fixed, or read from a file that may be rotated under us."""

    def __init__(self, cfg: KubeConfig, refresh_seconds: float = TOKEN_REFRESH_SECONDS) -> None:
        self._fixed = cfg.token
        self._file = cfg.token_file
        self._refresh = refresh_seconds
        self._token: str | None = None
        self._read_at = float("-inf")

    def authorization(self) -> str | None:
        """The ``Authorization`` header value, or None for client-certificate auth."""
        token = self._fixed or self._from_file()
        return f"Bearer {token}" if token else None

    def _from_file(self) -> str | None:
        if self._file is None:
            return None
        now = time.monotonic()
        if now - self._read_at >= self._refresh:
            try:
                self._token = self._file.read_text().strip() or None
            except OSError as exc:
                if self._token is None:
                    raise KubeConfigError(f"cannot read token file {self._file}: {exc}") from exc
            self._read_at = now
        return self._token
