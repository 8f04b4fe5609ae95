"""sqlfiles: cocolake's SQL files, found and read (never applied here).

Owns where ``sql/`` is (a checkout's top-level folder, or the wheel's ``pipeline/sql``) and
reading one of its folders: every ``*.sql`` file by name, sorted, duplicate names refused
naming both files. ``views``, ``functions`` and ``checks`` apply what it reads.
Imports the shared core only.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib

from ..errors import QueryError


def find_sql_dir() -> pathlib.Path:
    """The directory of cocolake's SQL files (``views/``, ``functions/``, ``checks/``, ``queries/``).

    An installed wheel holds the project's top-level ``sql/`` as the package data
    ``pipeline/sql`` (pyproject.toml maps one onto the other, so there is one copy); a
    checkout, or an editable install of it, has no such directory and reads ``sql/`` beside
    the package. Whether the directory holds any SQL is checked where it is read
    (``load_sql_dir``), so that the error names the directory.
    """
    installed = importlib.resources.files("pipeline") / "sql"
    if installed.is_dir():
        return pathlib.Path(str(installed))
    return pathlib.Path(__file__).resolve().parents[2] / "sql"


SQL_DIR = find_sql_dir()


@dataclasses.dataclass(frozen=True)
class SqlFile:
    name: str
    path: pathlib.Path
    text: str


def load_sql_dir(directory: pathlib.Path) -> dict[str, SqlFile]:
    """Every ``*.sql`` file of a directory, by name; duplicate names are an error, and so is
    a directory that is missing or holds no SQL file (an install without its SQL would
    otherwise have no views, checks or functions, and say nothing)."""
    if not directory.is_dir():
        raise QueryError(f"{directory}: SQL directory not found; cocolake's SQL files are missing "
                         "(reinstall cocolake, or run it from a checkout that has sql/)")
    found: dict[str, SqlFile] = {}
    for path in sorted(directory.rglob("*.sql")):
        name = path.stem
        if name in found:
            raise QueryError(f"two SQL files define {name!r}: {found[name].path} and {path}")
        found[name] = SqlFile(name, path, path.read_text(encoding="utf-8"))
    if not found:
        raise QueryError(f"{directory}: SQL directory holds no .sql file; cocolake's SQL files are missing "
                         "(reinstall cocolake, or run it from a checkout that has sql/)")
    return found
