"""Paired verdicts and rank agreement (curation.mixture.paired) against hand values."""
from __future__ import annotations

import math

import pytest

from curation.mixture.paired import BOOTSTRAP_MIN_SEEDS, describe_interval, paired_verdict, rank_agreement


def test_t_interval_by_hand():
    a, b = [2.0, 2.1, 1.9, 2.05], [2.1, 2.15, 2.0, 2.2]
    c = paired_verdict(a, b)
    d = [x - y for x, y in zip(a, b)]              # -0.1, -0.05, -0.1, -0.15
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    half = 3.182446305284263 * sd / 2               # t(0.975, 3) x sd / sqrt(4)
    assert c["difference"] == pytest.approx(mean)
    assert c["interval"] == pytest.approx([mean - half, mean + half])
    assert c["verdict"] == "better" and c["seeds"] == 4 and c["differences"] == pytest.approx(d)
    assert paired_verdict(b, a)["verdict"] == "worse"
    assert paired_verdict([1.0, 2.0, 3.0], [1.5, 1.5, 2.5])["verdict"] == "tie"
    assert describe_interval(c).startswith("better by 0.1000 (95% CI -0.")


def test_bootstrap_from_enough_seeds_is_seeded():
    n = BOOTSTRAP_MIN_SEEDS
    a = [1.0 + 0.01 * ((i * 7) % 5) for i in range(n)]
    b = [x + 0.02 + 0.005 * math.sin(1.7 * i) for i, x in enumerate(a)]
    one, two = paired_verdict(a, b, seed=1), paired_verdict(a, b, seed=1)
    assert one == two and one["method"].startswith("percentile bootstrap")
    lo, hi = one["interval"]
    assert lo <= one["difference"] <= hi and hi < 0 and one["verdict"] == "better"
    assert paired_verdict(a, b, seed=2)["interval"] != one["interval"]


def test_refuses_unpaired_or_too_few():
    with pytest.raises(ValueError, match="same seeds"):
        paired_verdict([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_verdict([1.0], [2.0])
    with pytest.raises(ValueError, match="non-finite"):
        paired_verdict([1.0, float("nan")], [1.0, 2.0])


def test_rank_agreement():
    r = rank_agreement([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert r == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0), "mixtures": 5}
    r = rank_agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert r["spearman"] == pytest.approx(0.8) and r["kendall"] == pytest.approx(2 / 3)
    assert rank_agreement([1, 2], [2, 1])["spearman"] is None
    assert rank_agreement([1, 1, 1], [1, 2, 3])["kendall"] is None
