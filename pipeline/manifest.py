"""manifest: the manifest format (``_manifest.json``) and the parts it lists.

A manifest is a version of a dataset: its parts (one Parquet file of one table, split and
source file each), its source files, and the replaced version's parts. Imports the core only.
"""

from __future__ import annotations

import dataclasses

from .errors import WarehouseError
from .schema import DERIVED_FROM, ID_COLUMNS, ID_SPACES, RUN_TABLES, IdTypes

FORMAT = "cocolake-manifest/1"


@dataclasses.dataclass(frozen=True)
class Part:
    """One Parquet file of one table, split and source file."""

    table: str
    split: str
    source_file: str
    path: str  # relative to the dataset root
    rows: int
    id_type: str = "int64"  # IdTypes text: the types of the source file's id spaces

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Manifest:
    dataset: str
    version: int = 0
    committed_at: str | None = None
    parts: list[Part] = dataclasses.field(default_factory=list)
    sources: list[dict] = dataclasses.field(default_factory=list)
    # parts of the version this one replaced, under _trash/ (older manifests: in the table
    # folders); deleted by the next commit
    previous_parts: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "version": self.version,
            "committed_at": self.committed_at,
            "parts": [p.to_json() for p in self.parts],
            "sources": self.sources,
            "previous_parts": self.previous_parts,
        }

    @classmethod
    def from_json(cls, data: dict, where: str) -> Manifest:
        if data.get("format") != FORMAT:
            raise WarehouseError(f"{where}: not a cocolake manifest (format {data.get('format')!r})")
        return cls(
            dataset=data["dataset"],
            version=int(data["version"]),
            committed_at=data.get("committed_at"),
            parts=[Part(**p) for p in data["parts"]],
            sources=list(data.get("sources", [])),
            previous_parts=list(data.get("previous_parts", [])),
        )

    def splits(self) -> list[str]:
        """The ground-truth splits (model runs, whose parts also use ``split``, left out)."""
        runs = set(self.runs())
        return sorted({p.split for p in self.parts if p.split not in runs})

    def runs(self) -> list[str]:
        """The model runs: names under which results were ingested (``ingest-results``)."""
        return sorted({p.split for p in self.parts if p.table in RUN_TABLES})

    def files(self, table: str, split: str | None = None) -> list[str]:
        return [p.path for p in self.parts if p.table == table and (split is None or p.split == split)]

    def missing_derived(self, table: str) -> list[str]:
        """The splits that have parts of the tables ``table`` is derived from
        (``schema.DERIVED_FROM``) and no part of ``table``."""
        has = {p.split for p in self.parts if p.table == table}
        return sorted({p.split for p in self.parts if p.table in DERIVED_FROM[table]} - has)

    def id_type_sources(self, space: str, skip: set[tuple[str, str]] = frozenset()) -> dict[str, str]:
        """type -> the first source file (by part order) whose parts hold ids of ``space``,
        leaving out the (split, source file) pairs in ``skip``."""
        found: dict[str, str] = {}
        for p in self.parts:
            if space in ID_COLUMNS.get(p.table, {}).values() and (p.split, p.source_file) not in skip:
                found.setdefault(getattr(IdTypes.parse(p.id_type), space), p.source_file)
        return found

    def id_types(self) -> IdTypes:
        """Each id space's type over the dataset. An ingest keeps each space to one type;
        were a space found with both (a warehouse written before that check), its ids read
        as strings, which every id converts to."""
        types = {}
        for space in ID_SPACES:
            found = self.id_type_sources(space)
            types[space] = "string" if "string" in found else "int64"
        return IdTypes(**types)
