"""The app factory: ``create_app()`` builds the FastAPI app; no work at import."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from icee_core.languages import load_registry

from icee_api.routes import languages, probes, sessions, stream, ui
from icee_api.services import Services
from icee_api.session.claims import Leases, StreamClaims, default_replica
from icee_api.session.cluster import Cluster
from icee_api.session.watches import Watches
from icee_api.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, cluster: Cluster | None = None) -> FastAPI:
    """Build the app; ``cluster`` is injectable, else it is connected at start-up."""
    settings = settings or Settings()
    services = Services(settings=settings, languages=load_registry(settings.languages_file))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = cluster is None
        connected = cluster or await Cluster.connect(
            settings.kubeconfig, settings.namespace, settings.kube_max_connections
        )
        watches = Watches(connected)
        watches.start()
        claims = StreamClaims(
            Leases(connected.kube, settings.namespace),
            settings.replica_name or default_replica(),
            settings.lease_seconds,
        )
        holding = asyncio.create_task(claims.run(), name="replica lease")
        services.connect(connected, watches, claims)
        log.info(
            "icee api: namespace %s, %d languages", settings.namespace, len(services.languages)
        )
        try:
            yield
        finally:
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            await claims.close()
            await watches.stop()
            if own:
                await connected.close()

    app = FastAPI(title="icee", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    for router in (sessions.router, languages.router, probes.router, stream.router):
        app.include_router(router)
    ui.mount_ui(app, settings.ui_dir)
    return app
