"""classes: which categories an export writes, under which names and ids (``--classes``).

Input: the categories of the exported splits (id, name), the ids the subset's annotations
use, and a choice: ``all`` (every category, as in the source), ``used`` (only those the
subset's annotations have) or a class-map file. Output: a ``ClassMap``: the target
categories in id order (their class index is their position) and, for every source
category id, its target id or ``None`` when the category is dropped.

The class-map file is YAML::

    classes:            # source category name -> target name; null drops it
      dog: animal       # several names onto one target merge them
      cat: animal
      person: null
      bicycle: bike     # a rename keeps the category's id
    ids:                # optional: target name -> id in the output
      animal: 100
    unlisted: keep      # categories the map does not name: keep (default) or drop

A target's id is the one ``ids`` gives, else the smallest id of the source categories
merged onto it. Loading checks the file alone (``load_class_file``, read by ``classfile``
at first use: pydantic and YAML load slowly); ``resolve`` checks it against the dataset (a
name no category has, two targets on one id). Every problem is a ``ConfigError`` naming
the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .classfile import ClassFile

CHOICES = ("all", "used")


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """What ``--classes`` asked for: ``all``, ``used`` or a loaded file (``path`` names it)."""

    mode: str = "all"  # all | used | file
    path: str | None = None
    file: ClassFile | None = None

    @property
    def label(self) -> str:
        return self.path if self.mode == "file" else self.mode


@dataclasses.dataclass(frozen=True)
class Target:
    id: object
    name: str
    # the source category ids merged onto it, smallest first
    sources: tuple


@dataclasses.dataclass(frozen=True)
class ClassMap:
    """The output categories in id order and where each source category goes."""

    targets: tuple[Target, ...]
    # source category id -> target id, or None when dropped
    of_source: dict

    @property
    def identity(self) -> bool:
        return all(t.sources == (t.id,) for t in self.targets) and None not in self.of_source.values()

    def index(self) -> dict:
        """source category id -> class index (position in ``targets``), for kept categories."""
        pos = {t.id: i for i, t in enumerate(self.targets)}
        return {s: pos[t] for s, t in self.of_source.items() if t is not None}

    def dropped(self) -> list:
        return [s for s, t in self.of_source.items() if t is None]


def parse_classes(value: str | None) -> ClassSpec | None:
    """``--classes`` as given: ``all``, ``used``, a file path, or None (the format's default)."""
    if value is None:
        return None
    if value in CHOICES:
        return ClassSpec(value)
    return ClassSpec("file", value, load_class_file(value))


def load_class_file(path: str | Path) -> ClassFile:
    """Read and validate a class-map YAML file; problems are ConfigErrors naming file and key."""
    from .classfile import load_class_file as load  # pydantic and YAML only when a file is given

    return load(path)


def resolve(spec: ClassSpec, categories: list[tuple], used: set) -> ClassMap:
    """The class map of ``spec`` over ``categories`` [(id, name)] given the ``used`` category ids."""
    categories = sorted(categories, key=lambda c: c[0])
    if spec.mode == "all":
        return ClassMap(tuple(Target(cid, name, (cid,)) for cid, name in categories),
                        {cid: cid for cid, _ in categories})
    if spec.mode == "used":
        kept = [(cid, name) for cid, name in categories if cid in used]
        return ClassMap(tuple(Target(cid, name, (cid,)) for cid, name in kept),
                        {cid: (cid if cid in used else None) for cid, _ in categories})
    return _apply_file(spec, categories)


def _apply_file(spec: ClassSpec, categories: list[tuple]) -> ClassMap:
    f, where = spec.file, spec.path
    names = {name for _, name in categories}
    unknown = [n for n in f.classes if n not in names]
    if unknown:
        raise ConfigError(f"{where}: classes.{unknown[0]}: no category of the exported splits is named "
                          f"{unknown[0]!r}; they are: {', '.join(sorted(names))}")
    groups: dict[str, list] = {}
    of_name: dict = {}
    for cid, name in categories:
        target = f.classes[name] if name in f.classes else (name if f.unlisted == "keep" else None)
        of_name[cid] = target
        if target is not None:
            groups.setdefault(target, []).append(cid)
    stray = [t for t in f.ids if t not in groups]
    if stray:
        raise ConfigError(f"{where}: ids.{stray[0]}: no category is mapped onto {stray[0]!r}; targets are: "
                          f"{', '.join(sorted(groups)) or 'none'}")
    targets, taken = [], {}
    for name, cids in groups.items():
        tid = f.ids.get(name, min(cids))
        if tid in taken:
            key = f"ids.{name}" if name in f.ids else f"ids.{taken[tid]}" if taken[tid] in f.ids else f"classes.{name}"
            raise ConfigError(f"{where}: {key}: targets {taken[tid]!r} and {name!r} would both get id {tid}; "
                              "give one of them another id under ids")
        taken[tid] = name
        targets.append(Target(tid, name, tuple(sorted(cids))))
    targets.sort(key=lambda t: t.id)
    target_id = {t.name: t.id for t in targets}
    return ClassMap(tuple(targets), {cid: (None if t is None else target_id[t]) for cid, t in of_name.items()})


# ---------------------------------------------------------------------------- on the subset


def source_categories(con) -> list[tuple]:
    """(category id, name) in id order: every object category of the exported splits."""
    return [tuple(r) for r in con.execute(
        "SELECT id, first(name ORDER BY split, source_file) FROM raw_categories "
        "WHERE kind IN ('instances', 'stuff', 'person_keypoints') "
        "AND split IN (SELECT DISTINCT split FROM export_images) GROUP BY id ORDER BY id"
    ).fetchall()]


def used_categories(con) -> set:
    """The category ids of the subset's annotations."""
    return {r[0] for r in con.execute(
        "SELECT DISTINCT r.category_id FROM raw_annotations AS r SEMI JOIN export_annotations AS e "
        "ON e.split = r.split AND e.source_file = r.source_file AND e.id = r.id "
        "WHERE r.category_id IS NOT NULL"
    ).fetchall()}


def apply(con, spec: ClassSpec) -> tuple[ClassMap, int]:
    """Resolve ``spec`` on the subset and take the dropped categories' annotations out of it.

    Returns the class map and how many annotation rows were left out for a dropped class
    (images stay: an image whose objects were all dropped is a background image).
    """
    # only ``used`` reads the subset's category ids: finding them joins every annotation row
    cmap = resolve(spec, source_categories(con), used_categories(con) if spec.mode == "used" else set())
    dropped = cmap.dropped()
    if not dropped:
        return cmap, 0
    con.execute("CREATE OR REPLACE TEMP TABLE export_dropped_categories AS SELECT unnest(?) AS id", [dropped])
    where = ("EXISTS (SELECT 1 FROM raw_annotations AS r JOIN export_dropped_categories AS d "
             "ON d.id = r.category_id WHERE r.split = e.split AND r.source_file = e.source_file AND r.id = e.id)")
    # a person's keypoints row shares its instance's id: counted once, as the annotation
    n = con.execute(f"SELECT count(DISTINCT (e.split, e.id)) FROM export_annotations AS e WHERE {where}").fetchall()[0][0]
    con.execute(f"DELETE FROM export_annotations AS e WHERE {where}")
    return cmap, n
