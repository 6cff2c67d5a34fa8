"""REST paths of the Kubernetes API: pure functions, no I/O."""

from __future__ import annotations

from urllib.parse import quote


def _object(path: str, name: str | None, sub: str | None) -> str:
    if name:
        path += f"/{quote(name)}"
        if sub:
            path += f"/{sub}"
    return path


def core_path(namespace: str, plural: str, name: str | None = None, sub: str | None = None) -> str:
    """A namespaced core (``v1``) resource: the collection, one object, or its ``sub``."""
    return _object(f"/api/v1/namespaces/{quote(namespace)}/{plural}", name, sub)


def custom_path(
    group: str,
    version: str,
    namespace: str,
    plural: str,
    name: str | None = None,
    sub: str | None = None,
) -> str:
    """A namespaced resource of an API group (``sub``: e.g. ``status``)."""
    return _object(f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}", name, sub)


def pods_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """``/api/v1/namespaces/<ns>/pods[/<name>[/<sub>]]`` (``sub``: log, attach, ...)."""
    return core_path(namespace, "pods", name, sub)


def leases_path(namespace: str, name: str | None = None) -> str:
    return custom_path("coordination.k8s.io", "v1", namespace, "leases", name)


def events_path(namespace: str) -> str:
    return core_path(namespace, "events")
