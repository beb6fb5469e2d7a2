import numpy as np
import pytest

from curation.lsh import LSHParams, band_keys, bucket_min_edges, exact_jaccard, optimal_params


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.5, 64), (0.9, 256), (0.7, 128), (0.6, 32)])
def test_optimal_params_match_datasketch(threshold, num_perm):
    from datasketch.lsh import _optimal_param
    assert optimal_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_params_validation():
    with pytest.raises(ValueError, match="threshold"):
        optimal_params(1.5, 128)
    with pytest.raises(ValueError, match="both"):
        LSHParams.for_threshold(0.8, 128, bands=4)
    with pytest.raises(ValueError, match="num_perm"):
        LSHParams.for_threshold(0.8, 128, bands=20, rows=10)
    p = LSHParams.for_threshold(0.8, 128, tolerance=0)
    assert (p.bands, p.rows, p.verify_threshold) == (9, 13, 0.8)   # datasketch's choice
    p = LSHParams.for_threshold(0.8, 128)   # default: 2 standard errors of slack
    assert p.verify_threshold == pytest.approx(0.8 - 2 * (0.8 * 0.2 / 128) ** 0.5)
    assert (p.bands, p.rows) == optimal_params(round(p.verify_threshold, 4), 128) == (12, 10)
    with pytest.raises(ValueError, match="tolerance"):
        LSHParams.for_threshold(0.8, 128, tolerance=-1)


def test_band_keys_agree_exactly_on_equal_bands():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, size=(4, 128), dtype=np.uint64).astype(np.uint32)
    sig[1] = sig[0]
    sig[1, 13 * 3 + 5] ^= 1           # differs only in band 3
    sig[2, :] = sig[0]
    keys = band_keys(sig, 9, 13)
    assert keys.shape == (4, 9) and keys.dtype == np.uint64
    same = keys[0] == keys[1]
    assert not same[3] and same[np.arange(9) != 3].all()
    assert (keys[0] == keys[2]).all()
    assert not (keys[0] == keys[3]).any()
    # the band index is part of the key: equal rows in different bands do not collide
    flat = np.tile(sig[0, :13], 9)[None, :]
    k = band_keys(flat, 9, 13)
    assert len(set(k[0].tolist())) == 9


def test_bucket_edges_link_to_minimum_only():
    keys = np.array([5, 9, 5, 5, 7, 9], dtype=np.uint64)
    order = np.array([30, 2, 10, 20, 1, 8])
    x, m = bucket_min_edges(keys, order)
    pairs = sorted(zip(x.tolist(), m.tolist()))
    assert pairs == [(0, 2), (3, 2), (5, 1)]          # 7 is alone: no edge
    x, m = bucket_min_edges(np.zeros(1000, np.uint64), np.arange(1000, 0, -1))
    assert len(x) == 999 and set(m.tolist()) == {999}
    assert len(bucket_min_edges(np.zeros(1, np.uint64), np.zeros(1))[0]) == 0


def test_jaccard_helpers():
    a = np.array([1, 2, 3, 4], dtype=np.uint32)
    b = np.array([3, 4, 5, 6], dtype=np.uint32)
    assert exact_jaccard(a, b) == pytest.approx(2 / 6)
    assert exact_jaccard(a[:0], b[:0]) == 1.0
