"""REST paths of the Kubernetes API: pure functions, no I/O."""

from __future__ import annotations

from urllib.parse import quote


def pods_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """``/api/v1/namespaces/<ns>/pods[/<name>[/<sub>]]`` (``sub``: log, attach, ...)."""
    path = f"/api/v1/namespaces/{quote(namespace)}/pods"
    if name:
        path += f"/{quote(name)}"
        if sub:
            path += f"/{sub}"
    return path


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/events"


def custom_path(
    group: str, version: str, namespace: str, plural: str, name: str | None = None
) -> str:
    """A namespaced custom resource (collection, or one object with ``name``)."""
    path = f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path
