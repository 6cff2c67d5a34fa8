"""A session's source files: safe names, bounded size, and which one is the main file.

`POST /session` takes either `code` (one file, named by the language) or
`files: [{"name", "content", "main"?}]`. Both end up as a `Sources`: the files
to write into /workspace and the main file's name, which the language's compile
and run commands receive (`Language.commands`). Every check raises
`SourceFileError` (a ValueError) whose message names the offending file; the api
answers 422 with it.

Names are plain relative paths in normal form: ASCII letters, digits and
`._+-` in each part, parts separated by single `/`, no part `.` or `..` or
starting with `-`, at most 255 bytes. So a name is also a safe shell word: the
commands use it unquoted. There are no links: an entry is a regular file and the
runner refuses to write through one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, field_validator

from icee_core.languages import Language

MAX_FILES = 32
MAX_NAME_BYTES = 255
# The same bound as models.CODE_MAX_BYTES: the total of all files' contents.
MAX_TOTAL_BYTES = 64 * 1024

_PART = re.compile(r"[A-Za-z0-9_.+][A-Za-z0-9_.+-]*")


class SourceFileError(ValueError):
    """A file of the request cannot be used; `name` is the offending file (or None)."""

    def __init__(self, name: str | None, problem: str) -> None:
        super().__init__(f"file {name!r}: {problem}" if name is not None else problem)
        self.name = name
        self.problem = problem


class SourceEntry(BaseModel):
    """One entry of the request's `files`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    content: str
    main: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_file_name(name)


@dataclass(frozen=True, slots=True)
class Sources:
    """The files to write (in request order) and the main file's name."""

    files: tuple[SourceEntry, ...]
    main: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)


def check_file_name(name: str) -> str:
    """Return name if it is a safe relative path in normal form, else raise."""
    if not name:
        raise SourceFileError(name, "the name is empty")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise SourceFileError(name, f"the name is longer than {MAX_NAME_BYTES} bytes")
    if name.startswith("/"):
        raise SourceFileError(name, "absolute names are not accepted; give a relative path")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise SourceFileError(
                name, "not a normal relative path (no empty, '.' or '..' parts, no trailing '/')"
            )
        if not _PART.fullmatch(part):
            raise SourceFileError(
                name,
                "each part of a name is ASCII letters, digits and '._+-', not starting with '-'",
            )
    return name


def check_files(files: Sequence[SourceEntry]) -> tuple[SourceEntry, ...]:
    """Count, total size, duplicates, a file that is also a directory, at most one main."""
    if not files:
        raise SourceFileError(None, "files is empty; give at least one file")
    if len(files) > MAX_FILES:
        raise SourceFileError(None, f"{len(files)} files; at most {MAX_FILES} are accepted")
    total = 0
    seen: set[str] = set()
    dirs: set[str] = set()
    mains: list[str] = []
    for f in files:
        check_file_name(f.name)
        if f.name in seen:
            raise SourceFileError(f.name, "given twice")
        if f.name in dirs:
            raise SourceFileError(f.name, "is also a directory of another file")
        parts = f.name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d in seen:
                raise SourceFileError(d, f"is a file and also the directory of {f.name!r}")
            dirs.add(d)
        seen.add(f.name)
        total += len(f.content.encode("utf-8"))
        if total > MAX_TOTAL_BYTES:
            raise SourceFileError(
                f.name, f"the files total more than {MAX_TOTAL_BYTES} bytes with this one"
            )
        if f.main:
            mains.append(f.name)
    if len(mains) > 1:
        raise SourceFileError(mains[1], f"marked main, but so is {mains[0]!r}; mark one")
    if not any(f.content.strip() for f in files):
        raise SourceFileError(None, "every file is empty")
    return tuple(files)


def main_file_name(language: Language, content: str) -> str:
    """The main file's name for this content: the language's rule, else its fileName."""
    derived = language.main_file_from.derive(content) if language.main_file_from else None
    return derived or language.file_name


def pick_main(language: Language, files: Sequence[SourceEntry]) -> str:
    """The marked file; else the one the language's rule names after its own content;
    else the language's fileName; else the only file."""
    for f in files:
        if f.main:
            return f.name
    rule = language.main_file_from
    if rule is not None:
        named = [f.name for f in files if rule.derive(f.content) == f.name.rsplit("/", 1)[-1]]
        if len(named) == 1:
            return named[0]
    names = [f.name for f in files]
    if language.file_name in names:
        return language.file_name
    if len(files) == 1:
        return files[0].name
    raise SourceFileError(
        None,
        f"which of the {len(files)} files is the main one? "
        f'mark it with "main": true or name it {language.file_name}',
    )


def resolve_sources(
    language: Language, *, code: str | None = None, files: Sequence[SourceEntry] | None = None
) -> Sources:
    """Sources from exactly one of `code` (the one-file shorthand) and `files`."""
    if (code is None) == (files is None):
        raise SourceFileError(None, "give either code or files")
    if code is not None:
        name = main_file_name(language, code)
        return Sources((SourceEntry(name=name, content=code, main=True),), name)
    assert files is not None
    checked = check_files(files)
    return Sources(checked, pick_main(language, checked))
