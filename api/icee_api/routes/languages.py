"""``GET /languages``: what the language registry serves."""

from __future__ import annotations

from fastapi import APIRouter

from icee_api.deps import ServicesDep

router = APIRouter(tags=["languages"])


@router.get("/languages")
async def list_languages(services: ServicesDep) -> dict[str, list[dict[str, str]]]:
    return {
        "languages": [
            {"id": lang.id, "displayName": lang.display_name, "version": lang.version}
            for lang in services.languages
        ]
    }
