"""What every filter shares: the verdict, text coercion, parameters, the chain.

A filter is a small callable: ``GopherQuality()(text_or_document) -> Verdict``.
Parameters are validated by a pydantic model at construction, so a bad threshold
fails when the filter is built, never in the middle of a run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from curation.documents import Document
from curation.fs import default_fs

Signals = dict[str, Any]


class FilterInputError(TypeError):
    """A filter was handed something that is not text (or a document holding text)."""


class FilterParamError(ValueError):
    """A filter was built with parameters its model rejects; the message names them."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one document.

    ``reason`` is None when kept, else ``"<filter>:<rule>"``. ``signals`` holds the
    values the decision used (measured before the rule fired). ``text`` is the edited
    text when a line-level rule changed it, else None.
    """

    keep: bool
    reason: str | None = None
    signals: Signals = field(default_factory=dict)
    text: str | None = None

    @property
    def edited(self) -> bool:
        return self.text is not None

    @property
    def rule(self) -> str | None:
        return None if self.reason is None else self.reason.split(":", 1)[1]


def document_meta(doc: Any) -> Mapping | None:
    """The fields beside the text: a :class:`Document`'s ``meta``, a mapping itself
    (its other keys), None for a bare str."""
    if isinstance(doc, Document):
        return doc.meta
    if isinstance(doc, Mapping):
        return doc
    return None


def document_text(doc: Any) -> str:
    """The text of a str, a :class:`Document`, or a mapping with a ``text`` key."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Document):
        text = doc.text
    elif isinstance(doc, Mapping):
        if "text" not in doc:
            raise FilterInputError("document mapping has no 'text' key "
                                   f"(keys: {sorted(map(str, doc))[:8]})")
        text = doc["text"]
    else:
        raise FilterInputError("filters take a str, a Document or a mapping with 'text'; "
                               f"got {type(doc).__name__}")
    if not isinstance(text, str):
        raise FilterInputError(f"document text must be a str, got {type(text).__name__}")
    return text


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_order(params: BaseModel, *pairs: tuple[str, str]) -> None:
    """Raise if a set minimum is above its set maximum (a filter that removes everything)."""
    for lo, hi in pairs:
        a, b = getattr(params, lo), getattr(params, hi)
        if a is not None and b is not None and a > b:
            raise ValueError(f"{lo} ({a}) is larger than {hi} ({b})")


def read_param_file(fs: Any, path: str, param: str, name: str) -> bytes:
    """The bytes of a file a parameter names, read through `fs` (the local disk when
    None); a missing or unreadable file is a parameter error naming the parameter."""
    try:
        with default_fs(fs).open_read(path) as f:
            return f.read()
    except (OSError, ValueError) as e:
        raise FilterParamError(f"{name}.{param}: cannot read {path!r}: {e}") from None


def format_validation_error(err: ValidationError, where: str) -> str:
    parts = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        shown = "" if isinstance(got, (dict, type(None))) else f" (got {got!r})"
        parts.append(f"{where}.{path}: {e['msg']}{shown}")
    return "; ".join(parts)


class Filter:
    """Base class. Subclasses set ``name``, ``rules``, a ``Params`` model, and ``check``.

    Validated parameters become attributes, so ``check`` reads ``self.min_doc_words``.

    Three optional declarations:

    - ``uses_meta``: ``check(text, meta)`` also gets the document's other fields (a
      ``Document``'s ``meta``, a mapping's keys; None for a bare str). Filters without
      it are called ``check(text)``, as always.
    - ``reads_files``: the filter reads files its parameters name (in ``_setup``),
      through ``self.fs`` (a ``curation.fs`` filesystem: the pipeline hands in one that
      reads gs://; default: the local disk).
    - ``tallies``: signals that are counts to sum over the kept documents (the filter
      stage's manifest reports them as ``"<filter>.<signal>"``).
    """

    name: ClassVar[str] = "filter"
    rules: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[Params]] = Params
    reads_files: ClassVar[bool] = False
    uses_meta: bool = False            # instances may set these two (UserFilter does)
    tallies: tuple[str, ...] = ()

    def __init__(self, *, fs: Any = None, **params: Any):
        try:
            validated = self.Params(**params)
        except ValidationError as e:
            raise FilterParamError(format_validation_error(e, self.name)) from None
        self.params = validated
        for key, value in validated.model_dump().items():
            setattr(self, key, value)
        self.fs = fs
        self._setup()

    def _setup(self) -> None:
        """Derived state (compiled tables, models, files read); runs once per instance."""

    def __call__(self, doc: Any) -> Verdict:
        if self.uses_meta:
            return self.check(document_text(doc), document_meta(doc))
        return self.check(document_text(doc))

    def check(self, text: str) -> Verdict:
        raise NotImplementedError

    def remove(self, rule: str, signals: Signals) -> Verdict:
        return Verdict(False, f"{self.name}:{rule}", signals)

    def config(self) -> dict:
        """The parameters as plain data, e.g. for a manifest."""
        return self.params.model_dump(mode="json")

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(f"{self.name}:{r}" for r in self.rules)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


class FilterChain:
    """Filters applied in order; the first removal wins.

    Text edits flow on: a filter sees the text as the filters before it left it.
    Signals are merged under ``"<filter>.<signal>"`` keys so names never collide.
    """

    name = "chain"

    def __init__(self, filters: Sequence[Filter]):
        names = [f.name for f in filters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FilterParamError(f"a chain may hold each filter once; repeated: {dupes}")
        self.filters = list(filters)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(r for f in self.filters for r in f.reasons)

    @property
    def tallies(self) -> tuple[str, ...]:
        """The signals summed over kept documents, as ``"<filter>.<signal>"``."""
        return tuple(f"{f.name}.{t}" for f in self.filters for t in f.tallies)

    def __call__(self, doc: Any) -> Verdict:
        return self.check(document_text(doc), document_meta(doc))

    def check(self, text: str, meta: Mapping | None = None) -> Verdict:
        """`meta` (the document's other fields) reaches only the filters that use it."""
        signals: Signals = {}
        edited = False
        for f in self.filters:
            v = f.check(text, meta) if f.uses_meta else f.check(text)
            for k, val in v.signals.items():
                signals[f"{f.name}.{k}"] = val
            if v.text is not None:
                text, edited = v.text, True
            if not v.keep:
                return Verdict(False, v.reason, signals, text if edited else None)
        return Verdict(True, None, signals, text if edited else None)

    def config(self) -> list[dict]:
        return [{"name": f.name, **f.config()} for f in self.filters]

    def __repr__(self) -> str:
        return f"FilterChain({self.filters!r})"
