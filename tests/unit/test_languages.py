"""The language registry: the shipped file, and clear errors for bad files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from icee_api.session.run_request import build_request
from icee_core.languages import (
    Language,
    LanguageConfigError,
    UnknownLanguageError,
    load_registry,
    parse_registry,
)
from icee_core.models import CodeSessionSpec

MINIMAL = """
languages:
  - id: python
    displayName: Python
    version: "3.11"
    image: icee/sandbox-python:3.11
    fileName: main.py
    run: python3 -u main.py
"""


def test_shipped_registry_serves_the_spec_languages() -> None:
    registry = load_registry()
    assert registry.ids == ["python", "javascript", "java", "cpp", "ruby"]
    assert [(lang.display_name, lang.version, lang.image) for lang in registry] == [
        ("Python", "3.11", "icee/sandbox-python:3.11"),
        ("JavaScript (Node.js)", "20", "icee/sandbox-node:20"),
        ("Java (OpenJDK)", "21", "icee/sandbox-java:21"),
        ("C++ (GCC)", "14 (C++20)", "icee/sandbox-cpp:14"),
        # The fifth: only this entry and cluster/images/ruby.recipe.
        ("Ruby", "3.3", "icee/sandbox-ruby:3.3"),
    ]


def test_shipped_commands_do_not_buffer_prompts() -> None:
    registry = load_registry()
    assert registry.get("python").commands().run == "python3 -u main.py"
    assert registry.get("cpp").run.startswith("stdbuf -oL ")
    # Ruby buffers stdout itself; the run command makes it synchronous first.
    assert "$stdout.sync = $stderr.sync = true" in registry.get("ruby").run


def test_every_shipped_image_has_a_recipe() -> None:
    recipes = Path(__file__).resolve().parents[2] / "cluster" / "images"
    built = {
        line.removeprefix("IMAGE=")
        for recipe in recipes.glob("*.recipe")
        for line in recipe.read_text().splitlines()
        if line.startswith("IMAGE=")
    }
    assert {lang.image for lang in load_registry()} <= built


@pytest.mark.parametrize("language", load_registry().ids)
def test_shipped_commands_are_valid_sh(language: str) -> None:
    # The runner runs each stage's command as `/bin/sh -c <cmd>` (quotes and all).
    spec = CodeSessionSpec(language=language, code="x")
    request = build_request(spec, load_registry().get(language))
    for command in (request.compile, request.run):
        if command is not None:
            checked = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stderr


def test_shipped_compiled_languages_compile() -> None:
    registry = load_registry()
    assert registry.get("python").commands().compile is None
    assert registry.get("javascript").commands().compile is None
    assert registry.get("java").commands().compile == "javac $ICEE_JAVAC_FLAGS -d . Main.java"
    assert registry.get("java").commands().run.endswith(" -cp . Main")
    assert registry.get("cpp").commands().compile == "g++ -std=c++20 -O1 -pipe -o main main.cpp"


def test_java_is_tuned_to_fit_the_sandbox() -> None:
    flags = load_registry().get("java").env["ICEE_JVM_FLAGS"].split()
    for flag in ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:CICompilerCount=1"):
        assert flag in flags
    assert "-Xmx96m" in flags


def test_minimal_entry_gets_defaults() -> None:
    registry = parse_registry(MINIMAL)
    assert registry.get("python") == Language(
        id="python",
        display_name="Python",
        version="3.11",
        image="icee/sandbox-python:3.11",
        file_name="main.py",
        compile=None,
        run="python3 -u main.py",
        env={},
    )
    assert "python" in registry
    assert len(registry) == 1


def test_unknown_language_names_the_known_ones() -> None:
    registry = parse_registry(MINIMAL)
    with pytest.raises(UnknownLanguageError) as caught:
        registry.get("cobol")
    assert str(caught.value) == "unknown language 'cobol'; one of: python"
    assert isinstance(caught.value, KeyError)


def test_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "languages.yaml"
    path.write_text(MINIMAL)
    assert load_registry(path).ids == ["python"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(LanguageConfigError, match=rf"^{path}: cannot read: No such file"):
        load_registry(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("languages: [", r"^<string>: not valid YAML"),
        ("", r"^<string>: expected a mapping with a non-empty 'languages' list"),
        ("languages: []", r"languages: List should have at least 1 item"),
        ("langs: []", r"langs: Extra inputs are not permitted"),
        (
            MINIMAL.replace('    version: "3.11"\n', ""),
            r"^<string>: entry 1 \('python'\): version: Field required$",
        ),
        (
            MINIMAL.replace("fileName: main.py", "fileName: ../main.py"),
            r"^<string>: entry 1 \('python'\): fileName: String should match pattern",
        ),
        (
            MINIMAL.replace("run: python3", "run: exec python3"),
            r"entry 1 \('python'\): run: Value error, must not start with 'exec'",
        ),
        (
            MINIMAL.replace("id: python", "id: Python"),
            r"entry 1 \('Python'\): id: String should match pattern",
        ),
        (
            MINIMAL + "    env: {'A-B': x}\n",
            r"entry 1 \('python'\): env: Value error, not an environment variable name: 'A-B'",
        ),
        (
            MINIMAL + "    jvmFlags: -Xmx1g\n",
            r"entry 1 \('python'\): jvmFlags: Extra inputs are not permitted",
        ),
        (
            MINIMAL + MINIMAL.replace("languages:\n", ""),
            r"^<string>: language 'python' is defined twice$",
        ),
        (
            "languages:\n  - displayName: X\n",
            r"^<string>: entry 1: id: Field required",
        ),
    ],
)
def test_bad_files_fail_with_a_message_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(LanguageConfigError, match=message):
        parse_registry(text)
