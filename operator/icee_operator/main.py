"""`icee-operator`: run the kopf operator in the sandbox namespace."""

from __future__ import annotations

import logging
import sys

import kopf
from icee_core.languages import LanguageConfigError, load_registry

from icee_operator import handlers, pool_handlers
from icee_operator.settings import OperatorSettings


def run() -> None:
    settings = OperatorSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        languages = load_registry(settings.languages_file)
    except LanguageConfigError as error:
        sys.exit(f"icee-operator: {error}")
    # Importing the modules registers their handlers with kopf.
    assert handlers.startup
    assert pool_handlers.pools_startup
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    kopf.run(
        clusterwide=False,
        namespaces=[settings.namespace],
        # One replica needs no KopfPeering object; several elect an active one through it.
        standalone=settings.peering is None,
        peering_name=settings.peering,
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings, languages=languages),
    )


if __name__ == "__main__":
    run()
