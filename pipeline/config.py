"""config: the YAML file that says what to ingest and where, as typed, frozen objects.

Input: a YAML mapping (see ``configs/*.yaml``). Output: a ``Config``; nothing else in the
package reads YAML, and only the command line (``cli.location``) reads environment variables
for settings; the config object is passed down.

Guarantees: unknown keys are rejected, choices are ``Literal``s, and every error is a
``ConfigError`` naming the file and the dotted key, e.g.
``configs/x.yaml: sources[0].url: field required`` (``describe``, which the class-map file's
errors use too).

Relative paths (source paths, ``warehouse``, ``cache_dir``, ``synth.out``, ``image_root``)
are relative to the current working directory, not to the config file: the shipped configs
are meant to be used from the project root (``cocolake ingest --config configs/demo.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .defaults import (  # noqa: F401 - defined once there, importable from here as before
    DEFAULT_CACHE_DIR, DEFAULT_CHUNK_BYTES, DEFAULT_DATASET, DEFAULT_WAREHOUSE, NAME_PATTERN, ON_BAD_RECORD, OnBadRecord,
)
from .errors import ConfigError

_HEX = "0123456789abcdef"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Frozen):
    """One place to read COCO JSON from."""

    url: str = Field(
        min_length=1,
        description="fsspec URL or path (relative to the working directory): a .json, .json.gz or "
        ".zip file, a directory of them, or zip://member::archive-url",
    )
    split: str | None = Field(
        default=None, description="split for every document of this source; default: from each file name"
    )
    md5: str | None = Field(default=None, description="expected MD5 of the downloaded file (hex)")
    sha256: str | None = Field(default=None, description="expected SHA-256 of the downloaded file (hex)")
    members: list[str] | None = Field(
        default=None, description="zip members to read; default: every *.json member"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for this URL, e.g. an S3 endpoint_url"
    )

    @model_validator(mode="before")
    @classmethod
    def _url_shorthand(cls, value):
        # `- path/to/annotations` is short for `- url: path/to/annotations`
        return {"url": value} if isinstance(value, str) else value

    @field_validator("md5", "sha256")
    @classmethod
    def _hex_digest(cls, value: str | None, info):
        if value is None:
            return None
        value = value.strip().lower()
        length = 32 if info.field_name == "md5" else 64
        if len(value) != length or any(c not in _HEX for c in value):
            raise ValueError(f"expected {length} hexadecimal digits, got {value!r}")
        return value

    @field_validator("members")
    @classmethod
    def _safe_members(cls, value: list[str] | None):
        for name in value or ():
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
                raise ValueError(f"member {name!r} is an absolute path or contains '..'")
        return value


class Synth(_Frozen):
    """Generate the synthetic demo dataset before ingesting (``cocolake synth``)."""

    out: str = Field(description="directory to generate into (relative to the working directory)")
    images: int = Field(default=40, ge=2, description="train + val images; a few test images come on top")
    seed: int = Field(default=0, description="random seed: same seed, same bytes")


class Config(_Frozen):
    """Everything ``cocolake ingest`` / ``export`` need; built by ``load_config``."""

    dataset: str = Field(
        default=DEFAULT_DATASET, pattern=f"^{NAME_PATTERN}$",
        description="dataset name: the warehouse keeps it under <warehouse>/<dataset>/",
    )
    warehouse: str = Field(default=DEFAULT_WAREHOUSE, min_length=1, description="warehouse directory or fsspec URL")
    sources: list[Source] = Field(min_length=1, description="where the COCO JSON documents are")
    synth: Synth | None = Field(
        default=None,
        description="when set, generate the synthetic dataset there first (once per parameter set)",
    )
    workers: int | None = Field(default=None, ge=1, description="worker processes; default: one per core "
                                "(this process for up to 48 MB of documents)")
    scheduler: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9+]*://\S+$",
        description="address of an existing Dask scheduler, e.g. tcp://host:8786",
    )
    chunk_mb: float = Field(default=DEFAULT_CHUNK_BYTES >> 20, gt=0, description="MB of JSON per task")
    on_bad_record: OnBadRecord = Field(
        default="error", description="stop at the first invalid record, or skip it into the rejects table"
    )
    cache_dir: str = Field(default=DEFAULT_CACHE_DIR, min_length=1, description="where downloads are cached")
    image_root: str | None = Field(
        default=None, description="where export finds image files: a directory, a zip, or a URL prefix"
    )

    def with_overrides(self, **overrides) -> Config:
        """A new config with the given top-level fields replaced; None values are ignored."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        data = self.model_dump()
        data.update(changes)
        try:
            return Config.model_validate(data)
        except ValidationError as err:
            raise ConfigError(describe(err, "command line", Config)) from None


def read_yaml_mapping(path: str | Path, *, expected: str, missing: str | None = None) -> dict:
    """The mapping a YAML file holds; a missing, unreadable or malformed file, or one that is
    not a mapping, is a ConfigError naming the file (``missing`` replaces the no-such-file
    message, ``expected`` says what the mapping should be)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(missing or f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f"line {where.line + 1}, column {where.column + 1}: " if where else ""
        raise ConfigError(f"{path}: {at}not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; every problem is a ConfigError naming file and key."""
    data = read_yaml_mapping(path, expected="a mapping of settings (key: value)")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe(err, str(path), Config)) from None


def describe(err: ValidationError, where: str, model: type[BaseModel], *, lower: bool = True) -> str:
    """``file: dotted.key[0]: problem`` for each error of validating ``model``, joined with '; '
    (the one wording of the YAML files' errors). ``lower`` starts pydantic's messages in lower
    case, mid-sentence."""
    lines = []
    for e in err.errors(include_url=False):
        key = _dotted(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = "allowed here" if _nested(model) else "allowed"
            msg = f"unknown key; {allowed}: {', '.join(_allowed_keys(model, e['loc']))}"
        elif e["type"] == "missing":
            msg = "field required"
        else:
            msg = msg.removeprefix("Value error, ")
            if lower:
                msg = msg[:1].lower() + msg[1:]
            value = e.get("input")
            if not isinstance(value, (dict, list)) and "got " not in msg:
                msg += f"; got {value!r}"
        lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
    return "; ".join(lines)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _nested(model: type[BaseModel]) -> bool:
    """Whether a field of ``model`` holds a model (its unknown keys are then allowed "here")."""
    return any(_model_in(f.annotation) is not None for f in model.model_fields.values())


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_in(field.annotation) if field else None
        if inner is None:
            break
        model = inner
    return sorted(model.model_fields)


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
