"""Verdicts from paired runs, and how alike two proxies rank the same mixtures.

Two mixtures judged on the same seeds share each seed's draw of documents (common
random numbers, `curation.mixture.proxy`), so their per-seed differences carry less
noise than their two means apart. `paired_verdict` takes those differences: their
mean, a 95% interval (Student's t with n-1 degrees of freedom; a seeded percentile
bootstrap from `BOOTSTRAP_MIN_SEEDS` seeds on, where the t assumption of normal
differences matters less than the resampling's own error), and a verdict: "better"
when the whole interval is below zero (the target is a loss), "worse" when it is
above, "tie" when it holds zero.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_MIN_SEEDS = 20
BOOTSTRAP_RESAMPLES = 10_000


def paired_verdict(a: Sequence[float], b: Sequence[float], *, level: float = LEVEL,
                   seed: int = 0) -> dict:
    """`a` against `b`, seed by seed (lower is better): ``{difference, interval, level,
    method, seeds, differences, verdict}``. ValueError unless both have the same
    number (at least 2) of finite values."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"paired runs need the same seeds on both sides, at least 2; "
                         f"got {len(x)} and {len(y)}")
    d = x - y
    if not np.all(np.isfinite(d)):
        raise ValueError("paired runs with a non-finite target")
    n, mean = len(d), float(d.mean())
    if n >= BOOTSTRAP_MIN_SEEDS:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
        lo, hi = (float(v) for v in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
        method = f"percentile bootstrap, {BOOTSTRAP_RESAMPLES:,} resamples, seed {seed}"
    else:
        half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
        lo, hi = mean - half, mean + half
        method = f"Student's t, {n - 1} degrees of freedom"
    verdict = "better" if hi < 0 else "worse" if lo > 0 else "tie"
    return {"difference": mean, "interval": [lo, hi], "level": level, "method": method,
            "seeds": n, "differences": [float(v) for v in d], "verdict": verdict}


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> dict:
    """Spearman's rho and Kendall's tau-b of two proxies' targets on the same mixtures;
    None where undefined (fewer than 3 mixtures, or one side constant)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError("rank agreement needs the same mixtures on both sides")
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": None, "kendall": None, "mixtures": len(x)}
    rho = stats.spearmanr(x, y).statistic
    tau = stats.kendalltau(x, y).statistic
    return {"spearman": float(rho), "kendall": float(tau), "mixtures": len(x)}


def describe_interval(c: dict, digits: int = 4) -> str:
    """``better by 0.0123 (95% CI -0.0201 to -0.0045)`` for a `paired_verdict`."""
    lo, hi = c["interval"]
    pct = f"{100 * c['level']:g}%"
    ci = f"{pct} CI {lo:+.{digits}f} to {hi:+.{digits}f}"
    if c["verdict"] == "same":
        return "the same mixture"
    if c["verdict"] == "tie":
        return f"tie ({c['difference']:+.{digits}f}; {ci})"
    return f"{c['verdict']} by {abs(c['difference']):.{digits}f} ({ci})"
