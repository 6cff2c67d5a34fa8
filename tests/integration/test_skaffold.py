"""`skaffold render` of skaffold.yaml with the pinned skaffold and helm: the chart's
objects with the image reference skaffold was given. No image build and no cluster
(the build is handed over with --build-artifacts, the kubeconfig is empty); the
developer loop itself (`skaffold dev` on kind) is documented in the README.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
IMAGE = "icee/icee"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def run(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=REPO
    )
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def built(script: str, timeout: float) -> str:
    """The path a cluster/build-*.sh script prints (compiled on first use, then cached)."""
    out = run("bash", str(REPO / "cluster" / script), timeout=timeout).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def render_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    helm = built("build-helm.sh", timeout=1800)
    skaffold = built("build-skaffold.sh", timeout=3600)  # cold: ~13 min on 2 busy cores
    home = tmp_path_factory.mktemp("skaffold-home")
    kubeconfig = home / "empty-kubeconfig"
    kubeconfig.write_text("")
    env = {
        **os.environ,
        # The pinned helm first: skaffold runs `helm template` from PATH.
        "PATH": os.pathsep.join(
            [str(Path(helm).parent), str(Path(skaffold).parent), os.environ.get("PATH", "")]
        ),
        # skaffold's and helm's own state in a throw-away home; no cluster.
        "HOME": str(home),
        "KUBECONFIG": str(kubeconfig),
        "SKAFFOLD_UPDATE_CHECK": "false",
        "SKAFFOLD_INTERACTIVE": "false",
    }
    run("skaffold", "config", "set", "--global", "collect-metrics", "false", env=env)
    return env


def render(env: dict[str, str], tmp: Path, image: str, *extra: str) -> list[dict[str, Any]]:
    """`skaffold render` of a given build: nothing is built, pulled or looked up."""
    builds = tmp / "builds.json"
    builds.write_text(json.dumps({"builds": [{"imageName": IMAGE, "tag": image}]}))
    out = tmp / "rendered.yaml"
    run(
        "skaffold",
        "render",
        "--offline=true",
        "--digest-source=none",
        f"--build-artifacts={builds}",
        f"--output={out}",
        *extra,
        env=env,
    )
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, (kind, name, [(o["kind"], o["metadata"]["name"]) for o in objs])
    return hits[0]


def containers(deploy: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deploy["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def runtime_class(objs: list[dict[str, Any]]) -> str:
    """The sandboxes' RuntimeClass, as the operator is told it."""
    operator = containers(find(objs, "Deployment", "icee-operator"))[0]
    return str({e["name"]: e.get("value") for e in operator["env"]}["ICEE_RUNTIME_CLASS_NAME"])


@pytest.mark.parametrize(
    "image", [f"{IMAGE}:dev-1234", f"{IMAGE}:dev-1234@{DIGEST}"], ids=["tag", "digest"]
)
def test_render_gives_the_chart_with_the_given_image(
    render_env: dict[str, str], tmp_path: Path, image: str
) -> None:
    objs = render(render_env, tmp_path, image)
    for name in ("icee-api", "icee-operator"):
        deploy = find(objs, "Deployment", name)
        assert deploy["metadata"]["namespace"] == "icee-system"
        assert [(c["image"], c["imagePullPolicy"]) for c in containers(deploy)] == [
            (image, "IfNotPresent")
        ]
    service = find(objs, "Service", "icee-api")
    assert service["metadata"]["namespace"] == "icee-system"
    assert [p["port"] for p in service["spec"]["ports"]] == [80]
    find(objs, "Namespace", "icee-sandbox")
    # Sandboxes keep gVisor by default.
    find(objs, "RuntimeClass", "gvisor")
    assert runtime_class(objs) == "gvisor"
    # `helm template` leaves out charts/icee/crds (helm install applies them) and,
    # with skipTests, the helm test Pod.
    assert not [o for o in objs if o["kind"] in ("Pod", "CustomResourceDefinition")]


def test_runc_profile_runs_sandboxes_without_gvisor(
    render_env: dict[str, str], tmp_path: Path
) -> None:
    objs = render(render_env, tmp_path, f"{IMAGE}:dev-1234", "--profile=runc")
    assert runtime_class(objs) == ""
    assert not [o for o in objs if o["kind"] == "RuntimeClass"]
