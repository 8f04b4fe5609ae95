"""categories: how a merge maps source categories onto its targets, by name.

Input: nothing (``BY_NAME``: every name is its own target) or a class-map YAML file, the
format ``export --classes FILE`` reads, loaded by the same loader
(``export.classes.load_class_file``)::

    classes:           # source category name -> target name; null drops it
      man: person      # several names onto one target: one category
      bicycle: null
    ids:               # optional: target name -> category id
      person: 1
    unlisted: keep     # names the map does not list: keep (default) or drop

Output: a ``CategoryMap``. Guarantees: every problem is a ``ConfigError`` naming the file
and the key, before anything is written; here also one id given to two targets
(``check_names`` adds a listed name that no source category has).
"""

from __future__ import annotations

import dataclasses
import os

from .errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CategoryMap:
    """Source name → target name (None: dropped); fixed ids of some targets."""

    targets: dict = dataclasses.field(default_factory=dict)
    ids: dict = dataclasses.field(default_factory=dict)
    unlisted: str = "keep"  # keep | drop
    path: str | None = None

    def target(self, name: str) -> str | None:
        """The target name of a source category (None: dropped)."""
        if name in self.targets:
            return self.targets[name]
        return name if self.unlisted == "keep" else None

    def check_names(self, names: set[str]) -> None:
        """Every name the map lists must be the name of a source category."""
        for name in self.targets:
            if name not in names:
                shown = ", ".join(sorted(names)[:20]) + (", ..." if len(names) > 20 else "")
                raise ConfigError(f"{self.path}: classes.{name}: no category of the sources is named {name!r}; "
                                  f"they are: {shown}")


BY_NAME = CategoryMap()


def load_category_map(path: str) -> CategoryMap:
    from .export.classes import load_class_file

    if not os.path.isfile(path):
        raise ConfigError(f"--categories {path}: no such file (give by-name, or a class-map YAML file)")
    f = load_class_file(path)
    owners: dict[int, str] = {}
    for name, fixed in f.ids.items():
        if fixed in owners:
            raise ConfigError(f"{path}: ids.{name}: id {fixed} is given to {owners[fixed]!r} too")
        owners[fixed] = name
    return CategoryMap(dict(f.classes), dict(f.ids), f.unlisted, str(path))
