"""The `curate run` configuration: one YAML naming the sources and every stage's
settings. It is validated as a whole before anything runs; each stage section is
checked against that stage's own config model, so an error names the field path
(``filter.removed_sample``, ``mix.search.rounds``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from curation.config import (DEFAULT_MAX_DOC_BYTES, ClassifierConfig, ConfigError, DedupConfig,
                             ExportConfig, FilterRunConfig, LabelConfig, ScoreRunConfig,
                             SourceConfig, _format_error, _Strict, read_yaml_mapping)

STAGES = ("dedup", "filter", "label", "train", "score", "mix", "export", "report")


# what `curate run` fills in itself: a section may not set these
_OWNED = {
    "dedup": {"inputs", "input_format", "output", "text_field", "id_field", "domain_field", "domain",
              "max_doc_bytes", "strict"},
    "filter": {"inputs", "input_format", "output", "text_field", "id_field", "domain_field", "domain"},
    "label": {"inputs", "input_format", "output", "text_field", "id_field", "domain_field", "domain", "store"},
    "score": {"inputs", "input_format", "output", "text_field", "id_field", "domain_field", "domain", "model"},
    "mix": {"sources", "inputs", "demo", "output", "stages", "text_field", "id_field",
            "domain_field"},
}


class RunConfig(_Strict):
    output: str | None = None
    # where the Beam stages write their data (gs://... when they run on Dataflow);
    # default: the run directory itself
    data_output: str | None = None
    seed: int = Field(0, ge=0, lt=2**31)
    demo: bool = False
    sources: list[SourceConfig] = Field(default_factory=list)
    text_field: str = "text"
    id_field: str = "id"
    domain_field: str = "domain"
    max_doc_bytes: int = Field(DEFAULT_MAX_DOC_BYTES, gt=0)
    strict: bool = False
    output_format: str = "parquet"
    # a stage section is a mapping of that stage's settings, or false to skip the stage
    dedup: dict[str, Any] | bool = Field(default_factory=dict)
    filter: dict[str, Any] | bool = Field(default_factory=dict)
    label: dict[str, Any] | bool = Field(default_factory=dict)
    classifier: dict[str, Any] | bool = Field(default_factory=dict)
    score: dict[str, Any] | bool = Field(default_factory=dict)
    mix: dict[str, Any] | bool = Field(default_factory=dict)
    export: dict[str, Any] | bool = False
    report: bool = True
    report_tokens: Literal["auto", "exact", "estimate"] = "auto"   # see curate report --tokens

    @field_validator("dedup", "filter", "label", "classifier", "score", "mix", "export")
    @classmethod
    def _true_means_defaults(cls, v):
        if v is True:
            return {}
        return v

    @field_validator("output_format")
    @classmethod
    def _format(cls, v):
        if v not in ("parquet", "jsonl.gz"):
            raise ValueError(f"output_format is parquet or jsonl.gz, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.demo == bool(self.sources):
            raise ValueError("give sources (a list of {input, domain}) or demo: true, not both")
        scoring = [s for s in ("label", "classifier", "score") if getattr(self, s) is not False]
        if scoring and len(scoring) < 3:
            raise ValueError("label, classifier and score run together (the classifier learns "
                             "from the labels, the score stage applies it): enable all three or "
                             f"none; enabled: {scoring}")
        if self.export is not False and self.mix is False:
            raise ValueError("export samples the chosen mixture: it needs the mix stage")
        return self

    def section(self, stage: str):
        """A stage's settings (the train stage's are `classifier`); False when skipped."""
        return getattr(self, "classifier" if stage == "train" else stage)

    def enabled(self, stage: str) -> bool:
        return self.section(stage) is not False


def _section_error(section: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join([section, *(str(p) for p in e["loc"])])
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def _check_owned(section: str, data: dict) -> list[str]:
    return [f"  {section}.{k}: set by curate run (the stage reads the previous stage's "
            f"output)" for k in sorted(set(data) & _OWNED.get(section, set()))]


def validate_sections(cfg: RunConfig) -> None:
    """Check each enabled stage section against its stage's model, with the run's own
    fields filled in; every problem is listed, named by its path."""
    from curation.mixture.config import MixConfig
    filled = {"inputs": ["x"], "output": "x"}
    problems: list[str] = []
    models = {"dedup": DedupConfig, "filter": FilterRunConfig, "label": LabelConfig,
              "score": ScoreRunConfig}
    for name, model in models.items():
        data = getattr(cfg, name)
        if data is False:
            continue
        problems += _check_owned(name, data)
        if name == "dedup":
            problems += [f"  dedup.{k}: not taken by curate run yet; run curate dedup with "
                         f"--{k.replace('_', '-')} (docs/indexes.md)"
                         for k in ("against", "write_index") if k in data]
        extra = {"model": "x"} if name == "score" else {}
        data = {k: v for k, v in data.items() if k not in _OWNED[name]}
        if name == "label":
            data = {k: v for k, v in data.items() if k != "fallback"}
            fb = getattr(cfg, name).get("fallback", "heuristic")
            if fb not in ("heuristic", "none"):
                problems.append(f"  label.fallback: heuristic or none, got {fb!r}")
        try:
            model.model_validate({**data, **filled, **extra})
        except ValidationError as e:
            problems.append(_section_error(name, e))
    if cfg.classifier is not False:
        try:
            ClassifierConfig.model_validate(cfg.classifier)
        except ValidationError as e:
            problems.append(_section_error("classifier", e))
    if cfg.mix is not False:
        problems += _check_owned("mix", cfg.mix)
        data = {k: v for k, v in cfg.mix.items() if k not in _OWNED["mix"]}
        try:
            MixConfig.model_validate({**data, "inputs": ["x"]})
        except ValidationError as e:
            problems.append(_section_error("mix", e))
    if cfg.export is not False:
        try:
            ExportConfig.model_validate(cfg.export)
        except ValidationError as e:
            problems.append(_section_error("export", e))
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


_STAGE_SECTIONS = ("dedup", "filter", "label", "classifier", "score", "mix", "export")


def _sections_only(data: dict) -> RunConfig:
    """A RunConfig holding just the well-formed stage sections of `data`, unvalidated,
    for checking them when the top level is invalid."""
    sections = {}
    for name in _STAGE_SECTIONS:
        v = data.get(name, RunConfig.model_fields[name].get_default(call_default_factory=True))
        if v is True:
            v = {}
        sections[name] = v if isinstance(v, dict) or v is False else False
    return RunConfig.model_construct(**sections)


def demo_config_path() -> str:
    """configs/demo.yaml in a source checkout; the copy packaged as curation.runconfigs."""
    here = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    if here.is_file():
        return str(here)
    return str(Path(__file__).resolve().parent / "runconfigs" / "demo.yaml")


def load_run_config(path: str, overrides: dict | None = None) -> RunConfig:
    data = read_yaml_mapping(path, "run config")
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        # the stage sections are checked too, so one run shows every problem
        msg = _format_error(e, str(path))
        try:
            validate_sections(_sections_only(data))
        except ConfigError as more:
            msg += "\n" + str(more).split("\n", 1)[1]
        raise ConfigError(msg) from None
    try:
        validate_sections(cfg)
    except ConfigError as e:
        raise ConfigError(str(e).replace("invalid configuration:",
                                         f"invalid configuration in {path}:", 1)) from None
    return cfg
