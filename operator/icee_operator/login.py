"""How kopf reaches the API server: the same configuration our own client reads.

Without a login handler kopf logs in through kubernetes_asyncio when it is
installed (it no longer is: icee_kube is our one client), else through its own
rudimentary readers, which take the in-cluster server as
``https://kubernetes.default.svc`` (that needs cluster DNS) and kubeconfig paths as
relative to the working directory. This handler gives kopf what
:func:`icee_kube.kubeconfig.load` reads, as the api and our own calls use it.
kopf calls it again on a 401, which re-reads a rotated service-account token.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from icee_kube import kubeconfig
from icee_kube.kubeconfig import KubeConfig

log = logging.getLogger(__name__)


def connection_info(cfg: KubeConfig) -> kopf.ConnectionInfo:
    """kopf's credentials for one API server and identity (pure, but for a token file)."""
    if cfg.tls_server_name:
        log.warning(
            "kopf cannot use tls-server-name %s: verifying the server's own name",
            cfg.tls_server_name,
        )
    token = cfg.token
    if token is None and cfg.token_file is not None:
        token = cfg.token_file.read_text().strip() or None
    return kopf.ConnectionInfo(
        server=cfg.server,
        ca_path=str(cfg.ca_file) if cfg.ca_file else None,
        ca_data=cfg.ca_data,
        insecure=cfg.insecure,
        certificate_path=str(cfg.cert_file) if cfg.cert_file else None,
        certificate_data=cfg.cert_data,
        private_key_path=str(cfg.key_file) if cfg.key_file else None,
        private_key_data=cfg.key_data,
        token=token,
    )


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    try:
        return connection_info(kubeconfig.load(None))
    except (kubeconfig.KubeConfigError, OSError) as error:
        raise kopf.LoginError(str(error)) from error
