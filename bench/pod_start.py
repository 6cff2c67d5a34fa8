"""Time from creating a pod to its first output line, gVisor against runc.

Creates N pods per runtime class (one at a time) that print one line, and
reads the first line's timestamp as containerd recorded it (`kubectl logs
--timestamps`), so the figure does not depend on how fast we poll. Prints p50
and p95 per runtime, and gVisor's ratio to runc measured in the same run.

Usage: python bench/pod_start.py [--runs 10] [--namespace default]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

KUBECTL = str(Path(__file__).resolve().parents[1] / "cluster" / "kubectl")


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, check=True
    ).stdout


def one(
    namespace: str,
    runtime: str,
    image: str = "icee/sandbox-python:3.11",
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    resources: dict[str, Any] | None = None,
    expect: str = "first",
) -> float:
    """Seconds from ``kubectl create`` to the pod's first output line (containerd's
    timestamp of it). Default: ``python3 -c "print('first')"``. The pod has a memory
    emptyDir at /workspace (its working directory), as a session's has."""
    name = f"bench-{runtime}-{uuid.uuid4().hex[:6]}"
    container: dict[str, Any] = {
        "name": "c",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command or ["python3", "-c", f"print({expect!r})"],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "workingDir": "/workspace",
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
    }
    if resources:
        container["resources"] = resources
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtimeClassName": runtime,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [container],
            "volumes": [{"name": "workspace", "emptyDir": {"medium": "Memory"}}],
        },
    }
    start = time.time()
    kubectl("create", "-f", "-", stdin=json.dumps(pod))
    try:
        kubectl(
            "-n", namespace, "wait", f"pod/{name}",
            "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s",
        )  # fmt: skip
        line = kubectl("-n", namespace, "logs", name, "--timestamps").splitlines()[0]
    finally:
        kubectl("-n", namespace, "delete", "pod", name, "--now", "--wait=false")
    stamp, text = line.split(" ", 1)
    assert text == expect, line
    first = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return first - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--namespace", default="default")
    args = ap.parse_args()
    results: dict[str, list[float]] = {"runc": [], "gvisor": []}
    for _ in range(args.runs):
        for runtime in results:  # interleaved, so both see the same machine load
            results[runtime].append(one(args.namespace, runtime))
    for runtime, times in results.items():
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"{runtime:7s} create→first line  p50 {statistics.median(times):.3f} s  "
              f"p95 {p95:.3f} s  (n={len(times)})")  # fmt: skip
    ratio = statistics.median(results["gvisor"]) / statistics.median(results["runc"])
    print(f"gvisor/runc p50 ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
