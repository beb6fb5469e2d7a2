"""Grading rubrics: the text a grader reads, its score scale and the score at which a
document counts as high quality.

Built-in rubrics live in configs/rubrics/ (``educational``, ``web_quality``) and ship
inside the package; ``load_rubric`` takes one of their names or a path to your own
YAML with the same fields.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from curation.config import ConfigError, read_yaml_mapping

BUILTIN = ("educational", "web_quality")


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: int
    max: int

    @model_validator(mode="after")
    def _order(self):
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = 1
    description: str = ""
    scale: Scale
    threshold: int
    text: str = Field(min_length=20)

    @model_validator(mode="after")
    def _threshold_on_scale(self):
        if not self.scale.min < self.threshold <= self.scale.max:
            raise ValueError(f"threshold {self.threshold} must lie in ({self.scale.min}, "
                             f"{self.scale.max}] so that both classes can occur")
        return self

    @property
    def key(self) -> str:
        """Identifies the rubric's content (label stores key on it): name, version and
        a hash of the text and scale, so an edited rubric never reuses old labels."""
        digest = hashlib.sha256(
            f"{self.text}\0{self.scale.min}\0{self.scale.max}".encode("utf-8")).hexdigest()[:12]
        return f"{self.name}@v{self.version}:{digest}"

    def is_high(self, score: int) -> bool:
        return score >= self.threshold


def rubrics_dir() -> Path:
    """configs/rubrics in a source checkout; the copy packaged as classifiers.rubrics_data."""
    here = Path(__file__).resolve().parents[1] / "configs" / "rubrics"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent / "rubrics_data"


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A built-in rubric by name, or a rubric YAML by path; errors name the field."""
    if str(name_or_path) in BUILTIN:
        path = rubrics_dir() / f"{name_or_path}.yaml"
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise ConfigError(f"rubric {str(name_or_path)!r} is neither a built-in "
                              f"({', '.join(BUILTIN)}) nor an existing file")
    data = read_yaml_mapping(path, "rubric")
    try:
        return Rubric(**data)
    except ValidationError as e:
        parts = [f"{path}: {'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}"
                 for err in e.errors()]
        raise ConfigError("; ".join(parts)) from None
