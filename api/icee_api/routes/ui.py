"""``GET /``: the browser UI bundle, or a page saying it is not built."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>icee: UI not built</title></head>
<body><h1>The icee UI is not built</h1>
<p>This api serves the UI from <code>{path}</code>, which has no <code>index.html</code>.
Build the bundle in <code>ui/</code> or point <code>ICEE_UI_DIR</code> at it.
The HTTP and WebSocket API work without it.</p></body></html>
"""


def mount_ui(app: FastAPI, ui_dir: Path) -> None:
    """Serve ``ui_dir`` at ``/``; must be added after every other route."""
    path = ui_dir.resolve()
    if (path / "index.html").is_file():
        app.mount("/", StaticFiles(directory=path, html=True), name="ui")
        return

    page = _NOT_BUILT.format(path=path)

    @app.get("/", include_in_schema=False)
    async def ui_not_built() -> HTMLResponse:
        return HTMLResponse(page, status_code=503)
