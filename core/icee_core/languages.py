"""The language registry: which languages icee serves and how to build and run each.

It is configuration (a YAML file, see languages.yaml next to this module), so adding
a language needs no code change. The file is validated as a whole at load time; a
bad entry fails start-up with a message naming the entry and the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
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
