"""Sessions apart: no persistence, no seeing or signalling another, nothing left
behind, no way out through namespaces or mounts."""

from __future__ import annotations

import json
import time
from typing import Any

import host
import icee_it_conftest as it
import pytest
from battery import Run
from checks import contained

pytestmark = pytest.mark.cluster


def test_nothing_persists_between_sessions(runs: dict[str, Run]) -> None:
    writer, reader = runs["persist-write"], runs["persist-read"]
    contained(writer)
    contained(reader)
    assert any(p.startswith("/workspace/") for p in writer.result["written"]), writer.result
    assert reader.result["marker_seen"] is False, reader.result
    # A fresh workspace: only what the api put there (the program's own source).
    assert set(reader.result["found"].get("/workspace", [])) <= {"main.py"}, reader.result


def test_a_session_cannot_see_or_signal_another(runs: dict[str, Run]) -> None:
    victim, intruder = runs["victim"], runs["intruder"]
    contained(intruder)
    assert intruder.result["marker_seen"] is False, intruder.result
    # The victim lived through it and still answers.
    assert victim.error is None, victim.describe()
    assert (victim.final["state"], victim.final["reason"]) == ("finished", "Completed")
    echoes = [line["line"] for line in victim.tagged("ECHO")]
    assert echoes == ["still here"], victim.describe()


def test_namespaces_and_mounts_give_no_way_out(runs: dict[str, Run]) -> None:
    run = runs["escapes"]
    contained(run)
    r = run.result
    assert all(v != "ok" for v in r["unshare"].values()), r["unshare"]
    assert all(v != "ok" for v in r["setns"].values()), r["setns"]
    for key in ("mount", "mount_proc", "chroot"):
        assert r[key] != "ok", (key, r)
    assert r["user_and_mount"].get("unshare") != "ok", r["user_and_mount"]


def test_nothing_is_left_after_sessions_end(runs: dict[str, Run], sandbox: Any) -> None:
    """No pod, ConfigMap or CodeSession after retention; nothing of any pod on the node."""
    uids = {r.pod_uid for r in runs.values() if r.pod_uid}
    assert len(uids) >= len(runs) - 1
    deadline = time.monotonic() + 120
    while True:
        objects = json.loads(
            it.kubectl("get", "pods,configmaps,codesessions", "-n", sandbox.namespace,
                       "-l", "app.kubernetes.io/managed-by=icee", "-o", "json")
        )["items"]  # fmt: skip
        left = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
        on_node = [p for uid in uids for p in host.leftovers(uid)]
        if not left and not on_node:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {left} {on_node}")
        time.sleep(2)
