"""Validated configuration. YAML files and command-line flags both land here;
an error names the field path and what was expected."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MAX_DOC_BYTES = 8 * 1024 * 1024
DEFAULT_SPLIT_BYTES = 256 << 20   # an input file larger than this is read as several work items


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """Files of one source: paths, globs or directories, and the domain of their
    documents (absent: each record's domain field)."""

    input: list[str]
    domain: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("input")
    @classmethod
    def _not_empty(cls, v):
        if not v or any(not p.strip() for p in v):
            raise ValueError("give at least one path or glob, none empty")
        return v

    @field_validator("domain")
    @classmethod
    def _domain_name(cls, v):
        if v is not None and (not v.strip() or "/" in v or v.startswith(".")):
            raise ValueError(f"a domain is a plain name (no '/', not starting with '.'), got {v!r}")
        return v


def _cli(**kw) -> dict:
    """How a setting's flag looks beyond its name, type and help (pipelines/cli.py builds
    the flags from the models)."""
    return {"cli": kw}


SPLIT_BYTES_HELP = ("read an input file larger than N bytes as several work items and shards "
                    "(Parquet: runs of row groups; plain JSONL: byte ranges; gzip/zstd files are "
                    "read whole, with a warning; default 256 MiB)")


class InputConfig(_Strict):
    inputs: list[str] = Field(default_factory=list, description=(
        "JSONL (.gz/.zst), Parquet, a Hugging Face datasets directory, or a glob of them; "
        "repeatable"), json_schema_extra=_cli(flag="--input", metavar="PATTERN"))
    sources: list[SourceConfig] = Field(default_factory=list,
                                        description="inputs with a domain for all their documents")
    text_field: str = Field("text", description=(
        "field holding the text (default text; dotted paths reach nested fields)"))
    id_field: str = Field("id", description="field holding the id (default id; missing ids become FILE:LINE)")
    domain_field: str = "domain"
    domain: str | None = Field(None, description=(
        "domain label for every input document (default: the record's domain field)"))
    max_doc_bytes: int = Field(DEFAULT_MAX_DOC_BYTES, gt=0,
                               description="reject records larger than this (default 8 MiB)")
    strict: bool = Field(False, description=(
        "stop at the first bad record, naming file and line, instead of rejecting it"))
    input_format: Literal["auto", "jsonl", "parquet", "arrow", "warc"] = Field("auto", description=(
        "read every input file as this format, whatever its name (default auto: by the "
        "name: .jsonl/.json/.ndjson[.gz|.zst], .parquet, .arrow, .warc[.gz])"))

    def input_sources(self) -> list[tuple[list[str], str | None]]:
        """(patterns, domain) pairs for `curation.io.expand_sources`."""
        return [(s.input, s.domain) for s in self.sources] + ([(self.inputs, None)] if self.inputs else [])

    def patterns(self) -> list[str]:
        return [p for s in self.sources for p in s.input] + list(self.inputs)


class StageIO(InputConfig):
    """Inputs, and where and how a Beam stage writes."""

    output: str | None = Field(None, description="output directory (local path or gs://...)")
    output_format: Literal["parquet", "jsonl.gz"] = Field("parquet", description="shard format (default parquet)")


class DedupConfig(StageIO):
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard threshold for near duplicates (default 0.8)")
    num_perm: int = Field(128, ge=2, le=4096, description="MinHash permutations (default 128)")
    ngram: int = Field(5, ge=1, le=64, description="shingle size in words (default 5)")
    char_ngrams: bool = Field(False, description="shingle characters of the normalised text instead of words")
    seed: int = Field(1, ge=0, lt=2**32, description="MinHash seed (default 1)")
    backend: Literal["auto", "numpy", "numba", "cupy"] = Field("auto", description=(
        "signature backend (default auto: CuPy on a CUDA GPU, else compiled CPU)"))
    family: Literal["minhash", "oph"] = Field("minhash", description=(
        "signature family: k-permutation MinHash (default) or one-permutation hashing with "
        "optimal densification (faster, and more accurate on our benchmark)"))
    bands: int | None = Field(None, ge=1, description="LSH bands (default: derived from the threshold)")
    rows: int | None = Field(None, ge=1, description="LSH rows per band (with --bands)")
    verify: Literal["estimate", "exact", "none"] = Field("estimate", description=(
        "check candidate pairs with the signature's Jaccard estimate (default), the exact "
        "shingle Jaccard, or not at all"))
    verify_tolerance: float = Field(2.0, ge=0.0, le=10.0, description=(
        "with --verify estimate, accept estimates down to this many standard errors below the "
        "threshold (default 2; 0 = the threshold itself); LSH bands are chosen for that lower "
        "candidate threshold"))
    # the guardrail (docs/architecture.md, "Clusters")
    kept_tolerance: float = Field(0.15, ge=0.0, lt=1.0, description=(
        "every removed member must reach the threshold minus this (default 0.15) with the "
        "document its cluster keeps, by the --verify measure; members that only chain to it are "
        "split off into clusters of their own (not with --verify none)"))
    keep: str = Field("first", pattern=r"^(first|longest|none|highest:[^\s]+)$", description=(
        "which member of a cluster survives: first (in input order, the default), longest "
        "(text), highest:FIELD (a numeric field such as quality_score; missing ranks lowest), "
        "or none (drop every member); ties go to the first in input order"),
        json_schema_extra=_cli(metavar="POLICY"))
    max_cluster_size: int | None = Field(None, ge=2, description=(
        "flag clusters of more than N documents (default: off); the manifest counts them and "
        "--on-large-cluster decides"), json_schema_extra=_cli(metavar="N"))
    on_large_cluster: Literal["keep", "split", "fail"] = Field("keep", description=(
        "with --max-cluster-size: keep its removals as decided (default), split it (keep every "
        "document in it), or fail the run"))
    cc_max_rounds: int = Field(24, ge=1, le=200, description=(
        "large-star/small-star rounds unrolled in the graph (default 24); the run fails if the "
        "last one still changed a label"))
    # dedup indexes (curation.dedup_index, docs/indexes.md)
    against: list[str] = Field(default_factory=list, description=(
        "also remove documents that duplicate one in this index (written by --write-index; "
        "repeatable): reasons exact_duplicate_of_index and near_duplicate_of_index, with "
        "matched_id and matched_index in clusters/; the index is only read"),
        json_schema_extra=_cli(metavar="INDEX"))
    write_index: str | None = Field(None, description=(
        "write this run's kept documents (id, source, signature, band keys) to a dedup index; "
        "to an existing index (which must also be given to --against) as its next generation"),
        json_schema_extra=_cli(metavar="INDEX"))
    lsh_partitions: int = Field(64, ge=1, le=1_000_000, description=(
        "key partitions (default 64): one worker groups the exact and band keys of each, about "
        "documents/partitions of them, so raise it for billions of documents"))
    batch_size: int = Field(2048, ge=1, description="documents per signature batch (default 2048)")
    split_bytes: int = Field(DEFAULT_SPLIT_BYTES, ge=1, description=SPLIT_BYTES_HELP,
                             json_schema_extra=_cli(metavar="N"))

    @model_validator(mode="after")
    def _bands_rows(self):
        if (self.bands is None) != (self.rows is None):
            raise ValueError("bands and rows must be given together")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class FilterRunConfig(StageIO):
    """Settings of `curate filter`. The filters themselves come from a preset or a
    filter YAML (`filters_config`), read by `curation.filters.load_chain`."""

    preset: str | None = Field(None, description="a built-in filter chain (default fineweb)")
    filters_config: str | None = Field(None, description=(
        "a filter YAML (the filters, in order, and their parameters; see docs/filters.md) "
        "instead of a preset"), json_schema_extra=_cli(flag="--config", metavar="FILE"))
    removed_sample: int | None = Field(None, ge=0, description=(
        "write at most N removed documents per rule to removed/: the first N in input order "
        "(files sorted by path, then line); default: all"), json_schema_extra=_cli(metavar="N"))
    split_bytes: int = Field(DEFAULT_SPLIT_BYTES, ge=1, description=SPLIT_BYTES_HELP,
                             json_schema_extra=_cli(metavar="N"))

    @model_validator(mode="after")
    def _one_chain_source(self):
        if self.preset is not None and self.filters_config is not None:
            raise ValueError("give a preset or a filters config, not both")
        return self


class ScoreRunConfig(StageIO):
    """Settings of `curate score`: a fastText quality model (a directory written by
    `curate train-classifier`) scores every document. With `min_score` the documents
    scoring at least that are kept; with `keep_top` the top fraction of the whole
    corpus (`keep_top_by: domain`: of each domain); with neither, every document is
    kept. Scores are P(high quality) in [0, 1]."""

    model: str = Field(min_length=1, description="model directory from curate train-classifier (local or gs://)")
    min_score: float | None = Field(None, ge=0.0, le=1.0, description="keep documents scoring >= X",
                                    json_schema_extra=_cli(metavar="X"))
    keep_top: float | None = Field(None, gt=0.0, le=1.0, description=(
        "keep the top fraction F of the whole corpus (two passes; the cut comes from all the "
        "scores, not from each shard)"), json_schema_extra=_cli(metavar="F"))
    keep_top_by: Literal["corpus", "domain"] = Field("corpus", description=(
        "with --keep-top: one cut for the corpus (default) or one per domain"))
    batch_size: int = Field(512, ge=1, le=1_000_000, description="documents per predict call (default 512)")
    split_bytes: int = Field(DEFAULT_SPLIT_BYTES, ge=1, description=SPLIT_BYTES_HELP,
                             json_schema_extra=_cli(metavar="N"))

    @model_validator(mode="after")
    def _one_selection(self):
        if self.min_score is not None and self.keep_top is not None:
            raise ValueError("give min_score or keep_top, not both")
        if self.keep_top_by != "corpus" and self.keep_top is None:
            raise ValueError("keep_top_by needs keep_top")
        return self


class LabelConfig(InputConfig):
    """`curate label`'s settings (classifiers.labeling runs them); here so that the run
    config can check its label section without importing classifiers."""
    output: str | None = Field(None, description="output directory (local)")
    max_doc_bytes: int = Field(DEFAULT_MAX_DOC_BYTES, gt=0,
                               description="skip records larger than this (default 8 MiB)")
    strict: bool = Field(False, description="stop at the first bad record instead of skipping it")
    sample: int | None = Field(None, ge=1, description=(
        "documents to label (default 2000; with --labels-from-field, all)"), json_schema_extra=_cli(metavar="N"))
    seed: int = Field(0, ge=0, lt=2**63, description="sampling seed (default 0)")
    allocation: Literal["proportional", "equal"] = Field("proportional", description=(
        "split the sample across domains by their size (default) or equally"))
    rubric: str = Field("educational", description=(
        "a built-in rubric (educational, web_quality; default educational) or a rubric YAML file"))
    labeler: Literal["claude", "heuristic", "field"] = Field("claude", description=(
        "claude (default) or heuristic: a score on the rubric's scale from the share of four "
        "heuristic rule sets passed"))
    model: str = Field("claude-sonnet-5-5", description=(
        "model (default claude-sonnet-5-5; prices for others in classifiers.grading.PRICES)"))
    mode: Literal["auto", "batch", "messages"] = Field("auto", description=(
        "Message Batches (half price) or concurrent Messages calls; auto (default): batches "
        "from 200 documents to grade"))
    max_usd: float | None = Field(None, gt=0, description=(
        "stop before a call could take the spend on this rubric and model in the label store "
        "past this many dollars"))
    max_doc_chars: int = Field(8000, ge=100, description="truncate documents to this many characters (default 8000)")
    max_tokens: int = Field(300, ge=50)
    concurrency: int = Field(8, ge=1, le=256, description="Messages calls in flight (default 8)")
    batch_poll_s: float = Field(30.0, gt=0, description="seconds between batch status checks (default 30)")
    store: str | None = Field(None, description=(
        "label store file (default OUTPUT/labels.sqlite); share it across runs"))
    labels_field: str | None = Field(None, description=(
        "import the labels a corpus carries in FIELD (needs --threshold)"),
        json_schema_extra=_cli(flag="--labels-from-field", metavar="FIELD"))
    # the flag gives VALUE=SCORE,... (classifiers.labeling.parse_label_map)
    label_map: dict[str, float] | None = Field(None, description=(
        "with --labels-from-field: scores for text values, e.g. ham=1,spam=0"),
        json_schema_extra=_cli(metavar="VALUE=SCORE,..."))
    threshold: float | None = Field(None, description=(
        "score at which a document is hq (default: the rubric's threshold)"))
    # extends classifiers' price table; the flag gives a YAML file of them
    prices: dict[str, tuple[float, float]] | None = Field(None, description=(
        "YAML mapping MODEL: [input, output] USD per million tokens, added to the built-in "
        "price table"), json_schema_extra=_cli(metavar="FILE"))

    @model_validator(mode="after")
    def _field_labeler(self):
        if self.labeler == "field" and not self.labels_field:
            raise ValueError("the field labeler needs labels_field (--labels-from-field)")
        if self.labels_field and self.labeler != "field":
            raise ValueError("labels_field is for the field labeler")
        if self.label_map is not None and self.labeler != "field":
            raise ValueError("label_map is for the field labeler")
        return self

    @property
    def sample_size(self) -> int | None:
        """None: every distinct document (the default when importing labels)."""
        if self.sample is not None:
            return self.sample
        return None if self.labeler == "field" else 2000


class ClassifierConfig(_Strict):
    """`curate train-classifier`'s settings (the labels, the threshold and the model
    directory are its inputs and output, not settings)."""
    valid_fraction: float = Field(0.2, gt=0, lt=1, description="held-out test share (default 0.2)")
    seed: int | None = Field(None, ge=0, description=(
        "split and training seed (default 0; in curate run, the run's seed)"))
    epoch: int | None = Field(None, ge=1, description="fix the epochs (default: chosen from 5, 25)")
    lr: float | None = Field(None, gt=0, description="fix the learning rate (default: chosen from 0.1, 0.5)")
    word_ngrams: int | None = Field(None, ge=1, le=5, description="fix wordNgrams (default 2)")
    dim: int = Field(100, ge=1, description="embedding size (default 100)")
    bucket: int = Field(2**18, ge=1, description="hash buckets (default 262144)")
    max_chars: int | None = Field(None, ge=1, description="train on the first N characters of each text")
    min_count: int = Field(1, ge=1, description=(
        "drop words seen fewer times (default 1); raise it to shrink the model"))
    quantize: bool = Field(False, description="write a quantised model.ftz")
    cutoff: int = Field(0, ge=0, description=(
        "with --quantize, keep only this many embedding rows (default 0: all)"))


class ExportConfig(_Strict):
    """`curate export`'s settings (the mixture and the output directory are its input
    and output)."""
    tokens: int = Field(ge=1, description="total tokens to export", json_schema_extra=_cli(required=True))
    seed: int | None = Field(None, ge=0, description=(
        "sampling seed (default 0; in curate run, the run's seed)"))
    shard_docs: int = Field(10_000, ge=1, description="documents per shard (default 10000; jsonl only)")
    format: Literal["jsonl", "megatron", "olmo"] = Field("jsonl", description=(
        "what to write per domain: jsonl (text shards, the default), megatron (a Megatron-LM "
        "indexed dataset, .bin + .idx, and the --data-path blend line) or olmo (an OLMo-core "
        "token array and a source-mixture YAML)"))
    tokenizer: str | None = Field(None, description=(
        "megatron and olmo: a Hugging Face tokenizers JSON file, or a directory holding "
        "tokenizer.json (default: the mix run's tokenizer, with the end-of-document id its "
        "vocabulary size)"), json_schema_extra=_cli(metavar="JSON_OR_DIR"))
    eod_id: int | None = Field(None, ge=0, description=(
        "megatron and olmo: the end-of-document token id (default: the tokenizer's eos_token, "
        "or its <|endoftext|>, <|end_of_text|>, </s> or <eos> special token)"),
        json_schema_extra=_cli(metavar="ID"))

    @model_validator(mode="after")
    def _token_settings(self):
        if self.format == "jsonl" and (self.tokenizer is not None or self.eod_id is not None):
            raise ValueError("tokenizer and eod_id are for format megatron or olmo (jsonl "
                             "shards are text)")
        return self


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping (empty file: {}); errors name the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {e['msg']}" + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""))
    return "\n".join(lines)


def load_config(model: type[BaseModel], path: str | Path | None = None, overrides: dict | None = None):
    """Config from an optional YAML file, then non-None overrides (command-line flags)."""
    data: dict = {}
    source = "command-line flags"
    if path is not None:
        source = str(path)
        data.update(read_yaml_mapping(path))
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None
