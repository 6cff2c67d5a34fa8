"""The runner's request built from a CodeSession spec and the language registry."""

from icee_api.run_request import build_request
from icee_core import runner_protocol as rp
from icee_core.languages import load_registry
from icee_core.models import CodeSessionSpec, Limits

LANGUAGES = load_registry()


def test_code_is_one_file_named_by_the_language() -> None:
    spec = CodeSessionSpec(language="java", code="class Main {}")
    req = build_request(spec, LANGUAGES.get("java"))
    assert req.files == (rp.SourceFile("Main.java", b"class Main {}"),)
    assert req.compile == "javac $ICEE_JAVAC_FLAGS -d . Main.java"
    assert req.run == "exec java $ICEE_JVM_FLAGS -cp . Main"
    assert (req.pids, req.tty) == (32, None)


def test_tty_sessions_get_their_terminal_size() -> None:
    spec = CodeSessionSpec(language="python", code="1", tty=True, cols=120)
    req = build_request(spec, LANGUAGES.get("python"))
    assert req.tty == rp.TerminalSize(120, 24)
    assert req.compile is None
    assert rp.request(req).endswith(b"T 16\ncols=120 rows=24\nG 0\n\n")


def test_the_runner_always_has_room_for_the_program() -> None:
    spec = CodeSessionSpec(language="python", code="1", limits=Limits(pids=1))
    assert build_request(spec, LANGUAGES.get("python")).pids == 2
