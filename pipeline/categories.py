"""categories: a YAML category map, source category name → target name (or dropped).

Input: a YAML mapping, one entry per source category name::

    person: person              # kept as it is (the same as leaving it out)
    man: person                 # several source names onto one target: one category
    woman: person
    bicycle: null               # dropped, with its annotations
    car: {name: vehicle, id: 3} # a target with a fixed category id

Output: a ``CategoryMap``. Names the map does not list keep their own name. Guarantees:
every problem is a ``ConfigError`` naming the file and the entry (``cats.yaml: car: ...``):
a key that is not a string, a value that is neither a name, null nor ``{name, id}``, an
unknown key in ``{...}``, two different ids for one target, one id for two targets.
"""

from __future__ import annotations

import dataclasses

import yaml

from .errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CategoryMap:
    """Source name → target name (None: dropped); fixed ids of some targets."""

    targets: dict[str, str | None] = dataclasses.field(default_factory=dict)
    ids: dict[str, int] = dataclasses.field(default_factory=dict)

    def target(self, name: str) -> str | None:
        """The target name of a source category (its own name when the map does not list it)."""
        return self.targets.get(name, name)


BY_NAME = CategoryMap()


def load_category_map(path: str) -> CategoryMap:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the category map: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    return parse_category_map(data, path)


def parse_category_map(data, where: str) -> CategoryMap:
    """A ``CategoryMap`` from the loaded YAML; ``where`` names the file in errors."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: expected a mapping of source category name to target name "
                          f"(e.g. 'man: person'), got {type(data).__name__ if data is not None else 'nothing'}")
    targets: dict[str, str | None] = {}
    ids: dict[str, int] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: {key!r}: a category name must be a string; quote it ('{key}': ...)")
        fixed = None
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"name", "id"})
            if unknown:
                raise ConfigError(f"{where}: {key}: unknown key(s) {', '.join(map(str, unknown))}; "
                                  "expected name and id")
            if "name" not in value:
                raise ConfigError(f"{where}: {key}: name is required next to id")
            fixed = value.get("id")
            if fixed is not None and (isinstance(fixed, bool) or not isinstance(fixed, int)):
                raise ConfigError(f"{where}: {key}.id: {fixed!r} is not an integer")
            value = value["name"]
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {key}: {value!r} is not a category name; give a name, null (drop it) "
                              "or {name: ..., id: ...}")
        if value is not None and not value.strip():
            raise ConfigError(f"{where}: {key}: the target name is empty; use null to drop the category")
        targets[key] = value
        if fixed is not None:
            if ids.get(value, fixed) != fixed:
                raise ConfigError(f"{where}: {key}.id: target {value!r} is given ids {ids[value]} and {fixed}")
            ids[value] = fixed
    owners: dict[int, str] = {}
    for name, fixed in ids.items():
        if fixed in owners:
            raise ConfigError(f"{where}: id {fixed} is given to two targets, {owners[fixed]!r} and {name!r}")
        owners[fixed] = name
    return CategoryMap(targets, ids)
