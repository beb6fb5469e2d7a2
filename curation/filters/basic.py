"""Length bounds, and filters users bring by import path."""
from __future__ import annotations

import importlib
from typing import Any

from pydantic import Field, ValidationError, model_validator

from curation.filters.base import (Filter, FilterParamError, Params, Verdict, check_order,
                                   format_validation_error)


class LengthParams(Params):
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _order(self):
        check_order(self, ("min_chars", "max_chars"), ("min_words", "max_words"))
        return self


class LengthFilter(Filter):
    """Bounds on characters and on whitespace-separated words (all off by default)."""

    name = "length"
    rules = ("too_short", "too_long")
    Params = LengthParams

    def check(self, text: str) -> Verdict:
        sig: dict = {"chars": len(text)}
        if self.min_chars is not None and len(text) < self.min_chars:
            return self.remove("too_short", sig)
        if self.max_chars is not None and len(text) > self.max_chars:
            return self.remove("too_long", sig)
        if self.min_words is not None or self.max_words is not None:
            sig["words"] = n = len(text.split())
            if self.min_words is not None and n < self.min_words:
                return self.remove("too_short", sig)
            if self.max_words is not None and n > self.max_words:
                return self.remove("too_long", sig)
        return Verdict(True, None, sig)


def import_object(path: str) -> Any:
    """``"package.module:attribute"`` (or ``"package.module.attribute"``) -> the object."""
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise FilterParamError(f"user filter path {path!r} must look like 'package.module:Name'")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise FilterParamError(f"user filter {path!r}: cannot import {module!r}: {e}") from None
    obj = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise FilterParamError(f"user filter {path!r}: {module!r} has no attribute {attr!r}") from None
    return obj


class UserParams(Params):
    path: str
    name: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)
    rules: tuple[str, ...] = ()


class UserFilter(Filter):
    """A filter loaded by import path.

    The object may be a :class:`Filter` subclass (built with ``params``), or any
    callable taking the text and returning a :class:`Verdict`, a bool (keep), or
    ``(keep, rule)``; a callable class is built with ``params`` first. Its reasons
    are ``"<name>:<rule>"`` (``name`` defaults to the object's name; a bare False
    gives the rule ``rejected``).
    """

    name = "user"
    Params = UserParams

    def __init__(self, **params: Any):
        # not Filter.__init__: "name", "params" and "rules" are this filter's own fields
        try:
            validated = UserParams(**params)
        except ValidationError as e:
            raise FilterParamError(format_validation_error(e, "user")) from None
        self.params = validated
        self.path = validated.path
        obj = import_object(validated.path)
        kwargs = validated.params
        declared: tuple[str, ...] = ()
        if isinstance(obj, type) and issubclass(obj, Filter):
            inner: Any = obj(**kwargs)
            default_name = inner.name
            declared = tuple(inner.rules)
        else:
            if isinstance(obj, type):
                try:
                    inner = obj(**kwargs)
                except TypeError as e:
                    raise FilterParamError(f"user filter {self.path!r}: {e}") from None
            elif kwargs:
                raise FilterParamError(f"user filter {self.path!r} is a function; it takes no params")
            else:
                inner = obj
            if not callable(inner):
                raise FilterParamError(f"user filter {self.path!r} is not callable")
            default_name = getattr(obj, "name", None) or getattr(obj, "__name__", "user")
        self._inner = inner
        # a Filter subclass keeps its reading of document fields and its tallies
        self.uses_meta = isinstance(inner, Filter) and inner.uses_meta
        self.tallies = tuple(inner.tallies) if isinstance(inner, Filter) else ()
        self.name = validated.name or str(default_name)
        self.rules = tuple(dict.fromkeys(validated.rules + declared + ("rejected",)))

    def config(self) -> dict:
        # the name the reasons carry, not the (possibly unset) parameter
        return {**self.params.model_dump(mode="json"), "name": self.name}

    def check(self, text: str, meta=None) -> Verdict:
        inner = self._inner
        if self.uses_meta:
            out = inner.check(text, meta)
        else:
            out = inner.check(text) if isinstance(inner, Filter) else inner(text)
        if isinstance(out, Verdict):
            if out.keep or out.reason is None:
                return out if out.keep else Verdict(False, f"{self.name}:rejected", out.signals, out.text)
            rule = out.reason.split(":", 1)[-1]
            return Verdict(False, f"{self.name}:{rule}", out.signals, out.text)
        if isinstance(out, tuple) and len(out) == 2:
            keep, rule = out
            return Verdict(True) if keep else Verdict(False, f"{self.name}:{rule or 'rejected'}")
        if isinstance(out, bool):
            return Verdict(True) if out else Verdict(False, f"{self.name}:rejected")
        raise TypeError(f"user filter {self.path!r} returned {type(out).__name__}; "
                        "expected a Verdict, a bool or (bool, rule)")
