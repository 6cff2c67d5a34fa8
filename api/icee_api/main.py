"""``icee-api``: run the api under uvicorn, with icee's graceful shutdown.

uvicorn on SIGTERM closes every WebSocket with 1012 at once; icee first drains:
new sessions are refused, attached ones get the grace period to finish, the rest
end with ServerShutdown and their clients get the final state. The port stays open
at least ``shutdown_min_seconds`` (endpoints take a moment to follow). Then
uvicorn stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType

import uvicorn

from icee_api.app import create_app
from icee_api.services import Services
from icee_api.settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self._services = services
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None and sig == signal.SIGTERM:
            # The kubelet sends SIGTERM again when it restarts during the grace period;
            # its hard stop is SIGKILL. The drain goes on, so every client is told.
            log.info("SIGTERM again while draining: the drain goes on")
            return
        if self._drain is not None or not self.started:
            # A second Ctrl-C (or a signal before start-up finished): stop now.
            super().handle_exit(sig, frame)
            return
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        settings = self._services.settings
        since = time.monotonic()
        try:
            await self._services.live.drain(
                settings.shutdown_grace_seconds, settle=settings.final_status_timeout_seconds
            )
        except Exception:
            log.exception("drain failed")
        # Connections may still be routed here for a moment: answer them (503 for new
        # sessions) rather than refuse them at a closed port.
        await asyncio.sleep(settings.shutdown_min_seconds - (time.monotonic() - since))
        super().handle_exit(sig, frame)


def run() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The sans-I/O implementation pauses reading after each message until the app
        # takes it: with the size cap, one socket makes the api hold at most one
        # message in and one write buffer out (its websockets-based sibling would
        # queue ws_max_queue messages; set low too in case it is picked).
        ws="websockets-sansio",
        ws_max_size=settings.max_client_frame_bytes,
        ws_max_queue=2,
        ws_per_message_deflate=settings.ws_compression,
        timeout_graceful_shutdown=5,
        # X-Forwarded-For is read by icee itself, from trusted proxies only (clients.py).
        proxy_headers=False,
    )
    server = DrainingServer(config, app.state.services)
    server.run()


if __name__ == "__main__":  # pragma: no cover
    run()
