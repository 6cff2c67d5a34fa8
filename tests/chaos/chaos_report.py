"""Figures the chaos rounds collect, printed at the end of the run (and kept in
artifacts/chaos.txt) for the closing note."""

from __future__ import annotations

from pathlib import Path

_LINES: list[str] = []
ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "chaos.txt"


def reset() -> None:
    _LINES.clear()
    ARTIFACT.unlink(missing_ok=True)


def add(line: str) -> None:
    _LINES.append(line)
    ARTIFACT.parent.mkdir(exist_ok=True)
    with ARTIFACT.open("a") as out:
        out.write(line + "\n")


def lines() -> list[str]:
    return list(_LINES)
