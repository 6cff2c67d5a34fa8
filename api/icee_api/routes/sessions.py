"""``POST /session``, ``GET /session/{id}``, ``DELETE /session/{id}``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from icee_core import names
from icee_core.models import (
    CODE_MAX_BYTES,
    DEFAULT_COLS,
    DEFAULT_ROWS,
    TERMINAL_MAX,
    CodeSessionSpec,
    Limits,
    Reason,
    Timeouts,
    WireModel,
    clamp_spec,
)
from icee_core.sources import SourceEntry, SourceFileError, resolve_sources
from icee_kube.client import KubeError, QuotaExceeded
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from starlette.requests import ClientDisconnect

from icee_api.admission import Refusal, quota_refusal
from icee_api.deps import ClientDep, ServicesDep
from icee_api.services import Services
from icee_api.session.state import state_of, status_of

router = APIRouter(tags=["sessions"])


class CreateSession(BaseModel):
    """The body of POST /session; limits and timeouts may only lower the server maxima."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    language: str
    # Exactly one of: `code` (one file) or `files` (several; icee_core.sources).
    code: str | None = None
    files: list[SourceEntry] | None = None
    limits: Limits | None = None
    timeouts: Timeouts | None = None
    # A pseudo-terminal for the program; cols/rows only with it (default 80x24).
    tty: StrictBool = False
    cols: int | None = Field(default=None, ge=1, le=TERMINAL_MAX, strict=True)
    rows: int | None = Field(default=None, ge=1, le=TERMINAL_MAX, strict=True)

    @model_validator(mode="after")
    def _terminal_size_needs_tty(self) -> CreateSession:
        if not self.tty and (self.cols is not None or self.rows is not None):
            raise ValueError('cols and rows need "tty": true')
        return self


class SessionCreated(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    session_id: str
    language: str
    limits: dict[str, int]
    timeouts: dict[str, int]


class SessionView(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    session_id: str
    language: str | None
    state: str
    exit_code: int | None
    reason: str | None
    message: str | None
    created_at: datetime | str | None
    started_at: datetime | None
    finished_at: datetime | None
    # Per stage (compile, run), from the runner's reports: see the WebSocket's final state.
    usage: dict[str, dict[str, int]] | None = None


async def _read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON, refusing more than ``max_bytes`` before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE, f"body over {max_bytes} bytes"
                )
    except ClientDisconnect:
        # Nobody reads this answer; it keeps a dropped upload out of the error log.
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "the client left before its request body ended"
        ) from None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed JSON: {exc}") from None


def _problems(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:10]:
        # Field names come from the client: show a short prefix only.
        where = ".".join(str(p)[:64] for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")[:200]
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _lowered(requested: WireModel | None, maximum: WireModel) -> Any:
    """Fields the request set, capped by the maximum; the others are the maximum."""
    if requested is None:
        return maximum
    return maximum.model_copy(update={k: getattr(requested, k) for k in requested.model_fields_set})


def build_spec(body: Any, services: Services) -> CodeSessionSpec:
    """Validate a POST /session body into the CodeSession spec (HTTPException if bad)."""
    try:
        req = CreateSession.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _problems(exc)) from None
    if req.language not in services.languages:
        known = ", ".join(services.languages.ids)
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"unknown language {req.language[:64]!r}; one of: {known}",
        )
    size = len(req.code.encode("utf-8")) if req.code is not None else 0
    if size > CODE_MAX_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"code is {size} bytes; at most {CODE_MAX_BYTES} are accepted",
        )
    try:
        # Names, count, size, which file is the main one (422 naming the file).
        resolve_sources(services.languages.get(req.language), code=req.code, files=req.files)
    except SourceFileError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    maxima = services.settings.maxima
    try:
        spec = CodeSessionSpec(
            language=req.language,
            code=req.code,
            files=tuple(req.files) if req.files is not None else None,
            limits=_lowered(req.limits, maxima.limits),
            timeouts=_lowered(req.timeouts, maxima.timeouts),
            tty=req.tty,
            cols=(req.cols or DEFAULT_COLS) if req.tty else None,
            rows=(req.rows or DEFAULT_ROWS) if req.tty else None,
        )
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _problems(exc)) from None
    return clamp_spec(spec, maxima)


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        shown = media_type[:64] or "none"
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json, not {shown}",
        )


def _refused(services: Services, refusal: Refusal) -> JSONResponse:
    services.metrics.sessions_rejected.labels(refusal.limit).inc()
    return JSONResponse(
        refusal.body(),
        status_code=refusal.status,
        headers={"Retry-After": str(refusal.retry_after)},
    )


@router.post("/session", status_code=status.HTTP_201_CREATED, response_model=SessionCreated)
async def create_session(
    request: Request, services: ServicesDep, client: ClientDep
) -> SessionCreated | JSONResponse:
    if services.live.draining:
        services.metrics.sessions_rejected.labels("shutting_down").inc()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the server is shutting down")
    try:
        _require_json(request)
    except HTTPException:
        services.metrics.sessions_rejected.labels("unsupported_media_type").inc()
        raise
    try:
        spec = build_spec(await _read_json(request, services.settings.max_request_bytes), services)
    except HTTPException:
        services.metrics.sessions_rejected.labels("bad_request").inc()
        raise
    if not services.watches.outcomes.loaded.is_set():
        services.metrics.sessions_rejected.labels("starting").inc()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the api is still counting the sessions in the cluster; retry in a moment",
            headers={"Retry-After": "1"},
        )
    refusal = services.admission.check(client)
    if refusal is not None:
        return _refused(services, refusal)
    session_id = names.new_session_id()
    counts = services.admission.counts
    counts.reserve(session_id, client.label)
    try:
        await services.cluster.create_session(session_id, spec, client.label)
    except QuotaExceeded:
        counts.release(session_id)
        return _refused(services, quota_refusal(services.admission.limits.retry_after_seconds))
    except KubeError as exc:
        counts.release(session_id)
        services.metrics.sessions_rejected.labels("kubernetes").inc()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    services.live.created(session_id)
    services.metrics.sessions_created.labels(spec.language).inc()
    return SessionCreated(
        session_id=session_id,
        language=spec.language,
        limits=spec.limits.to_wire(),
        timeouts=spec.timeouts.to_wire(),
    )


async def _get(session_id: str, services: Services) -> dict[str, Any]:
    obj = None
    if names.is_session_id(session_id):
        try:
            obj = await services.cluster.get_session(session_id)
        except KubeError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    if obj is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id[:64]!r}")
    return obj


def view(session_id: str, obj: dict[str, Any]) -> SessionView:
    st = status_of(obj)
    return SessionView(
        session_id=session_id,
        language=(obj.get("spec") or {}).get("language"),
        state=state_of(st.phase).value,
        exit_code=st.exit_code,
        reason=st.reason.value if st.reason is not None else None,
        message=st.message,
        created_at=st.created_at or (obj.get("metadata") or {}).get("creationTimestamp"),
        started_at=st.started_at,
        finished_at=st.finished_at,
        usage=st.usage.to_wire() if st.usage is not None else None,
    )


@router.get("/session/{session_id}", response_model=SessionView)
async def get_session(session_id: str, services: ServicesDep, _: ClientDep) -> SessionView:
    return view(session_id, await _get(session_id, services))


@router.delete("/session/{session_id}", status_code=status.HTTP_202_ACCEPTED)
async def delete_session(session_id: str, services: ServicesDep, _: ClientDep) -> dict[str, str]:
    """Ask for the session to end (UserTerminated); the final state follows on the stream."""
    obj = await _get(session_id, services)
    if status_of(obj).is_final:
        return {"sessionId": session_id, "state": view(session_id, obj).state}
    try:
        await services.termination.end(session_id, Reason.USER_TERMINATED, "terminated by the user")
    except KubeError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return {"sessionId": session_id, "state": "terminating"}
