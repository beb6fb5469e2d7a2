"""Feasibility of a mixture: the set every proposal must land in, and the projection onto it.

The feasible set for domains ``d`` with token counts ``tokens[d]`` is

    { w : sum_d w_d = 1,  lower <= w_d <= upper_d }
    lower   = Constraints.min_weight                       (the same for every domain)
    upper_d = min(1, max_epochs * tokens[d] / budget_tokens)   (the repetition cap)

A proposal outside it is replaced by its Euclidean projection, the nearest feasible
mixture: ``argmin ||w - v||^2`` over the set. By the KKT conditions the answer is
``w_d = clip(v_d - tau, lower, upper_d)`` for the one ``tau`` where the weights sum to 1.
``g(tau) = sum_d clip(v_d - tau, ...)`` is continuous, non-increasing and linear between
the 2K breakpoints ``v_d - upper_d`` and ``v_d - lower``, so we sort the breakpoints, find
the segment where ``g`` crosses 1 and solve the linear equation on it: exact up to
floating point, no iteration and no tolerance (the classic sort-based algorithm for the
box-constrained simplex; Held, Wolfe & Crowder 1974, Duchi et al. 2008 for the box-free
case). ``project_rows`` does the same for many rows at once (the regression proposer
projects 100k candidates with it).

A feasible input comes back unchanged (no float noise is added), and the log line is None.
Nothing here imports Beam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from curation.mixture.types import Constraints, DomainInfo

# a weight vector within these of the set counts as feasible and is returned untouched
SUM_TOL = 1e-9
BOX_TOL = 1e-12
# changes smaller than this are float noise and are not logged
LOG_TOL = 1e-9


def _fmt_tokens(n: float) -> str:
    return f"{n:,.0f}"


@dataclass(frozen=True, eq=False)
class FeasibleSet:
    """The domains (sorted by name), their bounds, and the constraints they came from.

    Build it with :meth:`build`, which raises a ``ValueError`` saying what to change
    when the set is empty. ``project(weights)`` has the ``(weights, log)`` signature the
    proposers (and the Claude proposer's ``project=`` hook) expect."""

    names: tuple[str, ...]
    tokens: np.ndarray          # float64, in ``names`` order
    lower: np.ndarray
    upper: np.ndarray
    constraints: Constraints

    # -- construction -------------------------------------------------------------
    @classmethod
    def build(cls, domains: Sequence[DomainInfo], c: Constraints) -> "FeasibleSet":
        if not domains:
            raise ValueError("a mixture needs at least one domain; none were given")
        names = [d.name for d in domains]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"domain names must be unique; repeated: {', '.join(dup)}")
        if not (math.isfinite(c.min_weight) and c.min_weight >= 0):
            raise ValueError(f"min_weight must be a finite number >= 0, got {c.min_weight}")
        if not (math.isfinite(c.max_epochs) and c.max_epochs > 0):
            raise ValueError(f"max_epochs must be a finite number > 0, got {c.max_epochs}")
        if not c.budget_tokens > 0:
            raise ValueError(f"budget_tokens must be > 0, got {c.budget_tokens}")
        bad = [d.name for d in domains if not (d.tokens >= 0)]
        if bad:
            raise ValueError(f"token counts must be >= 0; negative for: {', '.join(bad)}")
        order = sorted(domains, key=lambda d: d.name)
        caps = c.upper_bounds(list(order))
        names_t = tuple(d.name for d in order)
        tokens = np.array([float(d.tokens) for d in order])
        upper = np.array([caps[n] for n in names_t], dtype=float)
        lower = np.full(len(order), float(c.min_weight))
        fs = cls(names_t, tokens, lower, upper, c)
        fs._check_nonempty()
        return fs

    def _check_nonempty(self) -> None:
        c, k = self.constraints, len(self.names)
        too_small = [(n, u, t) for n, u, t in zip(self.names, self.upper, self.tokens)
                     if u < c.min_weight - BOX_TOL]
        if too_small:
            parts = "; ".join(
                f"{n} can take at most {u:.4g} of the budget ({c.max_epochs:g} epochs of "
                f"{_fmt_tokens(t)} tokens in a {_fmt_tokens(c.budget_tokens)}-token budget)"
                for n, u, t in too_small)
            raise ValueError(
                f"infeasible constraints: min_weight {c.min_weight:g} is above the repetition "
                f"cap of {len(too_small)} domain(s): {parts}. Lower min_weight, raise "
                f"max_epochs or lower budget_tokens")
        if k * c.min_weight > 1 + SUM_TOL:
            raise ValueError(
                f"infeasible constraints: min_weight {c.min_weight:g} for {k} domains asks for "
                f"{k * c.min_weight:.4g} of the budget: lower min_weight to at most {1 / k:.4g}")
        total = float(self.upper.sum())
        if total < 1 - SUM_TOL:
            # here every cap is below 1, so total = max_epochs * sum(tokens) / budget
            all_tokens = float(self.tokens.sum())
            caps = ", ".join(f"{n} {u:.4g}" for n, u in zip(self.names, self.upper))
            if all_tokens > 0:
                fix = (f"raise max_epochs to at least {c.budget_tokens / all_tokens:.4g} or lower "
                       f"budget_tokens to at most {_fmt_tokens(math.floor(c.max_epochs * all_tokens))}")
            else:
                fix = "every domain has 0 tokens"
            raise ValueError(
                f"infeasible constraints: the repetition caps allow at most {total:.4g} of the "
                f"budget ({c.max_epochs:g} epochs of {_fmt_tokens(all_tokens)} available tokens "
                f"for a {_fmt_tokens(c.budget_tokens)}-token budget; short by "
                f"{1 - total:.4g}): {fix}. Caps per domain: {caps}")

    # -- conversion ---------------------------------------------------------------
    def vector(self, weights: Mapping[str, float]) -> np.ndarray:
        """Weights as an array in ``names`` order: missing domains are 0; unknown domains,
        negative, NaN or infinite weights raise ``ValueError`` naming them."""
        unknown = sorted(set(weights) - set(self.names))
        if unknown:
            raise ValueError(f"unknown domain(s) in the mixture: {', '.join(map(str, unknown))} "
                             f"(known: {', '.join(self.names)})")
        v = np.zeros(len(self.names))
        bad = []
        for i, n in enumerate(self.names):
            if n not in weights:
                continue
            try:
                x = float(weights[n])
            except (TypeError, ValueError):
                bad.append(f"{n}={weights[n]!r}")
                continue
            if not math.isfinite(x) or x < 0:
                bad.append(f"{n}={x}")
            v[i] = x
        if bad:
            raise ValueError(f"weights must be finite and >= 0; got {', '.join(bad)}")
        return v

    def as_dict(self, w: np.ndarray) -> dict[str, float]:
        return {n: float(x) for n, x in zip(self.names, w)}

    # -- the set --------------------------------------------------------------------
    def is_feasible(self, w: np.ndarray) -> bool:
        w = np.asarray(w, dtype=float)
        return bool(abs(w.sum() - 1.0) <= SUM_TOL and np.all(w >= self.lower - BOX_TOL)
                    and np.all(w <= self.upper + BOX_TOL))

    def project_rows(self, v: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """The Euclidean projection of every row of ``v`` (N x K, ``names`` order)."""
        v = np.asarray(v, dtype=float)
        if v.ndim != 2 or v.shape[1] != len(self.names):
            raise ValueError(f"expected an N x {len(self.names)} array, got shape {v.shape}")
        out = np.empty_like(v)
        for s in range(0, len(v), chunk):
            out[s:s + chunk] = _project_box_simplex(v[s:s + chunk], self.lower, self.upper)
        return out

    def project(self, weights: Mapping[str, float]) -> tuple[dict[str, float], str | None]:
        """The nearest feasible mixture (sorted keys) and a log line of what changed."""
        v = self.vector(weights)
        if self.is_feasible(v):
            return self.as_dict(v), None
        w = _project_box_simplex(v[None, :], self.lower, self.upper)[0]
        return self.as_dict(w), self.describe(v, w)

    def describe(self, v: np.ndarray, w: np.ndarray) -> str | None:
        """One line saying how ``v`` became ``w`` (None when only float noise changed)."""
        c = self.constraints
        changes = []
        for i, n in enumerate(self.names):
            if abs(w[i] - v[i]) <= LOG_TOL:
                continue
            why = ""
            if w[i] >= self.upper[i] - BOX_TOL and v[i] > w[i] and self.upper[i] < 1:
                why = (f" (capped at {c.max_epochs:g} epochs of {_fmt_tokens(self.tokens[i])} "
                       f"tokens)")
            elif w[i] <= self.lower[i] + BOX_TOL and v[i] < w[i] and self.lower[i] > 0:
                why = f" (raised to min_weight {c.min_weight:g})"
            elif w[i] <= self.lower[i] + BOX_TOL and v[i] > w[i]:
                why = " (dropped to the lower bound)"
            changes.append(f"{n} {v[i]:.4f}->{w[i]:.4f}{why}")
        if not changes:
            return None
        total = float(v.sum())
        head = "projected onto the feasible set"
        if abs(total - 1) > LOG_TOL:
            head += f" (the weights summed to {total:.4g}, not 1)"
        return f"{head}, L1 change {float(np.abs(w - v).sum()):.4f}: " + ", ".join(changes)


def _project_box_simplex(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows of ``v`` projected onto {sum w = 1, lo <= w <= hi}; assumes sum lo <= 1 <= sum hi.

    ``w = clip(v - tau, lo, hi)``; ``g(tau) = sum clip(v - tau, lo, hi)`` is piecewise linear
    and non-increasing with breakpoints ``v - hi`` and ``v - lo``. At the smallest
    breakpoint every coordinate sits at ``hi`` (g = sum hi >= 1), at the largest at ``lo``
    (g = sum lo <= 1). Take the last breakpoint ``t0`` with g(t0) >= 1 and the next one
    ``t1``; g is linear on [t0, t1], so tau = t0 + (g(t0) - 1) * (t1 - t0) / (g(t0) - g(t1)).
    """
    n, k = v.shape
    bp = np.sort(np.concatenate([v - hi, v - lo], axis=1), axis=1)          # n x 2k
    g = np.clip(v[:, None, :] - bp[:, :, None], lo, hi).sum(axis=2)          # n x 2k
    j = (g >= 1.0).sum(axis=1) - 1          # g is non-increasing: the last index with g >= 1
    j = np.clip(j, 0, 2 * k - 1)
    rows = np.arange(n)
    t0, g0 = bp[rows, j], g[rows, j]
    j1 = np.minimum(j + 1, 2 * k - 1)
    t1, g1 = bp[rows, j1], g[rows, j1]
    slope = g0 - g1
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(slope > 0, t0 + (g0 - 1.0) * (t1 - t0) / np.where(slope > 0, slope, 1.0), t0)
    return np.clip(v - tau[:, None], lo, hi)


def project(weights: Mapping[str, float], domains: list[DomainInfo],
            c: Constraints) -> tuple[dict[str, float], str | None]:
    """The Euclidean projection of ``weights`` onto the feasible set of ``domains`` under
    ``c``: the projected weights (sorted keys) and a log line of what changed, or None
    when nothing did beyond float noise.

    Missing domains count as 0 before projection; unknown domains, negative, NaN or
    infinite weights raise ``ValueError``; so does an empty feasible set, saying which
    bound is at fault and what to change. The weights are not rescaled first: a
    proposal summing to 100 is projected as it is (``types.normalise`` it first if it is
    meant as percentages)."""
    return FeasibleSet.build(domains, c).project(weights)
