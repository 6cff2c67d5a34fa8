"""Warm pools (issue 12), the pure part: what a warm pod is and what a pool needs.

A warm pod is a session pod built by the same `build_pod` as a cold session (same
hardening, limits at the server maxima, RuntimeClass) before anyone asks: the
runner in it waits for its request on stdin, so it holds nothing of a user until
the api claims it (adds the session label with a resourceVersion-guarded patch).
A claimed pod belongs to its session and is deleted when it ends, never returned.

uid: a cold session runs as a uid derived from its id (RLIMIT_NPROC counts per
uid, which matters under runc, where pods share the host's uids). A warm pod's
uid is fixed before its session is known, so it is drawn at random from the same
range (from a fresh random slot id); under gVisor every pod is its own kernel and
the uid only has to be unprivileged.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from icee_core import names
from icee_core.languages import Language
from icee_core.models import CodeSessionSpec
from icee_core.pools import ANNOTATION_LIMITS, limits_annotation
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from icee_operator.pods import DEADLINE_BACKSTOP_SECONDS, build_pod
from icee_operator.settings import OperatorSettings

KIND = "SandboxPool"
# Bumped when what a warm pod is changes in a way the built pod does not show.
BUILDER_VERSION = "1"
# Hashed in place of a warm pod's random slot id, so the hash is the template's.
_TEMPLATE_SLOT = "00000000-0000-4000-8000-000000000000"
# The code is never sent to a warm pod (the runner gets it over stdin once claimed);
# the spec only carries the limits and timeouts the builder reads.
_NO_CODE = "# warm pod: the program arrives over the runner's stdin"
# A claimed pod its session's operator has not adopted this long after the claim
# (the claiming api went away before it recorded the claim) is deleted.
ADOPTION_GRACE_SECONDS = 60
# A language's warm-up that runs longer is stopped; the runner starts regardless.
WARMUP_SECONDS = 20


class PoolSpec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    language: str
    replicas: int = Field(default=0, ge=0)
    max_age_seconds: int = Field(default=3600, ge=1)


def warm_spec(language: Language, settings: OperatorSettings) -> CodeSessionSpec:
    """The spec a warm pod is built for: the server maxima (a request may only lower them)."""
    maxima = settings.maxima
    return CodeSessionSpec(
        language=language.id, code=_NO_CODE, limits=maxima.limits, timeouts=maxima.timeouts
    )


def template_hash(language: Language, settings: OperatorSettings) -> str:
    """A short hash of everything a warm pod of `language` is built from."""
    pod = build_pod(_TEMPLATE_SLOT, warm_spec(language, settings), language, settings)
    material = {
        "builder": BUILDER_VERSION,
        "pod": pod["spec"],
        "language": language.model_dump(mode="json", by_alias=True),
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def pool_selector(pool: str) -> str:
    return f"{names.LABEL_POOL}={pool}"


def warm_pod_name(pool: str, slot: str) -> str:
    return f"warm-{pool}-{slot.replace('-', '')[:12]}"


def build_warm_pod(
    pool: str,
    spec: PoolSpec,
    language: Language,
    settings: OperatorSettings,
    owner: Mapping[str, Any],
    slot: str | None = None,
) -> dict[str, Any]:
    """A warm pod of `pool`: `build_pod`'s pod with pool labels and a random uid.

    `owner` is the SandboxPool (its pods go with it); the claiming session's
    operator replaces the owner reference with the CodeSession's.
    """
    slot = slot or names.new_session_id()
    warm = warm_spec(language, settings)
    pod = build_pod(slot, warm, language, settings)
    metadata = pod["metadata"]
    metadata["name"] = warm_pod_name(pool, slot)
    labels = {k: v for k, v in metadata["labels"].items() if k != names.LABEL_SESSION}
    metadata["labels"] = labels | {
        names.LABEL_POOL: pool,
        names.LABEL_TEMPLATE_HASH: template_hash(language, settings),
    }
    metadata["annotations"] = {ANNOTATION_LIMITS: limits_annotation(warm.limits)}
    metadata["ownerReferences"] = [
        {
            "apiVersion": names.API_VERSION,
            "kind": KIND,
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
        }
    ]
    if language.warmup:
        pod["spec"]["containers"][0]["command"] = warm_command(language.warmup)
    # The kubelet counts activeDeadlineSeconds from the pod's start, which for a warm
    # pod is before its session: a generous backstop only. The operator's own
    # execution deadline (repair.py) is the authority.
    pod["spec"]["activeDeadlineSeconds"] = (
        spec.max_age_seconds + warm.timeouts.execution_seconds + DEADLINE_BACKSTOP_SECONDS
    )
    return pod


def warm_command(warmup: str) -> list[str]:
    """The warm pod's command: the language's warm-up once (no input, no output, time
    bounded), then the runner as the container's process (exec), as in a cold pod."""
    bounded = f"timeout {WARMUP_SECONDS} /bin/sh -c {shlex.quote(warmup)}"
    runner = shlex.quote(names.RUNNER_PATH)
    return ["/bin/sh", "-c", f"{bounded} </dev/null >/dev/null 2>&1; exec {runner}"]


@dataclass(frozen=True)
class WarmPod:
    name: str
    template_hash: str
    created_at: datetime
    ready: bool
    claimed: bool  # carries a session label: the session's, not the pool's any more
    terminating: bool
    ended: bool  # Succeeded or Failed: will never serve a session
    claimed_at: datetime | None = None  # the claim's annotation
    adopted: bool = False  # owned by its CodeSession, no longer by the pool


def warm_pod_of(pod: Mapping[str, Any]) -> WarmPod:
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    status = pod.get("status") or {}
    conditions = status.get("conditions") or ()
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    created = _timestamp(metadata.get("creationTimestamp"))
    assert created is not None, "a pod from the apiserver has a creationTimestamp"
    owners = metadata.get("ownerReferences") or ()
    return WarmPod(
        name=metadata["name"],
        template_hash=labels.get(names.LABEL_TEMPLATE_HASH, ""),
        created_at=created,
        ready=ready and status.get("phase") == "Running",
        claimed=names.LABEL_SESSION in labels,
        terminating=metadata.get("deletionTimestamp") is not None,
        ended=status.get("phase") in ("Succeeded", "Failed"),
        claimed_at=_timestamp((metadata.get("annotations") or {}).get(names.ANNOTATION_CLAIMED_AT)),
        adopted=any(o.get("kind") == names.KIND for o in owners),
    )


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass
class Plan:
    """What one pool needs now: pods to create and delete, and its status."""

    create: int = 0
    delete: list[str] = field(default_factory=list)
    ready: int = 0
    replicas: int = 0  # current-template, unclaimed, ready or starting (after the plan)
    in_use: int = 0


def plan(spec: PoolSpec, current_hash: str, pods: Iterable[WarmPod], now: datetime) -> Plan:
    """Level-triggered: from what exists, what keeps the pool at its size."""
    result = Plan()
    keep: list[WarmPod] = []
    for pod in pods:
        if pod.claimed:
            claim_age = (now - (pod.claimed_at or pod.created_at)).total_seconds()
            if not pod.adopted and not pod.terminating and claim_age >= ADOPTION_GRACE_SECONDS:
                result.delete.append(pod.name)  # a claim nobody recorded
            elif not pod.terminating:
                result.in_use += 1  # its session deletes it
        elif pod.terminating:
            continue
        elif (
            pod.template_hash != current_hash
            or pod.ended
            or (now - pod.created_at).total_seconds() >= spec.max_age_seconds
        ):
            result.delete.append(pod.name)
        else:
            keep.append(pod)
    if len(keep) > spec.replicas:
        # Scale down: starting pods first, then the oldest.
        keep.sort(key=lambda p: (p.ready, p.created_at))
        surplus = len(keep) - spec.replicas
        result.delete.extend(p.name for p in keep[:surplus])
        keep = keep[surplus:]
    result.create = spec.replicas - len(keep)
    result.ready = sum(1 for p in keep if p.ready)
    result.replicas = len(keep)
    return result
