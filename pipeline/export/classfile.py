"""classfile: a class-map YAML file (``--classes FILE``) read into a typed, checked ``ClassFile``.

The file's format and what it means are ``classes``'; this module only reads and validates
it (pydantic, YAML), so that an export without a class-map file never imports either.
Problems are ``ConfigError``s naming the file and the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from ..config import describe, read_yaml_mapping
from ..errors import ConfigError


class ClassFile(BaseModel):
    """A class-map file: rename, merge and drop categories by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: dict[str, str | None] = Field(
        description="source category name -> target name (null: drop the category's annotations)")
    ids: dict[str, StrictInt] = Field(default_factory=dict, description="target name -> category id in the output")
    unlisted: Literal["keep", "drop"] = Field(
        default="keep", description="what happens to categories `classes` does not name")

    @field_validator("classes")
    @classmethod
    def _targets_named(cls, value: dict):
        for source, target in value.items():
            if target is not None and not str(target).strip():
                raise ValueError(f"{source}: the target name is empty; give a name, or null to drop it")
        return value


def load_class_file(path: str | Path) -> ClassFile:
    """Read and validate a class-map YAML file; problems are ConfigErrors naming file and key."""
    path = Path(path)
    data = read_yaml_mapping(
        path, expected="a mapping with a 'classes' key",
        missing=f"--classes {path}: no such file (give all, used, or a class-map YAML file)")
    try:
        return ClassFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe(err, str(path), ClassFile, lower=False)) from None
