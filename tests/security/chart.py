"""The chart's sandbox-side objects (namespace, NetworkPolicy, admission policy),
rendered by helm for a namespace of the tests' own and applied with kubectl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import icee_it_conftest as it

CHART = Path(__file__).resolve().parents[2] / "charts" / "icee"


def render(helm: str, release: str, namespace: str, runtime: str) -> str:
    """The chart's sandbox-side objects for one namespace, as `helm install` makes them."""
    argv = [
        helm, "template", release, str(CHART), "--namespace", f"{release}-system",
        "--set", f"sandbox.namespace={namespace}", "--set", f"sandbox.runtimeClassName={runtime}",
        "--set", "sandbox.createRuntimeClass=false",
        "--show-only", "templates/namespace.yaml", "--show-only", "templates/networkpolicy.yaml",
        "--show-only", "templates/admission.yaml",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout


def kubectl_apply(manifest: str) -> None:
    proc = subprocess.run(
        [it.KUBECTL, "apply", "-f", "-"], input=manifest, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
