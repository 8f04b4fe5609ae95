"""validate: the checks of an ingest across its files, chunks and batches.

Two sources that give one file name for one split; each id space's type, over the files of
the run and those the dataset keeps (``resolve_id_types``, before any chunk runs); ids
that repeat within one file's section, over the ids its chunks return; a per-image set's
id types and image ids across its batches (``check_sets``, over what the batches return).
Imports the core and ``plan``; tasks' and batches' results are read by their fields.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import id_types
from ..errors import BadFileError, ConfigError
from ..schema import SECTION_NOUNS, IdTypes
from .plan import FilePlan


def check_unique_files(plans, sets=()) -> None:
    """Two sources giving one file name for one split fail the run (the second would replace the first)."""
    seen: dict[tuple[str, str], str] = {}
    for split, name, url in [(p.split, p.source.name, p.source.url) for p in plans] + [
        (s.split, s.name, s.url) for s in sets
    ]:
        key = (split, name)
        if key in seen:
            raise ConfigError(f"two sources give {name} for split {split}: {seen[key]} and {url}")
        seen[key] = url


def resolve_id_types(plans: list[FilePlan], manifest, replaced: set[tuple[str, str]]) -> id_types.Resolved:
    """Check that the plans agree with each other and with the warehouse (but the files
    they replace) on each id space's type, and fill the spaces a file does not decide.
    Returns what the plans and the warehouse decide (``id_types.merge``)."""
    decided = [id_types.Decided(p.source.name, p.id_types, p.context.id_origins) for p in plans]
    resolved = id_types.merge(decided, id_types.known_types(manifest, replaced))
    for plan, src in zip(plans, decided):
        plan.id_types = id_types.complete(src, resolved)
        plan.context = dataclasses.replace(plan.context, id_types=plan.id_types)
    return resolved


def check_duplicates(graph, results) -> None:
    """Duplicate ids within one file's section fail the file (they would collapse silently)."""
    groups: dict[tuple[str, str], list] = {}
    for meta, res in zip(graph.meta, results):
        if meta.what == "chunk" and meta.section in ("images", "annotations", "categories"):
            groups.setdefault((meta.source_file, meta.section), []).append(res.ids)
    for (source_file, section), parts in groups.items():
        check_unique_ids(source_file, section, parts)


def check_unique_ids(source_file: str, section: str, parts: list) -> None:
    """The ids of one file's section (``parts``: the arrays or lists of its chunks) are unique."""
    count, examples = duplicate_ids(parts)
    if count:
        raise BadFileError(source_file, f"{count} duplicate {SECTION_NOUNS[section]} id(s) "
                           f"({', '.join(map(repr, examples))}); ids must be unique within a file")


def duplicate_ids(parts: list) -> tuple[int, list]:
    """(how many, a few examples) of the values that repeat across ``parts`` (arrays or lists)."""
    if parts and isinstance(parts[0], np.ndarray):
        s = np.sort(np.concatenate(parts))
        dup = s[1:][s[1:] == s[:-1]]
        return int(dup.size), [int(x) for x in np.unique(dup)[:5]]
    seen: set = set()
    dups = [x for part in parts for x in part if x in seen or seen.add(x)]
    return len(dups), dups[:5]


def check_sets(set_names: list[str], meta, results, resolved: id_types.Resolved | None = None) -> dict[str, str]:
    """Check each per-image set across its batches (the ``results`` whose ``meta`` says
    "batch"): one type per id space, that of the other sources of the dataset (``resolved``,
    see ``id_types``), and image ids unique among the files of a kind (annotations find
    their image by id). Returns each set's id types as text."""
    by_set: dict[str, list] = {}
    for m, res in zip(meta, results):
        if m.what == "batch":
            by_set.setdefault(m.source_file, []).append(res)
    types = {}
    for set_name in set_names:
        done = by_set.get(set_name, [])
        decided = dict(resolved or {})
        for r in done:
            decided = id_types.merge([id_types.Decided(name, r.id_types, {space: origin})
                                      for space, (name, origin) in r.id_origins.items()], decided)
        types[set_name] = id_types.complete(id_types.Decided(set_name, IdTypes(), {}), decided).text()
        for kind in sorted({k for r in done for k in r.image_ids}):
            count, examples = duplicate_ids([r.image_ids[kind] for r in done if len(r.image_ids.get(kind, ()))])
            if count:
                raise BadFileError(set_name, f"{count} image id(s) appear in more than one file "
                                   f"({', '.join(map(repr, examples))}); image ids must be unique within a "
                                   "per-image set")
    return types
