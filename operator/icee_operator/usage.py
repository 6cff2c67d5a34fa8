"""What each stage cost, read from the runner's ``x`` frames in an ended pod's log.

The api sees these frames live, but the api never writes status (docs/design.md),
so the operator reads them itself, bounded, once the container has ended: the
log's last lines hold the run stage's ``x`` and the final ``q`` frame; the compile
stage's ``x`` follows the compiler's output, so for a compiled language the start
of the log is read too (up to HEAD_BYTES). The runner runs as the session's uid:
these figures are the session's own report, shown, never used to enforce a limit.
"""

from __future__ import annotations

from icee_core.models import StageUsage, Usage
from icee_core.runner_protocol import Stage, StageEnded, read_tail, stage_ends

from icee_operator.kube import Kube

# x + q frames and a few runner diagnostics; a log line is at most 16 KiB (containerd).
TAIL_LINES = 8
TAIL_MAX_BYTES = 256 << 10
HEAD_BYTES = 64 << 10


def stage_usage(ended: StageEnded) -> StageUsage:
    return StageUsage.model_validate(ended.usage())


def usage_of(tail: bytes, head: bytes | None) -> Usage | None:
    """Pure: the usage in a log's tail (and head, for the compile stage)."""
    last = read_tail(tail).ended
    stages: dict[str, StageUsage] = {}
    if last is not None:
        stages[last.stage.value] = stage_usage(last)
    if head is not None and Stage.COMPILE.value not in stages:
        for ended in stage_ends(head):
            if ended.stage is Stage.COMPILE:
                stages[Stage.COMPILE.value] = stage_usage(ended)
                break
    return Usage.model_validate(stages) if stages else None


async def read_usage(kube: Kube, pod_name: str, compiled: bool) -> Usage | None:
    tail = await kube.read_log(pod_name, TAIL_MAX_BYTES, tail_lines=TAIL_LINES)
    head = None
    if compiled and read_tail(tail).result is not None:
        ended = read_tail(tail).ended
        if ended is None or ended.stage is not Stage.COMPILE:
            head = await kube.read_log(pod_name, HEAD_BYTES, limit_bytes=HEAD_BYTES)
    return usage_of(tail, head)
