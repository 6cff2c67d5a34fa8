"""The session's status state machine: which moves are allowed, and the next status.

    (none) -> Pending -> Running -> Finished | Terminated
       \\________\\___________________^

A session only moves forward; an ended one never changes again, so whichever of
"the program ended" and "termination was requested" is written first wins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from icee_core.models import CodeSessionStatus, Condition, Phase

from icee_operator.observation import Observation

_RANK: dict[Phase | None, int] = {
    None: 0,
    Phase.PENDING: 1,
    Phase.RUNNING: 2,
    Phase.FINISHED: 3,
    Phase.TERMINATED: 3,
}


def is_allowed(current: Phase | None, target: Phase) -> bool:
    if current in (Phase.FINISHED, Phase.TERMINATED):
        return False
    return _RANK[target] >= _RANK[current]


def next_status(
    current: CodeSessionStatus, observed: Observation, now: datetime
) -> CodeSessionStatus | None:
    """The status after `observed`, or None when it changes nothing or is not allowed."""
    if not is_allowed(current.phase, observed.phase):
        return None
    update: dict[str, Any] = {
        field: value
        for field, value in (
            ("phase", observed.phase),
            ("reason", observed.reason),
            ("exit_code", observed.exit_code),
            ("message", observed.message),
            ("pod_name", observed.pod_name),
            ("started_at", current.started_at or observed.started_at),
            ("finished_at", observed.finished_at),
            ("usage", observed.usage),
        )
        if value is not None
    }
    if observed.phase is Phase.RUNNING and "started_at" not in update:
        update["started_at"] = now
    if observed.phase in (Phase.FINISHED, Phase.TERMINATED) and "finished_at" not in update:
        update["finished_at"] = now
    candidate = current.model_copy(update=update)
    candidate = candidate.model_copy(update={"conditions": _conditions(current, candidate, now)})
    return None if candidate == current else candidate


def _conditions(
    before: CodeSessionStatus, after: CodeSessionStatus, now: datetime
) -> list[Condition]:
    """`Started` once the program runs, `Ended` once it is over (with the reason)."""
    by_type = {condition.type: condition for condition in before.conditions}
    if after.phase in (Phase.RUNNING, Phase.FINISHED, Phase.TERMINATED) and after.started_at:
        by_type.setdefault(
            "Started", Condition(type="Started", status="True", last_transition_time=now)
        )
    if after.is_final and "Ended" not in by_type:
        by_type["Ended"] = Condition(
            type="Ended",
            status="True",
            reason=str(after.reason) if after.reason else None,
            message=after.message,
            last_transition_time=now,
        )
    return list(by_type.values())
