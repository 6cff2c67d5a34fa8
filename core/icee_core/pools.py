"""Warm pools (issue 12): what the api and the operator agree on about a warm pod.

The operator writes the limits a warm pod was built with into an annotation; the
api claims a warm pod only for a session whose limits that pod can honour.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from icee_core import names
from icee_core.models import Limits

# The pod-level limits a warm pod was built with (JSON: cpuMillis, memoryBytes, workspaceBytes).
ANNOTATION_LIMITS = f"{names.GROUP}/limits"
_POD_LIMITS = ("cpu_millis", "memory_bytes", "workspace_bytes")


def pod_limits_match(requested: Limits, template: Limits) -> bool:
    """Can a pod built with `template` limits serve a session asking for `requested`?

    cpu, memory and the workspace size are the pod's own (cgroup, emptyDir) and
    cannot be changed once it runs; pids, output and stdin are applied per request
    (by the runner and the api), so any lower value is honoured.
    """
    return all(getattr(requested, f) == getattr(template, f) for f in _POD_LIMITS)


def limits_annotation(limits: Limits) -> str:
    return json.dumps(limits.model_dump(by_alias=True, include=set(_POD_LIMITS)), sort_keys=True)


def limits_from_annotations(annotations: Mapping[str, str]) -> Limits | None:
    """The warm pod's pod-level limits (other fields at their defaults), or None."""
    raw = annotations.get(ANNOTATION_LIMITS)
    if not raw:
        return None
    try:
        return Limits.model_validate(json.loads(raw))
    except ValueError:
        return None
