"""The language registry: which languages icee serves and how to build and run each.

It is configuration (a YAML file, see languages.yaml next to this module), so adding
a language needs no code change. The file is validated as a whole at load time; a
bad entry fails start-up with a message naming the entry and the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

# The registry shipped with icee_core (python, javascript, java, cpp).
DEFAULT_LANGUAGES_FILE = Path(__file__).with_name("languages.yaml")


class LanguageConfigError(ValueError):
    """The languages file cannot be used; the message says where and why."""


class UnknownLanguageError(KeyError):
    def __init__(self, language_id: str, known: list[str]) -> None:
        super().__init__(language_id)
        self.language_id = language_id
        self.known = known

    def __str__(self) -> str:
        return f"unknown language {self.language_id!r}; one of: {', '.join(self.known)}"


_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
# What the compile and run commands may refer to (see Language.commands); `${X}` is
# the shell's, not ours.
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z][A-Za-z0-9]*)\}")
PLACEHOLDERS = ("main", "mainStem", "sources")


class MainFileRule(BaseModel):
    """Name the main file after its content, e.g. Java's public class with `main`.

    `pattern` (a regular expression, multi-line) is searched in the file; `template`
    builds the name from its groups (`{1}`, `{2}`, ...). With `mustContain`, the
    content must also match that expression. No match, or a name that is not a
    plain file name: the rule does not apply.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    pattern: str = Field(min_length=1)
    template: str = Field(min_length=1)
    must_contain: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _compiles(self) -> MainFileRule:
        for label, expr in (("pattern", self.pattern), ("mustContain", self.must_contain)):
            if expr is not None:
                try:
                    re.compile(expr, re.MULTILINE)
                except re.error as error:
                    raise ValueError(f"{label} is not a regular expression: {error}") from None
        groups = re.compile(self.pattern, re.MULTILINE).groups
        used = [int(n) for n in re.findall(r"\{([0-9]+)\}", self.template)]
        if not used:
            raise ValueError("template uses no group of the pattern ({1}, ...)")
        if max(used) > groups or min(used) < 1:
            raise ValueError(f"template refers to a group the pattern lacks (it has {groups})")
        return self

    def derive(self, content: str) -> str | None:
        """The file name this content asks for, or None if the rule does not apply."""
        if self.must_contain and not re.search(self.must_contain, content, re.MULTILINE):
            return None
        match = re.search(self.pattern, content, re.MULTILINE)
        if match is None:
            return None
        name = self.template
        for index, group in enumerate(match.groups(), start=1):
            name = name.replace(f"{{{index}}}", group or "")
        return name if _FILE_NAME.fullmatch(name) and len(name) <= 255 else None


@dataclass(frozen=True, slots=True)
class StageCommands:
    """A session's compile (or None) and run commands, placeholders filled in."""

    compile: str | None
    run: str


class Language(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    id: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    display_name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    image: str = Field(min_length=1, pattern=r"^\S+$")
    # A ConfigMap key and a plain file name in /workspace.
    file_name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    compile: str | None = Field(default=None, min_length=1)
    run: str = Field(min_length=1)
    env: dict[str, str] = {}
    # Optional: a command a warm pod runs once before its runner waits for a request
    # (no input, output discarded), so the first program finds the toolchain loaded.
    warmup: str | None = Field(default=None, min_length=1)
    # Optional: name the main file after its content (Java: its public class).
    main_file_from: MainFileRule | None = None

    def commands(self, main: str | None = None, names: Sequence[str] = ()) -> StageCommands:
        """compile and run for a session whose main file is `main` (default: fileName).

        Placeholders: `{main}` the main file's name, `{mainStem}` that name without its
        extension (Java's class), `{sources}` every file (of `names`, else the main one)
        with the main file's extension, separated by spaces. Names are shell-safe (see
        icee_core.sources), so they go in unquoted.
        """
        main = main or self.file_name
        base = main.rsplit("/", 1)[-1]
        stem = main[: len(main) - len(base)] + (base.rsplit(".", 1)[0] if "." in base else base)
        ext = base.rsplit(".", 1)[1] if "." in base else None
        same = [n for n in names if ext is not None and n.rsplit("/", 1)[-1].endswith(f".{ext}")]
        sources = " ".join(same or [main])

        def fill(cmd: str) -> str:
            return (
                cmd.replace("{mainStem}", stem)
                .replace("{main}", main)
                .replace("{sources}", sources)
            )

        return StageCommands(self.compile and fill(self.compile), fill(self.run))

    @field_validator("compile", "run")
    @classmethod
    def _placeholders(cls, cmd: str | None) -> str | None:
        for name in _PLACEHOLDER.findall(cmd or ""):
            if name not in PLACEHOLDERS:
                raise ValueError(
                    f"unknown placeholder {{{name}}}; one of: "
                    + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                )
        return cmd

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not name.isidentifier() or not name.isascii():
                raise ValueError(f"not an environment variable name: {name!r}")
        return env

    @field_validator("run")
    @classmethod
    def _run_is_exec_able(cls, run: str) -> str:
        # The sandbox runs `exec <run>`; a leading `exec` would be exec'd as a program.
        if run.split()[0] == "exec":
            raise ValueError("must not start with 'exec' (the sandbox adds it)")
        return run


class _LanguagesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[dict[str, Any]] = Field(min_length=1)


class LanguageRegistry:
    """Languages by id, in file order."""

    def __init__(self, languages: list[Language]) -> None:
        self._by_id: dict[str, Language] = {}
        for language in languages:
            if language.id in self._by_id:
                raise LanguageConfigError(f"language {language.id!r} is defined twice")
            self._by_id[language.id] = language

    def get(self, language_id: str) -> Language:
        try:
            return self._by_id[language_id]
        except KeyError:
            raise UnknownLanguageError(language_id, self.ids) from None

    def __contains__(self, language_id: object) -> bool:
        return language_id in self._by_id

    def __iter__(self) -> Iterator[Language]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)


def parse_registry(text: str, source: str = "<string>") -> LanguageRegistry:
    """Build a registry from YAML text; `source` names the file in error messages."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LanguageConfigError(f"{source}: not valid YAML: {error}") from None
    try:
        entries = _LanguagesFile.model_validate(document).languages
    except ValidationError as error:
        raise LanguageConfigError(
            f"{source}: expected a mapping with a non-empty 'languages' list: "
            f"{_first_problem(error)}"
        ) from None
    languages = []
    for index, entry in enumerate(entries):
        label = f"entry {index + 1}" + (f" ({entry['id']!r})" if "id" in entry else "")
        try:
            languages.append(Language.model_validate(entry))
        except ValidationError as error:
            raise LanguageConfigError(f"{source}: {label}: {_first_problem(error)}") from None
    try:
        return LanguageRegistry(languages)
    except LanguageConfigError as error:
        raise LanguageConfigError(f"{source}: {error}") from None


def load_registry(path: Path | None = None) -> LanguageRegistry:
    """Load the registry from `path`, or the default file shipped with icee_core."""
    if path is None:
        path = DEFAULT_LANGUAGES_FILE
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise LanguageConfigError(f"{path}: cannot read: {error.strerror}") from None
    return parse_registry(text, source=str(path))


def _first_problem(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)
