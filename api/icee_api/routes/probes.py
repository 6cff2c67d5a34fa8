"""``/healthz`` (the process serves), ``/readyz`` (it can take sessions), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from icee_kube.client import KubeError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from icee_api.deps import ServicesDep
from icee_api.services import NotConnected

router = APIRouter(tags=["probes"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    if services.live.draining:
        return _unready("shutting down")
    try:
        unsynced = services.watches.unsynced()
        await services.cluster.check()
    except (KubeError, NotConnected) as exc:
        return _unready(str(exc))
    if not services.claims.healthy:
        # A replica without its lease could claim no session (and the operator would
        # count the sessions it streams as orphans).
        return _unready(f"replica lease {services.claims.lease_name} not held")
    if unsynced:
        # Sessions wait on these caches: a stale one could miss their end.
        return _unready(f"not synced: {', '.join(unsynced)}")
    return JSONResponse({"status": "ready"})


def _unready(why: str) -> JSONResponse:
    return JSONResponse(
        {"status": "unready", "detail": why}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
