"""The runner's request for one session: its files and commands (docs/runner.md).

Pure: built from the CodeSession spec and the language registry when the stream
opens, encoded once, sent right after attach.
"""

from __future__ import annotations

from icee_core import runner_protocol as rp
from icee_core.languages import Language
from icee_core.models import DEFAULT_COLS, DEFAULT_ROWS, CodeSessionSpec
from icee_core.sources import resolve_sources


def build_request(spec: CodeSessionSpec, language: Language) -> rp.RunRequest:
    """The files (``code`` is one file, named by the language's rule or its fileName)
    and the registry's commands for them. Raises SourceFileError (a ValueError)."""
    sources = resolve_sources(language, code=spec.code, files=spec.files)
    commands = language.commands(sources.main, sources.names)
    files = tuple(rp.SourceFile(f.name, f.content.encode("utf-8")) for f in sources.files)
    tty = None
    if spec.tty:
        tty = rp.TerminalSize(spec.cols or DEFAULT_COLS, spec.rows or DEFAULT_ROWS)
    return rp.RunRequest(
        files=files,
        compile=commands.compile,
        # The runner runs `/bin/sh -c <cmd>`; exec makes the language's command the
        # program itself (its process group gets the signals, its exit is the stage's).
        run=f"exec {commands.run}",
        # The runner counts itself among the session's tasks and needs room for one more.
        pids=max(spec.limits.pids, 2),
        tty=tty,
        # One byte past the limit, so the api still sees it exceeded; the runner drops
        # the rest rather than flood the node's container log.
        output=spec.limits.output_bytes + 1,
    )
