"""id_types: the type of each id space, decided per file and kept to one per dataset.

Input: the first records of a file (``decide``), then what every source of an ingest and
the warehouse's manifest say (``merge``, ``complete``; ``ingest.validate.resolve_id_types``
runs them over the files of an ingest, ``ingest.validate.check_sets`` over per-image sets).
Output: the ``schema.IdTypes`` of each source, complete (every space int64 or string).

A file's image, annotation and category ids are typed apart: converted datasets often
have string image ids (``"000000000139"``) with integer category ids. Each space takes the
type of the first id the file gives it (the first image's ``id``, else the first
annotation's ``image_id``; the first annotation's ``id``; the first category's ``id``, else
the first annotation's ``category_id``); an id of the other type in that space is a bad
record (``flatten``). Across the files of a dataset (those of this ingest and those already
in the warehouse) each space keeps one type: the views union the files and splits and join
them on ids, which needs one column type. A file that disagrees fails the ingest, naming
the file it disagrees with. A space that no record of a file decides takes the dataset's type.
"""

from __future__ import annotations

import dataclasses

from .errors import BadFileError
from .schema import ID_SPACES, IdTypes

# space -> where its type is read from, in order: (noun, which first record, key)
_DECIDERS = {
    "image": (("image", "image", "id"), ("annotation", "annotation", "image_id")),
    "annotation": (("annotation", "annotation", "id"),),
    "category": (("category", "category", "id"), ("annotation", "annotation", "category_id")),
}


@dataclasses.dataclass(frozen=True)
class Decided:
    """What one source (a file, or a per-image set) says about its id spaces."""

    name: str
    id_types: IdTypes
    # space -> what decided its type ("the first image's id is '000000000139'"); a space
    # that no record decided is absent (and typed int64 until ``complete`` fills it)
    origins: dict


def decide(first_image, first_annotation, first_category) -> tuple[IdTypes, dict]:
    """(types, origins) of a file's id spaces from its first records (each a dict or None)."""
    firsts = {"image": first_image, "annotation": first_annotation, "category": first_category}
    types: dict[str, str] = {}
    origins: dict[str, str] = {}
    for space, options in _DECIDERS.items():
        for noun, which, key in options:
            rec = firsts[which]
            value = rec.get(key) if isinstance(rec, dict) else None
            if type(value) in (int, str):  # not bool, float, None: those records fail on their own
                types[space] = "string" if type(value) is str else "int64"
                origins[space] = f"the first {noun}'s {key} is {value!r}"
                break
    return IdTypes(**types), origins


def words(id_type: str) -> str:
    return "strings" if id_type == "string" else "integers"


# space -> (type, the source that decided it, what in it decided it)
Resolved = dict


def merge(sources: list[Decided], known: Resolved | None = None) -> Resolved:
    """``known`` extended with ``sources`` (in order); raises ``BadFileError`` for the first
    source whose type of a space differs from the type already decided for it."""
    seen: Resolved = dict(known or {})
    for src in sources:
        for space, origin in src.origins.items():
            t = getattr(src.id_types, space)
            if space not in seen:
                seen[space] = (t, src.name, origin)
                continue
            t0, name0, origin0 = seen[space]
            if t != t0:
                theirs = f" ({origin0})" if origin0 else ""
                raise BadFileError(
                    src.name,
                    f"its {space} ids are {words(t)} ({origin}) but those of {name0} are {words(t0)}{theirs}; "
                    f"the files of a dataset need one type per id space: convert the {space} ids of one "
                    "of them, or ingest it into another dataset",
                )
    return seen


def complete(src: Decided, resolved: Resolved) -> IdTypes:
    """The source's types with each space it does not decide taken from ``resolved``."""
    return IdTypes(**{space: getattr(src.id_types, space) if space in src.origins
                      else resolved.get(space, ("int64",))[0] for space in ID_SPACES})


def known_types(manifest, skip: set[tuple[str, str]]) -> Resolved:
    """What the warehouse's parts decide, leaving out the (split, source file) pairs this
    ingest replaces."""
    out: Resolved = {}
    for space in ID_SPACES:
        found = manifest.id_type_sources(space, skip) if manifest is not None else {}
        if found:
            t, name = next(iter(found.items()))
            out[space] = (t, f"{name} (already in the warehouse)", None)
    return out
