"""What an export is asked to do (``ExportOptions``) and what it did (``ExportReport``).

Both are plain records shared by the selection, the three writers and the image copier;
``ExportOptions`` checks its own values so that every entry point (CLI or Python API)
fails the same way, with a ``ConfigError`` naming the option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, get_args

from ..defaults import DEFAULT_DATASET, DEFAULT_WAREHOUSE
from ..errors import ConfigError, ExportError  # noqa: F401 - ExportError also importable from here

Format = Literal["coco", "yolo", "parquet", "hf"]
ImagesMode = Literal["copy", "link", "none"]
Keep = Literal["matching", "all"]
Task = Literal["detect", "segment"]

# --classes when not given: COCO and Parquet round-trip every category; training formats
# get only the classes the subset has, so the model's head has no empty classes
DEFAULT_CLASSES = {"coco": "all", "parquet": "all", "yolo": "used", "hf": "used"}

# progress(phase, done, total); phase is e.g. "images"
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """One export: where from, which subset, which format, where to."""

    out: str
    format: Format = "coco"
    warehouse: str = DEFAULT_WAREHOUSE
    dataset: str = DEFAULT_DATASET
    # SQL boolean expression over annotations_enriched
    where: str | None = None
    # a SELECT returning an annotation_id or image_id column (and optionally split)
    sql: str | None = None
    # restrict to these splits (empty: all)
    splits: tuple[str, ...] = ()
    images: ImagesMode = "copy"
    keep: Keep = "matching"
    # fraction of the subset's images that go to "train"; the rest go to "val"
    split_ratio: float | None = None
    seed: int = 0
    # directory, zip or URL prefix holding <split>/<file_name>; None: each image's coco_url
    image_root: str | None = None
    task: Task = "detect"
    include_crowd: bool = False
    # parallel image transfers
    threads: int = 8
    # fsspec options of the warehouse (``out_storage_options``: of an fsspec URL --out)
    storage_options: dict | None = None
    out_storage_options: dict | None = None
    # replace an earlier export (or an empty directory) at ``out``; without it ``out`` must not hold anything
    overwrite: bool = False
    # let the selector read files outside the warehouse (read_csv of a list of ids, ...)
    allow_external_access: bool = False
    # all | used | a class-map YAML file; None: the format's default (DEFAULT_CLASSES)
    classes: str | None = None

    @property
    def class_choice(self) -> str:
        """``classes``, or the format's default when it was not given."""
        return self.classes if self.classes is not None else DEFAULT_CLASSES[self.format]

    def __post_init__(self):
        for name, kind in (("format", Format), ("images", ImagesMode), ("keep", Keep), ("task", Task)):
            value = getattr(self, name)
            if value not in get_args(kind):
                raise ConfigError(f"{name}: {value!r} is not one of {', '.join(get_args(kind))}")
        if self.where is not None and self.sql is not None:
            raise ConfigError("where/sql: give one selector, not both")
        if self.where is not None and not self.where.strip():
            raise ConfigError("where: the predicate is empty")
        if self.split_ratio is not None and not 0.0 < self.split_ratio < 1.0:
            raise ConfigError(f"split_ratio: {self.split_ratio} must be between 0 and 1 (exclusive), e.g. 0.9")
        if self.threads < 1:
            raise ConfigError(f"threads: {self.threads} must be at least 1")
        if self.format == "parquet" and self.images == "link":
            raise ConfigError("images: 'link' has no meaning for --format parquet; use 'copy' to embed the "
                              "image bytes in an image_bytes column, or 'none'")
        if self.format == "hf" and self.images == "link":
            raise ConfigError("images: 'link' has no meaning for --format hf; use 'copy' to embed the image "
                              "bytes, or 'none' to store where each image is")
        if self.format == "parquet" and self.class_choice != "all":
            raise ConfigError(f"classes: {self.classes!r} does not apply to --format parquet, which keeps the "
                              "source rows unchanged; use --format coco, yolo or hf to edit categories")
        if self.classes is not None and not str(self.classes).strip():
            raise ConfigError("classes: empty; give all, used, or a class-map YAML file")
        if not self.out:
            raise ConfigError("out: the output directory is empty")
        if isinstance(self.splits, str):
            object.__setattr__(self, "splits", (self.splits,))
        else:
            object.__setattr__(self, "splits", tuple(self.splits or ()))


@dataclasses.dataclass
class ExportReport:
    """Counts of what an export wrote, per output file."""

    out: str
    format: str
    # output path relative to ``out`` -> {"images": n, "annotations": n, ...}
    files: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    images_copied: int = 0
    # why annotations of the subset were not written: reason -> count
    left_out: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def leave_out(self, reason: str, n: int = 1) -> None:
        if n:
            self.left_out[reason] = self.left_out.get(reason, 0) + n

    def lines(self) -> list[str]:
        out = [f"{self.out}: {self.format} export, {self.seconds:.2f} s"]
        for name, counts in self.files.items():
            detail = ", ".join(f"{v} {k}" for k, v in counts.items())
            out.append(f"  {name}: {detail}")
        if self.images_copied:
            out.append(f"  image files: {self.images_copied} written")
        if self.left_out:
            out.append("  annotations left out: " + ", ".join(f"{v} {k}" for k, v in self.left_out.items()))
        return out
