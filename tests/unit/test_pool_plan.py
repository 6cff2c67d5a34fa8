"""Warm pools, the pure part: the warm pod, its template hash, and the pool plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from icee_core import names
from icee_core.languages import load_registry
from icee_core.models import Limits, MiB, ServerMaxima
from icee_core.pools import ANNOTATION_LIMITS, limits_from_annotations, pod_limits_match
from icee_operator.pods import build_pod
from icee_operator.pool import (
    PoolSpec,
    WarmPod,
    build_warm_pod,
    plan,
    template_hash,
    warm_command,
    warm_pod_of,
    warm_spec,
)
from icee_operator.settings import OperatorSettings

LANGUAGES = load_registry()
PYTHON = LANGUAGES.get("python")
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
OWNER = {"metadata": {"name": "python", "uid": "1234"}}
SPEC = PoolSpec(language="python", replicas=2, max_age_seconds=600)


def settings(**overrides: Any) -> OperatorSettings:
    return OperatorSettings(_env_file=None, **overrides)  # type: ignore[call-arg]


def test_warm_pod_is_the_cold_pod_with_pool_labels() -> None:
    s = settings()
    slot = "0b7c1f8e-3c1d-4e6a-9b2f-5d8e7a6c4b3a"
    warm = build_warm_pod("python", SPEC, PYTHON, s, OWNER, slot=slot)
    cold = build_pod(slot, warm_spec(PYTHON, s), PYTHON, s)
    # Same builder: everything but the deadline, the command (the language's warm-up
    # first), name, labels and owner is identical.
    for pod in (warm, cold):
        pod["spec"].pop("activeDeadlineSeconds")
    command = warm["spec"]["containers"][0].pop("command")
    assert cold["spec"]["containers"][0].pop("command") == [names.RUNNER_PATH]
    assert warm["spec"] == cold["spec"]
    assert PYTHON.warmup
    assert command == warm_command(PYTHON.warmup)
    assert command[:2] == ["/bin/sh", "-c"]
    # Bounded, no input, no output (the log is the runner's frames), then the runner
    # becomes the container's process.
    assert command[2] == (
        "timeout 20 /bin/sh -c 'python3 -c pass' </dev/null >/dev/null 2>&1; "
        f"exec {names.RUNNER_PATH}"
    )
    labels = warm["metadata"]["labels"]
    assert names.LABEL_SESSION not in labels
    assert labels[names.LABEL_POOL] == "python"
    assert labels[names.LABEL_TEMPLATE_HASH] == template_hash(PYTHON, s)
    assert labels[names.LABEL_COMPONENT] == names.COMPONENT_SANDBOX
    assert warm["metadata"]["name"].startswith("warm-python-")
    assert warm["metadata"]["ownerReferences"][0]["kind"] == "SandboxPool"
    assert limits_from_annotations(warm["metadata"]["annotations"]) == Limits(
        cpu_millis=s.maxima.limits.cpu_millis,
        memory_bytes=s.maxima.limits.memory_bytes,
        workspace_bytes=s.maxima.limits.workspace_bytes,
    )
    assert limits_from_annotations({ANNOTATION_LIMITS: "{bad"}) is None


def test_a_language_without_warmup_runs_the_runner_alone() -> None:
    cpp = LANGUAGES.get("cpp")
    assert cpp.warmup is None
    warm = build_warm_pod("cpp", PoolSpec(language="cpp", replicas=1), cpp, settings(), OWNER)
    assert warm["spec"]["containers"][0]["command"] == [names.RUNNER_PATH]


def test_warm_pod_deadline_is_a_backstop_beyond_max_age() -> None:
    warm = build_warm_pod("python", SPEC, PYTHON, settings(), OWNER)
    execution = ServerMaxima().timeouts.execution_seconds
    assert warm["spec"]["activeDeadlineSeconds"] > SPEC.max_age_seconds + execution


def test_warm_pods_get_different_uids() -> None:
    uids = {
        build_warm_pod("python", SPEC, PYTHON, settings(), OWNER)["spec"]["containers"][0][
            "securityContext"
        ]["runAsUser"]
        for _ in range(5)
    }
    assert len(uids) == 5


def test_template_hash_follows_image_limits_and_language() -> None:
    base = template_hash(PYTHON, settings())
    assert base == template_hash(PYTHON, settings())
    smaller = ServerMaxima(limits=Limits(memory_bytes=100 * MiB))
    assert template_hash(PYTHON, settings(maxima=smaller)) != base
    assert template_hash(PYTHON, settings(runtime_class_name="runc")) != base
    other_image = PYTHON.model_copy(update={"image": "icee/sandbox-python:other"})
    assert template_hash(other_image, settings()) != base
    assert template_hash(LANGUAGES.get("ruby"), settings()) != base
    # Every field of the language's registry entry, also those the pod spec does not
    # show (the runner gets the commands over stdin): a changed registry replaces pods.
    for change in (
        {"run": "python3 -u -X utf8 {main}"},
        {"compile": "python3 -m py_compile {main}"},
        {"env": {}},
        {"version": "3.12"},
        {"warmup": 'python3 -c "import json"'},
    ):
        assert template_hash(PYTHON.model_copy(update=change), settings()) != base, change


def test_limits_a_warm_pod_can_honour() -> None:
    template = Limits()
    assert pod_limits_match(Limits(pids=4, output_bytes=10, stdin_bytes=0), template)
    assert not pod_limits_match(Limits(memory_bytes=64 * MiB), template)
    assert not pod_limits_match(Limits(cpu_millis=100), template)
    assert not pod_limits_match(Limits(workspace_bytes=2 * MiB), template)


def pod(name: str, **fields: Any) -> WarmPod:
    values: dict[str, Any] = {
        "template_hash": "h1",
        "created_at": NOW - timedelta(seconds=10),
        "ready": True,
        "claimed": False,
        "terminating": False,
        "ended": False,
    }
    return WarmPod(name=name, **(values | fields))


def test_plan_fills_an_empty_pool() -> None:
    result = plan(SPEC, "h1", [], NOW)
    assert (result.create, result.delete, result.ready) == (2, [], 0)


def test_plan_refills_after_a_claim_and_counts_it_in_use() -> None:
    result = plan(SPEC, "h1", [pod("a"), pod("b", claimed=True)], NOW)
    assert (result.create, result.delete, result.ready, result.in_use) == (1, [], 1, 1)


def test_plan_never_deletes_a_pod_its_session_adopted() -> None:
    old = NOW - timedelta(days=1)
    claimed = pod("a", claimed=True, template_hash="old", created_at=old, ended=True, adopted=True)
    assert plan(SPEC, "h1", [claimed], NOW).delete == []


def test_plan_replaces_old_template_aged_and_ended_pods() -> None:
    pods = [
        pod("old", template_hash="h0"),
        pod("aged", created_at=NOW - timedelta(seconds=600)),
        pod("ended", ended=True),
        pod("good"),
    ]
    result = plan(SPEC, "h1", pods, NOW)
    assert sorted(result.delete) == ["aged", "ended", "old"]
    assert (result.create, result.ready) == (1, 1)


def test_plan_ignores_terminating_pods() -> None:
    result = plan(SPEC, "h1", [pod("a", terminating=True)], NOW)
    assert (result.create, result.delete) == (2, [])


def test_plan_scales_down_starting_pods_first() -> None:
    older = NOW - timedelta(seconds=60)
    pods = [pod("r1", created_at=older), pod("s1", ready=False), pod("r2"), pod("s2", ready=False)]
    result = plan(SPEC.model_copy(update={"replicas": 1}), "h1", pods, NOW)
    assert sorted(result.delete) == ["r1", "s1", "s2"]
    assert result.create == 0


def test_plan_zero_turns_the_pool_off() -> None:
    result = plan(SPEC.model_copy(update={"replicas": 0}), "h1", [pod("a"), pod("b")], NOW)
    assert sorted(result.delete) == ["a", "b"]
    assert result.create == 0


def test_warm_pod_of_reads_the_apiserver_pod() -> None:
    body = {
        "metadata": {
            "name": "warm-python-x",
            "creationTimestamp": "2025-01-01T11:59:00+00:00",
            "labels": {names.LABEL_TEMPLATE_HASH: "h1", names.LABEL_POOL: "python"},
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    warm = warm_pod_of(body)
    assert warm.ready
    assert not warm.claimed
    assert warm.template_hash == "h1"
    body["metadata"]["labels"][names.LABEL_SESSION] = "s"
    assert warm_pod_of(body).claimed


def test_plan_deletes_a_claim_nobody_adopted() -> None:
    long_ago = NOW - timedelta(seconds=120)
    orphan = pod("orphan", claimed=True, claimed_at=long_ago)
    fresh = pod("fresh", claimed=True, claimed_at=NOW - timedelta(seconds=5))
    adopted = pod("adopted", claimed=True, claimed_at=long_ago, adopted=True)
    result = plan(SPEC, "h1", [orphan, fresh, adopted], NOW)
    assert result.delete == ["orphan"]
    assert result.in_use == 2


def warm_candidate(name: str, **fields: Any) -> Any:
    from icee_api.session.warm import WarmCandidate

    values: dict[str, Any] = {
        "pool": "python",
        "language": "python",
        "template_hash": "h1",
        "resource_version": "7",
        "limits": Limits(),
        "ready": True,
        "claimed": False,
        "terminating": False,
    }
    return WarmCandidate(name=name, **(values | fields))


def test_pick_only_ready_unclaimed_current_template_pods_that_fit() -> None:
    from icee_api.session.warm import PoolTemplate, pick

    templates = {"python": PoolTemplate("python", "h1")}
    good = warm_candidate("good")
    others = [
        warm_candidate("old", template_hash="h0"),
        warm_candidate("starting", ready=False),
        warm_candidate("taken", claimed=True),
        warm_candidate("going", terminating=True),
        warm_candidate("ruby", language="ruby"),
        warm_candidate("no-pool", pool="gone"),
        warm_candidate("no-limits", limits=None),
    ]
    assert pick([good, *others], templates, "python", Limits()) == [good]
    assert pick([good], templates, "python", Limits(pids=4)) == [good]
    assert pick([good], templates, "python", Limits(memory_bytes=64 * MiB)) == []
    assert pick([good], {"python": PoolTemplate("python", "")}, "python", Limits()) == []


def test_the_api_keys_a_claimed_warm_pod_by_its_session() -> None:
    from icee_api.session.watches import _pod_session

    session = "0b7c1f8e-3c1d-4e6a-9b2f-5d8e7a6c4b3a"
    warm = {"metadata": {"name": "warm-python-1", "labels": {names.LABEL_POOL: "python"}}}
    assert _pod_session(warm) is None
    warm["metadata"]["labels"][names.LABEL_SESSION] = session
    assert _pod_session(warm) == session
    assert _pod_session({"metadata": {"name": f"run-{session}"}}) == session
