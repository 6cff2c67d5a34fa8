"""The runner's request for one session: its files and commands (docs/runner.md).

Pure: built from the CodeSession spec and the language registry when the stream
opens, encoded once, sent right after attach.
"""

from __future__ import annotations

from icee_core import runner_protocol as rp
from icee_core.languages import Language
from icee_core.models import DEFAULT_COLS, DEFAULT_ROWS, CodeSessionSpec


def build_request(spec: CodeSessionSpec, language: Language) -> rp.RunRequest:
    """``code`` is one file named by the language; the commands are the registry's."""
    files = (rp.SourceFile(language.file_name, spec.code.encode("utf-8")),)
    tty = None
    if spec.tty:
        tty = rp.TerminalSize(spec.cols or DEFAULT_COLS, spec.rows or DEFAULT_ROWS)
    return rp.RunRequest(
        files=files,
        compile=language.compile,
        # The runner runs `/bin/sh -c <cmd>`; exec makes the language's command the
        # program itself (its process group gets the signals, its exit is the stage's).
        run=f"exec {language.run}",
        # The runner counts itself among the session's tasks and needs room for one more.
        pids=max(spec.limits.pids, 2),
        tty=tty,
    )
