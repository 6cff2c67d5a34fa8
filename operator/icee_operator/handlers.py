"""kopf handlers: thin adapters from Kubernetes events to `sessions`.

- CodeSession created            -> start: ConfigMap + Pod, status Pending
- spec.termination set (by api)  -> Terminated with that reason, pod deleted
- sandbox Pod changed or deleted -> status follows it; ended -> pod and code deleted
- operator (re)started           -> every CodeSession reconciled against its pod,
                                    deadlines (start timeout, retention) re-armed

No finalizers: owner references let Kubernetes' garbage collector remove a
session's Pod and ConfigMap with it, and the CodeSession can always be deleted,
even with the operator down.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
from icee_core import names
from icee_core.languages import LanguageConfigError, LanguageRegistry, load_registry

from icee_operator.deadlines import Deadlines
from icee_operator.kube import Kube
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
    # `icee-operator` passes its settings in; `kopf run -m icee_operator.handlers`
    # gets them read here.
    config = cast(OperatorSettings, memo.get("settings") or OperatorSettings())
    try:
        languages = memo.get("languages") or load_registry(config.languages_file)
    except LanguageConfigError as error:
        raise kopf.PermanentError(str(error)) from None
    # kopf's own bookkeeping in annotations under our group; the status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{names.GROUP}/operator"
    # No Kubernetes Event per handled object: hundreds of sessions would flood them.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo["context"] = Context(
        settings=config,
        languages=cast(LanguageRegistry, languages),
        kube=await Kube.connect(config.namespace),
        deadlines=Deadlines(),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx = context(memo)
    await ctx.deadlines.close()
    await ctx.kube.close()


# Sessions are interactive: retry failed handlers after a second, not kopf's minute.
RETRY_BACKOFF_SECONDS = 1.0


@kopf.on.create(*CODESESSIONS, backoff=RETRY_BACKOFF_SECONDS)
async def codesession_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await start(context(memo), body)


@kopf.on.resume(*CODESESSIONS, backoff=RETRY_BACKOFF_SECONDS)
async def codesession_resumed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await reconcile(context(memo), body)


@kopf.on.update(*CODESESSIONS, field="spec.termination", backoff=RETRY_BACKOFF_SECONDS)
async def termination_requested(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    if new:
        await terminate(context(memo), body)


@kopf.on.event(*CODESESSIONS)
async def codesession_seen(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    # An ended session this process has not cleaned up yet (seen after a restart):
    # delete what it owns and arm its retention from its finishedAt.
    ctx = context(memo)
    status = status_of(body)
    if type != "DELETED" and status.is_final and f"retain/{body.meta.name}" not in ctx.deadlines:
        await end(ctx, body.meta.name, status)


@kopf.on.event("", "v1", "pods", labels=SANDBOX_PODS)
async def sandbox_pod_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    await on_pod(context(memo), body, deleted=type == "DELETED")
