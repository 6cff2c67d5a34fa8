"""A session's source files (icee_core.sources) and the languages' main-file rules."""

from __future__ import annotations

import random
import shlex
import shutil
from pathlib import Path

import pytest
from icee_core.languages import LanguageConfigError, load_registry, parse_registry
from icee_core.models import CODE_MAX_BYTES
from icee_core.sources import (
    MAX_FILES,
    MAX_TOTAL_BYTES,
    SourceEntry,
    SourceFileError,
    check_file_name,
    check_files,
    resolve_sources,
)
from pydantic import ValidationError

REGISTRY = load_registry()
JAVA = REGISTRY.get("java")
PYTHON = REGISTRY.get("python")
CPP = REGISTRY.get("cpp")


def entry(name: str, content: str = "x", main: bool = False) -> SourceEntry:
    return SourceEntry.model_construct(name=name, content=content, main=main)


# ---------- names ----------


@pytest.mark.parametrize(
    "name", ["main.py", "pkg/mod.py", "a/b/c.txt", "Main.java", "x+y.cpp", "_a", ".env", "..."]
)
def test_plain_relative_names_are_accepted(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x.py", "'..'"),
        ("a/../b.py", "'..'"),
        ("a//b.py", "empty"),
        ("./a.py", "'.'"),
        ("a/", "trailing"),
        ("a b.py", "ASCII"),
        ("-rf", "'-'"),
        ("a/-x.py", "'-'"),
        ("é.py", "ASCII"),
        ("a\\b.py", "ASCII"),
        ("a;rm -rf x", "ASCII"),
        ("$(id).py", "ASCII"),
        ("a\nb", "ASCII"),
        ("a\0b", "ASCII"),
        ("x" * 256, "255 bytes"),
    ],
)
def test_unsafe_names_are_refused_naming_the_file(name: str, says: str) -> None:
    with pytest.raises(SourceFileError) as caught:
        check_file_name(name)
    assert caught.value.name == name
    assert repr(name) in str(caught.value)
    assert says in str(caught.value)


def test_every_accepted_name_is_a_plain_shell_word() -> None:
    rng = random.Random(7)
    alphabet = "ab._-+/ $;'\"\\`*?~é\n"
    accepted = 0
    for _ in range(5000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        try:
            check_file_name(name)
        except SourceFileError:
            continue
        accepted += 1
        assert shlex.quote(name) == name
    assert accepted > 100


def test_the_request_model_refuses_a_bad_name_with_its_name() -> None:
    with pytest.raises(ValidationError, match=r"'\.\./evil\.py'"):
        SourceEntry.model_validate({"name": "../evil.py", "content": "x"})
    with pytest.raises(ValidationError):
        SourceEntry.model_validate({"name": "a.py", "content": "x", "mode": "0777"})


# ---------- the set of files ----------


def test_total_size_is_the_code_limit() -> None:
    assert MAX_TOTAL_BYTES == CODE_MAX_BYTES


def test_too_many_files() -> None:
    files = [entry(f"f{i}.py") for i in range(MAX_FILES + 1)]
    with pytest.raises(SourceFileError, match=f"at most {MAX_FILES}"):
        check_files(files)
    assert len(check_files(files[:MAX_FILES])) == MAX_FILES


def test_total_size_names_the_file_that_crosses_it() -> None:
    half = "x" * (MAX_TOTAL_BYTES // 2)
    with pytest.raises(SourceFileError) as caught:
        check_files([entry("a.py", half), entry("b.py", half), entry("c.py", "y")])
    assert caught.value.name == "c.py"
    # Multi-byte characters count as bytes.
    with pytest.raises(SourceFileError):
        check_files([entry("a.py", "é" * (MAX_TOTAL_BYTES // 2 + 1))])


@pytest.mark.parametrize(
    ("names", "bad"),
    [
        (["a.py", "a.py"], "a.py"),
        (["a", "a/b.py"], "a"),
        (["a/b.py", "a"], "a"),
        (["x/y/z.py", "x/y"], "x/y"),
    ],
)
def test_duplicates_and_file_directory_clashes(names: list[str], bad: str) -> None:
    with pytest.raises(SourceFileError) as caught:
        check_files([entry(n) for n in names])
    assert caught.value.name == bad


def test_one_main_at_most_and_not_all_empty() -> None:
    with pytest.raises(SourceFileError, match="mark one") as caught:
        check_files([entry("a.py", main=True), entry("b.py", main=True)])
    assert caught.value.name == "b.py"
    with pytest.raises(SourceFileError, match="empty"):
        check_files([entry("a.py", " \n"), entry("b.py", "")])
    with pytest.raises(SourceFileError, match="empty"):
        check_files([])


def test_names_are_checked_again_in_check_files() -> None:
    # model_construct skips validation: check_files does not trust it.
    with pytest.raises(SourceFileError):
        check_files([entry("/etc/passwd")])


# ---------- the main file ----------

HUNDRED_DOORS = """\
import java.util.*;

/** The 100 doors puzzle. */
public class HundredDoors {
    public static void main(String[] args) {
        System.out.println("open");
    }
}
"""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (HUNDRED_DOORS, "HundredDoors.java"),
        (
            "public final class FizzBuzz {\n public static void main(String[] a) {}\n}",
            "FizzBuzz.java",
        ),
        (
            "public record Point(int x) {\n  public static void main(String... a) {}\n}",
            "Point.java",
        ),
        (
            '@SuppressWarnings("x")\npublic class Sum2 { static public void main(String[] a){} }',
            "Sum2.java",
        ),
        ("class Hidden { public static void main(String[] a) {} }", "Main.java"),
        ("public class Helper { int x; }", "Main.java"),
        ("public class $Weird { public static void main(String[] a) {} }", "Main.java"),
    ],
)
def test_java_code_is_named_after_its_public_class_with_main(source: str, expected: str) -> None:
    sources = resolve_sources(JAVA, code=source)
    assert sources.main == expected
    assert sources.names == (expected,)
    stem = expected.removesuffix(".java")
    cmds = JAVA.commands(sources.main, sources.names)
    assert cmds.compile is not None
    assert cmds.compile.endswith(f" -d . {expected}")
    assert cmds.run.endswith(f" -cp . {stem}")


def test_other_languages_use_their_file_name_for_code() -> None:
    for language in REGISTRY:
        if language.main_file_from is None:
            sources = resolve_sources(language, code="print(1)")
            assert sources.main == language.file_name
            assert language.commands(sources.main, sources.names) == language.commands()


def test_files_main_marked() -> None:
    files = [entry("app.py", "import util"), entry("util.py", "x = 1", main=False)]
    files[0] = entry("app.py", "import util", main=True)
    sources = resolve_sources(PYTHON, files=files)
    assert sources.main == "app.py"
    assert PYTHON.commands(sources.main).run == "python3 -u app.py"


def test_files_main_by_the_languages_file_name() -> None:
    sources = resolve_sources(PYTHON, files=[entry("util.py"), entry("main.py")])
    assert sources.main == "main.py"
    assert sources.names == ("util.py", "main.py")


def test_files_single_file_is_the_main_one() -> None:
    assert resolve_sources(PYTHON, files=[entry("app.py")]).main == "app.py"


def test_files_without_a_main_are_refused_saying_how() -> None:
    with pytest.raises(SourceFileError, match=r'"main": true or name it main\.py'):
        resolve_sources(PYTHON, files=[entry("a.py"), entry("b.py")])


def test_java_files_main_is_the_class_with_main() -> None:
    helper = "public class Helper { static int two() { return 2; } }"
    solution = "public class Solution {\n  public static void main(String[] a) {}\n}"
    files = [entry("Helper.java", helper), entry("Solution.java", solution)]
    sources = resolve_sources(JAVA, files=files)
    assert sources.main == "Solution.java"
    assert JAVA.commands(sources.main, sources.names).run.endswith(" -cp . Solution")


def test_code_or_files_not_both() -> None:
    with pytest.raises(SourceFileError, match="either code or files"):
        resolve_sources(PYTHON, code="x", files=[entry("a.py")])
    with pytest.raises(SourceFileError, match="either code or files"):
        resolve_sources(PYTHON)


def test_cpp_compiles_every_source_with_the_main_files_extension() -> None:
    names = ("main.cpp", "util.cpp", "util.h", "lib/more.cpp")
    cmds = CPP.commands("main.cpp", names)
    assert cmds.compile == "g++ -std=c++20 -O1 -pipe -o main main.cpp util.cpp lib/more.cpp"


# ---------- the registry's rules ----------

BASE = """\
languages:
  - id: java
    displayName: Java
    version: "21"
    image: icee/sandbox-java:21
    fileName: Main.java
    run: java {mainStem}
"""


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("    compile: javac {nope}\n", r"unknown placeholder \{nope\}"),
        ("    mainFileFrom: {pattern: '(', template: '{1}.java'}\n", "not a regular expression"),
        ("    mainFileFrom: {pattern: 'class (\\w+)', template: 'x.java'}\n", "uses no group"),
        ("    mainFileFrom: {pattern: 'class (\\w+)', template: '{2}.java'}\n", "lacks"),
        ("    mainFileFrom: {pattern: 'a(b)', template: '{1}', extra: 1}\n", "Extra inputs"),
    ],
)
def test_bad_rules_fail_at_load(extra: str, says: str) -> None:
    with pytest.raises(LanguageConfigError, match=says):
        parse_registry(BASE + extra)


def test_shell_variables_are_not_placeholders() -> None:
    registry = parse_registry(BASE + "    compile: javac ${FLAGS} {main}\n")
    assert registry.get("java").commands("A.java").compile == "javac ${FLAGS} A.java"


# ---------- through the runner, with the host's toolchains ----------


def _run(tmp_path: Path, language_id: str, files: list[SourceEntry]) -> bytes:
    from runner_harness import Runner, build_runner, request

    build_runner()
    language = REGISTRY.get(language_id)
    sources = resolve_sources(language, files=files)
    cmds = language.commands(sources.main, sources.names)
    req = request(
        f"exec {cmds.run}",
        files=[(f.name, f.content.encode()) for f in sources.files],
        compile_cmd=cmds.compile,
    )
    r = Runner.start(tmp_path, req)
    code = r.finish(timeout=60)
    assert code == 0, (r.output(), r.output("e"), r.stderr())
    return r.output()


def test_two_python_files_import_each_other(tmp_path: Path) -> None:
    files = [
        entry("main.py", "import helper\nprint(helper.greet())\n"),
        entry("helper.py", "def greet():\n    return 'hi'\n"),
    ]
    assert _run(tmp_path, "python", files) == b"hi\n"


@pytest.mark.skipif(shutil.which("javac") is None, reason="no javac on this host")
def test_java_solution_class_and_helper_compile_and_run(tmp_path: Path) -> None:
    files = [
        entry(
            "Solution.java",
            "public class Solution {\n"
            "  public static void main(String[] a) { System.out.println(Helper.two()); }\n"
            "}\n",
        ),
        entry("Helper.java", "public class Helper { static int two() { return 2; } }\n"),
    ]
    assert _run(tmp_path, "java", files) == b"2\n"


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ on this host")
def test_cpp_two_translation_units(tmp_path: Path) -> None:
    files = [
        entry(
            "main.cpp",
            '#include <cstdio>\n#include "util.h"\n'
            'int main() { std::printf("%d\\n", twice(21)); }\n',
        ),
        entry("util.h", "int twice(int);\n"),
        entry("util.cpp", '#include "util.h"\nint twice(int x) { return 2 * x; }\n'),
    ]
    assert _run(tmp_path, "cpp", files) == b"42\n"
