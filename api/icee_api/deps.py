"""FastAPI dependencies (``Annotated`` aliases used in the route signatures)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection

from icee_api.auth import AuthError, request_token
from icee_api.clients import Client, client_address
from icee_api.services import Services


def get_services(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def identify(conn: HTTPConnection, services: Services, subprotocols: Sequence[str] = ()) -> Client:
    """The quota holder of a request: its token's name (tokens on), else its address.

    Raises AuthError (401 no or malformed token, 403 refused) when tokens are on.
    """
    if services.tokens is not None:
        token = request_token(conn.headers.get("authorization"), subprotocols)
        return Client("token", services.tokens.name_of(token))
    peer = conn.client.host if conn.client is not None else None
    forwarded = conn.headers.get("x-forwarded-for")
    return Client("address", client_address(peer, forwarded, services.trusted_proxies))


_REJECTED_AS = {401: "unauthorized", 403: "forbidden"}


def get_client(conn: HTTPConnection, services: ServicesDep) -> Client:
    try:
        return identify(conn, services)
    except AuthError as exc:
        services.metrics.sessions_rejected.labels(_REJECTED_AS.get(exc.status, "auth")).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        raise HTTPException(exc.status, exc.detail, headers=headers) from None


ClientDep = Annotated[Client, Depends(get_client)]
