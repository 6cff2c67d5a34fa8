"""What the operator does to a session, independent of which event asked for it.

Every status write goes through `advance`, which applies the state machine of
`transitions` with optimistic concurrency (the patch carries the resourceVersion it
was computed from), so pod events, termination requests and timers can race freely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from icee_core import names
from icee_core.claims import KIND_STREAM, LABEL_LEASE
from icee_core.languages import LanguageRegistry, UnknownLanguageError
from icee_core.models import (
    FINAL_PHASES,
    CodeSessionSpec,
    CodeSessionStatus,
    Phase,
    Reason,
    clamp_spec,
)
from pydantic import ValidationError

from icee_operator.deadlines import Deadlines
from icee_operator.kube import Conflict, Gone, Kube, QuotaExceeded
from icee_operator.observation import Observation, observe_pod, pod_lost
from icee_operator.pods import build_pod
from icee_operator.settings import OperatorSettings
from icee_operator.transitions import next_status
from icee_operator.usage import read_usage

logger = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 8
# A session past its connect deadline whose client waits in the api's start gate:
# looked at again this often.
QUEUED_RECHECK_SECONDS = 5.0


@dataclass
class Context:
    """Everything the handlers share; built once at operator start-up."""

    settings: OperatorSettings
    languages: LanguageRegistry
    kube: Kube
    deadlines: Deadlines
    # Ended sessions whose pod and code this process has removed (until retention).
    cleaned: set[str] = field(default_factory=set)


def status_of(body: Mapping[str, Any]) -> CodeSessionStatus:
    return CodeSessionStatus.model_validate(body.get("status") or {})


async def advance(
    ctx: Context,
    name: str,
    observed: Observation,
    body: Mapping[str, Any] | None = None,
    *,
    only_from: frozenset[Phase | None] | None = None,
) -> CodeSessionStatus | None:
    """Move session `name` towards `observed`; returns its status afterwards.

    `body` is a copy of the CodeSession already at hand (saves a read); it may be
    stale, in which case the patch conflicts and a fresh copy is read. `only_from`
    limits the move to sessions currently in one of those phases.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        if body is None:
            body = await ctx.kube.get_session(name)
            if body is None:
                return None  # deleted meanwhile: nothing left to report to
        current = status_of(body)
        if current.created_at is None:
            current = current.model_copy(update={"created_at": _created_at(body)})
        allowed = only_from is None or current.phase in only_from
        new = next_status(current, observed, datetime.now(UTC)) if allowed else None
        if new is None:
            status = current
            break
        try:
            await ctx.kube.patch_session_status(
                name, new.to_wire(), body["metadata"]["resourceVersion"]
            )
        except Conflict:
            body = None
            continue
        except Gone:
            return None  # deleted between reading and writing
        logger.info("session %s: %s %s", name, new.phase, new.reason or "")
        status = new
        break
    else:
        raise Conflict(f"{name}: status kept changing")
    if status.is_final:
        await end(ctx, name, status)
    return status


async def start(ctx: Context, body: Mapping[str, Any]) -> None:
    """Create the session's Pod (idempotently) and report Pending."""
    name = body["metadata"]["name"]
    try:
        spec = CodeSessionSpec.model_validate(dict(body["spec"]))
        language = ctx.languages.get(spec.language)
        names.validate_session_id(name)
    except (ValidationError, UnknownLanguageError, ValueError) as error:
        invalid = Observation(Phase.TERMINATED, Reason.INVALID_SPEC, message=str(error)[:1024])
        await advance(ctx, name, invalid, body)
        return
    if spec.termination is not None:
        await terminate(ctx, body)
        return
    if datetime.now(UTC) >= _start_deadline(ctx, body) and not (
        spec.start is None and await client_waits(ctx, name)
    ):
        # Created while no operator ran, and nobody waits for it any more.
        await advance(ctx, name, _not_started(ctx, body), body)
        return
    if spec.start is None:
        # Lazy start: no sandbox until a client connects (the api sets spec.start).
        await advance(ctx, name, Observation(Phase.PENDING), body)
        arm_start_timeout(ctx, body)
        return
    claimed = spec.start.pod_name if spec.start is not None else None
    if claimed is not None:
        # The api claimed a warm pod for the session (issue 12): take it over.
        observed = await adopt(ctx, body, claimed)
    else:
        spec = clamp_spec(spec, ctx.settings.maxima)
        pod = build_pod(name, spec, language, ctx.settings)
        pod["metadata"]["ownerReferences"] = [_owner_reference(body)]
        try:
            await ctx.kube.create_pod(pod)
        except QuotaExceeded as error:
            # Admission in the api keeps below the quota; this is the backstop's answer.
            message = f"the sandbox namespace's ResourceQuota is full: {error}"[:1024]
            full = Observation(Phase.TERMINATED, Reason.START_FAILED, message=message)
            await advance(ctx, name, full)
            return
        observed = Observation(Phase.PENDING, pod_name=names.pod_name(name))
    await advance(ctx, name, observed, body)
    arm_start_timeout(ctx, body)


async def adopt(ctx: Context, body: Mapping[str, Any], pod_name: str) -> Observation:
    """Make the claimed warm pod the session's own, as if `start` had created it.

    The session's CodeSession becomes its only owner (so it goes with the session,
    not with the pool); it keeps its pool label, which counts it as in use.
    """
    name = body["metadata"]["name"]
    for _ in range(MAX_CONFLICT_RETRIES):
        pod = await ctx.kube.get_pod(pod_name)
        metadata = (pod or {}).get("metadata") or {}
        if (
            pod is None
            or (metadata.get("labels") or {}).get(names.LABEL_SESSION) != name
            or metadata.get("deletionTimestamp")
        ):
            message = f"the warm pod {pod_name} claimed for the session is gone"
            return Observation(Phase.TERMINATED, Reason.START_FAILED, message=message)
        owners = metadata.get("ownerReferences") or []
        if [o.get("uid") for o in owners] == [body["metadata"]["uid"]]:
            break  # adopted already (a retry of this handler)
        patch = {
            "metadata": {
                "resourceVersion": metadata["resourceVersion"],
                "ownerReferences": [_owner_reference(body)],
            }
        }
        try:
            await ctx.kube.patch_pod(pod_name, patch)
        except Conflict:
            continue  # its status moved meanwhile: read it again
        break
    else:
        raise Conflict(f"{pod_name}: kept changing while being adopted")
    logger.info("session %s: adopted warm pod %s", name, pod_name)
    return Observation(Phase.PENDING, pod_name=pod_name)


def session_pod_name(name: str, body: Mapping[str, Any]) -> str:
    """The session's pod: the warm pod it claimed, else the one `start` creates."""
    start = (body.get("spec") or {}).get("start") or {}
    claimed = start.get("podName") if isinstance(start, Mapping) else None
    return claimed if isinstance(claimed, str) and claimed else names.pod_name(name)


async def terminate(ctx: Context, body: Mapping[str, Any]) -> None:
    """End the session on the api's request in spec.termination."""
    name = body["metadata"]["name"]
    termination = body["spec"].get("termination") or {}
    try:
        reason = Reason(str(termination.get("reason")))
    except ValueError:
        reason = Reason.USER_TERMINATED
    await advance(
        ctx,
        name,
        Observation(Phase.TERMINATED, reason, message=termination.get("message") or None),
        body,
    )


async def reconcile(ctx: Context, body: Mapping[str, Any], *, again: bool = True) -> None:
    """Bring one session in line with its pod, e.g. after an operator restart."""
    name = body["metadata"]["name"]
    status = status_of(body)
    if status.is_final:
        await end(ctx, name, status)
        return
    if (body.get("spec") or {}).get("termination"):
        await terminate(ctx, body)
        return
    if status.phase is None or (status.phase is Phase.PENDING and status.pod_name is None):
        await start(ctx, body)  # never started, or waiting for its client (lazy start)
        return
    pod_name = status.pod_name or session_pod_name(name, body)
    pod = await ctx.kube.get_pod(pod_name)
    if pod is None and again:
        # `body` may be older than the pod (the repair loop's list): a claimed warm
        # pod's events can make the session Running before its spec.start (which
        # names the pod) reaches this copy. Read the session again before calling
        # its pod lost.
        fresh = await ctx.kube.get_session(name)
        if fresh is None:
            return
        if fresh["metadata"].get("resourceVersion") != body["metadata"].get("resourceVersion"):
            await reconcile(ctx, fresh, again=False)
            return
    if pod is None:
        logger.info("session %s: its pod %s is not there", name, pod_name)
    observed = pod_lost(pod_name) if pod is None else observe_pod(pod)
    await advance(ctx, name, observed, body)
    arm_start_timeout(ctx, body)


async def on_pod(ctx: Context, pod: Mapping[str, Any], deleted: bool) -> None:
    """A sandbox pod changed (or is gone): move its session along."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = labels.get(names.LABEL_SESSION)
    if not name:
        return
    pod_name = pod["metadata"]["name"]
    if deleted:
        logger.info("session %s: its pod %s was deleted", name, pod_name)
        await advance(ctx, name, pod_lost(pod_name))
        return
    observed = observe_pod(pod)
    body = None
    if observed.phase in FINAL_PHASES and _container_ended(pod):
        # Before the final status (which never changes again) and before the pod goes.
        body = await ctx.kube.get_session(name)
        if body is None or status_of(body).is_final:
            return
        observed = await _with_usage(ctx, body, pod_name, observed)
    await advance(ctx, name, observed, body)


async def _with_usage(
    ctx: Context, body: Mapping[str, Any], pod_name: str, observed: Observation
) -> Observation:
    language = (body.get("spec") or {}).get("language")
    compiled = language in ctx.languages and ctx.languages.get(str(language)).compile is not None
    try:
        usage = await read_usage(ctx.kube, pod_name, compiled)
    except Exception as error:  # usage is a report; the status must not wait on it
        logger.warning("session %s: no usage from the pod log: %s", body["metadata"]["name"], error)
        return observed
    return replace(observed, usage=usage) if usage is not None else observed


def _container_ended(pod: Mapping[str, Any]) -> bool:
    for container in (pod.get("status") or {}).get("containerStatuses") or ():
        if container.get("name") == names.CONTAINER_NAME:
            return "terminated" in (container.get("state") or {})
    return False


async def end(ctx: Context, name: str, status: CodeSessionStatus) -> None:
    """The session is over: its pod goes now, the CodeSession after retention."""
    ctx.deadlines.disarm(f"start/{name}")
    ctx.deadlines.disarm(f"execution/{name}")
    # A claimed warm pod's name is in the status since its adoption.
    pod_name = status.pod_name or names.pod_name(name)
    await ctx.kube.delete_pod(pod_name, ctx.settings.termination_grace_seconds)
    finished_at = status.finished_at or datetime.now(UTC)
    retain_until = finished_at + timedelta(seconds=ctx.settings.retention_seconds)

    ctx.cleaned.add(name)

    async def expire() -> None:
        logger.info("session %s: retention over, deleting", name)
        await ctx.kube.delete_session(name)
        ctx.cleaned.discard(name)

    ctx.deadlines.arm(f"retain/{name}", retain_until, expire)


def arm_start_timeout(ctx: Context, body: Mapping[str, Any]) -> None:
    """End the session if it is not running by its start deadline.

    Keyed by the connect time too: a session armed while it waited for its client
    gets a new deadline once the client connects (the old one then finds it started).
    """
    name = body["metadata"]["name"]
    connected = _connected_at(body)

    async def check() -> None:
        while True:
            fresh = await ctx.kube.get_session(name)
            if fresh is None or _connected_at(fresh) != connected:
                return  # gone, or connected since: the deadline armed then applies
            if connected is not None or not await client_waits(ctx, name):
                break
            # Its client is connected and waits for the api's start gate, which
            # bounds that wait itself: no "never connected" for this one.
            await asyncio.sleep(QUEUED_RECHECK_SECONDS)
        await advance(
            ctx, name, _not_started(ctx, fresh), fresh, only_from=frozenset({None, Phase.PENDING})
        )

    if connected is not None:
        ctx.deadlines.disarm(f"start/{name}")
    ctx.deadlines.arm(f"start/{name}", _start_deadline(ctx, body), check)


async def client_waits(ctx: Context, name: str) -> bool:
    """Whether a client holds the session's stream claim (its lease) though no
    spec.start was written: it connected, and the api's start gate has not given it
    its turn yet (docs/design.md, lazy start). The api bounds that wait and a dead
    replica's claims are ended by the judge (orphans.py), so it cannot last."""
    selector = f"{names.MANAGED_SELECTOR},{LABEL_LEASE}={KIND_STREAM},{names.LABEL_SESSION}={name}"
    return bool(await ctx.kube.list_leases(selector))


def _connected_at(body: Mapping[str, Any]) -> datetime | None:
    """When the api marked the session's client connected (spec.start.at), if it did."""
    start = (body.get("spec") or {}).get("start") or {}
    stamp = start.get("at")
    if isinstance(stamp, datetime):
        return stamp
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp)
        except ValueError:
            return None
    return None


def _start_deadline(ctx: Context, body: Mapping[str, Any]) -> datetime:
    """Connected: start timeout from the connection; else the connect timeout from creation.

    The connect timeout is the session's idle timeout (no client is no I/O), at most
    ``connect_timeout_seconds``. It lives here, not in the api replica that took the
    POST: the client may connect to any replica, and that one may be gone. Counted
    from the end of the creation second (creationTimestamp is truncated to seconds),
    so never early.
    """
    created = _created_at(body)
    connected = _connected_at(body)
    if connected is None:
        return created + timedelta(seconds=1 + _connect_timeout(ctx, body))
    # The api's clock stamped it: never before creation, never past now.
    connected = min(max(connected, created), datetime.now(UTC))
    return connected + timedelta(seconds=ctx.settings.start_timeout_seconds)


def _not_started(ctx: Context, body: Mapping[str, Any]) -> Observation:
    if _connected_at(body) is None:
        timeout = _connect_timeout(ctx, body)
        message = f"no client connected within {timeout:g} s of its creation"
        return Observation(Phase.TERMINATED, Reason.CLIENT_GONE, message=message)
    timeout = ctx.settings.start_timeout_seconds
    message = f"the program did not start within {timeout:g} s of its client connecting"
    return Observation(Phase.TERMINATED, Reason.START_FAILED, message=message)


def _connect_timeout(ctx: Context, body: Mapping[str, Any]) -> float:
    # Read on its own (like the execution deadline): an unreadable spec keeps the default.
    idle = ((body.get("spec") or {}).get("timeouts") or {}).get("idleSeconds")
    limit = ctx.settings.connect_timeout_seconds
    return min(float(idle), limit) if isinstance(idle, int) and idle >= 1 else limit


def _created_at(body: Mapping[str, Any]) -> datetime:
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    if isinstance(stamp, datetime):
        return stamp
    if isinstance(stamp, str):
        return datetime.fromisoformat(stamp)
    return datetime.now(UTC)


def _owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
