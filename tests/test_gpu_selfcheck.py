"""The GPU self-check (curation.minhash.gpu): on first use of a device the kernels and
the NumPy reference run on a fixed batch and must agree bit for bit; otherwise
backend "auto" falls back to the compiled CPU path with a warning naming the
mismatch, and backend "cupy" refuses.

There is no GPU in CI, so the check runs here on the real kernel source compiled as
C++ and launched thread by thread (tests/test_minhash.py's emulation), and on
variants of it that are wrong the way GPU code goes wrong (a lost atomic). The
tests with CuPy on a real device are in tests/test_minhash.py (they skip without
one)."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from curation.minhash import MinHasher, gpu
from curation.minhash import reference as ref
from tests.test_minhash import compile_emulated_kernels, emulated_kernels  # noqa: F401  (a fixture)


def kernels_runner(make_launch, grid=4, block=32):
    """The kernels' host path (gpu.device_signatures) on NumPy with an emulated launch:
    what gpu.signatures does on a GPU, in its signature."""
    def run(norm, offsets, ngram, char_ngrams, a, b, family, probes):
        return gpu.device_signatures(np, make_launch(grid, block), norm, offsets, ngram, char_ngrams,
                                     a, b, family, probes)
    return run


@pytest.fixture(scope="module")
def lost_atomic(tmp_path_factory):
    """The kernels with mh_oph_bins's atomicMin replaced by a plain store: the last
    writer wins instead of the minimum, the classic race on a GPU."""
    src = gpu.KERNEL_SOURCE.replace("atomicMin(raw + cell, v);", "raw[cell] = v;")
    assert src != gpu.KERNEL_SOURCE
    return compile_emulated_kernels(src, tmp_path_factory.mktemp("lost_atomic"))


def test_self_check_passes_on_the_kernels(emulated_kernels):
    for grid, block in ((1, 1), (4, 32), (16, 64)):
        assert gpu.self_check(kernels_runner(emulated_kernels, grid, block)) is None


def test_self_check_batch_reaches_every_kernel_mode():
    """The batch has documents shorter than each mode's n-gram, and for "oph" both
    documents with fewer shingles than bins (densification) and with many per bin
    (the atomic minimum under contention)."""
    texts = gpu.self_check_texts()
    parts = [t.encode() for t in texts]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    norm = np.frombuffer(b"".join(parts), dtype=np.uint8)
    families = {m["family"] for m in gpu.SELF_CHECK_MODES}
    assert families == set(ref.FAMILIES)
    assert {m["char_ngrams"] for m in gpu.SELF_CHECK_MODES} == {False, True}
    for mode in gpu.SELF_CHECK_MODES:
        _, sh_off = ref.shingles(np, norm, offsets, mode["ngram"], mode["char_ngrams"])
        per_doc = np.diff(sh_off)
        assert per_doc.min() == 0 and (per_doc >= 1).any()
        if mode["family"] == "oph":
            assert (per_doc[per_doc > 0] < mode["num_perm"]).any()
            assert per_doc.max() > 4 * mode["num_perm"]


def test_self_check_catches_a_lost_atomic(lost_atomic):
    problem = gpu.self_check(kernels_runner(lost_atomic))
    assert problem is not None
    # the minhash family does not use the atomic: the first difference is in an "oph" mode
    m = re.match(r"signatures \(oph, word 2-grams, num_perm=256\): (\d+) of (\d+) positions differ, "
                 r"first at index \[(\d+), (\d+)\]: kernels (\d+), reference (\d+)", problem)
    assert m, problem
    count, size, row, col, got, want = map(int, m.groups())
    assert 0 < count < size and got > want      # a later write instead of the minimum


def _perturbed(run, *, family=None, what="signatures", positions=((3, 5),)):
    def wrong(norm, offsets, ngram, char_ngrams, a, b, fam, probes):
        sig, counts = run(norm, offsets, ngram, char_ngrams, a, b, fam, probes)
        if family is None or fam == family:
            sig, counts = np.array(sig), np.array(counts)
            for pos in positions:
                if what == "signatures":
                    sig[pos] ^= np.uint32(1 << 7)
                else:
                    counts[pos[0]] += 1
        return sig, counts
    return wrong


def _reference(norm, offsets, *args):
    return ref.signatures(np, norm, offsets, *args)


def test_self_check_names_output_count_index_and_values():
    problem = gpu.self_check(_perturbed(_reference, positions=((9, 1), (4, 2), (4, 15))))
    # every mode differs; the first is named with its count, first index (row-major) and values
    assert problem.startswith("signatures (minhash, word 5-grams, num_perm=64): 3 of ")
    assert "first at index [4, 2]" in problem and problem.endswith("(and 4 more outputs differ)")

    # one position in one mode: the whole message, values included
    (mode,) = [m for m in gpu.SELF_CHECK_MODES if m["char_ngrams"] and m["family"] == "minhash"]
    texts = [t.encode() for t in gpu.self_check_texts()]
    offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.int64)
    a, b = ref.permutation_params(mode["num_perm"], mode["seed"])
    sig, _ = ref.signatures(np, np.frombuffer(b"".join(texts), dtype=np.uint8), offsets, mode["ngram"], True, a, b)
    want = int(sig[4, 2])

    def wrong_in_char_mode(norm, offsets, ngram, char_ngrams, a, b, fam, probes):
        sig, counts = _reference(norm, offsets, ngram, char_ngrams, a, b, fam, probes)
        if char_ngrams and fam == "minhash":
            sig = sig.copy()
            sig[4, 2] ^= np.uint32(1)
        return sig, counts
    assert gpu.self_check(wrong_in_char_mode) == (
        f"signatures (minhash, character 3-grams, num_perm=32): 1 of {len(texts) * 32} positions differ, "
        f"first at index [4, 2]: kernels {want ^ 1}, reference {want}")

    problem = gpu.self_check(_perturbed(_reference, family="oph", what="counts", positions=((6, 0),)))
    assert problem.startswith("shingle counts (oph, word 2-grams, num_perm=256): 1 of ")
    assert "first at index [6]" in problem

    def wrong_dtype(*args):
        sig, counts = _reference(*args)
        return sig.astype(np.int64), counts
    assert "the kernels gave int64 (" in gpu.self_check(wrong_dtype)

    def broken(*args):
        raise RuntimeError("nvrtc: error: invalid option")
    assert gpu.self_check(broken).startswith(
        "minhash, word 5-grams, num_perm=64: the kernels failed: RuntimeError: nvrtc: error: invalid option")


def test_choose_backend_falls_back_or_refuses(emulated_kernels, lost_atomic):
    good, bad = kernels_runner(emulated_kernels), kernels_runner(lost_atomic)
    assert gpu.choose_backend("auto", available=True, device=0, run_kernels=good, cache={}) == "cupy"
    assert gpu.choose_backend("cupy", available=True, device=0, run_kernels=good, cache={}) == "cupy"

    with pytest.warns(RuntimeWarning, match=r"disagree with the NumPy reference on CUDA device 0 .*"
                                            r"signatures \(oph, .* positions differ, first at index .*"
                                            r"using the compiled CPU path"):
        assert gpu.choose_backend("auto", available=True, device=0, run_kernels=bad, cache={}) == "numba"
    with pytest.raises(gpu.GpuSelfCheckError, match=r"backend='cupy': the CUDA kernels disagree .* device 2 "
                                                    r".*signatures \(oph, .*use backend='numba'"):
        gpu.choose_backend("cupy", available=True, device=2, run_kernels=bad, cache={})

    # no CuPy or no device: no check at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gpu.choose_backend("auto", available=False, run_kernels=bad, cache={}) == "numba"
    with pytest.raises(RuntimeError, match="needs CuPy and a CUDA device"):
        gpu.choose_backend("cupy", available=False, run_kernels=bad, cache={})


def test_self_check_runs_once_per_device_per_process():
    calls = []

    def counting(norm, offsets, *args):
        calls.append(args[4])     # the family
        return ref.signatures(np, norm, offsets, *args)
    wrong = _perturbed(counting)
    cache: dict = {}
    assert gpu.device_problem(0, wrong, cache) is not None
    assert len(calls) == len(gpu.SELF_CHECK_MODES)
    assert gpu.device_problem(0, counting, cache) is not None      # remembered, not rerun
    assert len(calls) == len(gpu.SELF_CHECK_MODES)
    assert gpu.device_problem(1, counting, cache) is None          # another device: its own check
    assert len(calls) == 2 * len(gpu.SELF_CHECK_MODES)
    assert cache == {0: cache[0], 1: None}


def test_minhasher_falls_back_or_refuses_on_a_failing_device(lost_atomic, monkeypatch):
    """MinHasher's backend choice goes through the self-check: CuPy's presence and the
    device are stood in for (there is none here), the kernels are the real source
    with the atomic lost."""
    monkeypatch.setattr(gpu, "cupy_available", lambda: True)
    monkeypatch.setattr(gpu, "current_device", lambda: 0)
    monkeypatch.setattr(gpu, "_CHECKED", {})
    monkeypatch.setattr(gpu, "signatures", kernels_runner(lost_atomic))
    with pytest.warns(RuntimeWarning, match="using the compiled CPU path"):
        mh = MinHasher(backend="auto", family="oph")
    assert mh.backend == "numba" and mh.params()["backend"] == "numba"
    texts = ["the quick brown fox jumps over the lazy dog", "a b c d e f g h"]
    assert np.array_equal(mh.signatures(texts), MinHasher(backend="numpy", family="oph").signatures(texts))
    with pytest.raises(gpu.GpuSelfCheckError, match="CUDA device 0"):
        MinHasher(backend="cupy")
    assert list(gpu._CHECKED) == [0]           # checked once for the process


def test_minhasher_checks_a_device_it_was_not_made_on(emulated_kernels, lost_atomic, monkeypatch):
    """Made on device 0 (which passes), used on device 1 (which fails): the first
    batch on device 1 runs its check and is refused."""
    device = [0]
    runner = {0: kernels_runner(emulated_kernels), 1: kernels_runner(lost_atomic)}
    monkeypatch.setattr(gpu, "cupy_available", lambda: True)
    monkeypatch.setattr(gpu, "current_device", lambda: device[0])
    monkeypatch.setattr(gpu, "_CHECKED", {})
    monkeypatch.setattr(gpu, "signatures", lambda *args: runner[device[0]](*args))
    mh = MinHasher(backend="auto", family="oph")
    assert mh.backend == "cupy"
    texts = ["the quick brown fox jumps over the lazy dog", "a b c d e f g h"]
    want = MinHasher(backend="numpy", family="oph").signatures(texts)
    assert np.array_equal(mh.signatures(texts), want)
    device[0] = 1
    with pytest.raises(gpu.GpuSelfCheckError, match=r"CUDA device 1 .*signatures \(oph"):
        mh.signatures(texts)
    assert gpu._CHECKED[0] is None and gpu._CHECKED[1] is not None
