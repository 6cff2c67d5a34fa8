"""kopf handlers: thin adapters from Kubernetes events to `sessions`.

- CodeSession created            -> status Pending; no pod until a client connects
- spec.start set (by api)        -> start: Pod (lazy start)
- spec.termination set (by api)  -> Terminated with that reason, pod deleted
- sandbox Pod changed or deleted -> status follows it; ended -> pod and code deleted
- operator (re)started           -> every CodeSession reconciled against its pod,
                                    deadlines (start timeout, retention) re-armed
- every RECONCILE_SECONDS        -> each CodeSession repaired (level-triggered):
                                    whatever an event missed or a handler failed
- every claims_check_seconds     -> sessions whose streaming api replica died
                                    (its lease expired) end ClientGone
- a session running              -> its execution deadline armed (the operator's own)

kopf timers and daemons would do the last two, but kopf puts its finalizer on
every object that has one, and a finalizer keeps a CodeSession (and its namespace)
from being deleted while no operator runs: one background loop and our own
one-shot deadlines instead.

Every handler has bounded retries; the last failure ends the session with a
stated reason where one fits (a sandbox that cannot be created: StartFailed), and
the periodic repair picks up the rest.

No finalizers: owner references let Kubernetes' garbage collector remove a
session's Pod with it, and the CodeSession can always be deleted,
even with the operator down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, cast

import kopf
from icee_core import names
from icee_core.languages import LanguageRegistry
from icee_core.models import Phase, Reason

from icee_operator.deadlines import Deadlines
from icee_operator.kube import Kube
from icee_operator.orphans import keep_ending_orphans
from icee_operator.repair import arm_execution_deadline, give_up, keep_repairing
from icee_operator.sessions import (
    Context,
    end,
    on_pod,
    reconcile,
    start,
    status_of,
    terminate,
)
from icee_operator.settings import OperatorSettings

CODESESSIONS = (names.GROUP, names.VERSION, names.PLURAL)
SANDBOX_PODS = {
    names.LABEL_MANAGED_BY: names.MANAGED_BY,
    names.LABEL_COMPONENT: names.COMPONENT_SANDBOX,
}


def context(memo: kopf.Memo) -> Context:
    return cast(Context, memo["context"])


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # `icee-operator` (main.py) read both before it started kopf.
    config = cast(OperatorSettings, memo["settings"])
    languages = cast(LanguageRegistry, memo["languages"])
    # kopf's own bookkeeping in annotations under our group; the status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    # The user's code is in the object once: kopf's copy of the last handled spec
    # leaves it out (it never changes, so no handler needs its diff).
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP,
        key="last-handled-configuration",
        ignored_fields=list(DIFFBASE_IGNORED),
    )
    settings.persistence.finalizer = f"{names.GROUP}/operator"
    # No Kubernetes Event per handled object: hundreds of sessions would flood them.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    ctx = Context(
        settings=config,
        languages=languages,
        kube=await Kube.connect(config.namespace),
        deadlines=Deadlines(),
    )
    memo["context"] = ctx
    memo["repairing"] = asyncio.create_task(
        keep_repairing(ctx, RECONCILE_SECONDS), name="repair sessions"
    )
    memo["orphans"] = asyncio.create_task(
        keep_ending_orphans(ctx, config.claims_check_seconds), name="end orphaned streams"
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx = context(memo)
    loops = [cast(asyncio.Task[None], memo[key]) for key in ("repairing", "orphans")]
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    await ctx.deadlines.close()
    await ctx.kube.close()


# Fields of the spec kopf does not copy into its last-handled-configuration.
DIFFBASE_IGNORED = ("spec.code", "spec.files")
# Sessions are interactive: retry failed handlers after a second, not kopf's minute,
# and not forever: a permanent error ends with a stated failure.
RETRY_BACKOFF_SECONDS = 1.0
HANDLER_RETRIES = 5
# How often each CodeSession is repaired, whatever events said.
RECONCILE_SECONDS = 10.0


async def bounded(
    ctx: Context, body: kopf.Body, retry: int, action: Awaitable[None], failure: Reason | None
) -> None:
    """Run a handler's action; after the last retry, end the session with ``failure``."""
    try:
        await action
    except (kopf.PermanentError, kopf.TemporaryError):
        raise
    except Exception as error:
        if retry + 1 < HANDLER_RETRIES:
            raise kopf.TemporaryError(f"{error!r}", delay=RETRY_BACKOFF_SECONDS) from error
        message = f"the operator failed {HANDLER_RETRIES} times: {error}"
        if failure is not None:
            await give_up(ctx, body.meta.name or "", failure, message)
        raise kopf.PermanentError(message) from error


@kopf.on.create(*CODESESSIONS, retries=HANDLER_RETRIES, backoff=RETRY_BACKOFF_SECONDS)
async def codesession_created(body: kopf.Body, retry: int, memo: kopf.Memo, **_: Any) -> None:
    ctx = context(memo)
    await bounded(ctx, body, retry, start(ctx, body), Reason.START_FAILED)


@kopf.on.resume(*CODESESSIONS, retries=HANDLER_RETRIES, backoff=RETRY_BACKOFF_SECONDS)
async def codesession_resumed(body: kopf.Body, retry: int, memo: kopf.Memo, **_: Any) -> None:
    ctx = context(memo)
    await bounded(ctx, body, retry, reconcile(ctx, body), None)


@kopf.on.update(
    *CODESESSIONS, field="spec.start", retries=HANDLER_RETRIES, backoff=RETRY_BACKOFF_SECONDS
)
async def client_connected(
    body: kopf.Body, new: Any, retry: int, memo: kopf.Memo, **_: Any
) -> None:
    # Lazy start: the api set spec.start when the session's client connected.
    if new and not status_of(body).is_final:
        ctx = context(memo)
        await bounded(ctx, body, retry, start(ctx, body), Reason.START_FAILED)


@kopf.on.update(
    *CODESESSIONS, field="spec.termination", retries=HANDLER_RETRIES, backoff=RETRY_BACKOFF_SECONDS
)
async def termination_requested(
    body: kopf.Body, new: Any, retry: int, memo: kopf.Memo, **_: Any
) -> None:
    if new:
        ctx = context(memo)
        try:
            reason = Reason(str(new.get("reason")))
        except ValueError:
            reason = Reason.USER_TERMINATED
        await bounded(ctx, body, retry, terminate(ctx, body), reason)


@kopf.on.event(*CODESESSIONS)
async def codesession_seen(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    # An ended session this process has not cleaned up yet (seen after a restart):
    # delete what it owns and arm its retention from its finishedAt.
    ctx = context(memo)
    status = status_of(body)
    if type != "DELETED" and status.phase is Phase.RUNNING:
        arm_execution_deadline(ctx, body)
    if type != "DELETED" and status.is_final and f"retain/{body.meta.name}" not in ctx.deadlines:
        await end(ctx, body.meta.name, status)


@kopf.on.event("", "v1", "pods", labels=SANDBOX_PODS)
async def sandbox_pod_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    await on_pod(context(memo), body, deleted=type == "DELETED")
