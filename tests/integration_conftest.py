"""tests/integration's conftest as an importable module, for the suites that reuse
its processes, kubectl and WebSocket client (tests/security, tests/chaos).

A directory's conftest cannot be imported as ``conftest`` from another directory
(each suite has its own), so it is loaded once under the name ``icee_it_conftest``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

NAME = "icee_it_conftest"
PATH = Path(__file__).resolve().parent / "integration" / "conftest.py"


def load() -> Any:
    if NAME in sys.modules:
        return sys.modules[NAME]
    spec = importlib.util.spec_from_file_location(NAME, PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    spec.loader.exec_module(module)
    return module
