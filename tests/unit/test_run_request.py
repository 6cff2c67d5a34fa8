"""The runner's request built from a CodeSession spec and the language registry."""

from icee_api.session.run_request import build_request
from icee_api.session.streaming import Opening
from icee_core import runner_protocol as rp
from icee_core.languages import load_registry
from icee_core.models import CodeSessionSpec, Limits
from icee_core.sources import SourceEntry

LANGUAGES = load_registry()


def test_code_is_one_file_named_by_the_language() -> None:
    spec = CodeSessionSpec(language="python", code="print(1)")
    req = build_request(spec, LANGUAGES.get("python"))
    assert req.files == (rp.SourceFile("main.py", b"print(1)"),)
    assert (req.compile, req.run) == (None, "exec python3 -u main.py")
    assert (req.pids, req.tty) == (32, None)


SOLUTION = "public class Solution {\n  public static void main(String[] a) {}\n}\n"


def test_java_code_is_named_after_its_public_class() -> None:
    spec = CodeSessionSpec(language="java", code=SOLUTION)
    req = build_request(spec, LANGUAGES.get("java"))
    assert req.files == (rp.SourceFile("Solution.java", SOLUTION.encode()),)
    assert req.compile is not None
    assert req.compile.endswith("Solution.java")
    assert req.run.endswith(" Solution")


def test_files_are_sent_with_the_main_one_in_the_commands() -> None:
    files = (
        SourceEntry(name="util.py", content="X = 1\n"),
        SourceEntry(name="app.py", content="import util\n", main=True),
    )
    spec = CodeSessionSpec(language="python", files=files)
    req = build_request(spec, LANGUAGES.get("python"))
    assert req.files == (
        rp.SourceFile("util.py", b"X = 1\n"),
        rp.SourceFile("app.py", b"import util\n"),
    )
    assert req.run == "exec python3 -u app.py"


def test_tty_sessions_get_their_terminal_size() -> None:
    spec = CodeSessionSpec(language="python", code="1", tty=True, cols=120)
    req = build_request(spec, LANGUAGES.get("python"))
    assert req.tty == rp.TerminalSize(120, 24)
    assert req.compile is None
    assert rp.request(req).endswith(b"T 16\ncols=120 rows=24\nG 0\n\n")


def test_the_runner_always_has_room_for_the_program() -> None:
    spec = CodeSessionSpec(language="python", code="1", limits=Limits(pids=1))
    assert build_request(spec, LANGUAGES.get("python")).pids == 2


def test_the_runner_relays_one_byte_past_the_output_limit() -> None:
    spec = CodeSessionSpec(language="python", code="1", limits=Limits(output_bytes=1000))
    assert build_request(spec, LANGUAGES.get("python")).output == 1001


def test_a_stream_opens_with_the_encoded_request() -> None:
    obj = {
        "spec": {"language": "python", "code": "print(1)", "tty": True, "cols": 90, "rows": 20},
        "status": {"phase": "Running"},
    }
    opening = Opening.of(obj, LANGUAGES)
    assert opening.tty
    assert opening.outcome is None
    assert opening.request is not None
    assert opening.request.startswith(b"F 16\nmain.py\0print(1)\n")
    assert opening.request.endswith(b"T 15\ncols=90 rows=20\nG 0\n\n")


def test_a_spec_that_cannot_run_here_opens_without_a_request() -> None:
    # A hand-made CodeSession: the operator ends it as InvalidSpec; the stream says so.
    for spec in ({"language": "cobol", "code": "x"}, {"language": "python"}):
        assert Opening.of({"spec": spec}, LANGUAGES).request is None
