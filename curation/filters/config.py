"""Filter chains from presets and YAML.

A chain file::

    description: what this chain is for          # optional
    preset: fineweb                              # start from a preset's filters, or
    filters:                                     # list them (one of the two)
      - language: {languages: [en], min_confidence: 0.65}
      - gopher_repetition                        # a bare name takes the defaults
      - user: {path: "mypkg.filters:NoTables", name: no_tables}
    overrides:                                   # optional: thresholds on top
      gopher_quality: {min_doc_words: 30}

Errors name the place: ``filters[2].gopher_quality.min_doc_words: ...``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


from curation.config import ConfigError, read_yaml_mapping
from curation.filters.base import Filter, FilterChain, FilterParamError
from curation.filters.basic import LengthFilter, UserFilter
from curation.filters.c4 import C4Quality
from curation.filters.decontaminate import Decontaminate
from curation.filters.fineweb import FineWebQuality
from curation.filters.gopher import GopherQuality, GopherRepetition
from curation.filters.pii import PIIRedactor
from curation.filters.url import URLFilter

PRESETS = ("gopher", "c4", "fineweb", "minimal")
DEFAULT_PRESET = "fineweb"
_TOP_KEYS = {"description", "preset", "filters", "overrides"}


def registry() -> dict[str, type[Filter]]:
    from curation.filters.language import LanguageFilter   # its model loads lazily
    return {cls.name: cls for cls in (GopherQuality, GopherRepetition, C4Quality,
                                      FineWebQuality, LanguageFilter, LengthFilter, UserFilter,
                                      URLFilter, PIIRedactor, Decontaminate)}


def presets_dir() -> Path:
    """configs/filters in a source checkout; the copy packaged as curation.filters.presets."""
    here = Path(__file__).resolve().parents[2] / "configs" / "filters"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent / "presets"


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown filter preset {name!r}; choose one of {', '.join(PRESETS)}")
    return presets_dir() / f"{name}.yaml"


def _read_yaml(path: Path) -> dict:
    return read_yaml_mapping(path, "filter config")


def _entries(filters: Any, where: str) -> list[tuple[str, dict]]:
    if not isinstance(filters, list) or not filters:
        raise ConfigError(f"{where}.filters: expected a non-empty list of filters")
    out = []
    for i, item in enumerate(filters):
        at = f"{where}.filters[{i}]"
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise ConfigError(f"{at}.{name}: parameters must be a mapping, got {type(params).__name__}")
            out.append((str(name), dict(params)))
        else:
            raise ConfigError(f"{at}: expected a filter name or a one-key mapping "
                              "{name: {parameters}}, got " + repr(item)[:80])
    return out


def chain_spec(data: dict, where: str = "config") -> list[tuple[str, dict]]:
    """The (filter name, parameters) list a chain mapping describes, presets resolved."""
    return [(name, params) for name, params, _ in _spec(data, where)]


def _spec(data: dict, where: str) -> list[tuple[str, dict, str]]:
    """(name, parameters, where an error in them should point) per filter."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; "
                          f"expected some of {sorted(_TOP_KEYS)}")
    has_preset, has_filters = "preset" in data, "filters" in data
    if has_preset == has_filters:
        raise ConfigError(f"{where}: give either 'preset' or 'filters'")
    if has_preset:
        name = data["preset"]
        if not isinstance(name, str):
            raise ConfigError(f"{where}.preset: expected a preset name, got {name!r}")
        try:
            path = preset_path(name)
        except ConfigError as e:
            raise ConfigError(f"{where}.preset: {e}") from None
        entries = _spec(_read_yaml(path), where=f"preset {name}")
    else:
        entries = [(n, p, f"{where}.filters[{i}]: ")
                   for i, (n, p) in enumerate(_entries(data["filters"], where))]
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.overrides: expected a mapping of filter name to parameters")
    names = [n for n, _, _ in entries]
    for fname, params in overrides.items():
        if fname not in names:
            raise ConfigError(f"{where}.overrides.{fname}: no such filter in the chain "
                              f"(it has {', '.join(names)})")
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.overrides.{fname}: parameters must be a mapping")
        i = names.index(fname)
        entries[i] = (fname, {**entries[i][1], **params}, f"{where}.overrides.")
    return entries


def build_chain(entries: list[tuple], where: str = "config", fs=None) -> FilterChain:
    """A chain from (name, parameters) entries; a third item, if any, prefixes errors.
    Filters that read files (block lists, evaluation sets) read them through `fs`
    (a curation.fs filesystem; default: the local disk)."""
    reg = registry()
    filters = []
    for i, (name, params, *at) in enumerate(entries):
        at = at[0] if at else f"{where}.filters[{i}]: "
        cls = reg.get(name)
        if cls is None:
            raise ConfigError(f"{at}unknown filter {name!r}; known: {', '.join(sorted(reg))}")
        try:
            filters.append(cls(**params, fs=fs) if cls.reads_files else cls(**params))
        except FilterParamError as e:
            raise ConfigError(f"{at}{e}") from None
    try:
        return FilterChain(filters)
    except FilterParamError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_chain(preset: str | None = None, config: str | Path | dict | None = None, fs=None) -> FilterChain:
    """A chain from a preset name, a YAML file or a mapping (default: the fineweb preset).
    Files the filters name are read through `fs` (paths as written: a relative one is
    relative to the current directory, not to the YAML)."""
    if preset is not None and config is not None:
        raise ConfigError("give a preset or a config, not both")
    if config is None:
        return build_chain(_spec({"preset": preset or DEFAULT_PRESET}, "preset"), "preset", fs)
    if isinstance(config, dict):
        return build_chain(_spec(config, "config"), "config", fs)
    path = Path(config)
    return build_chain(_spec(_read_yaml(path), str(path)), str(path), fs)
